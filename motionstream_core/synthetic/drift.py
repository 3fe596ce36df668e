"""Drift of a long rollout against a reference frame (default: the first): colour and content.

- :func:`colour_drift`, frame ``t``: ``|mean_t - mean_ref| + |std_t - std_ref|``,
  the Euclidean norms (in ``[0, 1]`` intensity units) of the changes in the
  per-channel mean RGB and in the per-channel standard deviation. A uniform
  tint of +0.1 on one channel scores 0.1.
- :func:`content_drift`, frame ``t``: one minus the mean SSIM *structure* term
  ``(cov + C3) / (std_t * std_ref + C3)`` of luma (Rec. 601) in 11x11 Gaussian
  windows (sigma 1.5, ``C3 = 0.03**2 / 2``), over window centres at least 5
  pixels from the border. It ignores brightness and contrast (colour drift
  measures those) and is 0 for unchanged content, up to 2 for inverted content.

Given the clip, both drift scores leave out pixels near the *requested* sprite
positions on the reference frame and on frame ``t`` (and, for content drift,
SSIM windows touching them), so they measure the background only and are 0
on the ground-truth clip (up to float rounding, below 1e-6); a sprite
generated far off its track then counts as content drift too. Content drift
sees structure only: on a noise background a 1 px shift scores about 0.01 and
4 px about 0.13, while a smooth gradient has almost no structure to lose, so
there it mostly reacts to structure that appears (noise, artefacts). Each
returns a per-frame curve and its mean over the last quarter of the frames;
a frame on which sprites leave no background pixel to compare scores nan, and
the mean skips it.
"""

from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn.functional as F

from .clips import ClipMetadata, SyntheticClip
from .scoring_inputs import clip_metadata, frames_and_reference

_DRIFT_EXCLUSION_MARGIN_PX = 1.5
_SSIM_RADIUS = 5
_SSIM_SIGMA = 1.5
_SSIM_C3 = 0.03**2 / 2
_LUMA = (0.299, 0.587, 0.114)
_DRIFT_FRAME_CHUNK = 64


@dataclasses.dataclass(frozen=True, eq=False)
class DriftCurve:
    per_frame: torch.Tensor  # float64 [T]; 0 on the reference itself, nan where no pixel is compared
    summary: float  # mean over the last ceil(T / 4) frames, ignoring nan


def colour_drift(
    frames: torch.Tensor,
    reference_frame: torch.Tensor | None = None,
    *,
    clip: SyntheticClip | ClipMetadata | None = None,
) -> DriftCurve:
    """Change of global colour statistics from the reference (see the module docstring).

    With ``clip``, statistics cover background pixels only, and the reference
    is taken to show the clip's first-frame layout.
    """
    frames, reference = frames_and_reference(frames, reference_frame)
    num_frames, _, height, width = frames.shape
    included = _background_pixels(clip, num_frames, width, height, _DRIFT_EXCLUSION_MARGIN_PX)
    flat_reference = reference.reshape(3, -1).to(torch.float64).T  # [HW, 3]
    per_frame = torch.zeros(num_frames, dtype=torch.float64)
    for start in range(0, num_frames, _DRIFT_FRAME_CHUNK):
        stop = min(num_frames, start + _DRIFT_FRAME_CHUNK)
        chunk = frames[start:stop].reshape(stop - start, 3, -1).to(torch.float64)
        weights = included[start:stop].reshape(stop - start, -1).to(torch.float64)  # [t, HW]
        count = weights.sum(dim=1, keepdim=True)  # frames without included pixels give nan
        mean = (chunk * weights[:, None]).sum(-1) / count
        square = (chunk.square() * weights[:, None]).sum(-1) / count
        reference_mean = weights @ flat_reference / count
        reference_square = weights @ flat_reference.square() / count
        std = (square - mean.square()).clamp(min=0).sqrt()
        reference_std = (reference_square - reference_mean.square()).clamp(min=0).sqrt()
        per_frame[start:stop] = (mean - reference_mean).norm(dim=1) + (std - reference_std).norm(dim=1)
    return _curve(per_frame)


def content_drift(
    frames: torch.Tensor,
    reference_frame: torch.Tensor | None = None,
    *,
    clip: SyntheticClip | ClipMetadata | None = None,
) -> DriftCurve:
    """Loss of local luma structure relative to the reference (see the module docstring).

    With ``clip``, only windows on the background count, and the reference is
    taken to show the clip's first-frame layout.
    """
    frames, reference = frames_and_reference(frames, reference_frame)
    num_frames, _, height, width = frames.shape
    if min(width, height) <= 2 * _SSIM_RADIUS:
        raise ValueError(f"frames must be larger than {2 * _SSIM_RADIUS} pixels for content drift")
    included = _background_pixels(clip, num_frames, width, height, _DRIFT_EXCLUSION_MARGIN_PX + _SSIM_RADIUS)
    included = included[:, _SSIM_RADIUS:height - _SSIM_RADIUS, _SSIM_RADIUS:width - _SSIM_RADIUS]
    luma_weights = torch.tensor(_LUMA).view(1, 3, 1, 1)
    reference_luma = (reference.unsqueeze(0) * luma_weights).sum(1, keepdim=True)
    reference_mean = _gaussian_blur(reference_luma)
    reference_var = (_gaussian_blur(reference_luma.square()) - reference_mean.square()).clamp(min=0)
    per_frame = torch.zeros(num_frames, dtype=torch.float64)
    for start in range(0, num_frames, _DRIFT_FRAME_CHUNK):
        stop = min(num_frames, start + _DRIFT_FRAME_CHUNK)
        # Statistics of the change from the reference rather than of the frame:
        # local variances of flat backgrounds are ~1e-7, and float32 cancellation
        # in E[x^2] - E[x]^2 would otherwise make even unchanged frames drift.
        change = (frames[start:stop] * luma_weights).sum(1, keepdim=True) - reference_luma
        change_mean = _gaussian_blur(change)
        change_var = (_gaussian_blur(change.square()) - change_mean.square()).clamp(min=0)
        cross = _gaussian_blur(change * reference_luma) - change_mean * reference_mean
        var = (reference_var + 2 * cross + change_var).clamp(min=0)
        covariance = reference_var + cross
        structure = ((covariance + _SSIM_C3) / ((var * reference_var).sqrt() + _SSIM_C3))[:, 0]
        weights = included[start:stop].to(torch.float64)
        count = weights.sum(dim=(1, 2))  # frames without included pixels give nan
        per_frame[start:stop] = 1.0 - (structure.to(torch.float64) * weights).sum(dim=(1, 2)) / count
    return _curve(per_frame)


def _gaussian_blur(images: torch.Tensor) -> torch.Tensor:
    """Valid (unpadded) separable Gaussian blur of ``[B, 1, H, W]``."""
    offsets = torch.arange(-_SSIM_RADIUS, _SSIM_RADIUS + 1, dtype=images.dtype)
    kernel = torch.exp(-offsets.square() / (2 * _SSIM_SIGMA**2))
    kernel = kernel / kernel.sum()
    blurred = F.conv2d(images, kernel.view(1, 1, 1, -1))
    return F.conv2d(blurred, kernel.view(1, 1, -1, 1))


def _background_pixels(
    clip: SyntheticClip | ClipMetadata | None, num_frames: int, width: int, height: int, margin: float
) -> torch.Tensor:
    """Bool ``[T, H, W]``: pixels farther than ``margin`` from every sprite on frame 0 and on frame ``t``."""
    if clip is None:
        return torch.ones(num_frames, height, width, dtype=torch.bool)
    metadata = clip_metadata(clip)
    if (metadata.width, metadata.height) != (width, height):
        raise ValueError(f"frames are {width}x{height}, the clip is {metadata.width}x{metadata.height}")
    if metadata.num_frames != num_frames:
        raise ValueError(f"{num_frames} frames for a clip of {metadata.num_frames}")
    ys = torch.arange(height, dtype=torch.float64) + 0.5
    xs = torch.arange(width, dtype=torch.float64) + 0.5
    included = torch.ones(num_frames, height, width, dtype=torch.bool)
    for index, sprite in enumerate(metadata.sprites):
        reach = sprite.bounding_radius + margin
        path = metadata.centre_paths[:, index]
        for centres in (path, path[:1].expand_as(path)):
            near_x = (xs[None, :] - centres[:, 0:1]).square()  # [T, W]
            near_y = (ys[None, :] - centres[:, 1:2]).square()  # [T, H]
            included &= near_y[:, :, None] + near_x[:, None, :] > reach**2
    return included


def _curve(per_frame: torch.Tensor) -> DriftCurve:
    tail = max(1, math.ceil(per_frame.numel() / 4))
    return DriftCurve(per_frame, float(per_frame[-tail:].nanmean()))
