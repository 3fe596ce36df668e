"""Where a streaming session's Gaussian noise comes from: a seeded generator, or injected tensors."""

from __future__ import annotations

from typing import Protocol, Sequence

import torch

_MIX = 0x9E3779B97F4A7C15  # odd 64-bit constant (golden ratio); spreads nearby seeds apart


class NoiseSource(Protocol):
    """Noise for chunk `chunk`: the initial draw, the re-noise before each later step, the commit re-noise."""

    def initial(self, chunk: int, shape: Sequence[int]) -> torch.Tensor: ...

    def renoise(self, chunk: int, step: int, shape: Sequence[int]) -> torch.Tensor:
        """Noise mixed into the x0 of step `step - 1` to form the input of step `step` (1-based)."""
        ...

    def commit(self, chunk: int, shape: Sequence[int]) -> torch.Tensor: ...


class SeededNoise:
    """Float32 standard normal noise from one seeded `torch.Generator` on `device`, re-seeded for every draw.

    Each draw depends only on (seed, chunk, draw), not on what was drawn before, so a chunk that
    is interrupted and generated again gets the same noise. Noise is drawn where the model runs, so
    a chunk never copies it from the host. The numbers depend on the generator's device: CPU and
    CUDA generators are different algorithms (Mersenne Twister, Philox), so one seed gives one
    video on the CPU and another on a GPU; the same seed on the same kind of device (and PyTorch
    version) gives the same video. A CPU source used with a GPU model gives the CPU's noise on every
    device, at the price of a host-to-device copy per draw.
    """

    def __init__(self, seed: int = 0, device: torch.device | str = "cpu"):
        self.seed = int(seed)
        self.device = torch.device(device)
        self.generator = torch.Generator(device=self.device)

    def _draw(self, chunk: int, draw: int, shape: Sequence[int]) -> torch.Tensor:
        mixed = (self.seed * _MIX + chunk * 1_000_003 + draw) % (2**63)
        self.generator.manual_seed(mixed)
        return torch.randn(tuple(shape), generator=self.generator, dtype=torch.float32, device=self.device)

    def initial(self, chunk: int, shape: Sequence[int]) -> torch.Tensor:
        return self._draw(chunk, 0, shape)

    def renoise(self, chunk: int, step: int, shape: Sequence[int]) -> torch.Tensor:
        return self._draw(chunk, step, shape)

    def commit(self, chunk: int, shape: Sequence[int]) -> torch.Tensor:
        return self._draw(chunk, 999_983, shape)
