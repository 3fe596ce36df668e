"""Compositing sprites over a background, frame by frame, with how much of each sprite shows."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from .sprites import SpriteAppearance

# Frames x pixels rendered at once; bounds the memory of long or large clips.
_RENDER_CHUNK_PIXELS = 1 << 22


@dataclasses.dataclass(frozen=True, eq=False)
class RenderedFrames:
    frames: torch.Tensor  # float32 [T, 3, H, W]
    visible_fraction: torch.Tensor  # float32 [T, S]


def render_frames(
    background: torch.Tensor, sprites: Sequence[SpriteAppearance], centre_paths: torch.Tensor
) -> RenderedFrames:
    """Composite ``sprites`` (back to front) centred at ``centre_paths`` ``[T, S, 2]`` over ``background`` ``[3, H, W]``.

    Centres may be anywhere (sprites are clipped by the frame); this also renders
    videos with deliberately wrong motion for testing the scorer.
    """
    _, height, width = background.shape
    num_frames = int(centre_paths.shape[0])
    if tuple(centre_paths.shape[1:]) != (len(sprites), 2):
        raise ValueError(f"centre_paths must have shape [frames, {len(sprites)}, 2], got {list(centre_paths.shape)}")
    frames = torch.empty(num_frames, 3, height, width, dtype=torch.float32)
    visible_fraction = torch.zeros(num_frames, len(sprites), dtype=torch.float32)
    if not sprites:
        frames[:] = background
        return RenderedFrames(frames, visible_fraction)
    # Each sprite is drawn in a small square window that follows it, on a canvas
    # padded so that windows of sprites (partly) outside the frame still fit.
    pad = max(_window_side(sprite) for sprite in sprites)
    chunk = max(1, _RENDER_CHUNK_PIXELS // ((width + 2 * pad) * (height + 2 * pad)))
    for start in range(0, num_frames, chunk):
        stop = min(num_frames, start + chunk)
        centres = centre_paths[start:stop].to(torch.float32)
        canvas = F.pad(background, (pad, pad, pad, pad)).expand(stop - start, -1, -1, -1).clone()
        windows = [_sprite_window(sprite, centres[:, index], width, height, pad) for index, sprite in enumerate(sprites)]
        for index, sprite in enumerate(sprites):
            rows, cols, offsets = windows[index]
            frame_index = torch.arange(stop - start)[:, None, None]
            alpha = sprite.alpha(offsets).unsqueeze(-1)  # [t, K, K, 1]
            colour = torch.tensor(sprite.colour, dtype=torch.float32) - sprite.darkening(offsets).unsqueeze(-1)
            under = canvas[frame_index, :, rows[:, :, None] + pad, cols[:, None, :] + pad]  # [t, K, K, 3]
            canvas[frame_index, :, rows[:, :, None] + pad, cols[:, None, :] + pad] = under * (1 - alpha) + colour * alpha
            inside = ((rows[:, :, None] >= 0) & (rows[:, :, None] < height)
                      & (cols[:, None, :] >= 0) & (cols[:, None, :] < width))
            coverage = alpha[..., 0] * inside
            visible = coverage.clone()
            for front_index in range(index + 1, len(sprites)):
                front_offsets = offsets + centres[:, index, None, None, :] - centres[:, front_index, None, None, :]
                visible = visible * (1 - sprites[front_index].alpha(front_offsets))
            total = coverage.sum(dim=(1, 2))
            visible_fraction[start:stop, index] = torch.where(
                total > 0, visible.sum(dim=(1, 2)) / total.clamp(min=1e-12), 0.0
            )
        frames[start:stop] = canvas[:, :, pad:pad + height, pad:pad + width].clamp(0.0, 1.0)
    return RenderedFrames(frames, visible_fraction)


def _window_side(sprite: SpriteAppearance) -> int:
    # The anti-aliased edge reaches half a pixel past the outline.
    return int(math.ceil(sprite.size)) + 3


def _sprite_window(
    sprite: SpriteAppearance, centres: torch.Tensor, width: int, height: int, pad: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pixel rows ``[t, K]``, columns ``[t, K]`` and offsets ``[t, K, K, 2]`` of a window around each centre."""
    side = _window_side(sprite)
    first = torch.floor(centres - sprite.half_extent - 1.0)
    # Windows of sprites far outside the frame are parked in the padding.
    first_col = first[:, 0].clamp(-pad, width + pad - side).long()
    first_row = first[:, 1].clamp(-pad, height + pad - side).long()
    steps = torch.arange(side)
    cols = first_col[:, None] + steps
    rows = first_row[:, None] + steps
    offset_x = (cols.to(torch.float32) + 0.5 - centres[:, 0, None])[:, None, :].expand(-1, side, -1)
    offset_y = (rows.to(torch.float32) + 0.5 - centres[:, 1, None])[:, :, None].expand(-1, -1, side)
    return rows, cols, torch.stack([offset_x, offset_y], dim=-1)
