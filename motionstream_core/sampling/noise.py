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
    """Float32 standard normal noise from one CPU `torch.Generator`, re-seeded for every draw.

    Each draw depends only on (seed, chunk, draw), not on what was drawn before, so a chunk that
    is interrupted and generated again gets the same noise, and results do not depend on the device.
    """

    def __init__(self, seed: int = 0):
        self.seed = int(seed)
        self.generator = torch.Generator(device="cpu")

    def _draw(self, chunk: int, draw: int, shape: Sequence[int]) -> torch.Tensor:
        mixed = (self.seed * _MIX + chunk * 1_000_003 + draw) % (2**63)
        self.generator.manual_seed(mixed)
        return torch.randn(tuple(shape), generator=self.generator, dtype=torch.float32)

    def initial(self, chunk: int, shape: Sequence[int]) -> torch.Tensor:
        return self._draw(chunk, 0, shape)

    def renoise(self, chunk: int, step: int, shape: Sequence[int]) -> torch.Tensor:
        return self._draw(chunk, step, shape)

    def commit(self, chunk: int, shape: Sequence[int]) -> torch.Tensor:
        return self._draw(chunk, 999_983, shape)
