"""CoTracker results: ``pred_tracks [B, T, N, 2]`` / ``pred_visibility [B, T, N]`` in ``.npz``, ``.npy`` or ``.pt``.

Coordinates are pixels of the tracked video. ``.pt`` files are read with
``torch.load(weights_only=True)`` only.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..tracks import DEFAULT_FPS, TrackSet
from .track_arrays import read_array_file, tracks_from_arrays
from .track_format import ReadOptions

_TRACK_KEYS = ("pred_tracks", "tracks", "track_points")
_VISIBILITY_KEYS = ("pred_visibility", "visibility", "pred_visibilities", "track_visibility")


def tracks_from_cotracker(
    pred_tracks: Any,
    pred_visibility: Any = None,
    *,
    width: int,
    height: int,
    fps: float = DEFAULT_FPS,
    batch_index: int = 0,
) -> TrackSet:
    """CoTracker ``pred_tracks [B, T, N, 2]`` / ``pred_visibility [B, T, N]`` to a track set.

    The batch axis is optional. Without ``pred_visibility`` every point is visible;
    a float visibility is thresholded at 0.5. ``width``/``height`` are the size of
    the video CoTracker ran on.
    """
    return tracks_from_arrays(
        pred_tracks, pred_visibility, width=width, height=height, fps=fps,
        batch_index=batch_index, what="CoTracker",
    )


def load_cotracker_tracks(
    path: str | os.PathLike[str],
    *,
    width: int | None = None,
    height: int | None = None,
    fps: float | None = None,
    visibility_path: str | os.PathLike[str] | None = None,
    batch_index: int = 0,
) -> TrackSet:
    """Load CoTracker results from ``.npz``, ``.npy`` or ``.pt``/``.pth``.

    - ``.npz`` / ``.pt`` dict: ``pred_tracks`` (or ``tracks``) and optional
      ``pred_visibility`` (or ``visibility``); optional scalar ``width``,
      ``height`` and ``fps`` entries are used when the arguments are not given.
    - ``.pt`` tuple/list ``(pred_tracks, pred_visibility)`` or a single tensor.
    - ``.npy``: the ``pred_tracks`` array, or ``[..., 3]`` with visibility as the
      last channel; ``visibility_path`` may name a second ``.npy`` file.

    Without any visibility every point is visible. ``fps`` defaults to 16.
    """
    content = read_array_file(Path(path))
    tracks_array = visibility_array = None
    if isinstance(content, Mapping):
        tracks_array = _first_present(content, _TRACK_KEYS)
        if tracks_array is None:
            raise ValueError(f"{path} has none of the keys {', '.join(_TRACK_KEYS)}")
        visibility_array = _first_present(content, _VISIBILITY_KEYS)
        width = _scalar_from(content, "width", width)
        height = _scalar_from(content, "height", height)
        fps = _scalar_from(content, "fps", fps)
    elif isinstance(content, (tuple, list)):
        if len(content) not in (1, 2):
            raise ValueError(f"{path} holds {len(content)} items; expected (pred_tracks, pred_visibility)")
        tracks_array = content[0]
        visibility_array = content[1] if len(content) == 2 else None
    else:
        tracks_array = content
    if isinstance(tracks_array, (np.ndarray, torch.Tensor)) and tracks_array.ndim >= 1 and tracks_array.shape[-1] == 3:
        tracks_array, embedded = tracks_array[..., :2], tracks_array[..., 2]
        visibility_array = embedded if visibility_array is None else visibility_array
    if visibility_path is not None:
        visibility_array = read_array_file(Path(visibility_path))
    if width is None or height is None:
        raise ValueError(f"{path} does not record the video size; pass width and height")
    return tracks_from_cotracker(
        tracks_array, visibility_array, width=width, height=height,
        fps=DEFAULT_FPS if fps is None else fps, batch_index=batch_index,
    )


def _first_present(content: Mapping[str, Any], keys: Sequence[str]) -> Any:
    for key in keys:
        if key in content:
            return content[key]
    return None


def _scalar_from(content: Mapping[str, Any], key: str, given: Any) -> Any:
    if given is not None or key not in content:
        return given
    value = np.asarray(content[key])
    if value.size != 1 or value.dtype.kind not in "iuf":
        raise ValueError(f"'{key}' in the track file must be a number")
    value = value.reshape(()).item()
    return int(value) if key in ("width", "height") and float(value).is_integer() else value


def read(path: str | os.PathLike[str], options: ReadOptions) -> TrackSet:
    """Registry entry point: the options win over what the file records."""
    return load_cotracker_tracks(
        path, width=options.width, height=options.height, fps=options.fps, visibility_path=options.visibility_path
    )
