"""ComfyUI's core ``TRACKS`` dict (``track_path`` / ``track_visibility``), see :meth:`TrackSet.from_comfy_tracks`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..tracks import TrackSet
from .track_format import ReadOptions


def tracks_from_comfy(
    tracks: Mapping[str, Any],
    *,
    width: int | None = None,
    height: int | None = None,
    fps: float | None = None,
) -> TrackSet:
    """Read ComfyUI's core ``TRACKS`` dict; see :meth:`TrackSet.from_comfy_tracks`."""
    return TrackSet.from_comfy_tracks(tracks, width=width, height=height, fps=fps)


def tracks_to_comfy(tracks: TrackSet) -> dict[str, Any]:
    """The ``TRACKS`` dict ComfyUI's nodes take; see :meth:`TrackSet.to_comfy_tracks`."""
    return tracks.to_comfy_tracks()


def read(source: Mapping[str, Any], options: ReadOptions) -> TrackSet:
    """Registry entry point: the options fill in what the dict's metadata does not record."""
    return tracks_from_comfy(source, width=options.width, height=options.height, fps=options.fps)
