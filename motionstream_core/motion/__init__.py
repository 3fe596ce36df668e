"""Motion conditioning: point tracks, their file formats and geometry, the track head, and drag control."""

from .drag_control import DragController
from .geometry import ResizeCrop, rescale_tracks, resample_tracks, resize_crop_tracks
from .track_formats import (
    load_cotracker_tracks,
    load_wan_move_tracks,
    tracks_from_ati_json,
    tracks_from_spline_editor,
    tracks_from_widget_json,
    tracks_to_widget_json,
)
from .track_head import TrackChannelProvider, TrackEncoder, TrackHeadInputs, track_head_inputs
from .tracks import TrackSet

__all__ = [
    "DragController", "ResizeCrop", "rescale_tracks", "resample_tracks", "resize_crop_tracks",
    "load_cotracker_tracks", "load_wan_move_tracks", "tracks_from_ati_json", "tracks_from_spline_editor",
    "tracks_from_widget_json", "tracks_to_widget_json",
    "TrackChannelProvider", "TrackEncoder", "TrackHeadInputs", "track_head_inputs", "TrackSet",
]
