"""Command line of the three training stages; the same command runs in one process or under torchrun.

    python -m motionstream_core.training teacher  --config teacher.json
    python -m motionstream_core.training ode_init --config ode.json --set steps=2000
    torchrun --nproc_per_node 8 -m motionstream_core.training dmd --config dmd.json

The config is JSON with the fields of `RunConfig`; stage settings (`teacher`, `ode_init`, `dmd`)
and `streaming` take the fields of `TeacherTrainingConfig`, `OdeInitConfig`,
`SelfForcingDMDConfig` and `StreamingConfig`. Rank 0 prints `step <n> <name>=<value> ...`
(losses are means over all processes) and appends the same to `<output_dir>/metrics.jsonl`,
writes `<output_dir>/<stage>_state.safetensors` every `save_every` steps (and resumes from it), and
writes the final weights `<output_dir>/<stage>.safetensors` (plus `dmd_ema.safetensors`).
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import sys
import typing
from pathlib import Path
from typing import Any, Sequence

import torch

from ..model.config import WanConfig
from ..streaming.session import StreamingConfig
from ..model.wan_dit import WanDiT
from ..model.weights import read_state_dict
from . import distributed
from .checkpoints import load_training_state, load_weights, save_training_state, save_weights
from .conditioned_model import TrackConditionedDiT
from .datasets import ClipFileDataset, RandomClipDataset, ShardedClipLoader
from .ema import ExponentialMovingAverage
from .ode_init import OdeInitConfig, OdeInitTrainer
from .self_forcing_dmd import SelfForcingDMDConfig, SelfForcingDMDTrainer
from .teacher import TeacherTrainer, TeacherTrainingConfig, add_input_channels, build_teacher

STAGES = ("teacher", "ode_init", "dmd")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    # Stage 1 starts from a Wan checkpoint, or from random weights of `wan_config` (smoke tests).
    base_weights: str | None = None
    wan_config: dict | None = None
    # Zero-initialised channels for image-to-video conditioning, when the base is text-to-video.
    extra_condition_channels: int = 0
    track_channels: int = 16
    track_id_dim: int = 128
    zero_track_head_output: bool = False
    # Stages 2 and 3: files written by the previous stage (`load_weights` layout). Without a
    # teacher file the teacher is built as stage 1 would start (smoke tests).
    teacher_weights: str | None = None
    student_weights: str | None = None
    critic_weights: str | None = None


@dataclasses.dataclass(frozen=True)
class DataConfig:
    # "clips": a directory of per-clip safetensors; "random": seeded random clips;
    # "factory": `module:callable` returning a sequence of clip dicts (called with `kwargs`).
    kind: str = "clips"
    path: str | None = None
    factory: str | None = None
    kwargs: dict = dataclasses.field(default_factory=dict)
    # A safetensors file holding a `null_text` tensor [L, text_dim] (the empty prompt's embedding).
    null_text: str | None = None


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
    lr: float = 1e-5
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.0
    eps: float = 1e-8


@dataclasses.dataclass(frozen=True)
class RunConfig:
    output_dir: str = "training_output"
    seed: int = 0
    steps: int = 1000
    batch_size: int = 1  # per process
    log_every: int = 1
    save_every: int = 0  # 0: only at the end
    device: str | None = None
    dtype: str = "float32"
    # FSDP compute dtype (parameters stay in `dtype`, gradients are reduced in float32).
    mixed_precision: str | None = None
    # Recompute block activations in backward (teacher, ODE-init student and critic; not the rollout).
    activation_checkpointing: bool = False
    model: ModelConfig = ModelConfig()
    data: DataConfig = DataConfig()
    optimizer: OptimizerConfig = OptimizerConfig()
    critic_optimizer: OptimizerConfig = OptimizerConfig()
    streaming: StreamingConfig = StreamingConfig.motionstream_paper()
    teacher: TeacherTrainingConfig = TeacherTrainingConfig()
    ode_init: OdeInitConfig = OdeInitConfig()
    dmd: SelfForcingDMDConfig = SelfForcingDMDConfig()


def build_dataclass(cls, data: dict[str, Any]):
    """A (nested) frozen dataclass from JSON-like data; unknown keys are an error."""
    if not isinstance(data, dict):
        raise ValueError(f"{cls.__name__} expects an object, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"unknown {cls.__name__} settings {unknown}; known: {sorted(names)}")
    values = {}
    for name, value in data.items():
        kind = hints[name]
        if dataclasses.is_dataclass(kind) and isinstance(value, dict):
            value = build_dataclass(kind, value)
        elif typing.get_origin(kind) is tuple and isinstance(value, list):
            value = tuple(value)
        values[name] = value
    return cls(**values)


def _apply_override(data: dict, assignment: str) -> None:
    key, _, raw = assignment.partition("=")
    if not _:
        raise ValueError(f"--set expects key=value, got {assignment!r}")
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    *parents, leaf = key.split(".")
    for parent in parents:
        data = data.setdefault(parent, {})
    data[leaf] = value


def load_run_config(path: str | None, overrides: Sequence[str] = ()) -> RunConfig:
    data = json.loads(Path(path).read_text()) if path else {}
    for assignment in overrides:
        _apply_override(data, assignment)
    return build_dataclass(RunConfig, data)


# --- building blocks ---


def _dataset(config: DataConfig):
    null_text = read_state_dict(config.null_text)["null_text"] if config.null_text else None
    if config.kind == "clips":
        if not config.path:
            raise ValueError("data.kind 'clips' needs data.path (a directory of per-clip safetensors)")
        return ClipFileDataset(config.path, null_text)
    if config.kind == "random":
        return RandomClipDataset(**config.kwargs)
    if config.kind == "factory":
        module, _, name = (config.factory or "").partition(":")
        if not name:
            raise ValueError("data.kind 'factory' needs data.factory = 'module:callable'")
        return getattr(importlib.import_module(module), name)(**config.kwargs)
    raise ValueError(f"unknown data.kind {config.kind!r}; use 'clips', 'random' or 'factory'")


def _initial_teacher(config: RunConfig, device: torch.device, dtype: torch.dtype) -> TrackConditionedDiT:
    model_config = config.model
    if model_config.base_weights:
        loaded = load_weights(model_config.base_weights, dtype=dtype, device=device)[0]
        if loaded.track_encoder is not None:  # already a track-conditioned checkpoint: continue from it
            return loaded
        base = loaded.transformer
    elif model_config.wan_config is not None:
        torch.manual_seed(config.seed)
        base = WanDiT(WanConfig.from_dict(model_config.wan_config)).to(device=device, dtype=dtype)
    else:
        raise ValueError("set model.base_weights (a Wan checkpoint) or model.wan_config (random weights)")
    if model_config.extra_condition_channels:
        add_input_channels(base, model_config.extra_condition_channels)
    torch.manual_seed(config.seed + 1)
    return build_teacher(base, model_config.track_channels, model_config.track_id_dim,
                         zero_track_head_output=model_config.zero_track_head_output)


def _load_or(path: str | None, fallback: TrackConditionedDiT, device, dtype) -> TrackConditionedDiT:
    if path:
        return load_weights(path, dtype=dtype, device=device)[0]
    return fallback.clone()


def _optimizer(model: torch.nn.Module, config: OptimizerConfig) -> torch.optim.Optimizer:
    trainable = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.AdamW(trainable, lr=config.lr, betas=config.betas, weight_decay=config.weight_decay, eps=config.eps)


class _MetricsLog:
    def __init__(self, output_dir: Path, is_main: bool):
        self.path = output_dir / "metrics.jsonl"
        self.is_main = is_main

    def write(self, step: int, metrics: dict[str, float]) -> None:
        if self.is_main:
            print(f"step {step} " + " ".join(f"{k}={v:.8g}" for k, v in metrics.items()), flush=True)
            with self.path.open("a") as handle:
                handle.write(json.dumps({"step": step, **metrics}) + "\n")


def run(stage: str, config: RunConfig) -> None:
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; use one of {STAGES}")
    context = distributed.init_distributed(config.device)
    try:
        _run(stage, config, context)
    finally:
        distributed.shutdown()


def _run(stage: str, config: RunConfig, context: distributed.DistributedContext) -> None:
    device, dtype = context.device, DTYPES[config.dtype]
    compute_dtype = DTYPES[config.mixed_precision] if config.mixed_precision else None
    output_dir = Path(config.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    state_path = output_dir / f"{stage}_state.safetensors"
    log = _MetricsLog(output_dir, context.is_main)
    loader = ShardedClipLoader(_dataset(config.data), config.batch_size, context.rank, context.world_size, config.seed)

    teacher = _initial_teacher(config, device, dtype) if stage == "teacher" or not config.model.teacher_weights \
        else load_weights(config.model.teacher_weights, dtype=dtype, device=device)[0]
    emas: dict[str, ExponentialMovingAverage] = {}

    def checkpointed(model: TrackConditionedDiT) -> TrackConditionedDiT:
        return distributed.checkpoint_activations(model) if config.activation_checkpointing else model

    if stage == "teacher":
        distributed.shard_model(checkpointed(teacher), compute_dtype)
        optimizer = _optimizer(teacher, config.optimizer)
        trainer = TeacherTrainer(teacher, optimizer, config.teacher, config.seed)
        models, optimizers, final = {"teacher": teacher}, {"teacher": (teacher, optimizer)}, teacher
    elif stage == "ode_init":
        student = checkpointed(_load_or(config.model.student_weights, teacher, device, dtype))
        distributed.shard_model(teacher, compute_dtype)
        distributed.shard_model(student, compute_dtype)
        optimizer = _optimizer(student, config.optimizer)
        trainer = OdeInitTrainer(student, teacher, optimizer, config.streaming, config.ode_init, config.seed)
        models, optimizers, final = {"student": student}, {"student": (student, optimizer)}, student
    else:
        student = _load_or(config.model.student_weights, teacher, device, dtype)
        critic = checkpointed(_load_or(config.model.critic_weights, teacher, device, dtype))
        for model in (teacher, student, critic):
            distributed.shard_model(model, compute_dtype)
        generator_optimizer = _optimizer(student, config.optimizer)
        critic_optimizer = _optimizer(critic, config.critic_optimizer)
        trainer = SelfForcingDMDTrainer(student, critic, teacher, generator_optimizer, critic_optimizer,
                                        config.streaming, config.dmd, config.seed)
        emas = {"generator": trainer.ema}
        models = {"generator": student, "critic": critic}
        optimizers = {"generator": (student, generator_optimizer), "critic": (critic, critic_optimizer)}
        final = student

    if state_path.exists():
        trainer.step = load_training_state(state_path, models, optimizers, emas)
        print(f"resumed from {state_path} at step {trainer.step}", flush=True)

    def save_state() -> None:
        save_training_state(state_path, trainer.step, models, optimizers, emas, {"stage": stage})

    while trainer.step < config.steps:
        step = trainer.step
        metrics = trainer.train_step(loader.batch(step))
        if step % config.log_every == 0 or trainer.step == config.steps:
            log.write(step, metrics)
        if config.save_every and trainer.step % config.save_every == 0:
            save_state()

    streaming = config.streaming if stage != "teacher" else None
    save_weights(output_dir / f"{stage}.safetensors", final, streaming)
    if emas:
        save_weights(output_dir / f"{stage}_ema.safetensors", final, streaming, state_dict=trainer.ema.state_dict())


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m motionstream_core.training", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("stage", choices=STAGES)
    parser.add_argument("--config", help="JSON file with RunConfig fields")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config field, dotted for nested ones (value parsed as JSON if it can be)")
    args = parser.parse_args(argv)
    run(args.stage, load_run_config(args.config, args.set))


if __name__ == "__main__":
    main(sys.argv[1:])
