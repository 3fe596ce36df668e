"""Stage 3: Self Forcing with Distribution Matching Distillation.

The student generates a video exactly as it will at inference: block by block, through the same
sink + rolling KV cache and the same few-step schedule (a `StreamingConfig`), committing each
clean block to the cache. Only one denoising step per block carries gradient (drawn at random,
the others run without autograd), so a rollout costs little more memory than one forward.

The rollout may run longer than the teacher's horizon (training the extrapolation the rolling
cache performs at inference); the teacher scores one window of its own horizon, and only the
blocks that overlap that window carry gradient.

DMD (Yin et al. 2024) moves the student's samples x along the difference of two denoisers applied
to the noised samples: the frozen teacher with joint text-motion guidance ("real score", three
forwards) and a critic trained by flow matching on the student's own samples ("fake score"):

    grad = (fake_x0 - real_x0) / mean|x - real_x0|,   loss = 0.5 * ||x - sg(x - grad)||^2

so that d loss / dx is proportional to grad. The critic is updated every step, the student every
`generator_update_every` steps, and an EMA of the student is kept.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F

from ..streaming.block_schedule import BlockSchedule
from ..streaming.causal_model import CausalWanModel
from ..sampling.guidance import DEFAULT_MOTION_SCALE, DEFAULT_TEXT_SCALE
from ..streaming.image_conditioning import FirstFrameCondition
from ..sampling.noise import NoiseSource
from ..sampling.schedule import FlowMatchSchedule, add_noise, predicted_clean
from ..streaming.session import StreamingConfig
from . import distributed
from .conditioned_model import TrackConditionedDiT
from .data import ClipAugmentation, ClipBatch
from .ema import ExponentialMovingAverage
from .flow_matching import SigmaSampler, flow_matching_loss
from .seeding import (
    STREAM_CRITIC, STREAM_CRITIC_NOISE, STREAM_ROLLOUT, STREAM_SCORE, PerSampleNoise, per_sample_randn, sample_generators,
    step_generator, step_seed,
)

SCORE_WINDOWS = ("last", "random")


def dmd_loss(generated: torch.Tensor, real_clean: torch.Tensor, fake_clean: torch.Tensor) -> torch.Tensor:
    """Distribution matching loss whose gradient w.r.t. `generated` is the normalised (fake - real) direction.

    `real_clean` / `fake_clean` are the two denoisers' clean predictions from the same noised
    `generated`; the normaliser is the per-sample mean absolute gap between the sample and the
    teacher's prediction.
    """
    with torch.no_grad():
        sample_dims = tuple(range(1, generated.ndim))
        normalizer = (generated - real_clean).abs().mean(dim=sample_dims, keepdim=True)
        gradient = torch.nan_to_num((fake_clean - real_clean) / normalizer)
        target = generated.double() - gradient.double()
    return 0.5 * F.mse_loss(generated.double(), target)


@dataclasses.dataclass(frozen=True)
class SelfForcingDMDConfig:
    # The teacher's horizon in latent frames: the length of the window it scores.
    teacher_frames: int = 21
    # Latent frames per rollout (a whole number of blocks); longer than teacher_frames = extrapolation.
    rollout_frames: int | None = None
    score_window: str = "last"
    # One exit step for all blocks of a rollout (Self-Forcing's default), or one per block.
    same_exit_step_across_blocks: bool = True
    text_scale: float = DEFAULT_TEXT_SCALE
    motion_scale: float = DEFAULT_MOTION_SCALE
    # Noise levels at which samples are scored and the critic is trained.
    score_sigma: SigmaSampler = SigmaSampler(shift=5.0, min_sigma=0.02, max_sigma=0.98)
    critic_sigma: SigmaSampler = SigmaSampler(shift=5.0, min_sigma=0.02, max_sigma=0.98)
    generator_update_every: int = 5
    ema_decay: float = 0.99
    ema_start_step: int = 0
    generator_grad_clip: float | None = 10.0
    critic_grad_clip: float | None = 10.0
    num_train_timesteps: int = 1000
    # Track subsampling/masking of the conditions the student rolls out with; no condition dropout.
    augmentation: ClipAugmentation = ClipAugmentation(text_dropout=0.0, motion_dropout=0.0)

    def __post_init__(self):
        if self.score_window not in SCORE_WINDOWS:
            raise ValueError(f"unknown score_window {self.score_window!r}; use one of {SCORE_WINDOWS}")
        if self.generator_update_every < 1:
            raise ValueError(f"generator_update_every must be at least 1, got {self.generator_update_every}")

    @property
    def frames_per_rollout(self) -> int:
        return self.rollout_frames or self.teacher_frames


@dataclasses.dataclass(frozen=True)
class RolloutPlan:
    """The random choices of one rollout, identical on every process."""

    exit_steps: tuple[int, ...]  # per block: the denoising step whose output is the block's sample
    window_start: int  # first latent frame of the scored window
    grad_blocks: frozenset[int]  # blocks whose exit step runs with autograd


def check_rollout_length(streaming: StreamingConfig, config: SelfForcingDMDConfig) -> int:
    """The number of blocks of a rollout; fails when it is not whole blocks or shorter than the teacher's window."""
    blocks = BlockSchedule(streaming.block_frames)
    frames = config.frames_per_rollout
    num_blocks = blocks.blocks_for_frames(frames)
    if blocks.start(num_blocks - 1) + blocks.size(num_blocks - 1) != frames:
        raise ValueError(f"rollout_frames {frames} is not a whole number of blocks {streaming.block_frames}")
    if config.teacher_frames > frames:
        raise ValueError(f"teacher_frames {config.teacher_frames} exceeds the rollout's {frames} frames")
    return num_blocks


def plan_rollout(
    streaming: StreamingConfig, config: SelfForcingDMDConfig, generator: torch.Generator, with_grad: bool
) -> RolloutPlan:
    blocks = BlockSchedule(streaming.block_frames)
    frames = config.frames_per_rollout
    num_blocks = check_rollout_length(streaming, config)
    steps = len(streaming.denoising_steps)
    if config.same_exit_step_across_blocks:
        exit_steps = (int(torch.randint(steps, (), generator=generator)),) * num_blocks
    else:
        exit_steps = tuple(torch.randint(steps, (num_blocks,), generator=generator).tolist())
    latest = frames - config.teacher_frames
    if config.score_window == "random":
        starts = [blocks.start(b) for b in range(num_blocks) if blocks.start(b) <= latest]
        window_start = starts[int(torch.randint(len(starts), (), generator=generator))]
    else:
        window_start = latest
    window_end = window_start + config.teacher_frames
    grad_blocks = frozenset(
        b for b in range(num_blocks)
        if with_grad and blocks.start(b) < window_end and blocks.start(b) + blocks.size(b) > window_start
    )
    return RolloutPlan(exit_steps, window_start, grad_blocks)


def self_forcing_rollout(
    student: TrackConditionedDiT,
    batch: ClipBatch,
    streaming: StreamingConfig,
    plan: RolloutPlan,
    noise: NoiseSource,
) -> torch.Tensor:
    """Generates [B, C, frames, H, W] block by block through the inference cache; see the module doc.

    With every exit step at the last denoising step, this is what `StreamingSession` generates
    with the same noise source (guidance off).
    """
    causal = CausalWanModel(student.transformer, streaming.rope_policy)
    batch_size = batch.batch_size
    height, width = batch.latent_size
    blocks = BlockSchedule(streaming.block_frames)
    num_frames = sum(blocks.size(b) for b in range(len(plan.exit_steps)))
    cache = causal.new_cache(
        batch_size, height, width, streaming.sink_frames, streaming.window_frames, streaming.cache_policy
    )
    schedule = FlowMatchSchedule(streaming.shift, streaming.num_train_timesteps)
    timesteps, sigmas = schedule.warp(streaming.denoising_steps)
    commit_timestep = torch.tensor(float(streaming.commit_step))
    commit_sigma = streaming.commit_step / streaming.num_train_timesteps

    any_grad = bool(plan.grad_blocks) and torch.is_grad_enabled()
    with torch.set_grad_enabled(any_grad):
        context = student.encode_context(batch.text, batch.image_tokens)
        track_channels = student.track_channels(batch, 0, num_frames)
    condition_channels = batch.condition_channels(0, num_frames)
    dtype, device = student.transformer.dtype, batch.latents.device
    channels = student.config.out_channels

    outputs = []
    for block, exit_step in enumerate(plan.exit_steps):
        start, size = blocks.start(block), blocks.size(block)
        shape = (batch_size, channels, size, height, width)
        frames = slice(start, start + size)
        condition = None if condition_channels is None else condition_channels[:, :, frames]
        tracks = None if track_channels is None else track_channels[:, :, frames]
        x = noise.initial(block, shape).to(device=device, dtype=dtype)
        for step in range(exit_step + 1):
            model_input = student.model_input(x, condition, tracks)
            if step == exit_step and block in plan.grad_blocks and any_grad:
                velocity = causal.forward_chunk_with_grad(model_input, timesteps[step], context, cache, start)
            else:
                velocity = causal.forward_chunk(model_input, timesteps[step], context, cache, start)
            x0 = predicted_clean(x, velocity, float(sigmas[step]))
            if step < exit_step:
                renoise = noise.renoise(block, step + 1, shape).to(device=device, dtype=dtype)
                x = add_noise(x0.detach(), renoise, float(sigmas[step + 1]))
        committed = x0.detach()
        if streaming.commit_renoise and commit_sigma > 0:
            committed = add_noise(committed, noise.commit(block, shape).to(device=device, dtype=dtype), commit_sigma)
        causal.forward_chunk(student.model_input(committed, condition, tracks), commit_timestep, context, cache, start)
        outputs.append(x0)
    return torch.cat(outputs, dim=2)


def window_condition_channels(batch: ClipBatch, generated: torch.Tensor, start: int, frames: int) -> torch.Tensor | None:
    """Image-to-video channels for a scored window. A window that starts mid-video is conditioned on
    its own first generated latent frame in place of the clip's first image."""
    if batch.first_frame_latents is None:
        return None
    if start == 0:
        return batch.condition_channels(0, frames)
    encoded = batch.first_frame_latents.clone()
    encoded[:, :, 0] = generated[:, :, start].detach().to(encoded)
    return FirstFrameCondition(encoded)(0, frames)


class SelfForcingDMDTrainer:
    def __init__(
        self,
        generator: TrackConditionedDiT,
        critic: TrackConditionedDiT,
        teacher: TrackConditionedDiT,
        generator_optimizer: torch.optim.Optimizer,
        critic_optimizer: torch.optim.Optimizer,
        streaming: StreamingConfig,
        config: SelfForcingDMDConfig = SelfForcingDMDConfig(),
        seed: int = 0,
        ema: ExponentialMovingAverage | None = None,
    ):
        if streaming.text_scale or streaming.motion_scale:
            raise ValueError("the student is distilled with guidance baked in; its StreamingConfig must have no guidance")
        self.generator = generator
        self.critic = critic
        self.teacher = teacher.requires_grad_(False).eval()
        self.generator_optimizer = generator_optimizer
        self.critic_optimizer = critic_optimizer
        self.streaming = streaming
        self.config = config
        self.seed = seed
        self.ema = ema if ema is not None else ExponentialMovingAverage(generator, config.ema_decay, config.ema_start_step)
        self.step = 0

    def _window_inputs(self, model: TrackConditionedDiT, batch: ClipBatch, generated: torch.Tensor, start: int):
        frames = self.config.teacher_frames
        return (
            window_condition_channels(batch, generated, start, frames),
            model.track_channels(batch, start, frames),
        )

    def _rollout(self, batch: ClipBatch, seed: int, stream: int, with_grad: bool) -> tuple[torch.Tensor, RolloutPlan]:
        plan = plan_rollout(self.streaming, self.config, step_generator(self.seed, self.step, stream), with_grad)
        noise = PerSampleNoise(seed, batch.sample_ids, stream)
        with torch.set_grad_enabled(with_grad):
            generated = self_forcing_rollout(self.generator, batch, self.streaming, plan, noise)
        return generated, plan

    def generator_loss(self, batch: ClipBatch, seed: int) -> torch.Tensor:
        generated, plan = self._rollout(batch, seed, STREAM_ROLLOUT, with_grad=True)
        start = plan.window_start
        window = generated[:, :, start : start + self.config.teacher_frames]
        score_generators = sample_generators(seed, batch.sample_ids, STREAM_SCORE)
        sigma = self.config.score_sigma.sample(score_generators).to(window.device)
        noise = per_sample_randn(score_generators, window.shape[1:], window.dtype, window.device)
        with torch.no_grad():
            noisy = add_noise(window.detach(), noise, sigma)
            timesteps = sigma * self.config.num_train_timesteps
            condition, teacher_tracks = self._window_inputs(self.teacher, batch, generated, start)
            contexts = self.teacher.branch_contexts(
                batch.text, batch.null_text, batch.image_tokens, self.config.text_scale, self.config.motion_scale
            )
            real_velocity = self.teacher.guided_velocity(
                noisy, timesteps, contexts, condition, teacher_tracks, self.config.text_scale, self.config.motion_scale
            )
            _, critic_tracks = self._window_inputs(self.critic, batch, generated, start)
            fake_velocity = self.critic.velocity(
                noisy, timesteps, batch.text, condition, critic_tracks, image_tokens=batch.image_tokens
            )
            real_clean = predicted_clean(noisy, real_velocity, sigma)
            fake_clean = predicted_clean(noisy, fake_velocity, sigma)
        return dmd_loss(window, real_clean, fake_clean)

    def critic_loss(self, batch: ClipBatch, seed: int) -> torch.Tensor:
        generated, plan = self._rollout(batch, seed, STREAM_CRITIC, with_grad=False)
        start = plan.window_start
        window = generated[:, :, start : start + self.config.teacher_frames].detach()
        critic_generators = sample_generators(seed, batch.sample_ids, STREAM_CRITIC_NOISE)
        sigma = self.config.critic_sigma.sample(critic_generators)
        condition, tracks = self._window_inputs(self.critic, batch, generated, start)

        def predict(noisy: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
            return self.critic.velocity(noisy, timesteps, batch.text, condition, tracks, image_tokens=batch.image_tokens)

        return flow_matching_loss(predict, window, sigma, critic_generators, self.config.num_train_timesteps)

    def train_step(self, batch: ClipBatch) -> dict[str, float]:
        """A critic update every step, plus a generator update (and EMA update) every `generator_update_every` steps."""
        device = self.generator.transformer.patch_embedding.weight.device
        seed = step_seed(self.seed, self.step)
        batch = self.config.augmentation(batch, seed=seed).to(device, self.generator.transformer.dtype)
        metrics = {}
        if self.step % self.config.generator_update_every == 0:
            self.generator.train()
            self.generator_optimizer.zero_grad(set_to_none=True)
            loss = self.generator_loss(batch, seed)
            loss.backward()
            if self.config.generator_grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(self.generator.parameters(), self.config.generator_grad_clip)
            self.generator_optimizer.step()
            self.ema.update(self.generator, self.step)
            metrics["generator_loss"] = distributed.all_reduce_mean(loss)
        self.critic.train()
        self.critic_optimizer.zero_grad(set_to_none=True)
        loss = self.critic_loss(batch, seed)
        loss.backward()
        if self.config.critic_grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(self.critic.parameters(), self.config.critic_grad_clip)
        self.critic_optimizer.step()
        metrics["critic_loss"] = distributed.all_reduce_mean(loss)
        self.step += 1
        return metrics
