"""Time resampling of track sets and mapping through image resize / crop.

Resampling interpolates positions linearly between source frames. A resampled
point is visible (specified) only if the source frames on both sides of it are,
and times outside the source clip are unspecified; static tracks (anchors) instead keep
the visibility of the nearest source frame, so an anchor pins its region for the
whole generated clip.

The image transform follows ComfyUI's ``comfy.utils.common_upscale``: an
optional crop box in source pixels, then a resize to the target size. Points
that land outside the target frame become invisible.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch

from .tracks import MAX_FRAME_SIZE, MAX_FRAMES, TrackSet

# A source index this close to an integer is that frame exactly (no interpolation).
_INDEX_EPSILON = 1e-6


def resample_tracks(tracks: TrackSet, *, fps: float, num_frames: int, start_time: float = 0.0) -> TrackSet:
    """Sample ``tracks`` at ``num_frames`` frames of ``fps``, starting at ``start_time`` seconds."""
    fps = _positive(fps, "fps")
    num_frames = _frame_count(num_frames)
    if not math.isfinite(start_time):
        raise ValueError(f"start_time must be finite, got {start_time}")
    times = start_time + np.arange(num_frames, dtype=np.float64) / fps
    return _sample_at_source_indices(tracks, times * tracks.fps, fps)


def stretch_tracks(tracks: TrackSet, num_frames: int) -> TrackSet:
    """Spread the whole clip over ``num_frames`` frames, keeping its duration.

    This is how ComfyUI maps ATI's 121 samples onto a clip of any length; the
    returned set's fps changes accordingly.
    """
    num_frames = _frame_count(num_frames)
    if num_frames == 1 or tracks.num_frames == 1:
        indices = np.zeros(num_frames, dtype=np.float64)
        fps = tracks.fps
    else:
        indices = np.arange(num_frames, dtype=np.float64) * (tracks.num_frames - 1) / (num_frames - 1)
        fps = tracks.fps * (num_frames - 1) / (tracks.num_frames - 1)
    return _sample_at_source_indices(tracks, indices, fps)


def _sample_at_source_indices(tracks: TrackSet, indices: np.ndarray, fps: float) -> TrackSet:
    last = tracks.num_frames - 1
    nearest = np.round(indices)
    indices = np.where(np.abs(indices - nearest) < _INDEX_EPSILON, nearest, indices)
    inside = (indices >= 0) & (indices <= last)
    clamped = np.clip(indices, 0, last)
    lower = np.floor(clamped).astype(np.int64)
    upper = np.minimum(lower + 1, last)
    weight = clamped - lower

    points = tracks.points.to(torch.float64).numpy()
    sampled = points[lower] + (points[upper] - points[lower]) * weight[:, None, None]
    interpolated = (weight > 0)[:, None]
    held = inside[:, None] | tracks.static.numpy()[None, :]

    def sampled_flags(flags: np.ndarray) -> np.ndarray:
        return flags[lower] & (~interpolated | flags[upper]) & held

    return dataclasses.replace(
        tracks,
        points=torch.from_numpy(sampled.astype(np.float32)),
        visibility=torch.from_numpy(sampled_flags(tracks.visibility.numpy())),
        specified=torch.from_numpy(sampled_flags(tracks.specified.numpy())),
        fps=fps,
    )


def rescale_tracks(tracks: TrackSet, width: int, height: int) -> TrackSet:
    """The same tracks on the same picture shown at ``width`` x ``height`` pixels."""
    scale = torch.tensor([width / tracks.width, height / tracks.height], dtype=torch.float64)
    points = (tracks.points.to(torch.float64) * scale).to(torch.float32)
    return dataclasses.replace(tracks, points=points, width=width, height=height)


def hide_points_outside_frame(tracks: TrackSet) -> TrackSet:
    """Mark points outside ``[0, width] x [0, height]`` invisible."""
    size = torch.tensor([tracks.width, tracks.height], dtype=torch.float32)
    inside = ((tracks.points >= 0) & (tracks.points <= size)).all(dim=-1)
    return dataclasses.replace(tracks, visibility=tracks.visibility & inside)


@dataclasses.dataclass(frozen=True)
class ResizeCrop:
    """Crop a box out of a ``source`` image, then resize it to the ``target`` size.

    The crop box is in source pixels and defaults to the whole image.
    """

    source_width: int
    source_height: int
    target_width: int
    target_height: int
    crop_left: float = 0.0
    crop_top: float = 0.0
    crop_width: float | None = None
    crop_height: float | None = None

    def __post_init__(self) -> None:
        for name in ("source_width", "source_height", "target_width", "target_height"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_FRAME_SIZE:
                raise ValueError(f"{name} must be an integer in [1, {MAX_FRAME_SIZE}], got {value!r}")
        if self.crop_width is None:
            object.__setattr__(self, "crop_width", float(self.source_width - self.crop_left))
        if self.crop_height is None:
            object.__setattr__(self, "crop_height", float(self.source_height - self.crop_top))
        for name in ("crop_left", "crop_top", "crop_width", "crop_height"):
            if not math.isfinite(getattr(self, name)):
                raise ValueError(f"{name} must be finite")
        if self.crop_width <= 0 or self.crop_height <= 0:
            raise ValueError(f"the crop box must have a positive size, got {self.crop_width}x{self.crop_height}")

    @classmethod
    def comfy_upscale(
        cls, source_width: int, source_height: int, width: int, height: int, crop: str = "center"
    ) -> ResizeCrop:
        """The transform of ``comfy.utils.common_upscale(image, width, height, method, crop)``.

        ``crop="center"`` trims the longer side symmetrically (by a rounded pixel
        count, as ComfyUI does) to the target aspect ratio; ``"disabled"`` stretches.
        """
        if crop == "disabled":
            return cls(source_width, source_height, width, height)
        if crop != "center":
            raise ValueError(f"crop must be 'center' or 'disabled', got {crop!r}")
        source_aspect = source_width / source_height
        target_aspect = width / height
        left = top = 0
        if source_aspect > target_aspect:
            left = round((source_width - source_width * (target_aspect / source_aspect)) / 2)
        elif source_aspect < target_aspect:
            top = round((source_height - source_height * (source_aspect / target_aspect)) / 2)
        return cls(
            source_width, source_height, width, height,
            crop_left=float(left), crop_top=float(top),
            crop_width=float(source_width - 2 * left), crop_height=float(source_height - 2 * top),
        )

    def map_points(self, points: torch.Tensor) -> torch.Tensor:
        """Map ``[..., 2]`` source pixel coordinates to target pixel coordinates."""
        offset = torch.tensor([self.crop_left, self.crop_top], dtype=torch.float64)
        scale = torch.tensor(
            [self.target_width / self.crop_width, self.target_height / self.crop_height], dtype=torch.float64
        )
        return ((points.to(torch.float64) - offset) * scale).to(points.dtype)


def resize_crop_tracks(tracks: TrackSet, transform: ResizeCrop) -> TrackSet:
    """Map ``tracks`` through the resize / crop applied to their image.

    Tracks drawn on the source picture at another resolution are first rescaled
    to the transform's source size. Points that fall outside the target frame
    become invisible.
    """
    if (tracks.width, tracks.height) != (transform.source_width, transform.source_height):
        tracks = rescale_tracks(tracks, transform.source_width, transform.source_height)
    mapped = transform.map_points(tracks.points.to(torch.float64)).to(torch.float32)
    size = torch.tensor([transform.target_width, transform.target_height], dtype=torch.float32)
    inside = ((mapped >= 0) & (mapped <= size)).all(dim=-1)
    return dataclasses.replace(
        tracks,
        points=mapped,
        visibility=tracks.visibility & inside,
        width=transform.target_width,
        height=transform.target_height,
    )


def _positive(value: float, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a positive number, got {value!r}")
    return float(value)


def _frame_count(value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_FRAMES:
        raise ValueError(f"num_frames must be an integer in [1, {MAX_FRAMES}], got {value!r}")
    return value
