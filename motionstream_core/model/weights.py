"""Reading and writing weight files, and building a `WanDiT` from any public Wan 2.1 checkpoint layout."""

from __future__ import annotations

import json
import os
import pickle
import tempfile
from pathlib import Path
from typing import Mapping

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from . import key_schemes
from .config import WanConfig
from .wan_dit import WanDiT

PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")
# Training checkpoints keep the weights under one of these keys, best first.
_CHECKPOINT_KEYS = ("generator_ema", "generator", "state_dict", "model", "module")
_DIFFUSERS_INDEX_NAMES = ("diffusion_pytorch_model.safetensors.index.json", "model.safetensors.index.json")
_FP8_DTYPES = tuple(getattr(torch, name) for name in ("float8_e4m3fn", "float8_e5m2") if hasattr(torch, name))


class WeightsError(ValueError):
    """A weights file that cannot be read or does not fit the model; the message says why."""


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """All tensors of a checkpoint: a safetensors file, a sharded diffusers directory or a pickle.

    Pickles are opened with `weights_only=True`, so a file that carries code is refused.
    """
    path = Path(path)
    if path.is_dir():
        return _read_directory(path)
    if not path.exists():
        raise WeightsError(f"weights file not found: {path}")
    if path.suffix == ".safetensors":
        return _read_safetensors(path)
    if path.suffix in PICKLE_SUFFIXES:
        return _read_pickle(path)
    raise WeightsError(f"unsupported weights file type {path.suffix!r} ({path}); use .safetensors or .pt/.pth")


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The string metadata of a safetensors file (empty for other formats)."""
    path = Path(path)
    if path.suffix != ".safetensors" or not path.is_file():
        return {}
    with _open_safetensors(path) as handle:
        return dict(handle.metadata() or {})


def _open_safetensors(path: Path):
    try:
        return safe_open(str(path), framework="pt", device="cpu")
    except (SafetensorError, OSError, ValueError) as error:
        raise WeightsError(f"{path} is not a readable safetensors file (truncated or corrupt?): {error}") from error


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    with _open_safetensors(path) as handle:
        try:
            return {key: handle.get_tensor(key) for key in handle.keys()}
        except (SafetensorError, OSError, RuntimeError) as error:
            raise WeightsError(f"{path} is truncated or corrupt: {error}") from error


def _read_pickle(path: Path) -> dict[str, torch.Tensor]:
    try:
        try:
            checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as error:
            if "mmap" not in str(error):
                raise
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)  # legacy, non-zip format
    except pickle.UnpicklingError as error:
        raise WeightsError(
            f"{path} holds more than plain tensors, and it is not unpickled for safety (weights_only=True). "
            "Convert it to .safetensors with a tool you trust."
        ) from error
    except (RuntimeError, EOFError, OSError) as error:
        raise WeightsError(f"{path} is not a readable PyTorch checkpoint (truncated or corrupt?): {error}") from error
    return _unwrap_checkpoint(checkpoint, path)


def _unwrap_checkpoint(checkpoint, path: Path) -> dict[str, torch.Tensor]:
    while isinstance(checkpoint, Mapping) and not _is_tensor_dict(checkpoint):
        inner = next((checkpoint[k] for k in _CHECKPOINT_KEYS if isinstance(checkpoint.get(k), Mapping)), None)
        if inner is None:
            raise WeightsError(
                f"{path} has no weights under any of {list(_CHECKPOINT_KEYS)}; top-level keys: {list(checkpoint)[:10]}"
            )
        checkpoint = inner
    if not isinstance(checkpoint, Mapping):
        raise WeightsError(f"{path} does not contain a state dict (found {type(checkpoint).__name__})")
    return {k: v for k, v in checkpoint.items() if isinstance(v, torch.Tensor)}


def _is_tensor_dict(mapping: Mapping) -> bool:
    return bool(mapping) and all(isinstance(v, torch.Tensor) for v in mapping.values())


def _read_directory(path: Path) -> dict[str, torch.Tensor]:
    for candidate in (path, path / "transformer"):
        for index_name in _DIFFUSERS_INDEX_NAMES:
            index_path = candidate / index_name
            if index_path.is_file():
                return _read_sharded(index_path)
        files = sorted(candidate.glob("*.safetensors")) if candidate.is_dir() else []
        if len(files) == 1:
            return _read_safetensors(files[0])
        if len(files) > 1:
            raise WeightsError(f"{candidate} holds several .safetensors files and no index json: {[f.name for f in files]}")
    raise WeightsError(f"no weights found in directory {path}")


def _read_sharded(index_path: Path) -> dict[str, torch.Tensor]:
    try:
        weight_map = json.loads(index_path.read_text())["weight_map"]
    except (json.JSONDecodeError, KeyError, TypeError) as error:
        raise WeightsError(f"{index_path} is not a valid safetensors index: {error}") from error
    state_dict = {}
    for shard in sorted(set(weight_map.values())):
        shard_path = index_path.parent / shard
        if not shard_path.is_file():
            raise WeightsError(f"shard {shard} listed in {index_path.name} is missing")
        state_dict.update(_read_safetensors(shard_path))
    missing = sorted(set(weight_map) - set(state_dict))
    if missing:
        raise WeightsError(f"keys listed in {index_path.name} are missing from its shards: {missing[:8]}")
    return state_dict


def read_config_file(path: str | os.PathLike) -> WanConfig | None:
    """The config stored beside the weights (diffusers `config.json` or safetensors metadata), if any."""
    path = Path(path)
    for candidate in (path / "config.json", path / "transformer" / "config.json") if path.is_dir() else ():
        if candidate.is_file():
            return WanConfig.from_dict(json.loads(candidate.read_text()))
    metadata = read_metadata(path)
    if "config" in metadata:
        return WanConfig.from_dict(json.loads(metadata["config"]))
    return None


def dequantize(state_dict: dict[str, torch.Tensor], dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """Turns fp8 weights (plain, or ComfyUI 'scaled fp8' with `.scale_weight`) into `dtype`; refuses other quantisations."""
    unsupported = [k for k in state_dict if k.endswith((".weight_scale", ".weight_scale_2", ".comfy_quant", ".input_scale"))]
    if unsupported:
        raise WeightsError(
            "these weights use a quantisation format this loader cannot read "
            f"(keys such as {unsupported[:3]}); use an fp16/bf16/fp32 or fp8-scaled file"
        )
    scales = {k[: -len(".scale_weight")]: state_dict.pop(k) for k in list(state_dict) if k.endswith(".scale_weight")}
    for key in [k for k in state_dict if k.endswith(".scale_input") or k == "scaled_fp8"]:
        state_dict.pop(key)
    for key, value in state_dict.items():
        if value.dtype in _FP8_DTYPES:
            value = value.to(torch.float32)
            scale = scales.get(key[: -len(".weight")]) if key.endswith(".weight") else None
            if scale is not None:
                value = value * scale.to(torch.float32)
            state_dict[key] = value.to(dtype)
    return state_dict


def check_fits(model: torch.nn.Module, state_dict: Mapping[str, torch.Tensor]) -> None:
    """Raises WeightsError naming every missing, unexpected and wrongly shaped key."""
    expected = {**dict(model.named_parameters()), **dict(model.named_buffers())}
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    wrong = sorted(
        f"{k} (file {tuple(state_dict[k].shape)}, model {tuple(expected[k].shape)})"
        for k in set(expected) & set(state_dict)
        if tuple(state_dict[k].shape) != tuple(expected[k].shape)
    )
    problems = []
    if missing:
        problems.append(f"missing keys: {key_schemes._preview(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {key_schemes._preview(unexpected)}")
    if wrong:
        problems.append(f"wrongly shaped keys: {key_schemes._preview(wrong)}")
    if problems:
        raise WeightsError("the weights do not fit the model: " + "; ".join(problems))


def build_dit(
    state_dict: dict[str, torch.Tensor],
    config: WanConfig | None = None,
    dtype: torch.dtype | None = None,
    device: torch.device | str = "cpu",
) -> tuple[WanDiT, dict[str, torch.Tensor]]:
    """A `WanDiT` holding the given tensors (no second copy), plus the track-encoder weights found beside it.

    The state dict is consumed: its tensors move into the model.
    """
    try:
        canonical = key_schemes.to_canonical(state_dict)
    except ValueError as error:
        raise WeightsError(str(error)) from error
    state_dict.clear()
    transformer, track_encoder = key_schemes.split_track_encoder(canonical)
    del canonical  # so that dtype conversion below frees each original tensor as it goes
    if dtype is None:
        dtype = next((v.dtype for k, v in transformer.items() if k.endswith(".weight") and v.is_floating_point()
                      and v.dtype not in _FP8_DTYPES), torch.bfloat16)
    transformer = dequantize(transformer, dtype)
    if config is None:
        try:
            config = WanConfig.from_state_dict(transformer)
        except ValueError as error:
            raise WeightsError(str(error)) from error
    with torch.device("meta"):
        model = WanDiT(config)
    check_fits(model, transformer)
    for key in list(transformer):
        transformer[key] = transformer[key].to(device=device, dtype=dtype)
    model.load_state_dict(transformer, strict=True, assign=True)
    return model, track_encoder


def load_dit(
    path: str | os.PathLike,
    dtype: torch.dtype | None = None,
    device: torch.device | str = "cpu",
    config: WanConfig | None = None,
) -> tuple[WanDiT, dict[str, torch.Tensor]]:
    """Loads a Wan 2.1 transformer from any supported file or directory."""
    return build_dit(read_state_dict(path), config=config or read_config_file(path), dtype=dtype, device=device)


def write_safetensors_atomically(
    tensors: Mapping[str, torch.Tensor], path: str | os.PathLike, metadata: Mapping[str, str] | None = None
) -> None:
    """Writes through a temporary file and a rename, so a failure never leaves a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".partial")
    os.close(handle)
    try:
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, temporary, metadata=dict(metadata or {}))
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def save_state_dict(
    state_dict: Mapping[str, torch.Tensor],
    path: str | os.PathLike,
    scheme: str = "wan",
    metadata: Mapping[str, str] | None = None,
) -> None:
    """Writes canonical weights as safetensors in the given naming ('wan' or 'diffusers'), atomically."""
    if scheme not in ("wan", "diffusers"):
        raise ValueError(f"unknown key scheme {scheme!r}; use 'wan' or 'diffusers'")
    tensors = key_schemes.wan_to_diffusers(state_dict) if scheme == "diffusers" else state_dict
    write_safetensors_atomically(tensors, path, metadata)
