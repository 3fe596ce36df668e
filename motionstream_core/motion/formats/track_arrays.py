"""Point-tracker arrays ``tracks [B, T, N, 2]`` / ``visibility [B, T, N]`` and the files that hold them.

Shared by CoTracker and Wan-Move: reading ``.npy``/``.npz``/``.pt`` safely (no pickles), dropping
the optional batch axis, and checking shapes before building a :class:`TrackSet`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..tracks import TrackSet
from .parsing import check_frame_count, check_track_count


def read_array_file(path: Path) -> Any:
    """The array (``.npy``), dict of arrays (``.npz``) or tensors (``.pt``/``.pth``, weights only) in ``path``."""
    if not path.is_file():
        raise FileNotFoundError(f"track file not found: {path}")
    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            return np.load(path, allow_pickle=False)
        if suffix == ".npz":
            with np.load(path, allow_pickle=False) as archive:
                return {key: archive[key] for key in archive.files}
        if suffix in (".pt", ".pth"):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # corrupt or pickled content: numpy/torch raise many types
        raise ValueError(f"cannot read {path.name}: {error}") from error
    raise ValueError(f"unsupported track file type {suffix!r} (use .npz, .npy or .pt)")


def tracks_from_arrays(
    tracks_array: Any,
    visibility_array: Any,
    *,
    width: int,
    height: int,
    fps: float,
    batch_index: int,
    what: str,
) -> TrackSet:
    """Pixel tracks (batch axis optional) and visibility (``None``: all visible; float: > 0.5) to a track set."""
    tracks_array = _unbatch(_numeric_array(tracks_array, f"{what} tracks"), 3, batch_index, f"{what} tracks")
    if tracks_array.shape[-1] != 2:
        raise ValueError(f"{what} tracks must end in an (x, y) axis of size 2, got {list(tracks_array.shape)}")
    num_frames, num_tracks = tracks_array.shape[:2]
    check_track_count(num_tracks)
    if num_frames == 0:
        raise ValueError(f"{what} tracks have no frames")
    check_frame_count(num_frames, num_tracks)
    if visibility_array is None:
        visibility = np.ones((num_frames, num_tracks), dtype=bool)
    else:
        visibility = _unbatch(
            _numeric_array(visibility_array, f"{what} visibility"), 2, batch_index, f"{what} visibility"
        )
        if visibility.shape != (num_frames, num_tracks):
            raise ValueError(
                f"{what} visibility has shape {list(visibility.shape)}, "
                f"expected [{num_frames}, {num_tracks}] to match the tracks"
            )
        if visibility.dtype.kind == "f":
            if not np.isfinite(visibility).all():
                raise ValueError(f"{what} visibility contains NaN or infinite values")
            visibility = visibility > 0.5
        else:
            visibility = visibility != 0
    return TrackSet(tracks_array, visibility, width, height, fps)


def _numeric_array(value: Any, what: str) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu()
        value = value.float() if value.dtype in (torch.float16, torch.bfloat16) else value
        value = value.numpy()
    try:
        array = np.asarray(value)
    except (TypeError, ValueError, OverflowError) as error:
        raise ValueError(f"{what} is not an array: {error}") from None
    if array.dtype.kind not in "biuf":
        raise ValueError(f"{what} must be numeric, got dtype {array.dtype}")
    return array


def _unbatch(array: np.ndarray, ndim: int, batch_index: int, what: str) -> np.ndarray:
    if array.ndim == ndim + 1:
        if not 0 <= batch_index < array.shape[0]:
            raise ValueError(f"{what}: batch index {batch_index} is out of range for batch size {array.shape[0]}")
        return array[batch_index]
    if array.ndim != ndim:
        raise ValueError(f"{what} must have {ndim} or {ndim + 1} dimensions, got shape {list(array.shape)}")
    return array
