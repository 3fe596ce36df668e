"""The point-track data model shared by importers, geometry and the track head.

A :class:`TrackSet` holds ``N`` point tracks sampled on ``T`` frames:

- ``points``: float32 ``[T, N, 2]`` pixel coordinates ``(x, y)`` in a frame of
  ``width`` x ``height`` pixels. Coordinates are continuous: ``0`` is the left
  (top) edge of the frame and ``width`` (``height``) the right (bottom) edge, so
  the normalised coordinate used by the track head is ``x / width``.
- ``visibility``: bool ``[T, N]``; ``False`` marks a point that is occluded, has
  left the frame or is simply not specified on that frame.
- ``specified``: bool ``[T, N]``, a superset of ``visibility``: where the point is
  known. A specified point that is not visible is *occluded* (hidden but there);
  one that is neither is *unspecified* (nobody said anything). By default only
  visible points are specified, the meaning every public track head was trained
  with; sources that know occlusion (ComfyUI's core ``TRACKS``, point trackers,
  the synthetic clips) mark their hidden points specified. Positions of
  unspecified points carry no meaning.
- ``fps``: frames per second; frame ``i`` is at time ``i / fps`` seconds.
- ``track_ids``: int64 ``[N]`` unique, stable identities. The track head embeds
  these ids, so a track must keep its id for a whole session.
- ``static``: bool ``[N]``; static tracks are anchors that pin a region and keep
  the same position on every frame.

Limits, enforced with a ``ValueError`` naming the problem:

- at most :data:`MAX_TRACKS` tracks, :data:`MAX_FRAMES` frames and
  :data:`MAX_TRACK_POINTS` points in all, at least one track and one frame; frame
  sizes up to :data:`MAX_FRAME_SIZE` pixels;
- every coordinate must be a finite real number (not complex, not boolean);
- visibility and static flags are boolean or exactly 0/1; anything else (0.3, -1,
  NaN) is an error, not a guess (:func:`visibility_mask`, which every importer uses);
- arrays are dense CPU data: sparse, meta, quantized and nested tensors are refused
  (:func:`numeric_tensor`);
- a *visible* point may lie outside the frame (the track head clamps it to the
  border, as during training) but not by more than :data:`OUT_OF_FRAME_MARGIN`
  frame sizes; such points almost always mean wrong units (normalised vs pixels).
  Positions of *invisible* points are clamped into that band instead.
- ids lie in ``[0, MAX_TRACK_ID]`` so that they are exact in float32.

ComfyUI's core ``TRACKS`` type is a plain dict ``{"track_path": float [T, N, 2]
pixels, "track_visibility": bool [T, N]}`` (see ``WanMoveTracksFromCoords``).
Its visibility marks occlusion: a point of ``track_path`` that is not visible is
occluded, and an absent one (NaN coordinates, not visible) is unspecified.
Core nodes only read those two keys, so :meth:`TrackSet.to_comfy_tracks` adds the
frame size, fps, ids, static and specified flags under the extra key
:data:`COMFY_TRACKS_META_KEY`; nodes that rebuild the dict (e.g.
``WanMoveConcatTrack``) drop it, and :meth:`TrackSet.from_comfy_tracks` then falls
back to the values it is given.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

MAX_TRACKS = 10_000
MAX_FRAMES = 10_000
MAX_TRACK_POINTS = 2**24  # frames x tracks, bounds memory (128 MiB of float32 coordinates)
MAX_FRAME_SIZE = 16_384
MAX_FPS = 1_000.0
MAX_TRACK_ID = 2**24 - 1
# Live edits (POST /motionstream/live_tracks) arrive while a stream runs, on the server's process,
# so they are held to less than a stored document: decoding the largest body takes ~10 ms (that
# step holds the GIL) and reading the largest document a few hundred ms on a worker thread.
MAX_LIVE_REQUEST_BYTES = 2**20
MAX_LIVE_TRACKS = 1_000
MAX_LIVE_KEYFRAMES = 20_000  # over all tracks of one edit
OUT_OF_FRAME_MARGIN = 1.0
DEFAULT_FPS = 16.0
COMFY_TRACKS_META_KEY = "motionstream"

# Tolerance, in pixels, for "static tracks do not move".
_STATIC_TOLERANCE_PX = 1e-3


# Dtypes kept as they are; other real dtypes are widened first (exactly, except uint64 past 2**53,
# which no limit admits anyway), so later checks run on dtypes every torch version supports.
_PLAIN_DTYPES = (torch.bool, torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64,
                 torch.float16, torch.float32, torch.float64)


def numeric_tensor(value: Any, name: str) -> torch.Tensor:
    """``value`` as a dense CPU tensor of real numbers (bool, integer or floating point).

    Takes tensors, numpy arrays, numpy scalars and nested lists. Complex values, strings,
    objects, masked numpy arrays and sparse, meta, quantized or nested tensors are refused with
    a ``ValueError`` naming ``name``: converting them would silently drop data or fail later with
    another exception. Every importer goes through here (and :func:`coordinate_tensor` /
    :func:`visibility_mask`), so one rule holds for every entry point.
    """
    if isinstance(value, torch.Tensor):
        return _plain_tensor(value, name)
    if isinstance(value, np.ma.MaskedArray):
        raise ValueError(f"{name}: a masked array; fill the masked entries first (numpy.ma.filled)")
    if isinstance(value, (str, bytes, bytearray)):
        raise ValueError(f"{name} must be an array of numbers, got a {type(value).__name__}")
    try:
        array = np.asarray(value)
    except (TypeError, ValueError, OverflowError, RecursionError) as error:
        raise ValueError(f"{name} is not an array: {error}") from None
    if array.dtype.kind == "c":
        raise ValueError(f"{name}: complex values (dtype {array.dtype}) are not accepted, only real numbers")
    if array.dtype.kind not in "biuf" or array.dtype.fields is not None:
        raise ValueError(f"{name} must be numeric, got dtype {array.dtype}")
    if array.dtype.kind == "u" and array.itemsize > 1:
        array = array.astype(np.int64 if array.itemsize < 8 else np.float64)
    elif array.dtype.kind == "f" and array.itemsize not in (2, 4, 8):  # long double
        array = array.astype(np.float64)
    elif not array.dtype.isnative:
        array = array.astype(array.dtype.newbyteorder("="))
    if not (array.flags.c_contiguous and array.flags.writeable):
        array = array.copy(order="C")  # (np.ascontiguousarray would turn a scalar into shape [1])
    return torch.from_numpy(array)


def _plain_tensor(tensor: torch.Tensor, name: str) -> torch.Tensor:
    if tensor.is_nested:
        raise ValueError(f"{name}: a nested tensor is not accepted; pass a regular one")
    if tensor.layout != torch.strided:
        raise ValueError(f"{name}: a sparse tensor ({tensor.layout}) is not accepted; convert it with .to_dense()")
    if tensor.is_meta:
        raise ValueError(f"{name}: a meta tensor is not accepted (it has a shape but no values)")
    if tensor.is_quantized:
        raise ValueError(f"{name}: a quantized tensor is not accepted; dequantize it first")
    if tensor.dtype.is_complex:
        raise ValueError(f"{name}: complex values (dtype {tensor.dtype}) are not accepted, only real numbers")
    tensor = tensor.detach()
    if tensor.device.type != "cpu":
        tensor = tensor.cpu()
    if tensor.dtype in _PLAIN_DTYPES:
        return tensor
    if tensor.dtype.is_floating_point:  # bfloat16, float8 variants
        return tensor.to(torch.float32)
    if tensor.dtype in (torch.uint16, torch.uint32):
        return tensor.to(torch.int64)
    if tensor.dtype == torch.uint64:
        return tensor.to(torch.float64)
    raise ValueError(f"{name} must be numeric, got dtype {tensor.dtype}")


def coordinate_tensor(value: Any, name: str) -> torch.Tensor:
    """:func:`numeric_tensor` for coordinates: booleans are refused (``True`` is not a position)."""
    tensor = numeric_tensor(value, name)
    if tensor.dtype == torch.bool:
        raise ValueError(f"{name}: booleans are not coordinates; pass numbers (pixels)")
    return tensor


def visibility_mask(value: Any, shape: tuple[int, ...], name: str = "visibility") -> torch.Tensor:
    """A bool tensor of ``shape`` from flags that are boolean or exactly 0/1.

    The one visibility rule of every importer: anything else (0.3, -1, 2, NaN) is a
    ``ValueError`` naming ``name``, the value and where it is, never a guess. (A tracker's
    visibility *confidence* must be thresholded by the caller, who knows the right threshold.)
    """
    tensor = numeric_tensor(value, name)
    if tuple(tensor.shape) != tuple(shape):
        raise ValueError(f"{name} must have shape {list(shape)}, got {list(tensor.shape)}")
    if tensor.dtype == torch.bool:
        return tensor.clone()
    valid = (tensor == 0) | (tensor == 1)  # NaN is neither
    if not bool(valid.all()):
        where = tuple(int(i) for i in (~valid).nonzero()[0])
        found = tensor[where].item()
        if len(where) == 2:
            place = f"frame {where[0]}, track {where[1]}"
        elif len(where) == 1:
            place = f"track {where[0]}"
        else:
            place = f"index {list(where)}"
        raise ValueError(
            f"{name} must be boolean or exactly 0/1, got {found:g} at {place} "
            f"({int((~valid).sum())} such values)"
        )
    return tensor != 0


def _positive_int(value: Any, name: str, maximum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    value = int(value)
    if not 1 <= value <= maximum:
        raise ValueError(f"{name} must be in [1, {maximum}], got {value}")
    return value


def _positive_float(value: Any, name: str, maximum: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"{name} must be a number, got {value!r}")
    try:
        value = float(value)
    except OverflowError:
        raise ValueError(f"{name} is out of range") from None
    if not (math.isfinite(value) and 0.0 < value <= maximum):
        raise ValueError(f"{name} must be in (0, {maximum}], got {value}")
    return value


@dataclasses.dataclass(frozen=True, eq=False)
class TrackSet:
    """Point tracks in pixel coordinates with frame size, fps, ids and static flags.

    Construction validates and normalises the inputs (see the module docstring);
    arrays may be tensors, numpy arrays or nested lists. Instances are immutable;
    derive new ones with :func:`dataclasses.replace` or the methods below.
    """

    points: torch.Tensor
    visibility: torch.Tensor
    width: int
    height: int
    fps: float = DEFAULT_FPS
    track_ids: torch.Tensor | None = None
    static: torch.Tensor | None = None
    specified: torch.Tensor | None = None

    def __post_init__(self) -> None:
        width = _positive_int(self.width, "width", MAX_FRAME_SIZE)
        height = _positive_int(self.height, "height", MAX_FRAME_SIZE)
        fps = _positive_float(self.fps, "fps", MAX_FPS)

        points = coordinate_tensor(self.points, "points")
        if points.ndim != 3 or points.shape[-1] != 2:
            raise ValueError(f"points must have shape [frames, tracks, 2], got {list(points.shape)}")
        num_frames, num_tracks = int(points.shape[0]), int(points.shape[1])
        if num_frames == 0:
            raise ValueError("tracks have no frames")
        if num_tracks == 0:
            raise ValueError("there are no tracks")
        if num_frames > MAX_FRAMES:
            raise ValueError(f"too many frames: {num_frames} (the limit is {MAX_FRAMES})")
        if num_tracks > MAX_TRACKS:
            raise ValueError(f"too many tracks: {num_tracks} (the limit is {MAX_TRACKS})")
        if num_frames * num_tracks > MAX_TRACK_POINTS:
            raise ValueError(
                f"{num_frames} frames x {num_tracks} tracks exceed the limit of {MAX_TRACK_POINTS} points"
            )
        # Checks run in float64 so huge values are reported as such, not as float32 overflow.
        points = points.to(torch.float64)
        not_finite = ~torch.isfinite(points)
        if bool(not_finite.any()):
            frame, track, _ = (int(i) for i in not_finite.nonzero()[0])
            raise ValueError(
                f"points contain {int(not_finite.sum())} NaN or infinite values "
                f"(first at frame {frame}, track {track})"
            )
        visibility = visibility_mask(self.visibility, (num_frames, num_tracks))
        points = _limit_to_frame_band(points, visibility, width, height).to(torch.float32)
        if self.specified is None:
            specified = visibility.clone()
        else:
            specified = visibility_mask(self.specified, (num_frames, num_tracks), name="specified")
            unspecified_visible = visibility & ~specified
            if bool(unspecified_visible.any()):
                frame, track = (int(i) for i in unspecified_visible.nonzero()[0])
                raise ValueError(f"a visible point must be specified (frame {frame}, track {track} is visible but not specified)")

        if self.track_ids is None:
            track_ids = torch.arange(num_tracks, dtype=torch.int64)
        else:
            track_ids = numeric_tensor(self.track_ids, "track_ids")
            if tuple(track_ids.shape) != (num_tracks,):
                raise ValueError(f"track_ids must have shape [{num_tracks}], got {list(track_ids.shape)}")
            if track_ids.dtype == torch.bool:
                raise ValueError("track_ids must be integers, got booleans")
            if track_ids.is_floating_point() and not bool((track_ids == track_ids.round()).all()):
                raise ValueError("track_ids must be integers")
            track_ids = track_ids.to(torch.float64)
            if not bool(((track_ids >= 0) & (track_ids <= MAX_TRACK_ID)).all()):
                raise ValueError(f"track_ids must lie in [0, {MAX_TRACK_ID}]")
            track_ids = track_ids.to(torch.int64)
            if int(torch.unique(track_ids).numel()) != num_tracks:
                raise ValueError("track_ids must be unique")

        if self.static is None:
            static = torch.zeros(num_tracks, dtype=torch.bool)
        else:
            static = visibility_mask(self.static, (num_tracks,), name="static")
        if bool(static.any()):
            spread = (points[:, static] - points[:1, static]).abs().amax()
            if float(spread) > _STATIC_TOLERANCE_PX:
                raise ValueError("static tracks must keep the same position on every frame")

        object.__setattr__(self, "width", width)
        object.__setattr__(self, "height", height)
        object.__setattr__(self, "fps", fps)
        object.__setattr__(self, "points", points.contiguous())
        object.__setattr__(self, "visibility", visibility.contiguous())
        object.__setattr__(self, "track_ids", track_ids.contiguous())
        object.__setattr__(self, "static", static.contiguous())
        object.__setattr__(self, "specified", specified.contiguous())

    @property
    def num_frames(self) -> int:
        return int(self.points.shape[0])

    @property
    def num_tracks(self) -> int:
        return int(self.points.shape[1])

    @property
    def occluded(self) -> torch.Tensor:
        """Bool ``[T, N]``: specified but not visible (hidden, yet known to be there)."""
        return self.specified & ~self.visibility

    @property
    def duration(self) -> float:
        """Seconds from the first to the last frame."""
        return (self.num_frames - 1) / self.fps

    def frame_times(self) -> torch.Tensor:
        """Float64 ``[T]`` time of every frame in seconds."""
        return torch.arange(self.num_frames, dtype=torch.float64) / self.fps

    def normalized_points(self) -> torch.Tensor:
        """``[T, N, 2]`` coordinates divided by the frame size (the frame is ``[0, 1]``)."""
        scale = torch.tensor([self.width, self.height], dtype=torch.float32)
        return self.points / scale

    @classmethod
    def from_normalized(
        cls,
        points: Any,
        visibility: Any,
        width: int,
        height: int,
        fps: float = DEFAULT_FPS,
        track_ids: Any = None,
        static: Any = None,
        specified: Any = None,
    ) -> TrackSet:
        """Build from ``[T, N, 2]`` coordinates normalised to the frame (``[0, 1]``)."""
        normalized = coordinate_tensor(points, "points")
        if normalized.ndim != 3 or normalized.shape[-1] != 2:
            raise ValueError(f"points must have shape [frames, tracks, 2], got {list(normalized.shape)}")
        normalized = normalized.to(torch.float64)
        width = _positive_int(width, "width", MAX_FRAME_SIZE)
        height = _positive_int(height, "height", MAX_FRAME_SIZE)
        pixels = normalized * torch.tensor([width, height], dtype=torch.float64)
        return cls(pixels, visibility, width, height, fps, track_ids, static, specified)

    def select(self, indices: Sequence[int] | torch.Tensor) -> TrackSet:
        """The tracks at ``indices`` (ids and flags travel with them)."""
        index = torch.as_tensor(indices, dtype=torch.int64).reshape(-1)
        return dataclasses.replace(
            self,
            points=self.points[:, index],
            visibility=self.visibility[:, index],
            track_ids=self.track_ids[index],
            static=self.static[index],
            specified=self.specified[:, index],
        )

    def concat(self, other: TrackSet) -> TrackSet:
        """Tracks of both sets; they must share frame size, fps and frame count, not ids."""
        if (self.width, self.height) != (other.width, other.height):
            raise ValueError(
                f"frame sizes differ: {self.width}x{self.height} vs {other.width}x{other.height}"
            )
        if self.fps != other.fps or self.num_frames != other.num_frames:
            raise ValueError("track sets must share fps and frame count; resample one of them first")
        return dataclasses.replace(
            self,
            points=torch.cat([self.points, other.points], dim=1),
            visibility=torch.cat([self.visibility, other.visibility], dim=1),
            track_ids=torch.cat([self.track_ids, other.track_ids]),
            static=torch.cat([self.static, other.static]),
            specified=torch.cat([self.specified, other.specified], dim=1),
        )

    def to_comfy_tracks(self) -> dict[str, Any]:
        """ComfyUI's core ``TRACKS`` dict, with this set's metadata under an extra key."""
        return {
            "track_path": self.points.clone(),
            "track_visibility": self.visibility.clone(),
            COMFY_TRACKS_META_KEY: {
                "width": self.width,
                "height": self.height,
                "fps": self.fps,
                "track_ids": self.track_ids.clone(),
                "static": self.static.clone(),
                "specified": self.specified.clone(),
            },
        }

    @classmethod
    def from_comfy_tracks(
        cls,
        tracks: Mapping[str, Any],
        *,
        width: int | None = None,
        height: int | None = None,
        fps: float | None = None,
    ) -> TrackSet:
        """Read ComfyUI's core ``TRACKS`` dict.

        Metadata written by :meth:`to_comfy_tracks` wins; ``width``, ``height`` and
        ``fps`` are used when the dict has none (``fps`` then defaults to
        :data:`DEFAULT_FPS`). A missing ``track_visibility`` means every point is
        visible, and a ``[T, 1]`` visibility (what ``WanMoveTracksFromCoords``
        builds from a mask) applies to every track, as in core. Points of the path
        that are not visible are occluded (specified), unless they are absent: NaN
        coordinates on a frame where the point is not visible mean unspecified. The
        metadata's ``specified`` wins.
        """
        if not isinstance(tracks, Mapping):
            raise ValueError(f"TRACKS must be a dict, got {'None' if tracks is None else type(tracks).__name__}")
        if "track_path" not in tracks:
            raise ValueError("TRACKS dict has no 'track_path'")
        path = coordinate_tensor(tracks["track_path"], "track_path")
        if path.ndim != 3 or path.shape[-1] != 2:
            raise ValueError(f"track_path must have shape [frames, tracks, 2], got {list(path.shape)}")
        num_frames, num_tracks = int(path.shape[0]), int(path.shape[1])

        visibility = tracks.get("track_visibility")
        if visibility is None:
            visibility = torch.ones(num_frames, num_tracks, dtype=torch.bool)
        else:
            visibility = numeric_tensor(visibility, "track_visibility")
            if num_tracks != 1 and tuple(visibility.shape) == (num_frames, 1):
                visibility = visibility_mask(visibility, (num_frames, 1), "track_visibility")
                visibility = visibility.expand(num_frames, num_tracks)
            else:
                visibility = visibility_mask(visibility, (num_frames, num_tracks), "track_visibility")

        absent = torch.isnan(path.to(torch.float64)).any(dim=-1) & ~visibility
        if bool(absent.any()):
            path = torch.where(absent[..., None], torch.zeros((), dtype=path.dtype), path)
        specified = ~absent
        track_ids = static = None
        meta = tracks.get(COMFY_TRACKS_META_KEY)
        if meta is not None:
            if not isinstance(meta, Mapping):
                raise ValueError(f"TRACKS '{COMFY_TRACKS_META_KEY}' metadata must be a dict")
            width = meta.get("width", width)
            height = meta.get("height", height)
            fps = meta.get("fps", fps)
            track_ids = meta.get("track_ids")
            static = meta.get("static")
            if meta.get("specified") is not None:
                specified = visibility_mask(numeric_tensor(meta["specified"], "specified"), (num_frames, num_tracks),
                                            "TRACKS metadata 'specified'")
            for name, value in (("track_ids", track_ids), ("static", static)):
                count = None if value is None else numeric_tensor(value, name).numel()
                if count is not None and count != num_tracks:
                    raise ValueError(
                        f"TRACKS metadata has {count} {name} for {num_tracks} tracks; "
                        "the dict was edited without updating its metadata"
                    )
        if width is None or height is None:
            raise ValueError("TRACKS dict carries no frame size; pass width and height")
        return cls(
            path,
            visibility,
            width,
            height,
            DEFAULT_FPS if fps is None else fps,
            track_ids,
            static,
            specified,
        )


def _limit_to_frame_band(
    points: torch.Tensor, visibility: torch.Tensor, width: int, height: int
) -> torch.Tensor:
    size = torch.tensor([width, height], dtype=points.dtype)
    low, high = -OUT_OF_FRAME_MARGIN * size, (1.0 + OUT_OF_FRAME_MARGIN) * size
    outside = ((points < low) | (points > high)).any(dim=-1)
    far_visible = outside & visibility
    if bool(far_visible.any()):
        frame, track = (int(i) for i in far_visible.nonzero()[0])
        x, y = (float(v) for v in points[frame, track])
        raise ValueError(
            f"visible point ({x:g}, {y:g}) at frame {frame}, track {track} lies far outside "
            f"the {width}x{height} frame (more than {OUT_OF_FRAME_MARGIN:g} frame size away); "
            "are the coordinates in the right units?"
        )
    if bool(outside.any()):
        points = torch.maximum(torch.minimum(points, high), low)
    return points
