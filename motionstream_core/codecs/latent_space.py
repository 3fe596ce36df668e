"""Wan 2.1 VAE latent normalisation: the diffusion model works on (latent - mean) / std per channel.

A VAE's raw encoding (what ComfyUI's VAE.encode returns and what LATENT links carry) is turned
into the model's space with `to_model_space`, and back with `to_vae_space`.
"""

from __future__ import annotations

import torch

WAN21_LATENT_MEAN = (
    -0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508,
    0.4134, -0.0715, 0.5517, -0.3632, -0.1922, -0.9497, 0.2503, -0.2921,
)
WAN21_LATENT_STD = (
    2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743,
    3.2687, 2.1526, 2.8652, 1.5579, 1.6382, 1.1253, 2.8251, 1.9160,
)


def _stats(latents: torch.Tensor, channel_dim: int):
    if latents.shape[channel_dim] != len(WAN21_LATENT_MEAN):
        raise ValueError(
            f"Wan 2.1 latents have {len(WAN21_LATENT_MEAN)} channels, got {latents.shape[channel_dim]} "
            f"(shape {tuple(latents.shape)}, channel axis {channel_dim})"
        )
    shape = [1] * latents.ndim
    shape[channel_dim] = -1
    mean = torch.tensor(WAN21_LATENT_MEAN, dtype=latents.dtype, device=latents.device).view(shape)
    std = torch.tensor(WAN21_LATENT_STD, dtype=latents.dtype, device=latents.device).view(shape)
    return mean, std


def to_model_space(latents: torch.Tensor, channel_dim: int = 1) -> torch.Tensor:
    mean, std = _stats(latents, channel_dim)
    return (latents - mean) / std


def to_vae_space(latents: torch.Tensor, channel_dim: int = 1) -> torch.Tensor:
    mean, std = _stats(latents, channel_dim)
    return latents * std + mean
