"""KJNodes ``SplineEditor`` ``coord_str``: pixel points, one per frame, for one spline or several.

A JSON list of ``{"x", "y"}`` points, or a list of such lists (one per spline/track). Python-style
single quotes, as older KJNodes versions print, are accepted.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..tracks import DEFAULT_FPS, TrackSet
from .point_lists import parse_point_lists, tracks_from_point_lists
from .track_format import ReadOptions


def tracks_from_spline_editor(
    coord_str: str | bytes | Sequence[Any],
    *,
    width: int,
    height: int,
    fps: float = DEFAULT_FPS,
) -> TrackSet:
    """Read KJNodes ``SplineEditor`` ``coord_str`` (pixel points, one per frame).

    ``width``/``height`` are the editor's ``mask_width``/``mask_height``. Tracks
    shorter than the longest one are invisible after their last point.
    """
    return tracks_from_point_lists(
        parse_point_lists(coord_str, "SplineEditor coordinates", allow_batch=False),
        width=width,
        height=height,
        fps=fps,
    )


def read(source: str | bytes, options: ReadOptions) -> TrackSet:
    """Registry entry point: the size is the editor's mask size; fps defaults to 16."""
    width, height = options.frame_size("KJNodes SplineEditor coordinates")
    return tracks_from_spline_editor(source, width=width, height=height, fps=options.fps or DEFAULT_FPS)
