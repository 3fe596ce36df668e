"""The end-to-end recipe of the embedded demo model, on synthetic sprite clips, on a CPU.

    python -m motionstream_core.training.demo_recipe --out runs/demo --threads 2 --export-assets motionstream_core/demo/assets

Stages end on the wall clock (85 minutes by default on a 2-core CPU; a GPU does far more steps in
the same time) or at step caps. The shipped weights came from CPU runs chained through
`--teacher-init`/`--student-init` (run A as the recipe was before learning-rate schedules and DMD
extrapolation; its teacher trained on in two more runs; then DMD resumed from A's student under that
teacher; then that student, as exported in fp16, regressed on the clips in three runs, the third on fresh clips):

    python -m motionstream_core.training.demo_recipe --out runs/demo --threads 2 --teacher-steps 2290 \
        --warmup-steps 0 --final-lr-fraction 1 --ode-batches 31 --ode-steps 536 --dmd-steps 187 --dmd-rollout-frames 13
    python -m motionstream_core.training.demo_recipe --out runs/demo4 --threads 2 --teacher-init runs/demo/teacher.safetensors \
        --teacher-steps 1200 --ode-batches 1 --ode-steps 0 --dmd-steps 0
    python -m motionstream_core.training.demo_recipe --out runs/demo5 --threads 2 --teacher-init runs/demo4/teacher.safetensors \
        --teacher-steps 1400 --ode-batches 1 --ode-steps 0 --dmd-steps 0
    python -m motionstream_core.training.demo_recipe --out runs/demo6 --threads 2 --teacher-init runs/demo5/teacher.safetensors \
        --teacher-steps 0 --student-init runs/demo/dmd_ema.safetensors --dmd-steps 130 --pool-clips 16 --shares 0 0 1
    python -m motionstream_core.training.demo_recipe --export-only runs/demo6/dmd_ema.safetensors --export-assets motionstream_core/demo/assets \
        --streaming '{"commit_step": 50, "commit_renoise": true}'
    python -m motionstream_core.training.demo_recipe --out runs/reg1 --threads 2 --teacher-steps 0 --pool-clips 16 \
        --student-init motionstream_core/demo/assets/demo_model.safetensors --dmd-steps 0 \
        --regression-minutes 85 --regression-pool-clips 2000 --regression-snapshot-every 100
    python -m motionstream_core.training.demo_recipe --out runs/reg2 --threads 2 --teacher-steps 0 --pool-clips 16 \
        --student-init runs/reg1/regression_ema.safetensors --dmd-steps 0 \
        --regression-minutes 27 --regression-pool-clips 2000 --regression-snapshot-every 100
    python -m motionstream_core.training.demo_recipe --out runs/reg3 --threads 2 --teacher-steps 0 --pool-clips 16 \
        --student-init runs/reg2/regression_ema.safetensors --dmd-steps 0 --regression-minutes 90 \
        --regression-pool-clips 2000 --regression-pool-seed 13 --regression-snapshot-every 100
    python -m motionstream_core.training.demo_recipe --export-only runs/reg3/regression_ema.safetensors --export-assets motionstream_core/demo/assets

Then, so that one drag per object is followed and objects nobody dragged stay put, that model regressed with a
few tracks per sprite (1, 1, 1, 2 or 5) and still sprites losing their tracks half the time; the run was
stopped after 210 steps (91 minutes on a shared 2-core machine) and its step-210 EMA chosen on validation clips:

    python -m motionstream_core.training.demo_recipe --out runs/reg_sprite1 --threads 2 --teacher-steps 0 --pool-clips 16 \
        --student-init motionstream_core/demo/assets/demo_model.safetensors --dmd-steps 0 --regression-minutes 110 \
        --regression-pool-clips 1500 --regression-pool-seed 15 --regression-snapshot-every 30 \
        --regression-tracks-per-sprite 1 1 1 2 5 --regression-still-dropout 0.5
    python -m motionstream_core.training.demo_recipe --export-only runs/reg_sprite1/regression_ema_step210.safetensors \
        --export-assets motionstream_core/demo/assets

Occluded vs unspecified (issue 21): two runs from those weights with the same data and budget, one of them
giving the track head an occlusion branch (`--occlusion-signal`: points hidden behind a sprite are told apart from
points nobody specified), a quarter of the clips occlusion clips (a sprite passes behind another and comes out),
150 steps each, side by side on one thread each (bench/RESULTS.md compares them; neither was shipped):

    python -m motionstream_core.training.demo_recipe --out runs/occ_plain --threads 1 --teacher-steps 0 --pool-clips 4 \
        --student-init motionstream_core/demo/assets/demo_model.safetensors --dmd-steps 0 --regression-steps 150 \
        --regression-minutes 125 --regression-pool-clips 400 --regression-pool-seed 19 --regression-snapshot-every 15 \
        --warmup-steps 5 --final-lr-fraction 0.3 --regression-tracks-per-sprite 1 1 1 2 5 --regression-still-dropout 0.5 \
        --regression-occlusion-share 0.25
    python -m motionstream_core.training.demo_recipe --out runs/occ_occl ... (the same) ... --occlusion-signal

Region drags and moving cells (issue 21): two runs from those weights, side by side on one thread each, 98 minutes,
1,200 fresh clips (pool seed 21) of which 30% are conditioned by one region drag per sprite as the editor writes it
(the DragController's 8x8 grid, kept whole) and the rest by a few tracks per sprite as above; the second also weighs
the latent cells that move 5x in the loss (`--regression-motion-weight 4`):

    python -m motionstream_core.training.demo_recipe --out runs/reg_region_a --threads 1 --teacher-steps 0 --pool-clips 4 \
        --student-init motionstream_core/demo/assets/demo_model.safetensors --dmd-steps 0 --regression-minutes 98 \
        --regression-lr 1e-4 --regression-pool-clips 1200 --regression-pool-seed 21 --regression-snapshot-every 20 \
        --warmup-steps 5 --final-lr-fraction 0.3 --regression-tracks-per-sprite 1 1 1 2 5 --regression-still-dropout 0.5 \
        --regression-region-share 0.3
    python -m motionstream_core.training.demo_recipe --out runs/reg_region_c ... (the same) ... --regression-motion-weight 4
    python -m motionstream_core.training.demo_recipe --export-only runs/reg_region_c/regression_ema.safetensors \
        --export-assets motionstream_core/demo/assets

The second run's end EMA is shipped (bench/RESULTS.md compares both with the weights before).

The export's `--streaming` sets the inference settings stored with the weights (e.g. context noise:
the commit pass sees the chunk re-noised); without it, the settings the last stage trained with.

1. data: `synthetic` clips at 128x128, encoded once with a `PatchCodec` (4x4 pixels per
   latent cell, 16 channels, PCA fitted on the first clips); the first-frame condition is the
   encoding of the first frame followed by a gray frame (image-to-video, Track-v0 layout
   16 noisy + 4 mask + 16 first-frame + 16 track = 52 input channels);
2. stage 1, teacher: rectified flow matching with the track head (`TeacherTrainer`); this stage and
   the next warm up and then decay their learning rates on a cosine over the stage;
3. stage 2, causal ODE initialisation: teacher trajectories with motion guidance, computed once
   into a pool and regressed by a block-causal copy (`OdeInitTrainer`);
4. stage 3, Self-Forcing DMD (`SelfForcingDMDTrainer`) through the demo's own streaming cache,
   rolling out 25 latent frames (past the teacher's 13-frame horizon) and scoring a random window;
5. optionally (`--regression-steps`/`--regression-minutes`), Self Forcing against the data
   (`SelfForcingRegressionTrainer`): the student's 25-frame rollouts with every track, regressed on
   the clips in pixel error. A sprite clip is determined by its first frame and tracks, so the clip
   itself is the target; on a CPU budget this sharpened track following far more than more DMD steps.

`--teacher-init` starts stage 1 from an earlier teacher (`--teacher-steps 0` keeps it as it is);
`--student-init` skips stage 2 and resumes stage 3 from an earlier student (its dmd_ema weights).
`--dmd-snapshot-every N` also keeps the DMD EMA every N steps, to be chosen between on validation clips
(`python bench/bench_demo.py --model ... --clip-set validation`): a lower teacher loss does not always
mean better track following, and DMD at small batches is noisy. `--device cuda` trains on a GPU.

Each stage runs for a share of the wall-clock budget (or a step cap) and writes its weights
(`teacher.safetensors`, `ode_init.safetensors`, `dmd.safetensors`, `dmd_ema.safetensors`, each
loadable with `load_weights`/`load_dit`, the codec in the metadata); the last stage that ran
is copied to `demo_model.safetensors`. Losses go to `metrics.jsonl`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import shutil
import time
from pathlib import Path

import torch

from ..model.config import WanConfig
from ..codecs.patch_codec import PatchCodec
from ..streaming.session import StreamingConfig
from ..synthetic import SyntheticMotionConfig, clip_seed, generate_clip
from ..synthetic.occlusion_clips import occlusion_clip
from ..synthetic.region_drags import region_drag_tracks
from ..model.wan_dit import WanDiT
from ..model.weights import read_metadata
from .checkpoints import load_weights, save_weights
from .data import KEEP_WHOLE, ClipAugmentation, ClipBatch, track_fields
from .ode_init import OdeInitConfig, OdeInitTrainer
from .self_forcing_dmd import SelfForcingDMDConfig, SelfForcingDMDTrainer, check_rollout_length
from .self_forcing_regression import SelfForcingRegressionConfig, SelfForcingRegressionTrainer
from .teacher import TeacherTrainer, TeacherTrainingConfig, build_teacher
from .flow_matching import SigmaSampler

DEMO_SIZE = 128
DEMO_FPS = 16.0
DEMO_TEXT_DIM = 16
TRACK_CHANNELS = 16
MASK_CHANNELS = 4


def demo_wan_config(**overrides) -> WanConfig:
    """The demo transformer before its track channels are added (36 inputs; 52 with the tracks)."""
    values = dict(
        dim=256, ffn_dim=768, num_heads=4, num_layers=4, in_channels=16 + MASK_CHANNELS + 16, out_channels=16,
        text_dim=DEMO_TEXT_DIM, freq_dim=64, text_len=1, patch_size=(1, 4, 4),
    )
    values.update(overrides)
    return WanConfig(**values)


def demo_streaming_config(**overrides) -> StreamingConfig:
    """Track-v0 geometry: relative RoPE, shift 6, a first block of 1 frame kept as the sink, blocks of 3, window 6."""
    return StreamingConfig.track_v0(**overrides)


def demo_text(batch: int = 1) -> torch.Tensor:
    """The demo has no prompt: one fixed (all-zero) text embedding, also used as the null prompt."""
    return torch.zeros(batch, 1, DEMO_TEXT_DIM)


@dataclasses.dataclass
class RecipeConfig:
    out: str = "runs/demo"
    minutes: float = 85.0
    # Shares of the budget per stage (teacher, ode_init incl. its trajectories, dmd).
    shares: tuple[float, float, float] = (0.6, 0.25, 0.15)
    # Step caps per stage (None = run until the stage's share of the budget is spent).
    teacher_steps: int | None = None
    ode_steps: int | None = None
    dmd_steps: int | None = None
    pool_clips: int = 3000
    clip_frames: int = 13  # latent = pixel frames; 1 + 3 + 3 + 3 + 3 blocks
    batch_size: int = 8
    codec_fit_clips: int = 64
    ode_batches: int | None = None  # trajectory batches (None: about 40% of the stage's budget)
    ode_teacher_steps: int = 16
    motion_scale: float = 1.5
    lr: float = 6e-4
    ode_lr: float = 3e-4
    # Teacher and ODE learning rates: linear warm-up, then cosine decay to this fraction of the peak
    # over the stage (its step cap, else its share of the wall clock).
    warmup_steps: int = 50
    final_lr_fraction: float = 0.1
    dmd_lr: float = 1e-4
    critic_lr: float = 3e-4
    generator_update_every: int = 3
    # DMD rolls out this many latent frames (longer than clip_frames, the teacher's horizon: the
    # extrapolation the rolling cache performs at inference) and scores a random teacher-length window.
    dmd_rollout_frames: int = 25
    dmd_pool_clips: int = 600
    # Also keep the DMD EMA every this many steps (dmd_ema_step<N>.safetensors), to choose a stable
    # stretch on validation clips afterwards (0: only the latest).
    dmd_snapshot_every: int = 0
    # Optional last stage: Self Forcing regressed on the clips' own latents (`SelfForcingRegressionTrainer`),
    # from the previous stage's final weights, for this many steps and/or minutes (0 / None: off).
    regression_steps: int = 0
    regression_minutes: float | None = None
    regression_lr: float = 1e-4
    regression_pool_clips: int = 1200
    # Dataset seed of that stage's clips (None: seed + 11); another value continues a run on fresh clips
    # with the same codec (the codec's clips come from `seed`).
    regression_pool_seed: int | None = None
    regression_snapshot_every: int = 0
    # Non-empty: the regression keeps this many tracks per sprite (drawn uniformly from the list, so repeat a
    # count to weight it) instead of every track, and drops a still sprite's tracks with this probability.
    regression_tracks_per_sprite: tuple[int, ...] = ()
    regression_still_dropout: float = 0.0
    # Share of that stage's clips in which a sprite passes behind another and comes out (occlusion clips).
    regression_occlusion_share: float = 0.0
    # Share of that stage's clips conditioned by one region drag per sprite (the editor's grid) instead of
    # their own tracks, so that region drags move objects as a whole.
    regression_region_share: float = 0.0
    # Cells that move (differ from the clip's first frame) weigh 1 + this in that stage's loss.
    regression_motion_weight: float = 0.0
    # Give the student's track head an occlusion branch (zero at first): hidden points are told apart from
    # unspecified ones (see `TrackEncoder`).
    occlusion_signal: bool = False
    save_every_s: float = 120.0
    seed: int = 0
    wan: dict = dataclasses.field(default_factory=dict)  # overrides of demo_wan_config
    # Overrides of demo_streaming_config: the cache and commit the DMD rollouts use, stored with the weights.
    streaming: dict = dataclasses.field(default_factory=dict)
    track_id_dim: int = 64
    threads: int | None = None
    # Where the models train ("cuda" on a lent GPU: raise --batch-size there); the clip pools stay on the CPU.
    device: str = "cpu"
    # Start the teacher from these weights (e.g. the teacher.safetensors of an earlier, shorter run).
    teacher_init: str | None = None
    # Start stage 3 from this student (e.g. an earlier run's dmd_ema.safetensors) instead of stage 2.
    student_init: str | None = None
    min_tracks: int = 3
    # Fastest sprite speed of the training clips (pixels per frame); the benchmark's clips use 2.5.
    max_speed: float = 3.0
    # Keep the clips' own track ids (0 .. N-1 in sprite order) instead of fresh random ones: the id
    # embeddings then mean the same from clip to clip, which a CPU budget learns far faster. The demo
    # renumbers any tracks it is given to 0 .. N-1 (see `motionstream_core.demo`).
    fixed_track_ids: bool = True
    # Unit variance per PCA component (fine texture weighs as much as a cell's colour), or one shared
    # scale (latent loss proportional to pixel error: cleaner colours early, but no better track
    # following after 2,000 teacher steps in our runs).
    whiten_codec: bool = True


def make_pool(
    codec: PatchCodec, count: int, frames: int, seed: int, size: int = DEMO_SIZE, max_speed: float = 2.5,
    occlusion_share: float = 0.0, region_share: float = 0.0,
) -> list[dict]:
    """Encoded training clips (dicts of ClipBatch fields without the batch dimension); the last
    `occlusion_share` of them are occlusion clips (a sprite hidden behind another, then out again), and the
    `region_share` before those are conditioned by one region drag per sprite as the editor writes it (the
    DragController's grid, kept whole) instead of the clip's own tracks."""
    for name, share in (("occlusion_share", occlusion_share), ("region_share", region_share)):
        if not 0.0 <= share <= 1.0:
            raise ValueError(f"{name} must be in [0, 1], got {share}")
    if occlusion_share + region_share > 1.0:
        raise ValueError(f"occlusion_share + region_share must be at most 1, got {occlusion_share + region_share}")
    config = SyntheticMotionConfig(width=size, height=size, num_frames=frames, fps=DEMO_FPS, max_speed=max_speed)
    first_occlusion = count - round(count * occlusion_share)
    first_region = first_occlusion - round(count * region_share)
    pool = []
    for index in range(count):
        clip = None
        if index >= first_occlusion:
            try:
                clip = occlusion_clip(config, clip_seed(seed, index)).clip
            except ValueError:  # no room for this seed's occlusion: an ordinary clip instead
                clip = None
        clip = clip or generate_clip(config, clip_seed(seed, index))
        if first_region <= index < first_occlusion:
            tracks = region_drag_tracks(clip)
            groups = torch.full((tracks.num_tracks,), KEEP_WHOLE, dtype=torch.int64)
        else:
            tracks, groups = clip.tracks, clip.metadata.track_sprite
        pool.append(encode_clip(codec, clip.frames, tracks, track_groups=groups))
    return pool


def encode_clip(codec: PatchCodec, frames: torch.Tensor, tracks, track_groups: torch.Tensor | None = None) -> dict:
    latents = codec.encode_images(frames)[0]
    first = torch.cat((frames[:1], torch.full_like(frames[:1], 0.5)))  # first frame, then a gray frame
    clip = {
        "latents": latents,
        "first_frame_latents": codec.encode_images(first)[0],
        "text": demo_text()[0],
        **track_fields(tracks),
    }
    if track_groups is not None:
        clip["track_groups"] = track_groups
    return clip


def fit_codec(count: int, seed: int, size: int = DEMO_SIZE, whiten: bool = True) -> PatchCodec:
    config = SyntheticMotionConfig(width=size, height=size, num_frames=9, fps=DEMO_FPS)
    frames = torch.cat([generate_clip(config, clip_seed(seed + 1_000_003, i)).frames for i in range(count)])
    return PatchCodec.fit(frames, channels=16, factor=4, whiten=whiten)


class _Batches:
    def __init__(self, pool: list[dict], batch_size: int, seed: int):
        self.pool, self.batch_size = pool, batch_size
        self.generator = torch.Generator().manual_seed(seed)
        self.order: list[int] = []
        self.drawn = 0

    def next(self) -> ClipBatch:
        if len(self.order) < self.batch_size:
            self.order += torch.randperm(len(self.pool), generator=self.generator).tolist()
        indices, self.order = self.order[: self.batch_size], self.order[self.batch_size:]
        ids = [self.drawn + i for i in range(len(indices))]
        self.drawn += len(indices)
        return ClipBatch.collate([self.pool[i] for i in indices], sample_ids=ids)


def _metadata(codec: PatchCodec, stage: str, extra: dict | None = None) -> dict[str, str]:
    info = {"codec": codec.to_json(), "track_ids": "renumber", "demo_stage": stage, "demo_size": str(DEMO_SIZE), "demo_fps": str(DEMO_FPS)}
    info.update({k: json.dumps(v) for k, v in (extra or {}).items()})
    return info


class _Run:
    """What the stages of one recipe run share: its config, output folder, codec, cache geometry and logs."""

    def __init__(self, config: RecipeConfig, codec: PatchCodec, streaming: StreamingConfig, metrics, log, started: float):
        self.config, self.codec, self.streaming = config, codec, streaming
        self.out, self.metrics, self.log, self.started = Path(config.out), metrics, log, started

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def record(self, stage: str, step: int, values: dict) -> None:
        self.metrics.write(json.dumps({"stage": stage, "step": step, "t": round(self.elapsed(), 1), **values}) + "\n")
        self.metrics.flush()

    def save(self, stage: str, model: torch.nn.Module, steps: int, state_dict: dict | None = None) -> Path:
        path = self.out / f"{stage}.safetensors"
        save_weights(path, model, self.streaming, state_dict=state_dict,
                     metadata=_metadata(self.codec, stage, {"steps": steps}))
        return path

    def fit(self, stage: str, model, trainer, train_step, optimizer, peak: float, cap: int | None,
            start: float, end: float, *, ema=None, snapshot_every: int = 0, log_every: int = 50,
            deadline: float = math.inf) -> Path:
        """Runs `train_step` (returning the loss) until the step cap or, without one, `end`, and in any
        case not past `deadline`, with the warm-up + cosine learning rate; saves through a `_StageSaver`
        (with `ema`, its averages too) every `save_every_s` and at the end."""
        saver = _StageSaver(self, stage, model, ema, snapshot_every)
        losses = []
        while _continues(trainer.step, cap, end) and time.monotonic() < deadline:
            _schedule_lr(optimizer, self.config, peak, trainer.step, cap, start, end)
            loss = train_step()
            losses.append(loss)
            self.record(stage, trainer.step - 1, {"loss": loss})
            if trainer.step % log_every == 0:
                self.log(f"{stage} step {trainer.step}: loss {_tail(losses):.4f}")
            saver.after_step(trainer.step)
        path = saver.save(trainer.step)
        self.log(f"{stage}: {trainer.step} steps, last-50 loss {_tail(losses):.4f}, {self.elapsed():.0f} s")
        return path


class _StageSaver:
    """Writes a stage's weights (`<stage>`) and, given an EMA, their averages (`<stage>_ema`) every
    `save_every_s` and when asked; `save` returns the path of the averages if any, else of the weights.
    With an EMA it also keeps the averages every `snapshot_every` steps (`<stage>_ema_step<N>`, 0: never)."""

    def __init__(self, run: _Run, stage: str, model: torch.nn.Module, ema=None, snapshot_every: int = 0):
        self.run, self.stage, self.model, self.ema, self.snapshot_every = run, stage, model, ema, snapshot_every
        self.last_save = time.monotonic()

    def save(self, step: int) -> Path:
        path = self.run.save(self.stage, self.model, step)
        self.last_save = time.monotonic()
        if self.ema is None:
            return path
        return self.run.save(f"{self.stage}_ema", self.model, step, state_dict=self.ema.shadow)

    def after_step(self, step: int) -> None:
        if time.monotonic() - self.last_save > self.run.config.save_every_s:
            self.save(step)
        if self.ema is not None and self.snapshot_every and step % self.snapshot_every == 0:
            self.run.save(f"{self.stage}_ema_step{step}", self.model, step, state_dict=self.ema.shadow)


def run_recipe(config: RecipeConfig, log=print) -> Path:
    streaming = demo_streaming_config(**config.streaming)
    _check_rollout_frames(config, streaming)
    if config.threads:
        torch.set_num_threads(config.threads)
    if torch.device(config.device).type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    budget = config.minutes * 60.0
    started = time.monotonic()
    torch.manual_seed(config.seed)
    codec = fit_codec(config.codec_fit_clips, config.seed, whiten=config.whiten_codec)
    pool = make_pool(codec, config.pool_clips, config.clip_frames, config.seed, max_speed=config.max_speed)
    log(f"data: {len(pool)} clips of {config.clip_frames} frames encoded in {time.monotonic() - started:.0f} s")
    with (out / "metrics.jsonl").open("a") as metrics:
        run = _Run(config, codec, streaming, metrics, log, started)
        batches = _Batches(pool, config.batch_size, config.seed)
        teacher = _teacher(run, batches, stage_end=started + budget * config.shares[0])
        if config.student_init:
            student = teacher.clone()
            initial = _load_same_codec(config.student_init, codec)
            if initial.track_encoder is not None and initial.track_encoder.has_occlusion_branch:
                student.track_encoder.add_occlusion_branch()
            student.load_state_dict(initial.state_dict())
            log(f"student starts from {config.student_init}; no ODE initialisation")
            final = Path(config.student_init)
        else:
            stage_end = time.monotonic() + budget * config.shares[1]
            student, final = _ode_initialisation(run, teacher, batches, stage_end)
        if config.dmd_steps != 0:
            final = _self_forcing_dmd(run, teacher, student, batches, stage_end=time.monotonic() + budget * config.shares[2])
        if config.occlusion_signal:
            student.track_encoder.add_occlusion_branch()
        if config.regression_steps or config.regression_minutes:
            final = _self_forcing_regression(run, student)
    shutil.copyfile(final, out / "demo_model.safetensors")
    return out / "demo_model.safetensors"


def _teacher(run: _Run, batches: _Batches, stage_end: float) -> torch.nn.Module:
    """Stage 1: rectified flow matching of the bidirectional teacher with the track head."""
    config = run.config
    stage_start = time.monotonic()
    base = WanDiT(demo_wan_config(**config.wan)).to(config.device)
    teacher = build_teacher(base, TRACK_CHANNELS, id_dim=config.track_id_dim, temporal_compression=1)
    if config.teacher_init:
        teacher.load_state_dict(_load_same_codec(config.teacher_init, run.codec).state_dict())
        run.log(f"teacher starts from {config.teacher_init}")
    optimizer = torch.optim.AdamW(teacher.parameters(), lr=config.lr, weight_decay=0.01)
    teacher_config = TeacherTrainingConfig(
        sigma=SigmaSampler(shift=3.0),
        augmentation=ClipAugmentation(min_tracks=config.min_tracks, max_tracks=64, text_dropout=0.0, motion_dropout=0.1,
                                      randomize_track_ids=not config.fixed_track_ids),
    )
    trainer = TeacherTrainer(teacher, optimizer, teacher_config, seed=config.seed)
    run.fit("teacher", teacher, trainer, lambda: trainer.train_step(batches.next())["loss"], optimizer, config.lr,
            config.teacher_steps, stage_start, stage_end)
    return teacher


def _ode_initialisation(
    run: _Run, teacher: torch.nn.Module, batches: _Batches, stage_end: float
) -> tuple[torch.nn.Module, Path]:
    """Stage 2: teacher ODE trajectories with motion guidance, regressed by a block-causal copy."""
    config = run.config
    stage_start = time.monotonic()
    student = teacher.clone()
    ode_config = OdeInitConfig(
        teacher_steps=config.ode_teacher_steps, text_scale=0.0, motion_scale=config.motion_scale,
        augmentation=ClipAugmentation(min_tracks=10_000, max_tracks=10_000, temporal_mask_probability=0.0,
                                      text_dropout=0.0, motion_dropout=0.0, randomize_track_ids=not config.fixed_track_ids),
    )
    optimizer = torch.optim.AdamW(student.parameters(), lr=config.ode_lr)
    ode = OdeInitTrainer(student, teacher, optimizer, run.streaming, ode_config, seed=config.seed + 1)
    trajectories = []
    trajectory_deadline = stage_start + 0.4 * (stage_end - stage_start)
    while not trajectories or _continues(len(trajectories), config.ode_batches, trajectory_deadline):
        batch = batches.next()
        augmented = ode.config.augmentation(batch, seed=len(trajectories)).to(config.device)
        trajectories.append((augmented, ode.trajectory(augmented, seed=1_000 + len(trajectories))))
    run.log(f"ode_init: {len(trajectories)} trajectory batches in {time.monotonic() - stage_start:.0f} s")

    def train_step() -> float:
        batch, trajectory = trajectories[ode.step % len(trajectories)]
        return ode.train_step(batch, trajectory)["loss"]

    path = run.fit("ode_init", student, ode, train_step, optimizer, config.ode_lr, config.ode_steps,
                   time.monotonic(), stage_end)
    return student, path


def _self_forcing_dmd(run: _Run, teacher, student, batches: _Batches, stage_end: float) -> Path:
    """Stage 3: the student rolls out through the streaming cache; the teacher and a critic score it."""
    config = run.config
    critic = teacher.clone().requires_grad_(True)
    dmd_config = SelfForcingDMDConfig(
        teacher_frames=config.clip_frames, rollout_frames=config.dmd_rollout_frames, score_window="random",
        text_scale=0.0, motion_scale=config.motion_scale,
        generator_update_every=config.generator_update_every, ema_decay=0.95,
        augmentation=ClipAugmentation(min_tracks=config.min_tracks, max_tracks=64, text_dropout=0.0,
                                      motion_dropout=0.0, randomize_track_ids=not config.fixed_track_ids),
    )
    dmd = SelfForcingDMDTrainer(
        student, critic, teacher,
        torch.optim.AdamW(student.parameters(), lr=config.dmd_lr, betas=(0.0, 0.999)),
        torch.optim.AdamW(critic.parameters(), lr=config.critic_lr, betas=(0.0, 0.999)),
        run.streaming, dmd_config, seed=config.seed + 2,
    )
    generator_losses, critic_losses = [], []
    if config.dmd_rollout_frames > config.clip_frames:
        started_pool = time.monotonic()
        rollout_pool = make_pool(run.codec, config.dmd_pool_clips, config.dmd_rollout_frames, config.seed + 7,
                                 max_speed=config.max_speed)
        batches = _Batches(rollout_pool, config.batch_size, config.seed + 7)
        run.log(f"dmd: {len(rollout_pool)} clips of {config.dmd_rollout_frames} frames in {time.monotonic() - started_pool:.0f} s")

    saver = _StageSaver(run, "dmd", student, dmd.ema, config.dmd_snapshot_every)
    while _continues(dmd.step, config.dmd_steps, stage_end):
        values = dmd.train_step(batches.next())
        run.record("dmd", dmd.step - 1, values)
        critic_losses.append(values["critic_loss"])
        if "generator_loss" in values:
            generator_losses.append(values["generator_loss"])
        if dmd.step % 10 == 0:
            run.log(f"dmd step {dmd.step}: generator {_tail(generator_losses):.4f} critic {_tail(critic_losses):.4f}")
        saver.after_step(dmd.step)
    final = saver.save(dmd.step)
    dmd.ema.copy_to(student)  # the stage's result, which a later stage starts from
    run.log(f"dmd: {dmd.step} steps, generator {_tail(generator_losses):.4f}, critic {_tail(critic_losses):.4f}, "
            f"{run.elapsed():.0f} s")
    return final


def _self_forcing_regression(run: _Run, student) -> Path:
    """Optional last stage: the student's rollouts regressed on the clips' own latents, in pixel error."""
    config = run.config
    stage_start = time.monotonic()
    pool_seed = config.seed + 11 if config.regression_pool_seed is None else config.regression_pool_seed
    pool = make_pool(run.codec, config.regression_pool_clips, config.dmd_rollout_frames, pool_seed,
                     max_speed=config.max_speed, occlusion_share=config.regression_occlusion_share,
                     region_share=config.regression_region_share)
    batches = _Batches(pool, config.batch_size, pool_seed)
    run.log(f"regression: {len(pool)} clips of {config.dmd_rollout_frames} frames in {time.monotonic() - stage_start:.0f} s")
    regression_config = SelfForcingRegressionConfig(
        rollout_frames=config.dmd_rollout_frames, ema_decay=0.95, motion_weight=config.regression_motion_weight,
        # An orthonormal PCA codec: pixel error = sum over components of variance x latent error.
        channel_weights=tuple(run.codec.scale.square().tolist()),
        augmentation=dataclasses.replace(SelfForcingRegressionConfig.augmentation,
                                         randomize_track_ids=not config.fixed_track_ids,
                                         tracks_per_group=tuple(config.regression_tracks_per_sprite),
                                         still_group_dropout=config.regression_still_dropout),
    )
    optimizer = torch.optim.AdamW(student.parameters(), lr=config.regression_lr, weight_decay=0.0)
    trainer = SelfForcingRegressionTrainer(student, optimizer, run.streaming, regression_config, seed=config.seed + 3)
    start = time.monotonic()
    end = start + config.regression_minutes * 60.0 if config.regression_minutes else math.inf
    # A step cap and a time limit may both be given: the stage stops at whichever comes first.
    return run.fit("regression", student, trainer, lambda: trainer.train_step(batches.next())["loss"], optimizer,
                   config.regression_lr, config.regression_steps or None, start, end,
                   ema=trainer.ema, snapshot_every=config.regression_snapshot_every, log_every=10, deadline=end)


DEMO_CLIP_DATASET_SEED = 2026
DEMO_CLIP_FRAMES = 64  # 4 s at 16 fps: the first block of 1 frame, then 21 blocks of 3


def demo_clip(frames: int = DEMO_CLIP_FRAMES):
    """The example clip: the first held-out clip with three moving sprites on a noise background."""
    config = SyntheticMotionConfig(width=DEMO_SIZE, height=DEMO_SIZE, num_frames=frames, fps=DEMO_FPS, min_sprites=3)
    for index in range(1000):
        clip = generate_clip(config, clip_seed(DEMO_CLIP_DATASET_SEED, index))
        kinds = clip.metadata.trajectory_kinds
        if clip.metadata.background_kind == "noise" and "static" not in kinds and len(set(kinds)) == len(kinds):
            return clip
    raise RuntimeError("no example clip found")


def export_demo_assets(
    model_path: str | Path, assets_dir: str | Path, dtype: torch.dtype = torch.float16, streaming: dict | None = None
) -> dict:
    """Writes demo_model.safetensors (weights in `dtype`, metadata kept), demo_image.npy and demo_tracks.json.

    `streaming` overrides settings of the stored streaming config (inference settings chosen on
    validation clips, e.g. the commit's context noise).
    """
    import numpy as np

    from ..motion.formats import tracks_to_widget_json
    from ..model.weights import read_state_dict, write_safetensors_atomically
    from .checkpoints import read_streaming_config, streaming_config_json

    assets = Path(assets_dir)
    assets.mkdir(parents=True, exist_ok=True)
    tensors = {k: (v.to(dtype) if v.is_floating_point() else v) for k, v in read_state_dict(model_path).items()}
    metadata = read_metadata(model_path)
    if streaming:
        stored = read_streaming_config(model_path) or demo_streaming_config()
        metadata["streaming_config"] = streaming_config_json(dataclasses.replace(stored, **streaming))
    write_safetensors_atomically(tensors, assets / "demo_model.safetensors", metadata)
    clip = demo_clip()
    image = (clip.frames[0].permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()
    np.save(assets / "demo_image.npy", image)
    (assets / "demo_tracks.json").write_text(tracks_to_widget_json(clip.tracks))
    return {name: (assets / name).stat().st_size for name in ("demo_model.safetensors", "demo_image.npy", "demo_tracks.json")}


def _load_same_codec(path: str, codec: PatchCodec) -> torch.nn.Module:
    if read_metadata(path).get("codec") != codec.to_json():
        raise ValueError(f"{path} was trained with another latent codec (check --whiten-codec)")
    return load_weights(path)[0]


def _check_rollout_frames(config: RecipeConfig, streaming: StreamingConfig) -> None:
    """Fails before any training when DMD could not roll out the requested length."""
    try:
        check_rollout_length(streaming, SelfForcingDMDConfig(teacher_frames=config.clip_frames,
                                                             rollout_frames=config.dmd_rollout_frames))
    except ValueError as error:
        raise ValueError(f"dmd_rollout_frames {config.dmd_rollout_frames}: {error}") from error


def _schedule_lr(optimizer, config: RecipeConfig, peak: float, step: int, cap: int | None, start: float, end: float) -> None:
    progress = step / cap if cap else (time.monotonic() - start) / max(end - start, 1e-9)
    cosine = 0.5 * (1.0 + math.cos(math.pi * min(max(progress, 0.0), 1.0)))
    decay = config.final_lr_fraction + (1.0 - config.final_lr_fraction) * cosine
    warmup = min(1.0, (step + 1) / config.warmup_steps) if config.warmup_steps > 0 else 1.0
    for group in optimizer.param_groups:
        group["lr"] = peak * warmup * decay


def _continues(done: int, cap: int | None, deadline: float) -> bool:
    """A stage goes on until its step cap, or without a cap until its share of the budget is spent."""
    return done < cap if cap is not None else time.monotonic() < deadline


def _tail(values: list[float], count: int = 50) -> float:
    values = values[-count:]
    return sum(values) / len(values) if values else math.nan


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="runs/demo")
    parser.add_argument("--minutes", type=float, default=85.0, help="wall-clock budget of the three stages")
    parser.add_argument("--teacher-steps", type=int)
    parser.add_argument("--ode-steps", type=int)
    parser.add_argument("--dmd-steps", type=int)
    parser.add_argument("--ode-batches", type=int)
    parser.add_argument("--ode-teacher-steps", type=int, default=16)
    parser.add_argument("--pool-clips", type=int, default=3000)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--codec-fit-clips", type=int, default=64)
    parser.add_argument("--shares", type=float, nargs=3, default=(0.6, 0.25, 0.15))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--teacher-init", help="start the teacher from these weights")
    parser.add_argument("--student-init", help="skip the ODE initialisation: DMD starts from these student weights")
    parser.add_argument("--min-tracks", type=int, default=3, help="fewest tracks a training clip keeps")
    parser.add_argument("--max-speed", type=float, default=3.0, help="fastest sprite speed of training clips, px/frame")
    parser.add_argument("--clip-frames", type=int, default=13, help="frames per training clip (1 + 3k)")
    parser.add_argument("--warmup-steps", type=int, default=50, help="teacher and ODE learning-rate warm-up")
    parser.add_argument("--final-lr-fraction", type=float, default=0.1,
                        help="cosine decay of the teacher and ODE learning rates to this fraction (1: constant)")
    parser.add_argument("--dmd-rollout-frames", type=int, default=25,
                        help="latent frames per DMD rollout (1 + 3k; longer than --clip-frames trains extrapolation)")
    parser.add_argument("--dmd-lr", type=float, default=RecipeConfig.dmd_lr, help="student learning rate in DMD")
    parser.add_argument("--generator-update-every", type=int, default=RecipeConfig.generator_update_every,
                        help="DMD critic updates per student update")
    parser.add_argument("--dmd-snapshot-every", type=int, default=RecipeConfig.dmd_snapshot_every,
                        help="also keep the DMD EMA every N steps (dmd_ema_step<N>.safetensors)")
    parser.add_argument("--regression-steps", type=int, default=RecipeConfig.regression_steps,
                        help="then regress the student's own rollouts on the clips for this many steps (0: off)")
    parser.add_argument("--regression-minutes", type=float, help="wall-clock limit of that stage (alone: runs until it)")
    parser.add_argument("--regression-lr", type=float, default=RecipeConfig.regression_lr)
    parser.add_argument("--regression-pool-clips", type=int, default=RecipeConfig.regression_pool_clips)
    parser.add_argument("--regression-pool-seed", type=int, help="dataset seed of its clips (default: --seed + 11)")
    parser.add_argument("--regression-tracks-per-sprite", type=int, nargs="+", default=[],
                        help="tracks kept per sprite, drawn from these counts (e.g. 1 1 2 5), instead of every track")
    parser.add_argument("--regression-still-dropout", type=float, default=RecipeConfig.regression_still_dropout,
                        help="probability that a sprite that never moves loses all its tracks (it must stay put)")
    parser.add_argument("--regression-occlusion-share", type=float, default=RecipeConfig.regression_occlusion_share,
                        help="share of its clips in which a sprite passes behind another and comes out again")
    parser.add_argument("--regression-region-share", type=float, default=RecipeConfig.regression_region_share,
                        help="share of its clips conditioned by one region drag per sprite (the editor's grid)")
    parser.add_argument("--regression-motion-weight", type=float, default=RecipeConfig.regression_motion_weight,
                        help="cells that move (differ from the first frame) weigh 1 + this in its loss")
    parser.add_argument("--occlusion-signal", action="store_true",
                        help="give the student's track head an occlusion branch: hidden points apart from unspecified ones")
    parser.add_argument("--regression-snapshot-every", type=int, default=RecipeConfig.regression_snapshot_every,
                        help="also keep its EMA every N steps (regression_ema_step<N>.safetensors)")
    parser.add_argument("--whiten-codec", action=argparse.BooleanOptionalAction, default=True,
                        help="unit variance per codec component (else one shared scale)")
    parser.add_argument("--random-track-ids", action="store_true", help="train with fresh random track ids per clip")
    parser.add_argument("--threads", type=int)
    parser.add_argument("--device", default="cpu", help="where the models train, e.g. cuda (raise --batch-size there)")
    parser.add_argument("--export-assets", metavar="DIR",
                        help="after training, write the shipped assets (fp16 weights, example image and tracks) to DIR")
    parser.add_argument("--export-only", metavar="WEIGHTS", help="skip training: export these weights with --export-assets")
    parser.add_argument("--wan", default="{}", help="JSON overrides of the demo WanConfig (e.g. '{\"num_layers\": 2}')")
    parser.add_argument("--streaming", default="{}",
                        help="JSON overrides of the demo StreamingConfig for training and export (e.g. '{\"commit_step\": 200}')")
    args = parser.parse_args(argv)
    if args.export_only:
        print(export_demo_assets(args.export_only, args.export_assets or "motionstream_core/demo/assets",
                                 streaming=json.loads(args.streaming)))
        return
    config = RecipeConfig(
        out=args.out, minutes=args.minutes, teacher_steps=args.teacher_steps, ode_steps=args.ode_steps,
        dmd_steps=args.dmd_steps, ode_batches=args.ode_batches, ode_teacher_steps=args.ode_teacher_steps,
        pool_clips=args.pool_clips, batch_size=args.batch_size, codec_fit_clips=args.codec_fit_clips,
        shares=tuple(args.shares), seed=args.seed, teacher_init=args.teacher_init, student_init=args.student_init, min_tracks=args.min_tracks,
        max_speed=args.max_speed, fixed_track_ids=not args.random_track_ids, clip_frames=args.clip_frames,
        threads=args.threads, device=args.device, wan=json.loads(args.wan), streaming=json.loads(args.streaming),
        dmd_rollout_frames=args.dmd_rollout_frames, whiten_codec=args.whiten_codec, warmup_steps=args.warmup_steps,
        final_lr_fraction=args.final_lr_fraction, dmd_lr=args.dmd_lr,
        generator_update_every=args.generator_update_every, dmd_snapshot_every=args.dmd_snapshot_every,
        regression_steps=args.regression_steps, regression_minutes=args.regression_minutes,
        regression_lr=args.regression_lr, regression_pool_clips=args.regression_pool_clips,
        regression_pool_seed=args.regression_pool_seed,
        regression_snapshot_every=args.regression_snapshot_every,
        regression_tracks_per_sprite=tuple(args.regression_tracks_per_sprite),
        regression_still_dropout=args.regression_still_dropout,
        regression_occlusion_share=args.regression_occlusion_share, occlusion_signal=args.occlusion_signal,
        regression_region_share=args.regression_region_share, regression_motion_weight=args.regression_motion_weight,
    )
    final = run_recipe(config, log=lambda m: print(m, flush=True))
    print(f"wrote {final}")
    if args.export_assets:
        print(export_demo_assets(final, args.export_assets, streaming=json.loads(args.streaming)))


if __name__ == "__main__":
    main()
