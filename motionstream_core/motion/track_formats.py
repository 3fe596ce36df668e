"""Importers and exporters between track files / strings and :class:`TrackSet`.

Every importer validates its input and raises ``ValueError`` with a message naming
the problem (bad JSON, wrong shapes, NaN/inf, no tracks, too many tracks, points
far outside the frame, ...). Frames a source does not cover are *invisible*; no
importer repeats a last known position as if it were visible.

Widget JSON (``motionstream-tracks``, version 1)
------------------------------------------------
Written by the pack's canvas widget and by :func:`tracks_to_widget_json`::

    {
      "format": "motionstream-tracks",
      "version": 1,
      "width": 832,               # frame size in pixels the tracks were drawn on
      "height": 480,
      "fps": 16,                  # optional, default 16; frame i is at time i / fps
      "duration": 5.0,            # optional, seconds; default: the last keyframe time
      "tracks": [
        {
          "id": 3,                # required, unique integer in [0, 2**24 - 1]
          "static": false,        # optional, default false
          "keyframes": [          # at least one
            {"t": 0.0, "x": 0.25, "y": 0.50},
            {"t": 1.5, "x": 0.40, "y": 0.55, "visible": false},
            {"t": 2.0, "x": 0.45, "y": 0.60}
          ]
        },
        {"id": 7, "static": true, "keyframes": [{"t": 0.0, "x": 0.8, "y": 0.2}]}
      ]
    }

- ``t`` is in seconds (so a document survives a change of fps); ``x`` and ``y``
  are normalised to the frame, ``0..1`` from the left/top to the right/bottom
  edge (pixel ``x * width``). Points may leave the frame by up to one frame size
  (``-1..2``); anything further is rejected.
- The clip has ``floor(duration * fps) + 1`` frames. Between two keyframes a track
  moves linearly; whether it is visible there is the ``visible`` flag (default
  ``true``) of the earlier keyframe, so ``"visible": false`` hides the point until
  the next keyframe.
- Before its first keyframe a track is invisible. After its last keyframe a
  moving track is invisible, while a static track (an anchor pinning a region)
  stays where it is, with the visibility of its last keyframe, until the end.
  All keyframes of a static track must share one position. (So a moving track
  with a single keyframe shows only on a frame at exactly that time; a point
  that should stay put is a static track.)
- Unknown keys are ignored, so later versions may add fields; a different
  ``version`` is rejected.

Other formats
-------------
- KJNodes ``SplineEditor`` ``coord_str``: a JSON list of ``{"x", "y"}`` pixel
  points (one point per frame), or a list of such lists (one per spline/track).
  Python-style single quotes, as older KJNodes versions print, are accepted.
- ATI / ComfyUI ``WanTrackToVideo`` JSON: the same point lists (optionally nested
  once more for a batch of one); ATI samples tracks at 24 fps (ComfyUI stretches
  its 121 samples over the whole clip), see :data:`ATI_FPS`.
- ComfyUI's core ``TRACKS`` dict, see :meth:`TrackSet.from_comfy_tracks`.
- CoTracker results ``pred_tracks [B, T, N, 2]`` / ``pred_visibility [B, T, N]``
  (pixel coordinates of the tracked video) in ``.npz``, ``.npy`` or ``.pt`` files;
  ``.pt`` files are read with ``torch.load(weights_only=True)`` only.
- Wan-Move ``*_tracks.npy`` ``[1, T, N, 2]`` / ``*_visibility.npy`` ``[1, T, N]``
  pairs (pixel coordinates of the input image; the leading batch axis is optional).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .tracks import (
    DEFAULT_FPS,
    MAX_FPS,
    MAX_FRAME_SIZE,
    MAX_FRAMES,
    MAX_TRACK_ID,
    MAX_TRACK_POINTS,
    MAX_TRACKS,
    OUT_OF_FRAME_MARGIN,
    TrackSet,
)

WIDGET_FORMAT = "motionstream-tracks"
WIDGET_VERSION = 1
ATI_FPS = 24.0
MAX_JSON_CHARS = 64 * 1024 * 1024

# Two times closer than this (seconds) are the same instant.
_TIME_EPSILON = 1e-6


# ---------------------------------------------------------------------------
# Shared parsing helpers
# ---------------------------------------------------------------------------


def _load_json(source: str | bytes | bytearray, what: str, allow_single_quotes: bool = False) -> Any:
    if isinstance(source, (bytes, bytearray)):
        try:
            source = bytes(source).decode("utf-8")
        except UnicodeDecodeError:
            raise ValueError(f"{what} is not valid UTF-8 text") from None
    if not isinstance(source, str):
        raise ValueError(f"{what} must be a string, got {type(source).__name__}")
    if len(source) > MAX_JSON_CHARS:
        raise ValueError(f"{what} is larger than {MAX_JSON_CHARS} characters")
    if not source.strip():
        raise ValueError(f"{what} is empty")
    try:
        return json.loads(source)
    except RecursionError:
        raise ValueError(f"{what} is nested too deeply") from None
    except json.JSONDecodeError as error:
        if allow_single_quotes and "'" in source:
            return _load_json(source.replace("'", '"'), what)
        raise ValueError(f"{what} is not valid JSON: {error}") from None


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{what} must be a number, got {_describe(value)}")
    try:
        number = float(value)
    except OverflowError:
        raise ValueError(f"{what} is out of range") from None
    if not math.isfinite(number):
        raise ValueError(f"{what} must be finite, got {number}")
    return number


def _integer(value: Any, what: str, low: int, high: int) -> int:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{what} must be an integer, got {_describe(value)}")
    if not low <= value <= high:
        raise ValueError(f"{what} must be in [{low}, {high}], got {value}")
    return value


def _boolean(value: Any, what: str) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{what} must be true or false, got {_describe(value)}")
    return value


def _describe(value: Any) -> str:
    try:
        text = repr(value)
    except (RecursionError, ValueError):  # absurdly deep nesting, ints past Python's digit limit
        return f"a {type(value).__name__}"
    return text if len(text) <= 40 else text[:37] + "..."


def _check_track_count(count: int) -> None:
    if count == 0:
        raise ValueError("no tracks")
    if count > MAX_TRACKS:
        raise ValueError(f"too many tracks: {count} (the limit is {MAX_TRACKS})")


def _check_frame_count(num_frames: int, num_tracks: int) -> None:
    if num_frames > MAX_FRAMES:
        raise ValueError(f"too many frames: {num_frames} (the limit is {MAX_FRAMES})")
    if num_frames * num_tracks > MAX_TRACK_POINTS:
        raise ValueError(
            f"{num_frames} frames x {num_tracks} tracks exceed the limit of {MAX_TRACK_POINTS} points"
        )


# ---------------------------------------------------------------------------
# Widget JSON
# ---------------------------------------------------------------------------


def tracks_from_widget_json(source: str | bytes | Mapping[str, Any]) -> TrackSet:
    """Read a ``motionstream-tracks`` document (a JSON string or an already parsed dict)."""
    document = source if isinstance(source, Mapping) else _load_json(source, "widget JSON")
    if not isinstance(document, Mapping):
        raise ValueError(f"widget JSON must be an object, got {_describe(document)}")
    if document.get("format") != WIDGET_FORMAT:
        raise ValueError(f"not a {WIDGET_FORMAT!r} document (format is {_describe(document.get('format'))})")
    version = document.get("version")
    if isinstance(version, bool) or not isinstance(version, int):
        raise ValueError(f"widget JSON version must be an integer, got {_describe(version)}")
    if version != WIDGET_VERSION:
        raise ValueError(f"unsupported widget JSON version {version} (this build reads {WIDGET_VERSION})")

    width = _integer(document.get("width"), "width", 1, MAX_FRAME_SIZE)
    height = _integer(document.get("height"), "height", 1, MAX_FRAME_SIZE)
    fps = _number(document.get("fps", DEFAULT_FPS), "fps")
    if not 0.0 < fps <= MAX_FPS:
        raise ValueError(f"fps must be in (0, {MAX_FPS}], got {fps}")

    raw_tracks = document.get("tracks")
    if not isinstance(raw_tracks, list):
        raise ValueError(f"'tracks' must be a list, got {_describe(raw_tracks)}")
    _check_track_count(len(raw_tracks))
    tracks = [_parse_widget_track(raw, index) for index, raw in enumerate(raw_tracks)]
    ids = [track[0] for track in tracks]
    if len(set(ids)) != len(ids):
        raise ValueError("track ids must be unique")

    if document.get("duration") is None:
        duration = max(float(track[2][-1]) for track in tracks)
    else:
        duration = _number(document["duration"], "duration")
        if duration < 0:
            raise ValueError(f"duration must not be negative, got {duration}")
    frames_float = duration * fps
    if frames_float >= MAX_FRAMES:
        raise ValueError(f"too many frames: {duration} s at {fps} fps (the limit is {MAX_FRAMES})")
    num_frames = math.floor(frames_float + 1e-6) + 1
    _check_frame_count(num_frames, len(tracks))

    frame_times = np.arange(num_frames, dtype=np.float64) / fps
    points = np.empty((num_frames, len(tracks), 2), dtype=np.float64)
    visibility = np.empty((num_frames, len(tracks)), dtype=bool)
    for column, (_, static, times, positions, visible) in enumerate(tracks):
        points[:, column], visibility[:, column] = _sample_keyframes(
            frame_times, times, positions, visible, hold_after_end=static
        )
    return TrackSet.from_normalized(
        points,
        visibility,
        width,
        height,
        fps,
        track_ids=ids,
        static=[track[1] for track in tracks],
    )


def _parse_widget_track(raw: Any, index: int) -> tuple[int, bool, np.ndarray, np.ndarray, np.ndarray]:
    if not isinstance(raw, Mapping):
        raise ValueError(f"track {index} must be an object, got {_describe(raw)}")
    track_id = _integer(raw.get("id"), f"id of track {index}", 0, MAX_TRACK_ID)
    static = _boolean(raw.get("static", False), f"'static' of track {track_id}")
    keyframes = raw.get("keyframes")
    if not isinstance(keyframes, list) or not keyframes:
        raise ValueError(f"track {track_id} needs a non-empty 'keyframes' list")
    low, high = -OUT_OF_FRAME_MARGIN, 1.0 + OUT_OF_FRAME_MARGIN
    rows = []
    for number, keyframe in enumerate(keyframes):
        where = f"keyframe {number} of track {track_id}"
        if not isinstance(keyframe, Mapping):
            raise ValueError(f"{where} must be an object, got {_describe(keyframe)}")
        time = _number(keyframe.get("t"), f"'t' of {where}")
        if time < 0:
            raise ValueError(f"'t' of {where} must not be negative, got {time}")
        x = _number(keyframe.get("x"), f"'x' of {where}")
        y = _number(keyframe.get("y"), f"'y' of {where}")
        if not (low <= x <= high and low <= y <= high):
            raise ValueError(
                f"{where} at ({x:g}, {y:g}) lies far outside the frame; "
                f"normalised coordinates must be in [{low:g}, {high:g}]"
            )
        visible = _boolean(keyframe.get("visible", True), f"'visible' of {where}")
        rows.append((time, x, y, visible))
    rows.sort(key=lambda row: row[0])
    times = np.array([row[0] for row in rows], dtype=np.float64)
    if len(times) > 1 and float(np.diff(times).min()) < _TIME_EPSILON:
        raise ValueError(f"track {track_id} has two keyframes at the same time")
    positions = np.array([(row[1], row[2]) for row in rows], dtype=np.float64)
    if static and not np.all(positions == positions[0]):
        raise ValueError(f"static track {track_id} must not move (all keyframes need the same x and y)")
    visible = np.array([row[3] for row in rows], dtype=bool)
    return track_id, static, times, positions, visible


def _sample_keyframes(
    frame_times: np.ndarray,
    times: np.ndarray,
    positions: np.ndarray,
    visible: np.ndarray,
    hold_after_end: bool,
) -> tuple[np.ndarray, np.ndarray]:
    last = len(times) - 1
    segment = np.searchsorted(times, frame_times + _TIME_EPSILON, side="right") - 1
    start = np.clip(segment, 0, last)
    end = np.minimum(start + 1, last)
    span = times[end] - times[start]
    weight = np.divide(frame_times - times[start], span, out=np.zeros_like(span), where=span > 0)
    weight = np.clip(weight, 0.0, 1.0)[:, None]
    sampled = positions[start] + (positions[end] - positions[start]) * weight
    before = segment < 0
    after = frame_times > times[last] + _TIME_EPSILON
    sampled_visible = visible[start] & ~before
    if not hold_after_end:
        sampled_visible &= ~after
    return sampled, sampled_visible


def tracks_to_widget_dict(tracks: TrackSet) -> dict[str, Any]:
    """The widget document for ``tracks`` (one keyframe per frame for moving tracks)."""
    size = torch.tensor([tracks.width, tracks.height], dtype=torch.float64)
    normalized = tracks.points.to(torch.float64) / size
    visibility = tracks.visibility
    times = [index / tracks.fps for index in range(tracks.num_frames)]
    document_tracks = []
    for column in range(tracks.num_tracks):
        static = bool(tracks.static[column])
        if static:
            # Position is constant, so a keyframe is only needed where visibility changes.
            changes = [0] + [
                index
                for index in range(1, tracks.num_frames)
                if bool(visibility[index, column]) != bool(visibility[index - 1, column])
            ]
        else:
            changes = range(tracks.num_frames)
        keyframes = []
        for index in changes:
            keyframe = {
                "t": times[index],
                "x": float(normalized[index, column, 0]),
                "y": float(normalized[index, column, 1]),
            }
            if not bool(visibility[index, column]):
                keyframe["visible"] = False
            keyframes.append(keyframe)
        document_tracks.append(
            {"id": int(tracks.track_ids[column]), "static": static, "keyframes": keyframes}
        )
    return {
        "format": WIDGET_FORMAT,
        "version": WIDGET_VERSION,
        "width": tracks.width,
        "height": tracks.height,
        "fps": tracks.fps,
        "duration": tracks.duration,
        "tracks": document_tracks,
    }


def tracks_to_widget_json(tracks: TrackSet) -> str:
    """:func:`tracks_to_widget_dict` serialised as compact JSON."""
    return json.dumps(tracks_to_widget_dict(tracks), separators=(",", ":"))


# ---------------------------------------------------------------------------
# KJNodes SplineEditor and ATI / WanTrackToVideo point lists
# ---------------------------------------------------------------------------


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
    return _tracks_from_point_lists(
        _parse_point_lists(coord_str, "SplineEditor coordinates", allow_batch=False),
        width=width,
        height=height,
        fps=fps,
    )


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
    return _tracks_from_point_lists(
        _parse_point_lists(tracks_json, "ATI track JSON", allow_batch=True),
        width=width,
        height=height,
        fps=fps,
    )


def _parse_point_lists(source: Any, what: str, allow_batch: bool) -> list[list[tuple[float, float]]]:
    if isinstance(source, (str, bytes, bytearray)):
        data = _load_json(source, what, allow_single_quotes=True)
    elif isinstance(source, Sequence) and source and all(isinstance(item, str) for item in source):
        # ComfyUI also passes a list of JSON strings, one track each.
        data = [_load_json(item, what, allow_single_quotes=True) for item in source]
    else:
        data = source
    if not isinstance(data, list):
        raise ValueError(f"{what} must be a list of points or a list of tracks, got {_describe(data)}")
    if not data:
        raise ValueError(f"{what} contains no tracks")
    if isinstance(data[0], Mapping):
        data = [data]
    elif allow_batch and isinstance(data[0], list) and data[0] and isinstance(data[0][0], list):
        if len(data) != 1:
            raise ValueError(f"{what} holds a batch of {len(data)} track sets; only one is supported")
        data = data[0]
    _check_track_count(len(data))
    tracks = []
    for index, track in enumerate(data):
        if not isinstance(track, list):
            raise ValueError(f"track {index} of {what} must be a list of points, got {_describe(track)}")
        if not track:
            raise ValueError(f"track {index} of {what} has no points")
        if len(track) > MAX_FRAMES:
            raise ValueError(f"track {index} of {what} has too many points (the limit is {MAX_FRAMES})")
        points = []
        for number, point in enumerate(track):
            where = f"point {number} of track {index}"
            if not isinstance(point, Mapping):
                raise ValueError(f"{where} must be an object with x and y, got {_describe(point)}")
            points.append((_number(point.get("x"), f"x of {where}"), _number(point.get("y"), f"y of {where}")))
        tracks.append(points)
    return tracks


def _tracks_from_point_lists(
    tracks: list[list[tuple[float, float]]], *, width: int, height: int, fps: float
) -> TrackSet:
    num_frames = max(len(track) for track in tracks)
    _check_frame_count(num_frames, len(tracks))
    points = np.empty((num_frames, len(tracks), 2), dtype=np.float64)
    visibility = np.zeros((num_frames, len(tracks)), dtype=bool)
    for column, track in enumerate(tracks):
        known = np.asarray(track, dtype=np.float64)
        points[: len(track), column] = known
        # Frames after the end are invisible; the position only keeps the array finite.
        points[len(track) :, column] = known[-1]
        visibility[: len(track), column] = True
    return TrackSet(points, visibility, width, height, fps)


# ---------------------------------------------------------------------------
# ComfyUI core TRACKS
# ---------------------------------------------------------------------------


def tracks_from_comfy(
    tracks: Mapping[str, Any],
    *,
    width: int | None = None,
    height: int | None = None,
    fps: float | None = None,
) -> TrackSet:
    """Read ComfyUI's core ``TRACKS`` dict; see :meth:`TrackSet.from_comfy_tracks`."""
    return TrackSet.from_comfy_tracks(tracks, width=width, height=height, fps=fps)


# ---------------------------------------------------------------------------
# CoTracker and Wan-Move arrays
# ---------------------------------------------------------------------------

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
    return _tracks_from_arrays(
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
    content = _read_array_file(Path(path))
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
        visibility_array = _read_array_file(Path(visibility_path))
    if width is None or height is None:
        raise ValueError(f"{path} does not record the video size; pass width and height")
    return tracks_from_cotracker(
        tracks_array, visibility_array, width=width, height=height,
        fps=DEFAULT_FPS if fps is None else fps, batch_index=batch_index,
    )


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
    return _tracks_from_arrays(
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
        _read_array_file(Path(tracks_path)),
        _read_array_file(Path(visibility_path)),
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


def _read_array_file(path: Path) -> Any:
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


def _tracks_from_arrays(
    tracks_array: Any,
    visibility_array: Any,
    *,
    width: int,
    height: int,
    fps: float,
    batch_index: int,
    what: str,
) -> TrackSet:
    tracks_array = _unbatch(_numeric_array(tracks_array, f"{what} tracks"), 3, batch_index, f"{what} tracks")
    if tracks_array.shape[-1] != 2:
        raise ValueError(f"{what} tracks must end in an (x, y) axis of size 2, got {list(tracks_array.shape)}")
    num_frames, num_tracks = tracks_array.shape[:2]
    _check_track_count(num_tracks)
    if num_frames == 0:
        raise ValueError(f"{what} tracks have no frames")
    _check_frame_count(num_frames, num_tracks)
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
