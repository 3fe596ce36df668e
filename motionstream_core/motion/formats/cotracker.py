"""CoTracker results: ``pred_tracks [B, T, N, 2]`` / ``pred_visibility [B, T, N]`` in ``.npz``, ``.npy`` or ``.pt``.

Coordinates are pixels of the tracked video. ``.pt`` files are read with
``torch.load(weights_only=True)`` only. Visibility is boolean or exactly 0/1.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import torch

from ..tracks import DEFAULT_FPS, TrackSet, coordinate_tensor, numeric_tensor
from .track_arrays import ArrayFile, check_batch_index, check_tracks_shape, check_visibility_shape
from .track_arrays import open_array_file, read_array, tracks_from_arrays
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
    a given visibility must be boolean or exactly 0/1, as CoTracker writes it (a
    visibility *confidence* must be thresholded first; other values are an error).
    ``width``/``height`` are the size of the video CoTracker ran on.
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
      Only these arrays are read from an ``.npz`` archive, each after its header.
    - ``.pt`` tuple/list ``(pred_tracks, pred_visibility)`` or a single tensor.
    - ``.npy``: the ``pred_tracks`` array, or ``[..., 3]`` with visibility as the
      last channel; ``visibility_path`` may name a second file (a ``.npy`` array,
      or an ``.npz``/``.pt`` with one of the visibility keys).

    Without any visibility every point is visible. ``fps`` defaults to 16. Files
    are read within fixed bounds (see :mod:`.track_arrays`); every problem is a
    ``ValueError`` naming the file.
    """
    path = Path(path)
    batch_index = check_batch_index(batch_index)
    tracks_what = f"CoTracker tracks in {path.name}"

    def check_tracks(shape: tuple[int, ...]) -> None:
        check_tracks_shape(shape, tracks_what, batch_index, channels=(2, 3))

    with open_array_file(path) as source:
        visibility_array = None
        if source.is_mapping:
            track_key = source.first_present(_TRACK_KEYS)
            if track_key is None:
                raise ValueError(f"{path.name} has none of the keys {', '.join(_TRACK_KEYS)}")
            tracks_array = read_array(source, track_key, check_shape=check_tracks)
            visibility_key = source.first_present(_VISIBILITY_KEYS)
            if visibility_key is not None and visibility_path is None:
                visibility_array = read_array(source, visibility_key, check_shape=_visibility_check(path, batch_index))
            width = _scalar_from(source, "width", width)
            height = _scalar_from(source, "height", height)
            fps = _scalar_from(source, "fps", fps)
        else:
            content = read_array(source, check_shape=check_tracks)
            if isinstance(content, (tuple, list)):
                if len(content) not in (1, 2):
                    raise ValueError(f"{path.name} holds {len(content)} items; expected (pred_tracks, pred_visibility)")
                tracks_array = content[0]
                visibility_array = content[1] if len(content) == 2 else None
            else:
                tracks_array = content
    tracks_array = coordinate_tensor(tracks_array, tracks_what)
    check_tracks(tuple(tracks_array.shape))
    if tracks_array.shape[-1] == 3:
        tracks_array, embedded = tracks_array[..., :2], tracks_array[..., 2]
        visibility_array = embedded if visibility_array is None else visibility_array
    if visibility_path is not None:
        visibility_array = _load_visibility_file(Path(visibility_path), batch_index)
    if width is None or height is None:
        raise ValueError(f"{path.name} does not record the video size; pass width and height")
    try:
        return tracks_from_cotracker(
            tracks_array, visibility_array, width=width, height=height,
            fps=DEFAULT_FPS if fps is None else fps, batch_index=batch_index,
        )
    except ValueError as error:
        raise ValueError(f"{path.name}: {error}") from None


def _visibility_check(path: Path, batch_index: int):
    def check(shape: tuple[int, ...]) -> None:
        check_visibility_shape(shape, f"CoTracker visibility in {path.name}", batch_index)
    return check


def _load_visibility_file(path: Path, batch_index: int) -> Any:
    check = _visibility_check(path, batch_index)
    with open_array_file(path) as source:
        if not source.is_mapping:
            return read_array(source, check_shape=check)
        key = source.first_present(_VISIBILITY_KEYS)
        if key is None:
            raise ValueError(f"{path.name} has none of the keys {', '.join(_VISIBILITY_KEYS)}")
        return read_array(source, key, check_shape=check)


def _scalar_from(source: ArrayFile, key: str, given: Any) -> Any:
    if given is not None or key not in source.names:
        return given

    def check(shape: tuple[int, ...]) -> None:
        if math.prod(shape) != 1:
            raise ValueError(f"'{key}' in {source.path.name} must be a single number, got shape {list(shape)}")

    value = numeric_tensor(read_array(source, key, check_shape=check), f"'{key}' in {source.path.name}")
    if value.numel() != 1 or value.dtype == torch.bool:
        raise ValueError(f"'{key}' in {source.path.name} must be a single number")
    value = value.reshape(()).item()
    return int(value) if key in ("width", "height") and float(value).is_integer() else value


def read(path: str | os.PathLike[str], options: ReadOptions) -> TrackSet:
    """Registry entry point: the options win over what the file records."""
    return load_cotracker_tracks(
        path, width=options.width, height=options.height, fps=options.fps, visibility_path=options.visibility_path
    )
