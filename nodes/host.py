"""The one place that talks to the ComfyUI host; plain fallbacks keep the nodes usable without it."""

from __future__ import annotations

import os
from pathlib import Path

import torch

try:
    import comfy.model_management as _model_management
    import comfy.utils as _comfy_utils
    import folder_paths as _folder_paths
except ImportError:
    _model_management = _comfy_utils = _folder_paths = None

MODEL_EXTENSIONS = (".safetensors", ".pt", ".pth", ".ckpt", ".bin")


class Interrupted(Exception):
    """Raised between steps when the user cancelled the run (outside ComfyUI)."""


def has_comfy() -> bool:
    return _model_management is not None


def compute_device() -> torch.device:
    if _model_management is not None:
        return _model_management.get_torch_device()
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def offload_device() -> torch.device:
    if _model_management is not None:
        return _model_management.unet_offload_device()
    return torch.device("cpu")


_interrupt_requested = False


def request_interrupt(value: bool = True) -> None:
    """Fallback interrupt flag, for use without ComfyUI (tests, scripts)."""
    global _interrupt_requested
    _interrupt_requested = value


def throw_if_interrupted() -> None:
    if _model_management is not None:
        _model_management.throw_exception_if_processing_interrupted()
    elif _interrupt_requested:
        request_interrupt(False)
        raise Interrupted("interrupted")


class Progress:
    """Progress bar of the running node; a no-op without ComfyUI."""

    def __init__(self, total: int):
        self.total = total
        self._bar = _comfy_utils.ProgressBar(total) if _comfy_utils is not None else None

    def update(self, done: int, preview=None) -> None:
        if self._bar is not None:
            self._bar.update_absolute(done, self.total, preview)


def _fallback_models_root() -> Path:
    return Path(os.environ.get("MOTIONSTREAM_MODELS_DIR", Path.cwd() / "models"))


def model_files(folder: str) -> list[str]:
    """Model files in a standard folder (diffusion_models, vae_approx, ...), as names relative to it."""
    if _folder_paths is not None:
        return _folder_paths.get_filename_list(folder)
    root = _fallback_models_root() / folder
    if not root.is_dir():
        return []
    return sorted(
        str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and p.suffix in MODEL_EXTENSIONS
    )


def input_path(name: str) -> str:
    """A user file: absolute, or relative to ComfyUI's input folder (the working directory without ComfyUI)."""
    path = Path(name).expanduser()
    if not path.is_absolute():
        base = Path(_folder_paths.get_input_directory()) if _folder_paths is not None else Path.cwd()
        path = base / path
    if not path.is_file():
        raise FileNotFoundError(f"file not found: {path}")
    return str(path)


def model_path(folder: str, name: str) -> str:
    if _folder_paths is not None:
        return _folder_paths.get_full_path_or_raise(folder, name)
    path = _fallback_models_root() / folder / name
    if not path.exists():
        raise FileNotFoundError(f"model {name!r} not found in {path.parent}")
    return str(path)
