"""How much each pixel of a video belongs to a sprite, judged by colour alone.

A pixel's *chroma* is its RGB vector minus its grey component (the channel
mean). A pixel's *membership* in sprite ``s`` is its chroma projected on the
direction of the sprite colour's chroma, divided by that chroma's length, less
1.5 times the part of its chroma off that direction beyond a 0.08 tolerance;
then mapped from ``[MEMBERSHIP_THRESHOLD, 1]`` to ``[0, 1]`` and clamped.
Backgrounds (chroma at most 0.06) and the other sprites (hues at least 48
degrees away) score 0, the sprite's own pixels 1 whatever its texture; the map
is blind to brightness.
"""

from __future__ import annotations

import torch

MEMBERSHIP_THRESHOLD = 0.15
_OFF_HUE_TOLERANCE = 0.08
_OFF_HUE_WEIGHT = 1.5


def colour_membership(frames: torch.Tensor, colour: tuple[float, float, float]) -> torch.Tensor:
    """Float32 ``[T, H, W]`` membership of every pixel in the sprite of ``colour`` (see the module docstring)."""
    return ChromaFrames(frames).membership(colour)


class ChromaFrames:
    """Per-pixel chroma of ``[T, 3, H, W]`` frames, computed once for all sprites."""

    def __init__(self, frames: torch.Tensor):
        grey = frames.mean(dim=1)
        self.channels = [frames[:, channel] - grey for channel in range(3)]
        self.squared_norm = sum(channel.square() for channel in self.channels)

    def membership(self, colour: tuple[float, float, float]) -> torch.Tensor:
        target = torch.tensor(colour, dtype=torch.float64)
        target = target - target.mean()
        length = float(target.norm())
        direction = (target / length).tolist()
        along = sum(weight * channel for weight, channel in zip(direction, self.channels))
        off = (self.squared_norm - along.square()).clamp(min=0).sqrt()
        return membership_from_chroma(along, off, length)


def membership_from_chroma(along: torch.Tensor, off: torch.Tensor, chroma_length: float) -> torch.Tensor:
    """Membership of chroma whose parts along and off a sprite colour's chroma direction are ``along`` and ``off``.

    ``chroma_length`` is the length of the sprite colour's chroma.
    """
    return membership_from_score((along - _OFF_HUE_WEIGHT * (off - _OFF_HUE_TOLERANCE).clamp(min=0)) / chroma_length)


def membership_from_score(score: torch.Tensor) -> torch.Tensor:
    """``score`` mapped from ``[MEMBERSHIP_THRESHOLD, 1]`` to ``[0, 1]`` and clamped."""
    return ((score - MEMBERSHIP_THRESHOLD) / (1 - MEMBERSHIP_THRESHOLD)).clamp(0.0, 1.0)
