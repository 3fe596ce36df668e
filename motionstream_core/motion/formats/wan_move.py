"""Wan-Move ``*_tracks.npy [1, T, N, 2]`` / ``*_visibility.npy [1, T, N]`` pairs.

Coordinates are pixels of the input image; the leading batch axis is optional. The files do not
record the frame size, so it must be given.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ..tracks import DEFAULT_FPS, TrackSet
from .track_arrays import read_array_file, tracks_from_arrays
from .track_format import ReadOptions


def tracks_from_wan_move(
    track: Any,
    visibility: Any,
    *,
    width: int,
    height: int,
    fps: float = DEFAULT_FPS,
    batch_index: int = 0,
) -> TrackSet:
    """Wan-Move ``track [1, T, N, 2]`` / ``visibility [1, T, N]`` arrays (batch axis optional).

    Coordinates are pixels of the input image, whose size is ``width`` x ``height``.
    """
    if visibility is None:
        raise ValueError("Wan-Move tracks need their visibility array")
    return tracks_from_arrays(
        track, visibility, width=width, height=height, fps=fps,
        batch_index=batch_index, what="Wan-Move",
    )


def load_wan_move_tracks(
    tracks_path: str | os.PathLike[str],
    visibility_path: str | os.PathLike[str],
    *,
    width: int,
    height: int,
    fps: float = DEFAULT_FPS,
    batch_index: int = 0,
) -> TrackSet:
    """Load a Wan-Move ``*_tracks.npy`` / ``*_visibility.npy`` pair."""
    for path in (tracks_path, visibility_path):
        if Path(path).suffix.lower() != ".npy":
            raise ValueError(f"Wan-Move tracks are .npy files, got {path}")
    return tracks_from_wan_move(
        read_array_file(Path(tracks_path)),
        read_array_file(Path(visibility_path)),
        width=width, height=height, fps=fps, batch_index=batch_index,
    )


def tracks_to_wan_move(tracks: TrackSet) -> tuple[np.ndarray, np.ndarray]:
    """Wan-Move arrays: float32 ``[1, T, N, 2]`` pixel tracks and bool ``[1, T, N]`` visibility."""
    return tracks.points.numpy()[None].copy(), tracks.visibility.numpy()[None].copy()


def save_wan_move_tracks(
    tracks: TrackSet, tracks_path: str | os.PathLike[str], visibility_path: str | os.PathLike[str]
) -> None:
    """Write :func:`tracks_to_wan_move` as a ``.npy`` pair."""
    track_array, visibility_array = tracks_to_wan_move(tracks)
    np.save(tracks_path, track_array, allow_pickle=False)
    np.save(visibility_path, visibility_array, allow_pickle=False)


def read(path: str | os.PathLike[str], options: ReadOptions) -> TrackSet:
    """Registry entry point: needs the visibility file and the frame size; fps defaults to 16."""
    if options.visibility_path is None:
        raise ValueError("Wan-Move tracks need their *_visibility.npy file (visibility_path)")
    width, height = options.frame_size("Wan-Move track files")
    return load_wan_move_tracks(
        path, options.visibility_path, width=width, height=height, fps=options.fps or DEFAULT_FPS
    )
