"""Stage 1: the bidirectional teacher learns to follow tracks (rectified flow matching).

The base Wan model gets extra input channels for the track head's output. Their patch-embedding
columns start at zero, so at step 0 the model computes exactly what the base model computes, and
the track head's output can only change that through weights that training moves away from zero.

Only one side of that product is zeroed. Zeroing the head's output projection as well would make
the track channels zero *and* their columns zero: each one's gradient is proportional to the other,
so both would stay zero forever. `zero_track_head_output=True` zeroes the projection instead of the
columns (the same step-0 equivalence, with the gradient entering through the head).
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from ..motion.track_head import TrackEncoder
from ..model.wan_dit import WanDiT
from . import distributed
from .conditioned_model import TrackConditionedDiT
from .data import ClipAugmentation, ClipBatch
from .flow_matching import SigmaSampler, flow_matching_loss
from .seeding import STREAM_NOISE, STREAM_SIGMA, sample_generators, step_seed


@torch.no_grad()
def add_input_channels(model: WanDiT, extra_channels: int) -> WanDiT:
    """Widens the patch embedding (in place) by `extra_channels` zero-initialised input channels, appended last."""
    if extra_channels < 1:
        raise ValueError(f"extra_channels must be positive, got {extra_channels}")
    old = model.patch_embedding
    config = dataclasses.replace(model.config, in_channels=model.config.in_channels + extra_channels)
    new = nn.Conv3d(
        config.in_channels, config.dim, kernel_size=config.patch_size, stride=config.patch_size,
        device=old.weight.device, dtype=old.weight.dtype,
    )
    new.weight.zero_()
    new.weight[:, : old.in_channels] = old.weight
    new.bias.copy_(old.bias)
    model.patch_embedding = new
    model.config = config
    return model


def add_track_channels(model: WanDiT, track_channels: int) -> WanDiT:
    """Room for the track head's channels after the existing inputs ([noisy | image condition | tracks])."""
    return add_input_channels(model, track_channels)


def build_teacher(
    base: WanDiT,
    track_channels: int = 16,
    id_dim: int = 128,
    temporal_compression: int = 4,
    zero_track_head_output: bool = False,
) -> TrackConditionedDiT:
    """The base model (modified in place) with a fresh track head; step 0 reproduces the base model."""
    add_track_channels(base, track_channels)
    device, dtype = base.patch_embedding.weight.device, base.patch_embedding.weight.dtype
    head = TrackEncoder(id_dim=id_dim, channels=track_channels, temporal_compression=temporal_compression)
    head = head.to(device=device, dtype=dtype)
    if zero_track_head_output:
        with torch.no_grad():
            head.proj.weight.zero_()
            if head.proj.bias is not None:
                head.proj.bias.zero_()
            # Give the columns a normal init so that the gradient reaches the zeroed projection.
            columns = base.patch_embedding.weight[:, -track_channels:]
            nn.init.kaiming_uniform_(columns, a=5**0.5)
    return TrackConditionedDiT(base, head)


@dataclasses.dataclass(frozen=True)
class TeacherTrainingConfig:
    sigma: SigmaSampler = SigmaSampler()
    augmentation: ClipAugmentation = ClipAugmentation()
    num_train_timesteps: int = 1000
    grad_clip: float | None = 1.0


def teacher_loss(model: TrackConditionedDiT, batch: ClipBatch, config: TeacherTrainingConfig, seed: int) -> torch.Tensor:
    """Flow-matching loss of an (already augmented) batch; every random draw is keyed by the clips' sample ids."""
    sigma = config.sigma.sample(sample_generators(seed, batch.sample_ids, STREAM_SIGMA))
    condition_channels = batch.condition_channels()
    track_channels = model.track_channels(batch)

    def predict(noisy: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        return model.velocity(
            noisy, timesteps, batch.text, condition_channels, track_channels, image_tokens=batch.image_tokens
        )

    noise_generators = sample_generators(seed, batch.sample_ids, STREAM_NOISE)
    return flow_matching_loss(predict, batch.latents, sigma, noise_generators, config.num_train_timesteps)


class TeacherTrainer:
    def __init__(
        self,
        model: TrackConditionedDiT,
        optimizer: torch.optim.Optimizer,
        config: TeacherTrainingConfig = TeacherTrainingConfig(),
        seed: int = 0,
    ):
        self.model = model
        self.optimizer = optimizer
        self.config = config
        self.seed = seed
        self.step = 0

    def train_step(self, batch: ClipBatch) -> dict[str, float]:
        """One optimisation step on this process's share of the global batch; returns the global mean loss."""
        device = self.model.transformer.patch_embedding.weight.device
        dtype = self.model.transformer.dtype
        seed = step_seed(self.seed, self.step)
        batch = self.config.augmentation(batch, seed=seed).to(device, dtype)
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        loss = teacher_loss(self.model, batch, self.config, seed=seed)
        loss.backward()
        if self.config.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)
        self.optimizer.step()
        self.step += 1
        return {"loss": distributed.all_reduce_mean(loss)}
