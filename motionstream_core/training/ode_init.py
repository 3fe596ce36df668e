"""Stage 2: causal initialisation of the student by regression on teacher ODE trajectories (CausVid).

The teacher integrates the probability-flow ODE from noise with joint text-motion guidance; the
states it passes at the student's few denoising noise levels are the student's inputs and the
ODE's end point is the target. Each block of frames gets its own randomly chosen step, and the
student, a copy of the teacher, sees the clip through a block-causal attention mask (each block
attends to itself and earlier blocks, limited to the sink and rolling window the inference cache
keeps), so it learns to denoise a block from its past only. Positions are the clip's own frame
indices; under the "relative" RoPE policy inference renumbers the visible frames, a difference
the self-forcing stage (which rolls out through the real cache) trains away.
"""

from __future__ import annotations

import dataclasses

import torch

from ..streaming.block_schedule import BlockSchedule
from ..sampling.guidance import DEFAULT_MOTION_SCALE, DEFAULT_TEXT_SCALE
from ..sampling.schedule import FlowMatchSchedule, predicted_clean
from ..streaming.session import StreamingConfig
from ..sampling.teacher_sampler import SOLVERS, shifted_sigmas
from . import distributed
from .conditioned_model import TrackConditionedDiT
from .data import ClipAugmentation, ClipBatch
from .seeding import STREAM_NOISE, STREAM_ROLLOUT, per_sample_randn, sample_generators, step_seed


def block_causal_mask(
    num_frames: int,
    tokens_per_frame: int,
    block_frames: tuple[int, ...] = (3,),
    sink_frames: int | None = None,
    window_frames: int | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Boolean [L, L] token mask: a frame sees the frames of its own and of earlier blocks.

    With `sink_frames`/`window_frames`, a block ending at frame e sees only what the rolling
    cache holds then: the first `sink_frames` frames and the newest `window_frames - sink_frames`.
    """
    blocks = BlockSchedule(block_frames)
    block_of = torch.tensor([blocks.block_of(f) for f in range(num_frames)], device=device)
    block_end = torch.tensor(
        [blocks.start(int(b)) + blocks.size(int(b)) for b in block_of.tolist()], device=device
    )
    query_end = block_end[:, None]
    key = torch.arange(num_frames, device=device)[None, :]
    visible = key < query_end
    if window_frames is not None:
        sink = sink_frames or 0
        visible &= (key < sink) | (key >= query_end - (window_frames - sink))
    return visible.repeat_interleave(tokens_per_frame, 0).repeat_interleave(tokens_per_frame, 1)


@dataclasses.dataclass
class OdeTrajectory:
    """Teacher ODE states at the student's noise levels, and where the ODE ends."""

    states: torch.Tensor  # [S, B, C, F, H, W], states[0] is the initial noise when the first step is 1000
    sigmas: torch.Tensor  # [S] float64
    timesteps: torch.Tensor  # [S] the student's timesteps for those levels
    clean: torch.Tensor  # [B, C, F, H, W]


@torch.no_grad()
def teacher_ode_trajectory(
    teacher: TrackConditionedDiT,
    batch: ClipBatch,
    noise: torch.Tensor,
    streaming: StreamingConfig,
    teacher_steps: int = 50,
    solver: str = "euler",
    text_scale: float = DEFAULT_TEXT_SCALE,
    motion_scale: float = DEFAULT_MOTION_SCALE,
) -> OdeTrajectory:
    """Integrates the teacher's guided ODE on its shifted grid, with the student's noise levels inserted."""
    if solver not in SOLVERS:
        raise ValueError(f"unknown solver {solver!r}; use one of {SOLVERS}")
    schedule = FlowMatchSchedule(streaming.shift, streaming.num_train_timesteps)
    student_timesteps, student_sigmas = schedule.warp(streaming.denoising_steps)
    wanted = [float(s) for s in student_sigmas]
    grid = sorted(set(shifted_sigmas(teacher_steps, streaming.shift).tolist()) | set(wanted), reverse=True)
    contexts = teacher.branch_contexts(batch.text, batch.null_text, batch.image_tokens, text_scale, motion_scale)
    condition_channels = batch.condition_channels()
    track_channels = teacher.track_channels(batch)
    scale = streaming.num_train_timesteps

    def velocity(x: torch.Tensor, sigma: float) -> torch.Tensor:
        timesteps = torch.full((x.shape[0],), sigma * scale, dtype=torch.float64, device=x.device)
        return teacher.guided_velocity(
            x, timesteps, contexts, condition_channels, track_channels, text_scale, motion_scale
        ).to(x.dtype)

    x = noise.to(batch.latents)
    captured = {}
    for sigma, sigma_next in zip(grid[:-1], grid[1:]):
        if sigma in wanted:
            captured[sigma] = x
        v = velocity(x, sigma)
        if solver == "heun" and sigma_next > 0:
            v = 0.5 * (v + velocity(x + (sigma_next - sigma) * v, sigma_next))
        x = x + (sigma_next - sigma) * v
    return OdeTrajectory(
        states=torch.stack([captured[s] for s in wanted]),
        sigmas=student_sigmas,
        timesteps=student_timesteps,
        clean=x,
    )


@dataclasses.dataclass(frozen=True)
class OdeInitConfig:
    teacher_steps: int = 50
    solver: str = "euler"
    text_scale: float = DEFAULT_TEXT_SCALE
    motion_scale: float = DEFAULT_MOTION_SCALE
    # Limit the student's attention to what the rolling cache holds at inference.
    attention_window: bool = True
    # Track subsampling and masking only: the student learns the guided teacher, so no condition dropout.
    augmentation: ClipAugmentation = ClipAugmentation(text_dropout=0.0, motion_dropout=0.0)
    grad_clip: float | None = 1.0


def ode_regression_loss(
    student: TrackConditionedDiT,
    batch: ClipBatch,
    trajectory: OdeTrajectory,
    streaming: StreamingConfig,
    seed: int,
    attention_window: bool = True,
) -> torch.Tensor:
    """MSE between the student's clean prediction from per-block trajectory states and the ODE end point."""
    steps, batch_size = trajectory.states.shape[:2]
    num_frames = batch.num_frames
    blocks = BlockSchedule(streaming.block_frames)
    frame_block = torch.tensor([blocks.block_of(f) for f in range(num_frames)])
    num_blocks = int(frame_block[-1]) + 1
    generators = sample_generators(seed, batch.sample_ids, STREAM_ROLLOUT)
    block_step = torch.stack([torch.randint(steps, (num_blocks,), generator=g) for g in generators])  # [B, blocks]
    frame_step = block_step[:, frame_block].to(trajectory.states.device)  # [B, F]

    # states [S, B, C, F, H, W] -> for each clip and frame, the state of that frame's step.
    states = trajectory.states.permute(1, 3, 0, 2, 4, 5)  # [B, F, S, C, H, W]
    index = frame_step[:, :, None, None, None, None].expand(-1, -1, 1, *states.shape[3:])
    noisy = states.gather(2, index).squeeze(2).permute(0, 2, 1, 3, 4)  # [B, C, F, H, W]
    sigma = trajectory.sigmas.to(noisy.device)[frame_step]
    timesteps = trajectory.timesteps.to(noisy.device)[frame_step]

    config = student.config
    height, width = batch.latent_size
    mask = block_causal_mask(
        num_frames // config.patch_size[0], config.tokens_per_frame(height, width), streaming.block_frames,
        streaming.sink_frames if attention_window else None,
        streaming.window_frames if attention_window else None,
        device=noisy.device,
    )
    velocity = student.velocity(
        noisy, timesteps, batch.text, batch.condition_channels(), student.track_channels(batch),
        image_tokens=batch.image_tokens, attention_mask=mask,
    )
    prediction = predicted_clean(noisy, velocity, sigma)
    return torch.nn.functional.mse_loss(prediction.float(), trajectory.clean.float())


class OdeInitTrainer:
    def __init__(
        self,
        student: TrackConditionedDiT,
        teacher: TrackConditionedDiT,
        optimizer: torch.optim.Optimizer,
        streaming: StreamingConfig,
        config: OdeInitConfig = OdeInitConfig(),
        seed: int = 0,
    ):
        self.student = student
        self.teacher = teacher.requires_grad_(False).eval()
        self.optimizer = optimizer
        self.streaming = streaming
        self.config = config
        self.seed = seed
        self.step = 0

    def trajectory(self, batch: ClipBatch, seed: int) -> OdeTrajectory:
        generators = sample_generators(seed, batch.sample_ids, STREAM_NOISE)
        noise = per_sample_randn(generators, batch.latents.shape[1:], dtype=batch.latents.dtype, device=batch.latents.device)
        return teacher_ode_trajectory(
            self.teacher, batch, noise, self.streaming, self.config.teacher_steps, self.config.solver,
            self.config.text_scale, self.config.motion_scale,
        )

    def train_step(self, batch: ClipBatch, trajectory: OdeTrajectory | None = None) -> dict[str, float]:
        """One step; the teacher's trajectory is computed here unless a precomputed one is given."""
        device = self.student.transformer.patch_embedding.weight.device
        seed = step_seed(self.seed, self.step)
        batch = self.config.augmentation(batch, seed=seed).to(device, self.student.transformer.dtype)
        if trajectory is None:
            trajectory = self.trajectory(batch, seed)
        self.student.train()
        self.optimizer.zero_grad(set_to_none=True)
        loss = ode_regression_loss(
            self.student, batch, trajectory, self.streaming, seed, self.config.attention_window
        )
        loss.backward()
        if self.config.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(self.student.parameters(), self.config.grad_clip)
        self.optimizer.step()
        self.step += 1
        return {"loss": distributed.all_reduce_mean(loss)}
