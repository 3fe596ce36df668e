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

try:
    from server import PromptServer as _PromptServer
except ImportError:
    _PromptServer = None

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


def model_directory(folder: str) -> str:
    """Where new files for a standard model folder go."""
    if _folder_paths is not None:
        # ComfyUI lists legacy names first (models/unet for diffusion_models); new files go where the README says.
        paths = _folder_paths.get_folder_paths(folder)
        return next((path for path in paths if Path(path).name == folder), paths[0])
    return str(_fallback_models_root() / folder)


def model_directories(folder: str) -> list[str]:
    """Sub-folders of a model folder that hold weights themselves (diffusers-style checkpoints)."""
    roots = _folder_paths.get_folder_paths(folder) if _folder_paths is not None else [model_directory(folder)]
    found = set()
    for root in map(Path, roots):
        if root.is_dir():
            for child in root.iterdir():
                hidden = child.name.startswith(".")  # e.g. a download still being staged
                if child.is_dir() and not hidden and (any(child.glob("*.safetensors")) or (child / "transformer").is_dir()):
                    found.add(child.name)
    return sorted(found)


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
    """Full path of a file (or weights directory) listed by model_files / model_directories."""
    if _folder_paths is not None:
        for root in _folder_paths.get_folder_paths(folder):
            if (Path(root) / name).is_dir():
                return str(Path(root) / name)
        return _folder_paths.get_full_path_or_raise(folder, name)
    path = _fallback_models_root() / folder / name
    if not path.exists():
        raise FileNotFoundError(f"model {name!r} not found in {path.parent}")
    return str(path)


def free_memory() -> None:
    if _model_management is not None:
        _model_management.soft_empty_cache()
    elif torch.cuda.is_available():
        torch.cuda.empty_cache()


def _server():
    return getattr(_PromptServer, "instance", None) if _PromptServer is not None else None


def current_prompt_id() -> str | None:
    server = _server()
    return getattr(server, "last_prompt_id", None) if server is not None else None


# Without a server, messages are kept here (the latest few) so scripts and tests can see them.
sent_messages: list[tuple[str, dict]] = []


def send_message(event: str, data: dict) -> None:
    server = _server()
    if server is not None:
        server.send_sync(event, data, getattr(server, "client_id", None))
    else:
        sent_messages.append((event, data))
        del sent_messages[:-64]


def jpeg_base64(frames: torch.Tensor, quality: int = 85) -> list[str]:
    """[T, H, W, 3] in 0..1 -> base64 JPEG strings (needs Pillow, which ComfyUI ships)."""
    import base64
    import io

    from PIL import Image

    encoded = []
    for frame in (frames.clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy():
        buffer = io.BytesIO()
        Image.fromarray(frame).save(buffer, format="JPEG", quality=quality)
        encoded.append(base64.b64encode(buffer.getvalue()).decode("ascii"))
    return encoded


def add_json_route(method: str, path: str, handler) -> bool:
    """Registers `handler(body) -> (status, reply)` as a JSON route on ComfyUI's server, if there is one."""
    server = _server()
    if server is None:
        return False
    from aiohttp import web

    async def route(request):
        try:
            body = await request.json()
        except ValueError:
            return web.json_response({"error": "the body is not JSON"}, status=400)
        status, reply = handler(body)
        return web.json_response(reply, status=status)

    server.routes.route(method, path)(route)
    return True


MESSAGE_FRAMES = "motionstream.frames"


def send_frames(node_id, frames: torch.Tensor, fps: float, chunk_index: int, done: bool) -> None:
    """Streams decoded frames [T, H, W, 3] to the node's live preview player."""
    data = {"node": str(node_id), "prompt_id": current_prompt_id(), "fps": fps, "chunk_index": chunk_index, "done": done}
    if _server() is not None:
        data["frames"] = jpeg_base64(frames)
    else:
        data["frame_count"] = int(frames.shape[0])
    send_message(MESSAGE_FRAMES, data)
