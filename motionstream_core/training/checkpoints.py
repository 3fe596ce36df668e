"""Saving and resuming training, and writing final weights that `load_dit` reads.

Final weights: one safetensors file with the transformer in canonical Wan names, the track head
under `track_encoder.*`, and in the metadata the `WanConfig` ("config") and the `StreamingConfig`
("streaming_config") as JSON. Training state: one safetensors file with every model, EMA and
optimizer tensor under a `model/<name>/`, `ema/<name>/` or `optimizer/<name>/` prefix, and the
step and optimizer hyper-parameters in the metadata. Both are written by rank 0 through a
temporary file and a rename; sharded tensors are gathered first (every rank must call).
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Mapping

import torch
from torch import nn

from ..streaming.session import StreamingConfig
from ..motion.track_head import TrackEncoder
from ..model.weights import (
    WeightsError,
    load_dit,
    parse_json,
    read_metadata,
    read_state_dict,
    write_safetensors_atomically,
)
from . import distributed
from .conditioned_model import TrackConditionedDiT
from .ema import ExponentialMovingAverage

FORMAT = "motionstream"
TRAINING_STATE_FORMAT = "motionstream-training-state"
_TRANSFORMER_PREFIX = "transformer."


def streaming_config_json(config: StreamingConfig) -> str:
    return json.dumps(dataclasses.asdict(config), sort_keys=True)


def read_streaming_config(path: str | os.PathLike) -> StreamingConfig | None:
    """The StreamingConfig stored with a weights file, if any (older files' spellings included)."""
    metadata = read_metadata(path)
    if "streaming_config" not in metadata:
        return None
    settings = parse_json(metadata["streaming_config"], f"the streaming_config metadata of {path}", "JSON")
    if not isinstance(settings, dict):
        raise WeightsError(f"the streaming_config metadata of {path} must be a JSON object")
    try:
        return StreamingConfig.from_dict(settings)
    except (TypeError, ValueError) as error:
        raise WeightsError(f"the streaming_config metadata of {path} is not a valid streaming config: {error}") from error


def weights_tensors(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A `TrackConditionedDiT` state dict in the file layout: canonical transformer names + `track_encoder.*`."""
    tensors = {}
    for key, value in state_dict.items():
        tensors[key[len(_TRANSFORMER_PREFIX):] if key.startswith(_TRANSFORMER_PREFIX) else key] = value
    return tensors


def save_weights(
    path: str | os.PathLike,
    model: TrackConditionedDiT,
    streaming: StreamingConfig | None = None,
    state_dict: Mapping[str, torch.Tensor] | None = None,
    metadata: Mapping[str, str] | None = None,
) -> None:
    """Writes the model's weights (or `state_dict`, e.g. its EMA, in the same names) for inference."""
    state = distributed.full_state_dict(model) if state_dict is None else state_dict
    if distributed.rank() == 0:
        info = {"format": FORMAT, "config": json.dumps(model.config.to_dict())}
        if streaming is not None:
            info["streaming_config"] = streaming_config_json(streaming)
        info.update(metadata or {})
        write_safetensors_atomically(weights_tensors(state), path, info)
    distributed.barrier()


def load_weights(
    path: str | os.PathLike, dtype: torch.dtype | None = None, device: torch.device | str = "cpu"
) -> tuple[TrackConditionedDiT, StreamingConfig | None]:
    """A model (with its track head, if the file has one) and the StreamingConfig it was trained for."""
    transformer, track_weights = load_dit(path, dtype=dtype, device=device)
    track_encoder = None
    if track_weights:
        track_encoder = TrackEncoder.from_state_dict(track_weights).to(device=device, dtype=transformer.dtype)
    return TrackConditionedDiT(transformer, track_encoder), read_streaming_config(path)


# --- training state ---


def _flatten_optimizer_state(prefix: str, state: dict) -> tuple[dict[str, torch.Tensor], str]:
    tensors = {}
    for parameter, values in state.get("state", {}).items():
        for key, value in values.items():
            tensors[f"{prefix}state/{parameter}/{key}"] = torch.as_tensor(value).detach().cpu()
    return tensors, json.dumps(state.get("param_groups", []))


def _unflatten_optimizer_state(prefix: str, tensors: Mapping[str, torch.Tensor], param_groups: str) -> dict:
    state: dict[str, dict] = {}
    for key, value in tensors.items():
        if key.startswith(prefix + "state/"):
            parameter, name = key[len(prefix + "state/"):].rsplit("/", 1)
            state.setdefault(parameter, {})[name] = value
    return {"state": state, "param_groups": json.loads(param_groups)}


def save_training_state(
    path: str | os.PathLike,
    step: int,
    models: Mapping[str, nn.Module],
    optimizers: Mapping[str, tuple[nn.Module, torch.optim.Optimizer]] = {},
    emas: Mapping[str, ExponentialMovingAverage] = {},
    metadata: Mapping[str, str] | None = None,
) -> None:
    """Everything needed to resume: weights, EMA weights and optimizer state (optimizers keyed with their module)."""
    tensors: dict[str, torch.Tensor] = {}
    info = {"format": TRAINING_STATE_FORMAT, "step": str(step)}
    for name, module in models.items():
        tensors.update({f"model/{name}/{k}": v for k, v in distributed.full_state_dict(module).items()})
    for name, ema in emas.items():
        tensors.update({f"ema/{name}/{k}": v.detach().cpu() for k, v in ema.state_dict().items()})
    for name, (module, optimizer) in optimizers.items():
        flat, groups = _flatten_optimizer_state(f"optimizer/{name}/", distributed.full_optimizer_state_dict(module, optimizer))
        tensors.update(flat)
        info[f"optimizer/{name}/param_groups"] = groups
    info.update(metadata or {})
    if distributed.rank() == 0:
        write_safetensors_atomically(tensors, path, info)
    distributed.barrier()


def load_training_state(
    path: str | os.PathLike,
    models: Mapping[str, nn.Module],
    optimizers: Mapping[str, tuple[nn.Module, torch.optim.Optimizer]] = {},
    emas: Mapping[str, ExponentialMovingAverage] = {},
) -> int:
    """Restores what `save_training_state` wrote into the given (possibly sharded) objects; returns the step."""
    path = Path(path)
    metadata = read_metadata(path)
    if metadata.get("format") != TRAINING_STATE_FORMAT:
        raise ValueError(f"{path} is not a training state file (format {metadata.get('format')!r})")
    tensors = read_state_dict(path)

    def section(prefix: str) -> dict[str, torch.Tensor]:
        return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}

    for name, module in models.items():
        distributed.load_full_state_dict(module, section(f"model/{name}/"))
    for name, ema in emas.items():
        ema.load_state_dict(section(f"ema/{name}/"))
    for name, (module, optimizer) in optimizers.items():
        prefix = f"optimizer/{name}/"
        state = _unflatten_optimizer_state(prefix, tensors, metadata[f"{prefix}param_groups"])
        distributed.load_full_optimizer_state_dict(module, optimizer, state)
    return int(metadata["step"])
