"""Reading and writing weight files, and building a `WanDiT` from any public Wan 2.1 checkpoint layout."""

from __future__ import annotations

import dataclasses
import json
import os
import pickle
import re
import tempfile
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any, Iterable, Mapping

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
# Training checkpoints nest their weights a few dicts deep ({"generator_ema": {"model": ...}}); deeper is not a checkpoint.
_MAX_CHECKPOINT_NESTING = 8
# A config.json is a few hundred bytes and a shard index a few hundred KB; anything far larger is not one.
_MAX_CONFIG_BYTES = 1 << 20
_MAX_INDEX_BYTES = 64 << 20
# Config keys that say something about the architecture (this package's, Wan's and diffusers' names).
_ARCHITECTURE_KEYS = {field.name for field in dataclasses.fields(WanConfig)} | {
    "in_dim", "out_dim", "model_type", "num_attention_heads", "attention_head_dim",
}
# safetensors dtype names -> torch dtypes, for reading shapes and dtypes from a header without loading data.
_SAFETENSORS_DTYPES = {
    name: getattr(torch, attribute)
    for name, attribute in (
        ("F64", "float64"), ("F32", "float32"), ("F16", "float16"), ("BF16", "bfloat16"),
        ("F8_E4M3", "float8_e4m3fn"), ("F8_E5M2", "float8_e5m2"), ("I64", "int64"), ("I32", "int32"),
        ("I16", "int16"), ("I8", "int8"), ("U64", "uint64"), ("U32", "uint32"), ("U16", "uint16"),
        ("U8", "uint8"), ("BOOL", "bool"), ("C64", "complex64"),
    )
    if hasattr(torch, attribute)
}


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


def read_tensor_specs(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The shapes and dtypes of a safetensors file's tensors, as meta tensors, read from its header alone.

    No tensor data is read or allocated, so a loader can check a file against its model first.
    """
    path = Path(path)
    if path.suffix != ".safetensors" or not path.is_file():
        raise WeightsError(f"{path} is not a .safetensors file; only their headers can be read without the data")
    specs = {}
    with _open_safetensors(path) as handle:
        try:
            for key in handle.keys():
                tensor = handle.get_slice(key)
                dtype_name = tensor.get_dtype()
                if dtype_name not in _SAFETENSORS_DTYPES:
                    raise WeightsError(f"{path}: tensor {key!r} has the dtype {dtype_name}, which torch cannot hold")
                specs[key] = torch.empty(tuple(tensor.get_shape()), dtype=_SAFETENSORS_DTYPES[dtype_name], device="meta")
        except (SafetensorError, OSError, RuntimeError, TypeError) as error:
            raise WeightsError(f"{path} has a corrupt safetensors header: {error}") from error
    return specs


def _open_safetensors(path: Path):
    try:
        return safe_open(str(path), framework="pt", device="cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError, TypeError) as error:
        raise WeightsError(f"{path} is not a readable safetensors file (truncated or corrupt?): {error}") from error


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    with _open_safetensors(path) as handle:
        try:
            return {key: handle.get_tensor(key) for key in handle.keys()}
        except (SafetensorError, OSError, RuntimeError, ValueError, TypeError) as error:
            raise WeightsError(f"{path} is truncated or corrupt: {error}") from error


def _read_pickle(path: Path) -> dict[str, torch.Tensor]:
    return unwrap_checkpoint(load_pickled_checkpoint(path), path)


def load_pickled_checkpoint(path: Path) -> Any:
    """A `.pt/.pth` file's object, read with `weights_only=True` (plain containers and tensors only)."""
    # mmap: tensors stay views of the file until a loader has checked their shapes against its model.
    try:
        try:
            checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as error:
            if "mmap" not in str(error):
                raise
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)  # legacy, non-zip format
    except pickle.UnpicklingError as error:
        raise WeightsError(
            f"{path} holds more than plain tensors, or is corrupt, and it is not unpickled for safety "
            f"(weights_only=True): {_first_line(error)}. Convert it to .safetensors with a tool you trust."
        ) from error
    except MemoryError as error:
        raise WeightsError(f"{path} declares tensors larger than memory (corrupt?)") from error
    except Exception as error:  # a corrupt zip or pickle raises anything from EOFError to KeyError
        raise WeightsError(
            f"{path} is not a readable PyTorch checkpoint (truncated or corrupt?): {type(error).__name__}: {_first_line(error)}"
        ) from error
    return checkpoint


def _first_line(error: BaseException, limit: int = 300) -> str:
    text = str(error).strip().splitlines()
    return text[0][:limit] if text else type(error).__name__


def unwrap_checkpoint(checkpoint, path: Path) -> dict[str, torch.Tensor]:
    """The state dict inside a training checkpoint: follows `_CHECKPOINT_KEYS`, refusing cycles and deep nesting."""
    trail: list[str] = []
    seen: set[int] = set()
    while isinstance(checkpoint, Mapping) and not _is_tensor_dict(checkpoint):
        if id(checkpoint) in seen:
            raise WeightsError(
                f"{path} is not a checkpoint: its dicts contain themselves (the cycle {'.'.join(trail)}), "
                "so there are no weights to find"
            )
        if len(trail) >= _MAX_CHECKPOINT_NESTING:
            raise WeightsError(
                f"{path} nests dicts more than {_MAX_CHECKPOINT_NESTING} deep ({'.'.join(trail[:8])}...) "
                "without reaching a state dict"
            )
        seen.add(id(checkpoint))
        key = next((k for k in _CHECKPOINT_KEYS if isinstance(checkpoint.get(k), Mapping)), None)
        if key is None:
            where = f" under {'.'.join(trail)}" if trail else ""
            raise WeightsError(
                f"{path} has no weights{where} under any of {list(_CHECKPOINT_KEYS)}; "
                f"keys: {[str(k)[:64] for k in list(checkpoint)[:10]]}"
            )
        trail.append(key)
        checkpoint = checkpoint[key]
    if not isinstance(checkpoint, Mapping):
        raise WeightsError(f"{path} does not contain a state dict (found {type(checkpoint).__name__})")
    tensors = {k: v for k, v in checkpoint.items() if isinstance(v, torch.Tensor)}
    bad_keys = [k for k in tensors if not isinstance(k, str)]
    if bad_keys:
        raise WeightsError(f"{path}: tensor names must be strings, found {[repr(k)[:64] for k in bad_keys[:5]]}")
    return tensors


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


def _read_json(path: Path, what: str, max_bytes: int) -> Any:
    """A JSON file's content; any problem (size, encoding, syntax, nesting) is a WeightsError naming the file."""
    try:
        size = path.stat().st_size
        if size > max_bytes:
            raise WeightsError(f"{path} is {size} bytes, too large to be {what} (at most {max_bytes})")
        return parse_json(path.read_bytes(), f"{path}", what)
    except OSError as error:
        raise WeightsError(f"{path} ({what}) cannot be read: {error}") from error


def parse_json(text: str | bytes, source: str, what: str) -> Any:
    """JSON text (or UTF-8 bytes) from `source`; any problem is a WeightsError naming the source and `what` it should be."""
    try:
        if isinstance(text, bytes):
            text = text.decode("utf-8")
        return json.loads(text)
    except UnicodeDecodeError as error:
        raise WeightsError(f"{source} is not valid {what}: not UTF-8 text ({error.reason} at byte {error.start})") from error
    except json.JSONDecodeError as error:
        raise WeightsError(f"{source} is not valid {what}: bad JSON: {error}") from error
    except (RecursionError, ValueError) as error:  # nesting too deep, integers with thousands of digits
        raise WeightsError(f"{source} is not valid {what}: {_first_line(error)}") from error


def _shard_path(index_path: Path, shard: str) -> Path:
    """The shard's path inside the index's folder; names that could point elsewhere are refused."""
    name = PurePosixPath(shard)
    if (
        not shard or "\\" in shard or "\x00" in shard or name.is_absolute() or PureWindowsPath(shard).drive
        or ".." in name.parts or name.suffix != ".safetensors"
    ):
        raise WeightsError(
            f"{index_path} lists the shard {shard[:200]!r}, which is not a .safetensors file inside {index_path.parent}: "
            "shard names must be relative paths without '..'"
        )
    return index_path.parent.joinpath(*name.parts)


def _read_sharded(index_path: Path) -> dict[str, torch.Tensor]:
    index = _read_json(index_path, "a safetensors shard index", _MAX_INDEX_BYTES)
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(weight_map, dict) or not weight_map or not all(
        isinstance(key, str) and isinstance(shard, str) for key, shard in weight_map.items()
    ):
        raise WeightsError(
            f"{index_path} is not a valid safetensors index: it needs a non-empty \"weight_map\" object "
            "mapping tensor names to shard file names"
        )
    shards = {shard: _shard_path(index_path, shard) for shard in sorted(set(weight_map.values()))}
    state_dict: dict[str, torch.Tensor] = {}
    origin: dict[str, str] = {}
    for shard, shard_path in shards.items():
        if not shard_path.is_file():
            raise WeightsError(f"shard {shard} listed in {index_path} is missing")
        tensors = _read_safetensors(shard_path)
        repeated = sorted(set(tensors) & set(state_dict))
        if repeated:
            raise WeightsError(
                f"{index_path}: the tensor {repeated[0]!r} is in both {origin[repeated[0]]} and {shard}"
            )
        origin.update(dict.fromkeys(tensors, shard))
        state_dict.update(tensors)
    missing = sorted(set(weight_map) - set(state_dict))
    if missing:
        raise WeightsError(f"keys listed in {index_path} are missing from its shards: {missing[:8]}")
    return state_dict


def read_config_file(path: str | os.PathLike) -> WanConfig | None:
    """The config stored beside the weights (diffusers `config.json` or safetensors metadata), if any.

    A config that cannot be read (not UTF-8, bad JSON, wrong types or values) is a WeightsError naming it.
    """
    path = Path(path)
    for candidate in (path / "config.json", path / "transformer" / "config.json") if path.is_dir() else ():
        if candidate.is_file():
            return _config_from(_read_json(candidate, "a model config", _MAX_CONFIG_BYTES), f"{candidate}")
    metadata = read_metadata(path)
    if "config" in metadata:
        source = f"the 'config' entry in the metadata of {path}"
        data = parse_json(metadata["config"], source, "a model config")
        # ComfyUI keeps a model's settings under "transformer"; the Causal Forcing files it runs hold only
        # {"transformer": {"causal_ar": true}}, which leaves the architecture to the weights.
        if isinstance(data, Mapping) and isinstance(data.get("transformer"), Mapping):
            data = data["transformer"]
            if not _ARCHITECTURE_KEYS & set(data):
                return None
        return _config_from(data, source)
    return None


def _config_from(data: Any, source: str) -> WanConfig:
    try:
        return WanConfig.from_dict(data)
    except (ValueError, TypeError, AttributeError, KeyError, ZeroDivisionError, OverflowError) as error:
        raise WeightsError(f"{source} is not a valid Wan model config: {_first_line(error)}") from error


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
                check_weight_tensors({key[: -len("weight")] + "scale_weight": scale})
                if scale.numel() != 1:
                    raise WeightsError(
                        f"the fp8 scale {key[: -len('weight')]}scale_weight has shape {tuple(scale.shape)}; "
                        "scaled fp8 files have one scale per weight"
                    )
                value = value * scale.to(torch.float32).reshape(())
            state_dict[key] = value.to(dtype)
    return state_dict


def check_weight_tensors(
    state_dict: Mapping[str, torch.Tensor], keys: Iterable[str] | None = None, specs: bool = False
) -> None:
    """Raises WeightsError naming every tensor (of `keys`, default all) that cannot be a model weight.

    Integer, bool and complex tensors would otherwise be cast to the weights' float dtype silently;
    sparse tensors and tensors without data (meta) cannot be loaded either. With `specs`, the tensors
    are `read_tensor_specs` meta tensors that stand for data still in the file.
    """
    problems = []
    for key in sorted(state_dict if keys is None else keys):
        tensor = state_dict[key]
        if not isinstance(tensor, torch.Tensor):
            problems.append(f"{key} (a {type(tensor).__name__}, not a tensor)")
        elif tensor.layout != torch.strided:
            problems.append(f"{key} (layout {str(tensor.layout).replace('torch.', '')})")
        elif not tensor.is_floating_point():
            problems.append(f"{key} (dtype {str(tensor.dtype).replace('torch.', '')})")
        elif tensor.device.type == "meta" and not specs:
            problems.append(f"{key} (no data: a meta tensor)")
    if problems:
        raise WeightsError(
            "these tensors cannot be model weights, which are floating point: " + key_schemes._preview(problems)
        )


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

    The state dict is consumed: its tensors move into the model. Every check (names, shapes, dtypes)
    runs against a model on the meta device before any tensor is converted or moved.
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
    _check_layer_count(config, transformer)
    try:
        with torch.device("meta"):
            model = WanDiT(config)
    except (RuntimeError, ValueError, OverflowError, TypeError) as error:  # sizes past what torch can index
        raise WeightsError(f"no model can be built from the config {config}: {_first_line(error)}") from error
    check_fits(model, transformer)
    check_weight_tensors(transformer)
    if track_encoder:
        check_weight_tensors(track_encoder)
    for key in list(transformer):
        transformer[key] = transformer[key].to(device=device, dtype=dtype)
    model.load_state_dict(transformer, strict=True, assign=True)
    return model, track_encoder


def _check_layer_count(config: WanConfig, transformer: Mapping[str, torch.Tensor]) -> None:
    """A config whose block count differs from the weights' is refused before a model of its size is built."""
    blocks = {m.group(1) for k in transformer if (m := re.match(r"blocks\.(\d+)\.", k))}
    if len(blocks) != config.num_layers:
        raise WeightsError(
            f"the config describes {config.num_layers} transformer blocks but the weights hold {len(blocks)}"
        )


def load_dit(
    path: str | os.PathLike,
    dtype: torch.dtype | None = None,
    device: torch.device | str = "cpu",
    config: WanConfig | None = None,
) -> tuple[WanDiT, dict[str, torch.Tensor]]:
    """Loads a Wan 2.1 transformer from any supported file or directory.

    The config comes from `config`, else from a config.json in the folder or the safetensors metadata,
    else from the weights' shapes (see `WanConfig.from_state_dict` for what they prove). Every failure
    is a WeightsError that names `path`.
    """
    path = Path(path)
    config = config or read_config_file(path)
    state_dict = read_state_dict(path)
    try:
        return build_dit(state_dict, config=config, dtype=dtype, device=device)
    except WeightsError as error:
        raise WeightsError(f"{path}: {error}") from error


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
