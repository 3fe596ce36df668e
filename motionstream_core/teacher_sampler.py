"""Offline, bidirectional multi-step sampling with the teacher (the full-sequence DiT).

The teacher sees the whole clip at once and integrates the flow-matching ODE from pure noise
(sigma 1) to data (sigma 0) over a shifted sigma schedule, with joint text-motion guidance.
Input channels are [noisy latent | condition channels (image-to-video mask and first frame) |
track channels]; the null-motion branch gets zero track channels.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import torch

from .guidance import DEFAULT_MOTION_SCALE, DEFAULT_TEXT_SCALE, Branch, branch_weights, guided_velocity
from .schedule import shift_sigma
from .wan_dit import WanDiT

SOLVERS = ("euler", "heun")


def shifted_sigmas(steps: int, shift: float, device=None) -> torch.Tensor:
    """steps + 1 noise levels from 1 down to 0, warped by the flow-matching shift (float64)."""
    if steps < 1:
        raise ValueError(f"the teacher needs at least one step, got {steps}")
    if shift <= 0:
        raise ValueError(f"the schedule shift must be positive, got {shift}")
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
        self.model = model
        self.sigmas = shifted_sigmas(steps, shift)
        self.solver = solver
        self.text_scale = text_scale
        self.motion_scale = motion_scale
        self.num_train_timesteps = num_train_timesteps

    def _check_channels(self, noise: torch.Tensor, conditions: TeacherConditions) -> None:
        parts = {"noisy latent": noise.shape[1]}
        if conditions.condition_channels is not None:
            parts["image conditioning"] = conditions.condition_channels.shape[1]
        if conditions.track_channels is not None:
            parts["tracks"] = conditions.track_channels.shape[1]
        if sum(parts.values()) != self.model.config.in_channels:
            layout = " + ".join(f"{count} {name}" for name, count in parts.items())
            raise ValueError(
                f"the model takes {self.model.config.in_channels} input channels, but the inputs give {layout} = "
                f"{sum(parts.values())}; a text-to-video model takes no start image, and only models with a "
                "track head take tracks"
            )

    def _contexts(self, conditions: TeacherConditions):
        weights = branch_weights(self.text_scale, self.motion_scale)
        if Branch.NULL_MOTION in weights and conditions.track_channels is None:
            raise ValueError("motion guidance (motion_scale > 0) needs track channels")
        if Branch.NULL_TEXT in weights and conditions.null_text is None:
            raise ValueError("text guidance (text_scale > 0) needs a negative/empty prompt embedding (null_text)")
        contexts = {}
        for branch in weights:
            text = conditions.text if branch.uses_text else conditions.null_text
            contexts[branch] = self.model.encode_context(text, conditions.image_tokens)
        return contexts

    def _model_input(self, noisy: torch.Tensor, conditions: TeacherConditions, with_motion: bool) -> torch.Tensor:
        parts = [noisy]
        if conditions.condition_channels is not None:
            parts.append(conditions.condition_channels.to(noisy.dtype))
        if conditions.track_channels is not None:
            tracks = conditions.track_channels.to(noisy.dtype)
            parts.append(tracks if with_motion else torch.zeros_like(tracks))
        return torch.cat(parts, dim=1)

    def velocity(self, noisy: torch.Tensor, sigma: float, conditions: TeacherConditions, contexts) -> torch.Tensor:
        timestep = torch.full((noisy.shape[0],), sigma * self.num_train_timesteps, dtype=torch.float64)

        def predict(branch: Branch) -> torch.Tensor:
            model_input = self._model_input(noisy, conditions, branch.uses_motion)
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
        self._check_channels(noise, conditions)
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
