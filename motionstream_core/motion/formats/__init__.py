"""Track importers and exporters: every format between files / strings and :class:`TrackSet`.

One module per format (``widget_json``, ``spline_editor``, ``ati_json``, ``comfy_tracks``,
``cotracker``, ``wan_move``), the validation they share (``parsing``, ``point_lists``,
``track_arrays``), and ``registry``, where each format declares itself once and callers look
formats up by name, menu label or file suffix.

Every importer validates its input and raises ``ValueError`` with a message naming the problem
(bad JSON, wrong shapes, NaN/inf, no tracks, too many tracks, points far outside the frame, ...).
One rule holds for every entry point, applied in one place (``TrackSet``'s helpers
``numeric_tensor`` / ``coordinate_tensor`` / ``visibility_mask``): coordinates are finite real
numbers, visibility is boolean or exactly 0/1. Files are read within fixed bounds whatever they
declare (``track_arrays``).
Frames a source does not cover are *invisible*; no importer repeats a last known position as if it
were visible.
"""

from .ati_json import ATI_FPS, tracks_from_ati_json
from .comfy_tracks import tracks_from_comfy, tracks_to_comfy
from .cotracker import load_cotracker_tracks, tracks_from_cotracker
from .parsing import MAX_JSON_CHARS
from .registry import (
    BUILTIN_FORMATS,
    accepted_suffixes,
    format_for_path,
    list_track_formats,
    load_tracks_file,
    read_tracks,
    register_track_format,
    track_format,
    track_format_labeled,
    unregister_track_format,
)
from .spline_editor import tracks_from_spline_editor
from .track_format import READ_KINDS, ReadOptions, TrackFormat
from .wan_move import (
    load_wan_move_tracks,
    save_wan_move_tracks,
    tracks_from_wan_move,
    tracks_to_wan_move,
    wan_move_pair_matches,
)
from .widget_json import (
    WIDGET_FORMAT,
    WIDGET_VERSION,
    tracks_from_widget_json,
    tracks_to_widget_dict,
    tracks_to_widget_json,
)

__all__ = [
    "ATI_FPS", "BUILTIN_FORMATS", "MAX_JSON_CHARS", "READ_KINDS", "ReadOptions", "TrackFormat",
    "WIDGET_FORMAT", "WIDGET_VERSION",
    "accepted_suffixes", "format_for_path", "list_track_formats", "load_tracks_file", "read_tracks",
    "register_track_format", "track_format", "track_format_labeled", "unregister_track_format",
    "load_cotracker_tracks", "load_wan_move_tracks", "save_wan_move_tracks",
    "tracks_from_ati_json", "tracks_from_comfy", "tracks_from_cotracker", "tracks_from_spline_editor",
    "tracks_from_wan_move", "tracks_from_widget_json", "tracks_to_comfy", "tracks_to_wan_move",
    "tracks_to_widget_dict", "tracks_to_widget_json", "wan_move_pair_matches",
]
