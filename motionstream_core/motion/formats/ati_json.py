"""ATI / ComfyUI ``WanTrackToVideo`` track JSON: pixel point lists of the generation frame.

The same point lists as KJNodes' (optionally nested once more for a batch of one). ATI samples
tracks at 24 fps (ComfyUI stretches its 121 samples over the whole clip), see :data:`ATI_FPS`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..tracks import TrackSet
from .point_lists import parse_point_lists, tracks_from_point_lists
from .track_format import ReadOptions

ATI_FPS = 24.0


def tracks_from_ati_json(
    tracks_json: str | bytes | Sequence[Any],
    *,
    width: int,
    height: int,
    fps: float = ATI_FPS,
) -> TrackSet:
    """Read ATI / ``WanTrackToVideo`` track JSON (pixel points of the generation frame).

    A batch level is accepted only when it holds a single entry. Tracks shorter
    than the longest one are invisible after their last point (ComfyUI pads them
    with invisible points too).
    """
    return tracks_from_point_lists(
        parse_point_lists(tracks_json, "ATI track JSON", allow_batch=True),
        width=width,
        height=height,
        fps=fps,
    )


def read(source: str | bytes, options: ReadOptions) -> TrackSet:
    """Registry entry point. ATI tracks are sampled at :data:`ATI_FPS` by definition, so an fps option does not apply."""
    width, height = options.frame_size("ATI track JSON")
    return tracks_from_ati_json(source, width=width, height=height)
