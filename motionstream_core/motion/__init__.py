"""Motion conditioning: point tracks, their file formats (`formats`, with its registry) and geometry, the track head, and drag control."""

from .drag_control import DragController
from .geometry import ResizeCrop, rescale_tracks, resample_tracks, resize_crop_tracks
from .formats import (
    ReadOptions,
    TrackFormat,
    format_for_path,
    list_track_formats,
    load_cotracker_tracks,
    load_tracks_file,
    load_wan_move_tracks,
    read_tracks,
    register_track_format,
    track_format,
    track_format_labeled,
    tracks_from_ati_json,
    tracks_from_spline_editor,
    tracks_from_widget_json,
    tracks_to_widget_json,
    unregister_track_format,
)
from .track_head import TrackChannelProvider, TrackEncoder, TrackHeadInputs, track_head_inputs
from .tracks import MAX_LIVE_KEYFRAMES, MAX_LIVE_REQUEST_BYTES, MAX_LIVE_TRACKS, TrackSet

__all__ = [
    "DragController", "ResizeCrop", "rescale_tracks", "resample_tracks", "resize_crop_tracks",
    "load_cotracker_tracks", "load_wan_move_tracks", "tracks_from_ati_json", "tracks_from_spline_editor",
    "tracks_from_widget_json", "tracks_to_widget_json",
    "ReadOptions", "TrackFormat", "format_for_path", "list_track_formats", "load_tracks_file", "read_tracks",
    "register_track_format", "track_format", "track_format_labeled", "unregister_track_format",
    "TrackChannelProvider", "TrackEncoder", "TrackHeadInputs", "track_head_inputs", "TrackSet",
    "MAX_LIVE_KEYFRAMES", "MAX_LIVE_REQUEST_BYTES", "MAX_LIVE_TRACKS",
]
