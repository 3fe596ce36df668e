"""LoRA files for Wan 2.1 transformers: reading the common layouts and merging them into the weights.

Layouts read, behind any wrapper prefix (`transformer.`, `diffusion_model.`, `base_model.model.`, ...):
- PEFT / diffusers: `<module>.lora_A.weight` and `<module>.lora_B.weight`, optionally `<module>.alpha`; module
  names in the Wan naming (`blocks.0.self_attn.q`) or the diffusers one (`blocks.0.attn1.to_q`). diffusers keeps
  alpha in the safetensors metadata (`lora_adapter_metadata`) instead.
- kohya / musubi / ComfyUI: `lora_unet_blocks_0_self_attn_q.lora_down.weight`, `.lora_up.weight`, `.alpha`, and
  the same suffixes on dotted names (`diffusion_model.blocks.0.self_attn.q.lora_down.weight`).
- LongLive (NVlabs): a torch pickle {"generator_lora": ..., "critic_lora": ..., "step": ...} whose generator
  entry is PEFT's state dict of the causal Wan model (`base_model.model.blocks.0.self_attn.q.lora_A.weight`).
  PEFT stores no alpha; LongLive's configs use alpha = rank, which is the default here.
- ComfyUI differences: `<module>.diff` is added to the module's weight (or to a bare parameter such as
  `blocks.0.modulation`), `<module>.diff_b` to its bias.

Merging computes W' = W + strength * (alpha / rank) * up @ down in float32 and casts back to W's dtype.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import os
import re
from collections import defaultdict
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from . import key_schemes
from .weights import (
    PICKLE_SUFFIXES, WeightsError, load_pickled_checkpoint, unwrap_checkpoint, check_weight_tensors, parse_json, read_metadata,
    read_state_dict,
)

# How a LoRA key ends -> what the tensor is. `down` is PEFT's lora_A [rank, in], `up` its lora_B [out, rank].
_KEY_ROLES = (
    (".lora_A.weight", "down"),
    (".lora_down.weight", "down"),
    (".lora_B.weight", "up"),
    (".lora_up.weight", "up"),
    (".alpha", "alpha"),
    (".diff_b", "bias_diff"),
    (".diff", "diff"),
)
_ROLE_NAMES = {"down": "lora_A / lora_down", "up": "lora_B / lora_up"}
# Fragments of keys written by adapter methods other than plain LoRA -> the method's name, for the error.
_UNSUPPORTED_METHODS = {
    "hada_": "LoHa", "lokr_": "LoKr", ".dora_scale": "DoRA", ".lora_magnitude_vector": "DoRA",
    ".lora_mid.": "LoCon with a Tucker core", ".lora_B.bias": "LoRA with trained biases (lora_bias)",
}
# LongLive saves the generator's LoRA beside its critic's (a training-only model); only the first one samples.
_NESTED_LORA_KEYS = ("generator_lora",)
# diffusers writes the adapter config as JSON under this metadata key, its fields prefixed with the component.
_DIFFUSERS_METADATA_KEY = "lora_adapter_metadata"
_DIFFUSERS_COMPONENT = "transformer."

_DOTTED_PREFIX = re.compile(
    r"^(?:(?:base_model\.model|diffusion_model|transformer|model|module|_orig_mod|_fsdp_wrapped_module|unet)\.)+"
)
_UNDERSCORED_PREFIX = re.compile(r"^(?:(?:lora_unet|lora_transformer|lycoris)_+)?(?:(?:diffusion_model|transformer)_)?")


@dataclasses.dataclass
class LoraFile:
    """The tensors of a LoRA file and the settings stored beside them."""

    tensors: dict[str, torch.Tensor]
    source: str
    alpha: float | None = None  # for modules without an `.alpha` tensor; None: alpha = rank
    rank_stabilized: bool = False  # rsLoRA scales by alpha / sqrt(rank)


@dataclasses.dataclass(frozen=True)
class LowRankUpdate:
    source: str  # the key of `down` in the LoRA file
    down: torch.Tensor
    up: torch.Tensor
    scale: float  # alpha / rank

    @property
    def shape(self) -> tuple[int, ...]:
        return (self.up.shape[0], self.down.shape[1])

    def delta(self, device: torch.device) -> torch.Tensor:
        up, down = (t.to(device=device, dtype=torch.float32) for t in (self.up, self.down))
        return (up @ down) * self.scale


@dataclasses.dataclass(frozen=True)
class Difference:
    source: str  # the key in the LoRA file
    diff: torch.Tensor

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.diff.shape)

    def delta(self, device: torch.device) -> torch.Tensor:
        return self.diff.to(device=device, dtype=torch.float32)


def read_lora(path: str | os.PathLike) -> LoraFile:
    """A LoRA file (.safetensors, or .pt/.pth read with `weights_only=True`) in any layout named above."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"LoRA file not found: {path}" + (" (a folder, not a file)" if path.is_dir() else ""))
    if path.suffix == ".safetensors":
        lora = LoraFile(read_state_dict(path), str(path), *_diffusers_settings(read_metadata(path), path))
    elif path.suffix in PICKLE_SUFFIXES:
        lora = LoraFile(_read_pickled_lora(path), str(path))
    else:
        raise WeightsError(f"unsupported LoRA file type {path.suffix!r} ({path}); use .safetensors or .pt/.pth")
    if not any(_role_of(key) for key in lora.tensors):
        raise WeightsError(
            f"{path} is not a LoRA: none of its {len(lora.tensors)} tensors is named like a LoRA weight "
            f"(<module>.lora_A.weight, .lora_down.weight or .diff); first keys: {key_schemes._preview(lora.tensors, 5)}"
        )
    return lora


def _read_pickled_lora(path: Path) -> dict[str, torch.Tensor]:
    # mmap (in load_pickled_checkpoint): a LongLive file also holds the critic's LoRA, which is never read.
    checkpoint = load_pickled_checkpoint(path)
    if isinstance(checkpoint, Mapping):
        nested = next((checkpoint[k] for k in _NESTED_LORA_KEYS if isinstance(checkpoint.get(k), Mapping)), None)
        checkpoint = checkpoint if nested is None else nested
    return unwrap_checkpoint(checkpoint, path)


def _diffusers_settings(metadata: Mapping[str, str], path: Path) -> tuple[float | None, bool]:
    """(alpha, rsLoRA) from the adapter config diffusers stores in the metadata, or (None, False)."""
    if _DIFFUSERS_METADATA_KEY not in metadata:
        return None, False
    source = f"the {_DIFFUSERS_METADATA_KEY!r} metadata of {path}"
    config = parse_json(metadata[_DIFFUSERS_METADATA_KEY], source, "a LoRA adapter config")
    if not isinstance(config, dict):
        raise WeightsError(f"{source} is not a JSON object")

    def field(name: str) -> Any:
        return config.get(_DIFFUSERS_COMPONENT + name, config.get(name))

    if field("alpha_pattern"):
        raise WeightsError(f"{source} gives modules their own alphas (alpha_pattern), which this loader does not read")
    alpha = field("lora_alpha")
    if alpha is not None and (isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not math.isfinite(alpha)):
        raise WeightsError(f"{source} has the lora_alpha {alpha!r}; it must be a number")
    return (None if alpha is None else float(alpha)), bool(field("use_rslora"))


def _role_of(key: str) -> tuple[str, str] | None:
    """(module name as written in the file, role) of a LoRA key, or None for a key of no layout read here."""
    for ending, role in _KEY_ROLES:
        if key.endswith(ending):
            return key[: -len(ending)], role
    return None


class _ModuleNames:
    """Every spelling of a model's module names (Wan, diffusers, and both with kohya's underscores) -> the name in
    the model's state dict. A module's name is its parameter's name less `.weight`/`.bias` (a bare parameter
    such as `blocks.0.modulation` is its own module)."""

    def __init__(self, parameter_names):
        self.dotted: dict[str, str] = {}
        self.underscored: dict[str, str] = {}
        self.ambiguous: dict[str, set[str]] = defaultdict(set)
        for name in parameter_names:
            module = _module_of(name)
            diffusers = _diffusers_spelling(name)
            for spelling in {module} | ({_module_of(diffusers)} if diffusers else set()):
                self._add(self.dotted, spelling, module)
                self._add(self.underscored, spelling.replace(".", "_"), module)

    def _add(self, names: dict[str, str], spelling: str, module: str) -> None:
        if names.get(spelling, module) != module:
            self.ambiguous[spelling] |= {names[spelling], module}
        names[spelling] = module

    def resolve(self, name: str) -> str | None:
        dotted = _DOTTED_PREFIX.sub("", name, count=1)
        underscored = _UNDERSCORED_PREFIX.sub("", name, count=1)
        for spelling, names in ((dotted, self.dotted), (underscored, self.underscored)):
            if spelling in self.ambiguous:
                raise WeightsError(
                    f"the LoRA module {name!r} could be any of {sorted(self.ambiguous[spelling])} in this model"
                )
            if spelling in names:
                return names[spelling]
        return None


def _module_of(parameter: str) -> str:
    return parameter.rsplit(".", 1)[0] if parameter.endswith((".weight", ".bias")) else parameter


def _diffusers_spelling(parameter: str) -> str | None:
    try:
        return next(iter(key_schemes.wan_to_diffusers({parameter: None})))
    except ValueError:  # a name no Wan 2.1 naming scheme knows: it has its own spelling only
        return None


def resolve_updates(
    lora: LoraFile, parameters: Mapping[str, torch.Tensor]
) -> dict[str, list[LowRankUpdate | Difference]]:
    """The updates of every parameter the LoRA changes, keyed by the parameter's name in `parameters`.

    Checks every key, shape and dtype against `parameters` (tensors, or meta tensors standing for them) and
    raises one WeightsError naming what does not fit, before anything is computed.
    """
    names = _ModuleNames(parameters)
    parts: dict[tuple[str, str], dict[str, tuple[str, torch.Tensor]]] = defaultdict(dict)
    unreadable, unknown, repeated = [], [], []
    for key, tensor in lora.tensors.items():
        method = next((name for fragment, name in _UNSUPPORTED_METHODS.items() if fragment in key), None)
        if method is not None:
            raise WeightsError(f"{lora.source} is a {method} file (key {key!r}), which this loader does not merge")
        parsed = _role_of(key)
        if parsed is None:
            unreadable.append(key)
            continue
        written, role = parsed
        module = names.resolve(written)
        if module is None:
            unknown.append(key)
            continue
        kind = role if role in ("diff", "bias_diff") else "low_rank"
        entry = parts[(module, kind)]
        if role in entry:
            repeated.append(f"{entry[role][0]} and {key}")
        entry[role] = (key, tensor)
    problems = []
    if unreadable:
        problems.append(f"keys of no LoRA layout read here: {key_schemes._preview(unreadable)}")
    if unknown:
        problems.append(
            f"keys that match no weight of the model: {key_schemes._preview(unknown)} (the model's weights are "
            f"named like {_naming_example(parameters)}; is the LoRA for another model?)"
        )
    if repeated:
        problems.append(f"weights given twice: {key_schemes._preview(repeated)}")
    if problems:
        raise WeightsError(f"{lora.source}: " + "; ".join(problems))

    updates: dict[str, list[LowRankUpdate | Difference]] = defaultdict(list)
    for (module, kind), entry in parts.items():
        try:
            target, update = _UPDATE_BUILDERS[kind](module, entry, parameters, lora)
        except WeightsError as error:
            problems.append(str(error))
            continue
        if update.shape != tuple(parameters[target].shape):
            problems.append(
                f"{update.source} makes a change of shape {update.shape} for {target}, "
                f"whose shape is {tuple(parameters[target].shape)}"
            )
            continue
        updates[target].append(update)
    if problems:
        raise WeightsError(f"{lora.source} does not fit the model: " + "; ".join(problems[:8])
                           + (f" ... ({len(problems) - 8} more)" if len(problems) > 8 else ""))
    return dict(updates)


def _naming_example(parameters: Mapping[str, torch.Tensor]) -> str:
    """A Linear weight of the model (a transformer block's, if it has blocks) in its naming and the diffusers one."""
    linear = [name for name, tensor in parameters.items() if name.endswith(".weight") and tensor.ndim == 2]
    name = next((n for n in linear if n.startswith("blocks.")), next(iter(linear or parameters), "nothing"))
    diffusers = _diffusers_spelling(name)
    return name + (f" (diffusers naming: {diffusers})" if diffusers and diffusers != name else "")


def _low_rank_update(module, entry, parameters, lora) -> tuple[str, LowRankUpdate]:
    missing = [role for role in ("down", "up") if role not in entry]
    if missing:
        present = next(iter(entry.values()))[0]
        raise WeightsError(f"{present} comes without its {' and '.join(_ROLE_NAMES[r] for r in missing)} weight")
    (down_key, down), (up_key, up) = entry["down"], entry["up"]
    check_weight_tensors({down_key: down, up_key: up})
    target = f"{module}.weight"
    if target not in parameters or parameters[target].ndim != 2:
        what = f"shape {tuple(parameters[target].shape)}" if target in parameters else "no .weight"
        raise WeightsError(f"{down_key} targets {module}, which is no Linear layer ({what}); only Linear layers take a LoRA")
    if down.ndim != 2 or up.ndim != 2 or down.shape[0] != up.shape[1]:
        raise WeightsError(
            f"{down_key} {tuple(down.shape)} and {up_key} {tuple(up.shape)} are no LoRA pair of a Linear layer "
            "([rank, in] and [out, rank])"
        )
    rank = down.shape[0]
    alpha = _alpha(entry["alpha"]) if "alpha" in entry else lora.alpha
    alpha = float(rank) if alpha is None else alpha
    scale = alpha / (math.sqrt(rank) if lora.rank_stabilized else rank)
    return target, LowRankUpdate(down_key, down, up, scale)


def _alpha(entry: tuple[str, torch.Tensor]) -> float:
    key, tensor = entry
    if tensor.numel() != 1 or tensor.is_complex() or tensor.dtype == torch.bool or not torch.isfinite(tensor).all():
        raise WeightsError(f"{key} must hold one finite number, found shape {tuple(tensor.shape)} dtype {tensor.dtype}")
    return float(tensor.reshape(()).item())


def _difference(module, entry, parameters, lora) -> tuple[str, Difference]:
    key, diff = entry["diff"]
    check_weight_tensors({key: diff})
    target = f"{module}.weight" if f"{module}.weight" in parameters else module
    if target not in parameters:
        raise WeightsError(f"{key} targets {module}, which has no weight")
    return target, Difference(key, diff)


def _bias_difference(module, entry, parameters, lora) -> tuple[str, Difference]:
    key, diff = entry["bias_diff"]
    check_weight_tensors({key: diff})
    target = f"{module}.bias"
    if target not in parameters:
        raise WeightsError(f"{key} targets {module}, which has no bias")
    return target, Difference(key, diff)


_UPDATE_BUILDERS = {"low_rank": _low_rank_update, "diff": _difference, "bias_diff": _bias_difference}


def merge_into_state_dict(
    state_dict: Mapping[str, torch.Tensor], lora: LoraFile, strength: float = 1.0
) -> dict[str, torch.Tensor]:
    """A new state dict with the LoRA merged; `state_dict` (the model's own names, as `WanDiT.state_dict()`
    gives them) is left as it was, and the tensors the LoRA does not change are the same objects in both."""
    if not math.isfinite(strength):
        raise ValueError(f"the LoRA strength must be a finite number, got {strength}")
    updates = resolve_updates(lora, state_dict)
    merged = dict(state_dict)
    with torch.no_grad():
        for name, changes in updates.items():
            weight = state_dict[name]
            result = weight.to(torch.float32)
            for change in changes:
                result = result + strength * change.delta(weight.device)
            if not torch.isfinite(result).all():
                raise WeightsError(f"{lora.source}: merging {changes[0].source} makes {name} non-finite (inf or NaN)")
            merged[name] = result.to(weight.dtype)
    return merged


def merged_copy(model: nn.Module, lora: LoraFile, strength: float = 1.0) -> nn.Module:
    """A copy of `model` with the LoRA merged into its weights; `model` is left as it was.

    Weights the LoRA does not change share their memory with `model`, held by parameters of their own, so that
    moving or casting one model leaves the other as it is; only the changed weights take new memory.
    """
    merged = merge_into_state_dict(model.state_dict(), lora, strength)
    shared = {id(tensor): tensor for tensor in (*model.parameters(), *model.buffers())}
    result = copy.deepcopy(model, memo=shared)
    result.load_state_dict(merged, strict=True, assign=True)  # new Parameter objects for every weight
    return result
