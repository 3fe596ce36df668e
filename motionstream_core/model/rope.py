"""Three-axis rotary position embedding of Wan 2.1 (time, height, width), on interleaved channel pairs."""

from __future__ import annotations

import torch

from .config import WanConfig


class RotaryEmbedding:
    """cos/sin tables for a set of token positions, shaped [L, head_dim // 2]."""

    def __init__(self, cos: torch.Tensor, sin: torch.Tensor):
        self.cos = cos
        self.sin = sin

    def __len__(self) -> int:
        return self.cos.shape[0]

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """Rotates x [B, L, H, D]; pairs (2i, 2i+1) are treated as complex numbers."""
        compute_dtype = torch.float32 if x.dtype in (torch.float16, torch.bfloat16) else x.dtype
        pairs = x.to(compute_dtype).unflatten(-1, (-1, 2))
        real, imag = pairs.unbind(-1)
        cos = self.cos.to(compute_dtype)[None, :, None, :]
        sin = self.sin.to(compute_dtype)[None, :, None, :]
        rotated = torch.stack((real * cos - imag * sin, real * sin + imag * cos), dim=-1)
        return rotated.flatten(-2).to(x.dtype)

    def slice(self, start: int, stop: int) -> "RotaryEmbedding":
        return RotaryEmbedding(self.cos[start:stop], self.sin[start:stop])


def _axis_angles(positions: torch.Tensor, axis_dim: int, theta: float) -> torch.Tensor:
    inverse_freq = 1.0 / theta ** (torch.arange(0, axis_dim, 2, dtype=torch.float64, device=positions.device) / axis_dim)
    return positions.to(torch.float64)[:, None] * inverse_freq[None, :]


def grid_rotary_embedding(
    config: WanConfig,
    frame_positions: torch.Tensor,
    grid_height: int,
    grid_width: int,
    device: torch.device | str | None = None,
) -> RotaryEmbedding:
    """Rotary tables for tokens of a (frame, row, column) grid, frames at the given positions.

    Token order is frame-major then row then column, as produced by patchify. Angles are
    computed in float64 so that position 1000 is as exact as position 0.
    """
    frame_positions = torch.as_tensor(frame_positions, device=device).reshape(-1)
    if frame_positions.numel() and int(frame_positions.min()) < 0:
        raise ValueError(f"frame positions must be non-negative, got {frame_positions.tolist()}")
    device = frame_positions.device
    time_dim, height_dim, width_dim = config.rope_dims()
    frames = frame_positions.numel()
    time = _axis_angles(frame_positions, time_dim, config.rope_theta)
    rows = _axis_angles(torch.arange(grid_height, device=device), height_dim, config.rope_theta)
    cols = _axis_angles(torch.arange(grid_width, device=device), width_dim, config.rope_theta)
    angles = torch.cat(
        (
            time[:, None, None, :].expand(frames, grid_height, grid_width, -1),
            rows[None, :, None, :].expand(frames, grid_height, grid_width, -1),
            cols[None, None, :, :].expand(frames, grid_height, grid_width, -1),
        ),
        dim=-1,
    ).reshape(frames * grid_height * grid_width, -1)
    return RotaryEmbedding(angles.cos(), angles.sin())
