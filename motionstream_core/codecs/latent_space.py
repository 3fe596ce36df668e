"""Wan VAE latent normalisation: the diffusion model works on (latent - mean) / std per channel.

A VAE's raw encoding (what ComfyUI's VAE.encode returns and what LATENT links carry) is turned
into the model's space with `to_model_space`, and back with `to_vae_space`. ComfyUI's Wan21 and
Wan22 latent formats apply the same per-channel statistics in their process_in / process_out, so
a LATENT made here decodes with ComfyUI's VAE Decode, and one from ComfyUI's VAE Encode is read here.

Each VAE family's statistics are registered under its latent channel count, which tells the
families apart: 16 for the Wan 2.1 VAE (also used by Wan 2.2 14B), 48 for the Wan 2.2 VAE of TI2V-5B.
"""

from __future__ import annotations

import dataclasses

import torch

WAN21_LATENT_MEAN = (
    -0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508,
    0.4134, -0.0715, 0.5517, -0.3632, -0.1922, -0.9497, 0.2503, -0.2921,
)
WAN21_LATENT_STD = (
    2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743,
    3.2687, 2.1526, 2.8652, 1.5579, 1.6382, 1.1253, 2.8251, 1.9160,
)

# Published with the Wan 2.2 VAE (Wan2.2 vae2_2.py; ComfyUI's Wan22 latent format holds the same values).
WAN22_LATENT_MEAN = (
    -0.2289, -0.0052, -0.1323, -0.2339, -0.2799, 0.0174, 0.1838, 0.1557,
    -0.1382, 0.0542, 0.2813, 0.0891, 0.1570, -0.0098, 0.0375, -0.1825,
    -0.2246, -0.1207, -0.0698, 0.5109, 0.2665, -0.2108, -0.2158, 0.2502,
    -0.2055, -0.0322, 0.1109, 0.1567, -0.0729, 0.0899, -0.2799, -0.1230,
    -0.0313, -0.1649, 0.0117, 0.0723, -0.2839, -0.2083, -0.0520, 0.3748,
    0.0152, 0.1957, 0.1433, -0.2944, 0.3573, -0.0548, -0.1681, -0.0667,
)
WAN22_LATENT_STD = (
    0.4765, 1.0364, 0.4514, 1.1677, 0.5313, 0.4990, 0.4818, 0.5013,
    0.8158, 1.0344, 0.5894, 1.0901, 0.6885, 0.6165, 0.8454, 0.4978,
    0.5759, 0.3523, 0.7135, 0.6804, 0.5833, 1.4146, 0.8986, 0.5659,
    0.7069, 0.5338, 0.4889, 0.4917, 0.4069, 0.4999, 0.6866, 0.4093,
    0.5709, 0.6065, 0.6415, 0.4944, 0.5726, 1.2042, 0.5458, 1.6887,
    0.3971, 1.0600, 0.3943, 0.5537, 0.5444, 0.4089, 0.7468, 0.7744,
)


@dataclasses.dataclass(frozen=True)
class LatentStats:
    """Per-channel statistics of one VAE family's raw latents."""

    family: str
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __post_init__(self):
        if len(self.mean) != len(self.std):
            raise ValueError(f"{self.family}: {len(self.mean)} means but {len(self.std)} standard deviations")

    @property
    def channels(self) -> int:
        return len(self.mean)


WAN21 = LatentStats("Wan 2.1", WAN21_LATENT_MEAN, WAN21_LATENT_STD)
WAN22 = LatentStats("Wan 2.2", WAN22_LATENT_MEAN, WAN22_LATENT_STD)

LATENT_STATS = {stats.channels: stats for stats in (WAN21, WAN22)}


def latent_stats(channels: int) -> LatentStats:
    """The statistics of the VAE family whose latents have `channels` channels."""
    stats = LATENT_STATS.get(channels)
    if stats is None:
        known = ", ".join(f"{count} ({stats.family})" for count, stats in sorted(LATENT_STATS.items()))
        raise ValueError(f"no Wan VAE makes latents with {channels} channels; known channel counts: {known}")
    return stats


def _stats(latents: torch.Tensor, channel_dim: int):
    try:
        stats = latent_stats(latents.shape[channel_dim])
    except ValueError as error:
        raise ValueError(f"{error} (latents of shape {tuple(latents.shape)}, channel axis {channel_dim})") from None
    shape = [1] * latents.ndim
    shape[channel_dim] = -1
    mean = torch.tensor(stats.mean, dtype=latents.dtype, device=latents.device).view(shape)
    std = torch.tensor(stats.std, dtype=latents.dtype, device=latents.device).view(shape)
    return mean, std


def to_model_space(latents: torch.Tensor, channel_dim: int = 1) -> torch.Tensor:
    """Raw VAE latents -> the diffusion model's normalised latents; the family is read off the channel count."""
    mean, std = _stats(latents, channel_dim)
    return (latents - mean) / std


def to_vae_space(latents: torch.Tensor, channel_dim: int = 1) -> torch.Tensor:
    """The diffusion model's normalised latents -> raw VAE latents (what ComfyUI's VAE Decode takes)."""
    mean, std = _stats(latents, channel_dim)
    return latents * std + mean
