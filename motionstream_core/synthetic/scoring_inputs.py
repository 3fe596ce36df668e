"""Checks of what the scorers are given: ``[T, 3, H, W]`` RGB frames in ``[0, 1]``, and a clip or its metadata."""

from __future__ import annotations

import torch

from .clips import ClipMetadata, SyntheticClip


def clip_metadata(clip: SyntheticClip | ClipMetadata) -> ClipMetadata:
    if isinstance(clip, SyntheticClip):
        return clip.metadata
    if isinstance(clip, ClipMetadata):
        return clip
    raise ValueError(f"expected a SyntheticClip or ClipMetadata, got {type(clip).__name__}")


def frames_and_reference(frames: torch.Tensor, reference: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Float32 CPU frames and reference frame (default: the first frame)."""
    if not isinstance(frames, torch.Tensor) or frames.ndim != 4 or frames.shape[1] != 3 or frames.shape[0] == 0:
        raise ValueError(f"frames must be a [T, 3, H, W] tensor, got {_describe(frames)}")
    frames = frames.detach().cpu().to(torch.float32)
    if reference is None:
        return frames, frames[0]
    reference = reference.detach().cpu().to(torch.float32)
    if tuple(reference.shape) != tuple(frames.shape[1:]):
        raise ValueError(f"reference_frame must have shape {list(frames.shape[1:])}, got {list(reference.shape)}")
    return frames, reference


def checked_frames(frames: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """Float32 CPU frames, checked to be ``width`` x ``height``."""
    frames, _ = frames_and_reference(frames, None)
    if tuple(frames.shape[2:]) != (height, width):
        raise ValueError(f"frames are {frames.shape[3]}x{frames.shape[2]}, the clip is {width}x{height}")
    return frames


def _describe(value: object) -> str:
    if isinstance(value, torch.Tensor):
        return f"shape {list(value.shape)}"
    return type(value).__name__
