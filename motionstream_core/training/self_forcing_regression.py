"""Self Forcing against the data: the student's own rollouts regressed on the clip's ground truth.

For data whose video its conditions determine (the synthetic sprite clips: a static background and
sprites that translate along their tracks, so the first frame plus every track fixes nearly every
pixel), the clip itself is the target that DMD reaches only through a teacher. The student rolls out
exactly as in Self-Forcing DMD (`self_forcing_rollout`: the inference cache, its own blocks as
context, one denoising step with gradient per block) and each block's sample is regressed on the
clip's latents. Errors in its own context are what it learns to correct, as at inference.

The loss is a channel-weighted mean squared error; with weights proportional to the latent codec's
component variances (an orthonormal PCA codec) it is the pixel error. No teacher or critic runs,
so a step costs one rollout: on a CPU budget this is far more signal per step than DMD, which is
why the demo fine-tunes its distilled student with it.
"""

from __future__ import annotations

import dataclasses

import torch

from ..streaming.session import StreamingConfig
from . import distributed
from .conditioned_model import TrackConditionedDiT
from .data import ClipAugmentation, ClipBatch
from .ema import ExponentialMovingAverage
from .seeding import STREAM_ROLLOUT, PerSampleNoise, step_generator, step_seed
from .self_forcing_dmd import SelfForcingDMDConfig, plan_rollout, self_forcing_rollout


@dataclasses.dataclass(frozen=True)
class SelfForcingRegressionConfig:
    # Latent frames per rollout (a whole number of blocks); the clips must be at least this long.
    rollout_frames: int = 21
    same_exit_step_across_blocks: bool = True
    # Per latent channel (None: all equal); normalised to mean 1.
    channel_weights: tuple[float, ...] | None = None
    ema_decay: float = 0.99
    ema_start_step: int = 0
    grad_clip: float | None = 10.0
    # Latent cells whose target differs from the clip's first frame (a moving object where it is and
    # where it left) weigh 1 + motion_weight in the loss: in clips with a static background most cells
    # never change, so without it a small object that fails to move costs almost nothing. A cell counts as
    # changed when its channel-weighted mean squared difference exceeds motion_threshold.
    motion_weight: float = 0.0
    motion_threshold: float = 1e-3
    # Every track, never masked, no dropout: a clip is only determined by all of its tracks.
    augmentation: ClipAugmentation = ClipAugmentation(
        min_tracks=10_000, max_tracks=10_000, temporal_mask_probability=0.0, text_dropout=0.0, motion_dropout=0.0
    )

    def __post_init__(self):
        if self.channel_weights is not None and (min(self.channel_weights) < 0 or sum(self.channel_weights) <= 0):
            raise ValueError("channel_weights must be non-negative and not all zero")
        if not self.motion_weight >= 0 or not self.motion_threshold >= 0:  # also NaN
            raise ValueError(f"motion_weight and motion_threshold must be non-negative, got "
                             f"{self.motion_weight} and {self.motion_threshold}")

    def rollout_plan_config(self) -> SelfForcingDMDConfig:
        """The whole rollout is the scored window: every block carries gradient."""
        return SelfForcingDMDConfig(
            teacher_frames=self.rollout_frames, rollout_frames=self.rollout_frames,
            same_exit_step_across_blocks=self.same_exit_step_across_blocks,
        )


def _channel_weighted(values: torch.Tensor, channel_weights: torch.Tensor | None) -> torch.Tensor:
    if channel_weights is None:
        return values
    weights = channel_weights.to(values) / channel_weights.float().mean()
    return values * weights.view(1, -1, *([1] * (values.ndim - 2)))


def changed_cells(target: torch.Tensor, channel_weights: torch.Tensor | None, threshold: float) -> torch.Tensor:
    """[B, 1, T, H, W] float: 1 where the target latent [B, C, T, H, W] differs from its first frame by more than
    `threshold` (channel-weighted mean squared difference)."""
    difference = _channel_weighted((target.float() - target[:, :, :1].float()).square(), channel_weights)
    return (difference.mean(dim=1, keepdim=True) > threshold).float()


def weighted_regression_loss(
    generated: torch.Tensor, target: torch.Tensor, channel_weights: torch.Tensor | None,
    cell_weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean over [B, C, T, H, W] of the squared error, each channel scaled by its weight (mean weight 1);
    with `cell_weights` [B, 1, T, H, W], a weighted mean over the cells (the weights' scale does not matter)."""
    error = _channel_weighted((generated.float() - target.float()).square(), channel_weights)
    if cell_weights is None:
        return error.mean()
    cell_weights = cell_weights.to(error)
    return (error * cell_weights).mean() / cell_weights.mean()


class SelfForcingRegressionTrainer:
    def __init__(
        self,
        student: TrackConditionedDiT,
        optimizer: torch.optim.Optimizer,
        streaming: StreamingConfig,
        config: SelfForcingRegressionConfig = SelfForcingRegressionConfig(),
        seed: int = 0,
        ema: ExponentialMovingAverage | None = None,
    ):
        if streaming.text_scale or streaming.motion_scale:
            raise ValueError("the student rolls out without guidance; its StreamingConfig must have none")
        channels = student.config.out_channels
        if config.channel_weights is not None and len(config.channel_weights) != channels:
            raise ValueError(f"{len(config.channel_weights)} channel_weights for a student with {channels} latent channels")
        self.student = student
        self.optimizer = optimizer
        self.streaming = streaming
        self.config = config
        self.seed = seed
        self.ema = ema if ema is not None else ExponentialMovingAverage(student, config.ema_decay, config.ema_start_step)
        self.channel_weights = None if config.channel_weights is None else torch.tensor(config.channel_weights)
        self.step = 0

    def loss(self, batch: ClipBatch, seed: int) -> torch.Tensor:
        frames = self.config.rollout_frames
        if batch.num_frames < frames:
            raise ValueError(f"clips of {batch.num_frames} latent frames are shorter than the {frames}-frame rollout")
        plan = plan_rollout(
            self.streaming, self.config.rollout_plan_config(), step_generator(self.seed, self.step, STREAM_ROLLOUT), True
        )
        noise = PerSampleNoise(seed, batch.sample_ids, STREAM_ROLLOUT)
        generated = self_forcing_rollout(self.student, batch, self.streaming, plan, noise)
        target = batch.latents[:, :, :frames]
        cell_weights = None
        if self.config.motion_weight > 0:
            changed = changed_cells(target, self.channel_weights, self.config.motion_threshold)
            cell_weights = 1 + self.config.motion_weight * changed
        return weighted_regression_loss(generated, target, self.channel_weights, cell_weights)

    def train_step(self, batch: ClipBatch) -> dict[str, float]:
        device = self.student.transformer.patch_embedding.weight.device
        seed = step_seed(self.seed, self.step)
        batch = self.config.augmentation(batch, seed=seed).to(device, self.student.transformer.dtype)
        self.student.train()
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.loss(batch, seed)
        loss.backward()
        if self.config.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(self.student.parameters(), self.config.grad_clip)
        self.optimizer.step()
        self.ema.update(self.student, self.step)
        self.step += 1
        return {"loss": distributed.all_reduce_mean(loss)}
