"""Offline, bidirectional multi-step sampling with the teacher (the full-sequence DiT).

The teacher sees the whole clip at once and integrates the flow-matching ODE from pure noise
(sigma 1) to data (sigma 0) over a shifted sigma schedule, with joint text-motion guidance.
Input channels are [noisy latent | condition channels (image-to-video mask and first frame) |
track channels]; the null-motion branch gets zero track channels.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable

import torch

from .guidance import DEFAULT_MOTION_SCALE, DEFAULT_TEXT_SCALE, Branch, branch_weights, guided_velocity
from .model_input import assemble_input, branch_contexts
from .schedule import shift_sigma
from ..model.wan_dit import WanDiT

SOLVERS = ("euler", "heun")


def shifted_sigmas(steps: int, shift: float, device=None) -> torch.Tensor:
    """steps + 1 noise levels from 1 down to 0, warped by the flow-matching shift (float64)."""
    if steps < 1:
        raise ValueError(f"the teacher needs at least one step, got {steps}")
    if not math.isfinite(shift) or shift <= 0:
        raise ValueError(f"the schedule shift must be a finite, positive number, got {shift}")
    return shift_sigma(torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64, device=device), shift)


@dataclasses.dataclass
class TeacherConditions:
    text: torch.Tensor                       # [B, L, text_dim]
    null_text: torch.Tensor | None = None    # negative / empty prompt embedding, same layout
    image_tokens: torch.Tensor | None = None  # CLIP tokens for image-to-video models
    condition_channels: torch.Tensor | None = None  # [B, C, F, H, W], e.g. mask + first-frame latent
    track_channels: torch.Tensor | None = None      # [B, C, F, H, W] from the track head


class TeacherSampler:
    def __init__(
        self,
        model: WanDiT,
        steps: int = 50,
        shift: float = 5.0,
        solver: str = "euler",
        text_scale: float = DEFAULT_TEXT_SCALE,
        motion_scale: float = DEFAULT_MOTION_SCALE,
        num_train_timesteps: int = 1000,
    ):
        if solver not in SOLVERS:
            raise ValueError(f"unknown solver {solver!r}; choose one of {SOLVERS}")
        branch_weights(text_scale, motion_scale)  # refuses NaN, infinite or negative scales now, not mid-sampling
        self.model = model
        self.sigmas = shifted_sigmas(steps, shift)
        self.solver = solver
        self.text_scale = text_scale
        self.motion_scale = motion_scale
        self.num_train_timesteps = num_train_timesteps

    def _contexts(self, conditions: TeacherConditions):
        if Branch.NULL_MOTION in branch_weights(self.text_scale, self.motion_scale) and conditions.track_channels is None:
            raise ValueError("motion guidance (motion_scale > 0) needs track channels")
        return branch_contexts(self.model.encode_context, conditions.text, conditions.null_text,
                               conditions.image_tokens, self.text_scale, self.motion_scale)

    def velocity(self, noisy: torch.Tensor, sigma: float, conditions: TeacherConditions, contexts) -> torch.Tensor:
        timestep = torch.full((noisy.shape[0],), sigma * self.num_train_timesteps, dtype=torch.float64)

        def predict(branch: Branch) -> torch.Tensor:
            model_input = assemble_input(noisy, conditions.condition_channels, conditions.track_channels,
                                         self.model.config.in_channels, branch.uses_motion)
            return self.model(model_input, timestep, contexts[branch]).to(noisy.dtype)

        return guided_velocity(predict, self.text_scale, self.motion_scale).to(noisy.dtype)

    @torch.no_grad()
    def sample(
        self,
        noise: torch.Tensor,
        conditions: TeacherConditions,
        on_step: Callable[[int, int, torch.Tensor], None] | None = None,
    ) -> torch.Tensor:
        """Clean latents [B, C, F, H, W] from Gaussian noise of the same shape.

        `on_step(step, total, x0_estimate)` runs after every step; it may raise to interrupt.
        """
        contexts = self._contexts(conditions)
        x = noise
        total = len(self.sigmas) - 1
        for step in range(total):
            sigma, sigma_next = float(self.sigmas[step]), float(self.sigmas[step + 1])
            v = self.velocity(x, sigma, conditions, contexts)
            if self.solver == "heun" and sigma_next > 0:
                # Heun: average the slope here with the slope at the Euler endpoint (2nd order).
                x_euler = x + (sigma_next - sigma) * v
                v_next = self.velocity(x_euler, sigma_next, conditions, contexts)
                x_next = x + (sigma_next - sigma) * 0.5 * (v + v_next)
            else:
                x_next = x + (sigma_next - sigma) * v
            if on_step is not None:
                on_step(step + 1, total, x - sigma * v)
            x = x_next
        return x
