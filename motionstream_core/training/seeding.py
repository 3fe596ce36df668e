"""Training randomness that does not depend on how the batch is split across processes.

Every random draw that concerns one clip (its noise level, its noise, its augmentation) comes from
a generator seeded by (run seed, the clip's global sample id, a stream number), so one process
with a batch of 4 and two processes with 2 clips each draw exactly the same numbers. Draws that
must agree across processes (which denoising step carries the gradient, which window is scored)
come from a generator seeded by (run seed, step), identical on every rank without a broadcast.
"""

from __future__ import annotations

from typing import Sequence

import torch

_MIX = 0x9E3779B97F4A7C15  # odd 64-bit constant: nearby seeds end up far apart

# One stream per purpose, so that adding a draw to one purpose never shifts another's numbers.
STREAM_SUBSAMPLE = 1
STREAM_SIGMA = 2
STREAM_NOISE = 3
STREAM_ROLLOUT = 4
STREAM_SCORE = 5
STREAM_CRITIC = 6
STREAM_CRITIC_NOISE = 7
STREAM_TEMPORAL_MASK = 8
STREAM_DROPOUT = 9


def _mix(*parts: int) -> int:
    value = 0
    for part in parts:
        value = (value * _MIX + int(part) + 1) % (2**63)
    return value


def _seeded(*parts: int) -> torch.Generator:
    return torch.Generator(device="cpu").manual_seed(_mix(*parts))


def step_seed(seed: int, step: int) -> int:
    """The seed of one training step: clips seen again in a later epoch get new noise."""
    return _mix(seed, 2, step)


def sample_generator(seed: int, sample_id: int, stream: int) -> torch.Generator:
    return _seeded(seed, 0, sample_id, stream)


def step_generator(seed: int, step: int, stream: int) -> torch.Generator:
    return _seeded(seed, 1, step, stream)


def sample_generators(seed: int, sample_ids: torch.Tensor | Sequence[int], stream: int) -> list[torch.Generator]:
    return [sample_generator(seed, int(i), stream) for i in torch.as_tensor(sample_ids).tolist()]


def per_sample_randn(
    generators: Sequence[torch.Generator], shape: Sequence[int], dtype=torch.float32, device=None
) -> torch.Tensor:
    """[len(generators), *shape] standard normal noise, one generator per sample (drawn on the CPU)."""
    noise = torch.stack([torch.randn(tuple(shape), generator=g, dtype=torch.float32) for g in generators])
    return noise.to(device=device, dtype=dtype)


def per_sample_rand(generators: Sequence[torch.Generator], device=None) -> torch.Tensor:
    """[len(generators)] float64 uniform numbers in [0, 1), one per sample."""
    values = torch.stack([torch.rand((), generator=g, dtype=torch.float64) for g in generators])
    return values.to(device)


class PerSampleNoise:
    """A `NoiseSource` (see `motionstream_core.sampling.noise`) for a batch: clip b's noise depends only on
    (seed, sample id, stream, chunk, draw), whatever the batch it is in."""

    def __init__(self, seed: int, sample_ids: torch.Tensor | Sequence[int], stream: int):
        self.seed = seed
        self.sample_ids = torch.as_tensor(sample_ids).tolist()
        self.stream = stream

    def _draw(self, chunk: int, draw: int, shape: Sequence[int]) -> torch.Tensor:
        if shape[0] != len(self.sample_ids):
            raise ValueError(f"noise for {shape[0]} clips was asked of a source for {len(self.sample_ids)}")
        generators = [_seeded(self.seed, 3, i, self.stream, chunk, draw) for i in self.sample_ids]
        return per_sample_randn(generators, shape[1:])

    def initial(self, chunk: int, shape: Sequence[int]) -> torch.Tensor:
        return self._draw(chunk, 0, shape)

    def renoise(self, chunk: int, step: int, shape: Sequence[int]) -> torch.Tensor:
        return self._draw(chunk, step, shape)

    def commit(self, chunk: int, shape: Sequence[int]) -> torch.Tensor:
        return self._draw(chunk, -1, shape)
