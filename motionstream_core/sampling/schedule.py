"""Few-step flow-matching schedule: which timesteps a causal student denoises at, and their sigmas.

Distilled Wan students (Self-Forcing, CausVid, LongLive, MotionStream) are trained on a list of
"raw" steps such as [1000, 750, 500, 250] that is warped through the shifted flow-matching
schedule of the teacher: raw step r picks entry `num_train_timesteps - r` of a table whose
sigmas fall linearly from 1 towards 0 and are then shifted, sigma' = shift*s / (1 + (shift-1)*s).
The table is built in float32 because the released students were trained with exactly those
float32 values; sigmas are handed out in float64 so that float64 runs lose nothing further.
"""

from __future__ import annotations

from typing import Sequence

import math

import torch

DEFAULT_DENOISING_STEPS = (1000, 750, 500, 250)


def shift_sigma(sigma, shift: float):
    """The flow-matching shift sigma' = shift * sigma / (1 + (shift - 1) * sigma); shift > 1 favours noise."""
    return shift * sigma / (1 + (shift - 1) * sigma)


class FlowMatchSchedule:
    def __init__(self, shift: float = 5.0, num_train_timesteps: int = 1000):
        if not math.isfinite(shift) or shift <= 0:
            raise ValueError(f"the schedule shift must be a finite, positive number, got {shift}")
        if num_train_timesteps < 1:
            raise ValueError(f"num_train_timesteps must be at least 1, got {num_train_timesteps}")
        self.shift = float(shift)
        self.num_train_timesteps = int(num_train_timesteps)
        linear = torch.linspace(1.0, 0.0, self.num_train_timesteps + 1, dtype=torch.float32)
        # Entry i is raw step num_train_timesteps - i; the last entry (raw step 0) is sigma 0.
        self._sigmas = shift_sigma(linear, self.shift)
        self._timesteps = self._sigmas * self.num_train_timesteps

    def _index(self, raw_step: int) -> int:
        if int(raw_step) != raw_step or not 0 <= raw_step <= self.num_train_timesteps:
            raise ValueError(
                f"denoising step {raw_step!r} must be an integer in [0, {self.num_train_timesteps}]"
            )
        return self.num_train_timesteps - int(raw_step)

    def timestep(self, raw_step: int) -> torch.Tensor:
        """The float32 timestep fed to the model's time embedding for a raw step."""
        return self._timesteps[self._index(raw_step)].clone()

    def sigma(self, raw_step: int) -> float:
        """Noise level of a raw step (the float32 table value, as a Python float)."""
        return float(self._sigmas[self._index(raw_step)])

    def warp(self, raw_steps: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """(timesteps float32, sigmas float64) of a denoising step list, in the order given."""
        if len(raw_steps) == 0:
            raise ValueError("the denoising step list is empty")
        indices = [self._index(step) for step in raw_steps]
        if any(b <= a for a, b in zip(indices, indices[1:])):
            raise ValueError(f"denoising steps must be strictly decreasing, got {list(raw_steps)}")
        indices = torch.tensor(indices)
        return self._timesteps[indices].clone(), self._sigmas[indices].to(torch.float64)


def _broadcast(sigma, like: torch.Tensor):
    """A float as is; a per-clip [B] or per-frame [B, F] tensor shaped to broadcast over [B, C, F, H, W]."""
    if not isinstance(sigma, torch.Tensor):
        return sigma
    sigma = sigma.to(device=like.device, dtype=like.dtype)
    if sigma.ndim == 1:
        return sigma[:, None, None, None, None]
    if sigma.ndim == 2:
        return sigma[:, None, :, None, None]
    return sigma


def add_noise(clean: torch.Tensor, noise: torch.Tensor, sigma) -> torch.Tensor:
    """Flow-matching forward process x_sigma = (1 - sigma) * x0 + sigma * eps (sigma: float, [B] or [B, F])."""
    sigma = _broadcast(sigma, clean)
    return (1 - sigma) * clean + sigma * noise.to(clean.dtype)


def predicted_clean(noisy: torch.Tensor, velocity: torch.Tensor, sigma) -> torch.Tensor:
    """x0 from a velocity prediction v = eps - x0: x0 = x_sigma - sigma * v (sigma: float, [B] or [B, F])."""
    return noisy - _broadcast(sigma, noisy) * velocity.to(noisy.dtype)
