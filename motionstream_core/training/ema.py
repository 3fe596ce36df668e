"""Exponential moving average of a model's weights: ema <- decay * ema + (1 - decay) * weights.

Works on sharded (FSDP2 DTensor) parameters as well as plain ones: each process averages its own shard.
"""

from __future__ import annotations

import torch
from torch import nn

from .distributed import full_tensor, shard_like


class ExponentialMovingAverage:
    def __init__(self, model: nn.Module, decay: float = 0.99, start_step: int = 0):
        if not 0 <= decay < 1:
            raise ValueError(f"the EMA decay must be in [0, 1), got {decay}")
        self.decay = decay
        # Before `start_step` the average simply follows the weights (a copy), as Self-Forcing does.
        self.start_step = start_step
        self.shadow = {name: p.detach().clone() for name, p in model.named_parameters()}

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        weight = 1.0 if step < self.start_step else 1.0 - self.decay
        for name, parameter in model.named_parameters():
            self.shadow[name].lerp_(parameter.detach(), weight)

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> None:
        for name, parameter in model.named_parameters():
            parameter.copy_(self.shadow[name])

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Unsharded averages (collective when sharded)."""
        return {name: full_tensor(value) for name, value in self.shadow.items()}

    @torch.no_grad()
    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        missing = sorted(set(self.shadow) - set(state))
        if missing:
            raise ValueError(f"the EMA state lacks {missing[:5]}")
        for name, value in self.shadow.items():
            value.copy_(shard_like(state[name], value))
