"""Rectified flow matching: noise-level sampling and the velocity regression loss.

x_sigma = (1 - sigma) * x0 + sigma * eps, target velocity v = eps - x0, loss = mean (v_pred - v)^2.
The model's timestep is sigma * num_train_timesteps, as in the teacher sampler.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import torch

from ..sampling.schedule import add_noise, shift_sigma
from .seeding import per_sample_rand, per_sample_randn

SIGMA_DISTRIBUTIONS = ("shifted_uniform", "logit_normal")


@dataclasses.dataclass(frozen=True)
class SigmaSampler:
    """Noise levels for training: uniform or logit-normal, then shifted, then clamped."""

    distribution: str = "shifted_uniform"
    shift: float = 5.0
    logit_mean: float = 0.0
    logit_std: float = 1.0
    min_sigma: float = 0.0
    max_sigma: float = 1.0

    def __post_init__(self):
        if self.distribution not in SIGMA_DISTRIBUTIONS:
            raise ValueError(f"unknown sigma distribution {self.distribution!r}; use one of {SIGMA_DISTRIBUTIONS}")
        if self.shift <= 0:
            raise ValueError(f"the shift must be positive, got {self.shift}")
        if not 0 <= self.min_sigma < self.max_sigma <= 1:
            raise ValueError(f"need 0 <= min_sigma < max_sigma <= 1, got {self.min_sigma}, {self.max_sigma}")

    def sample(self, generators: Sequence[torch.Generator]) -> torch.Tensor:
        """[len(generators)] float64 sigmas, one per clip."""
        uniform = per_sample_rand(generators)
        if self.distribution == "logit_normal":
            # Inverse-CDF of a normal keeps one uniform draw per clip for either distribution.
            normal = torch.special.ndtri(uniform.clamp(1e-7, 1 - 1e-7))
            sigma = torch.sigmoid(self.logit_mean + self.logit_std * normal)
        else:
            sigma = uniform
        return shift_sigma(sigma, self.shift).clamp(self.min_sigma, self.max_sigma)


def flow_matching_loss(
    predict_velocity,
    clean: torch.Tensor,
    sigma: torch.Tensor,
    noise_generators: Sequence[torch.Generator],
    num_train_timesteps: int = 1000,
) -> torch.Tensor:
    """Mean squared velocity error of `predict_velocity(noisy, timesteps)` on clips noised to `sigma`."""
    noise = per_sample_randn(noise_generators, clean.shape[1:], dtype=clean.dtype, device=clean.device)
    noisy = add_noise(clean, noise, sigma)
    timesteps = (sigma * num_train_timesteps).to(clean.device)
    prediction = predict_velocity(noisy, timesteps)
    return torch.nn.functional.mse_loss(prediction.float(), (noise - clean).float())
