"""A Wan transformer with seeded random weights, for tests and benchmarks (no checkpoint needed)."""

from __future__ import annotations

import math

import torch

from ..model.config import WanConfig
from ..model.wan_dit import WanDiT


@torch.no_grad()
def random_wan_dit(
    config: WanConfig,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
) -> WanDiT:
    """Weights ~ N(0, 1/fan_in), biases and norm offsets small: activations stay O(1) at any size.

    The weights are drawn directly on `device`, so a full-size model needs no host copy.
    """
    with torch.device("meta"):
        model = WanDiT(config)
    model = model.to_empty(device=device).to(dtype)
    generator = torch.Generator(device=device).manual_seed(seed)
    for name, parameter in model.named_parameters():
        if name.endswith("modulation"):
            parameter.normal_(0.0, 1.0 / math.sqrt(config.dim), generator=generator)
        elif parameter.ndim >= 2:
            fan_in = math.prod(parameter.shape[1:])
            parameter.normal_(0.0, 1.0 / math.sqrt(fan_in), generator=generator)
        elif "norm" in name:
            parameter.normal_(1.0, 0.1, generator=generator)
        else:
            parameter.normal_(0.0, 0.02, generator=generator)
    return model.eval()
