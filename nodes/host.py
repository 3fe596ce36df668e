"""The one place that talks to the ComfyUI host; plain fallbacks keep the nodes usable without it."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import re
import threading
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

try:
    from comfy_api.input_impl import VideoFromFile as _VideoFromFile  # ComfyUI's core VIDEO type, from a file
except ImportError:
    _VideoFromFile = None

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


# Fallback cancels, without ComfyUI (tests, scripts): a counter of cancels requested. A run notes
# the count when it starts and stops once it grows, so one cancel stops every run going on, and a
# cancel made while nothing runs stops nothing (the next run starts after it). ComfyUI has its own.
_interrupt_lock = threading.Lock()
_cancels_requested = 0
_cancels_withdrawn = 0


def request_interrupt(value: bool = True) -> None:
    """Fallback cancel: stops every run started before now. `False` withdraws the cancels made so far."""
    global _cancels_requested, _cancels_withdrawn
    with _interrupt_lock:
        if value:
            _cancels_requested += 1
        else:
            _cancels_withdrawn = _cancels_requested


class InterruptCheck:
    """One run's cancel check; make it when the run starts. Calling it raises once the run is cancelled
    (ComfyUI's cancel inside ComfyUI) and returns False otherwise, so it fits StreamingSession(interrupt=)."""

    def __init__(self):
        self.since = _cancels_requested

    def requested(self) -> bool:
        return _cancels_requested > max(self.since, _cancels_withdrawn)

    def __call__(self) -> bool:
        throw_if_interrupted(self)
        return False


def interrupt_check() -> InterruptCheck:
    return InterruptCheck()


def is_interrupt(error: BaseException) -> bool:
    """Whether `error` is the user's cancel (ComfyUI's, or the fallback's) rather than a failure."""
    if _model_management is not None and isinstance(error, _model_management.InterruptProcessingException):
        return True
    return isinstance(error, Interrupted)


def throw_if_interrupted(check: InterruptCheck) -> None:
    """Raises if the run that made `check` was cancelled (ComfyUI's cancel inside ComfyUI)."""
    if _model_management is not None:
        _model_management.throw_exception_if_processing_interrupted()
    elif check.requested():
        raise Interrupted("interrupted")


class Progress:
    """Progress bar of the running node; a no-op without ComfyUI, and for a stream of no set length (None)."""

    def __init__(self, total: int | None):
        self.total = total
        self._bar = _comfy_utils.ProgressBar(total) if _comfy_utils is not None and total is not None else None

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


def has_server() -> bool:
    return _server() is not None


def current_client_id() -> str | None:
    """ComfyUI's id of the browser client that queued the running prompt (None: none given, or no server).
    Messages of the run go to that client only; without one they go to every client."""
    server = _server()
    client_id = getattr(server, "client_id", None) if server is not None else None
    return None if client_id is None else str(client_id)


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


def preview_images(images: torch.Tensor, prefix: str = "motionstream") -> list[dict]:
    """Saves IMAGE frames [B, H, W, 3] as PNGs in ComfyUI's temp folder and returns the entries of a node's
    `{"ui": {"images": ...}}`, so the node shows them (and nodes reading its picture, like the track editor,
    see it); [] without ComfyUI."""
    if _folder_paths is None:
        return []
    import secrets

    from PIL import Image

    folder = Path(_folder_paths.get_temp_directory())
    folder.mkdir(parents=True, exist_ok=True)
    entries = []
    for frame in (images[..., :3].clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy():
        name = f"{prefix}_{secrets.token_hex(8)}.png"
        Image.fromarray(frame).save(folder / name)
        entries.append({"filename": name, "subfolder": "", "type": "temp"})
    return entries


# Per route: requests being read or handled at once (more are answered 429), and the time a client
# gets to send its body (408 beyond).
ROUTE_MAX_IN_FLIGHT = 8
ROUTE_READ_TIMEOUT_S = 10.0
_route_executor: concurrent.futures.ThreadPoolExecutor | None = None
_route_executor_lock = threading.Lock()


def _executor() -> concurrent.futures.ThreadPoolExecutor:
    """Worker threads of the JSON routes, apart from the server's default executor."""
    global _route_executor
    with _route_executor_lock:
        if _route_executor is None:
            _route_executor = concurrent.futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="motionstream-route")
        return _route_executor


async def _read_at_most(stream, limit: int) -> bytes | None:
    """The whole body, or None once it passes `limit` bytes (the rest is not read)."""
    chunks, size = [], 0
    while chunk := await stream.read(65536):
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def json_route(handler, max_bytes: int):
    """An aiohttp request handler around `handler(body: bytes) -> (status, JSON reply)`.

    The body is read with a limit (413 beyond `max_bytes`; the rest is discarded, never buffered) and `handler` runs
    on a worker thread, so neither a large body nor slow parsing holds the server's event loop."""
    from aiohttp import web

    in_flight = 0

    def answer(status: int, reply: dict, close: bool = False):
        response = web.json_response(reply, status=status)
        if close:
            response.force_close()
        return response

    too_large = {"error": f"the body is larger than the limit of {max_bytes} bytes"}

    async def route(request):
        nonlocal in_flight
        if request.content_length is not None and request.content_length > max_bytes:
            return answer(413, too_large)  # the server discards the unread body, within its lingering time
        if in_flight >= ROUTE_MAX_IN_FLIGHT:
            return answer(429, {"error": "too many requests at once, try again"})
        in_flight += 1
        try:
            try:
                body = await asyncio.wait_for(_read_at_most(request.content, max_bytes), ROUTE_READ_TIMEOUT_S)
            except asyncio.TimeoutError:
                return answer(408, {"error": f"the body did not arrive within {ROUTE_READ_TIMEOUT_S:g} s"}, close=True)
            if body is None:
                return answer(413, too_large)
            try:
                status, reply = await asyncio.get_running_loop().run_in_executor(_executor(), handler, body)
            except Exception as error:  # a bug, not a bad request: still answer with a message
                return answer(500, {"error": f"internal error: {type(error).__name__}: {error}"})
            return answer(status, reply)
        finally:
            in_flight -= 1

    return route


def add_json_route(method: str, path: str, handler, max_bytes: int) -> bool:
    """Registers `handler(body: bytes) -> (status, reply)` (see `json_route`) on ComfyUI's server, if there is one."""
    server = _server()
    if server is None:
        return False
    server.routes.route(method, path)(json_route(handler, max_bytes))
    return True


def add_get_route(path: str, make_body, content_type: str) -> bool:
    """Registers GET `path` answering `make_body()` (bytes, computed once) on ComfyUI's server, if there is one."""
    server = _server()
    if server is None:
        return False
    from aiohttp import web

    body: list[bytes] = []

    async def route(request):
        if not body:
            body.append(await asyncio.to_thread(make_body))
        return web.Response(body=body[0], content_type=content_type, headers={"Cache-Control": "max-age=3600"})

    server.routes.get(path)(route)
    return True


def png_bytes(image: torch.Tensor) -> bytes:
    """An IMAGE [H, W, 3] in 0..1 as PNG bytes (Pillow, which ComfyUI ships)."""
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray((image.clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()).save(buffer, format="PNG")
    return buffer.getvalue()


MESSAGE_FRAMES = "motionstream.frames"

# Extra fields of a running stream's frames messages (the live-control token), by (prompt id, node id):
# [(thread id, fields)], the latest last. A message takes the fields its own thread added, else the latest.
_frames_fields: dict[tuple[str, str], list[tuple[int, dict]]] = {}
_frames_fields_lock = threading.Lock()


def add_frames_fields(prompt_id, node_id, fields: dict) -> None:
    """Adds `fields` to the frames messages of the stream (prompt_id, node_id) until `remove_frames_fields`."""
    with _frames_fields_lock:
        _frames_fields.setdefault((str(prompt_id), str(node_id)), []).append((threading.get_ident(), fields))


def remove_frames_fields(prompt_id, node_id, fields: dict) -> None:
    key = (str(prompt_id), str(node_id))
    with _frames_fields_lock:
        entries = [entry for entry in _frames_fields.get(key, []) if entry[1] is not fields]
        if entries:
            _frames_fields[key] = entries
        else:
            _frames_fields.pop(key, None)


def _fields_of(prompt_id, node_id) -> dict:
    with _frames_fields_lock:
        entries = _frames_fields.get((str(prompt_id), str(node_id)), [])
        own = [fields for thread, fields in entries if thread == threading.get_ident()]
        return dict(own[-1] if own else entries[-1][1] if entries else {})


def send_frames(node_id, frames: torch.Tensor, fps: float, chunk_index: int, done: bool) -> None:
    """Streams decoded frames [T, H, W, 3] to the node's live preview player."""
    prompt_id = current_prompt_id()
    data = _fields_of(prompt_id, node_id)
    data.update({"node": str(node_id), "prompt_id": prompt_id, "fps": fps, "chunk_index": chunk_index, "done": done})
    if _server() is not None:
        data["frames"] = jpeg_base64(frames)
    else:
        data["frame_count"] = int(frames.shape[0])
    send_message(MESSAGE_FRAMES, data)


MESSAGE_STATUS = "motionstream.status"


def send_status(node_id, state: str, **fields) -> None:
    """Tells the node's live preview how its stream stands: "streaming" when it starts (with the live token, so
    Stop works before the first frames), then "done", "stopped", "cancelled" or "failed" when it ends."""
    prompt_id = current_prompt_id()
    data = _fields_of(prompt_id, node_id)
    data.update(fields)
    data.update({"node": str(node_id), "prompt_id": prompt_id, "state": state})
    send_message(MESSAGE_STATUS, data)


_logger = logging.getLogger("MotionStream")


def warn(message: str) -> None:
    """A warning for the user: ComfyUI's console (its log handler) inside ComfyUI, Python's logging outside."""
    _logger.warning(message)


def output_directory() -> str:
    """ComfyUI's output folder; without ComfyUI, $MOTIONSTREAM_OUTPUT_DIR or ./output."""
    if _folder_paths is not None:
        return _folder_paths.get_output_directory()
    return str(Path(os.environ.get("MOTIONSTREAM_OUTPUT_DIR", Path.cwd() / "output")))


class OutputFile:
    """A new file in the output folder: its full path, and its name and subfolder as ComfyUI's UI refers to it."""

    def __init__(self, path: str, filename: str, subfolder: str):
        self.path, self.filename, self.subfolder = path, filename, subfolder

    def ui_entry(self) -> dict:
        """The entry of a node's UI result that shows the file (ComfyUI's SavedResult)."""
        return {"filename": self.filename, "subfolder": self.subfolder, "type": "output"}

    def __repr__(self) -> str:
        return f"OutputFile({self.path!r})"


def _fallback_save_path(prefix: str, output_dir: str) -> tuple[str, str, int, str]:
    """ComfyUI's convention without ComfyUI: `<subfolder>/<name>_<counter:05>_.<ext>`, the counter one past the
    highest of the files named `<name>_<digits>_...` already there; the subfolder must stay inside `output_dir`."""
    subfolder = os.path.dirname(os.path.normpath(prefix))
    name = os.path.basename(os.path.normpath(prefix))
    folder = os.path.abspath(os.path.join(output_dir, subfolder))
    if os.path.commonpath((os.path.abspath(output_dir), folder)) != os.path.abspath(output_dir):
        raise ValueError(f"saving outside the output folder is not allowed: {folder}")
    os.makedirs(folder, exist_ok=True)
    pattern = re.compile(re.escape(name) + r"_(\d+)_")
    counters = [int(match.group(1)) for match in map(pattern.match, os.listdir(folder)) if match]
    return folder, name, max(counters, default=0) + 1, subfolder


def new_output_file(prefix: str, extension: str, width: int = 0, height: int = 0) -> OutputFile:
    """A fresh `<prefix>_<counter:05>_.<extension>` in the output folder, by ComfyUI's filename-counter convention
    (its %width%/%date% variables and subfolders in `prefix` included inside ComfyUI). Files that only start with
    that name (a `.partial` being written) count too, so two writers never get the same name."""
    if _folder_paths is not None:
        folder, name, counter, subfolder, _ = _folder_paths.get_save_image_path(prefix, output_directory(), width, height)
    else:
        folder, name, counter, subfolder = _fallback_save_path(prefix, output_directory())
    filename = f"{name}_{counter:05}_.{extension}"
    return OutputFile(os.path.join(folder, filename), filename, subfolder)


class VideoFile:
    """The VIDEO value outside ComfyUI: a video file on disk (ComfyUI's VideoFromFile stands in for it inside)."""

    def __init__(self, path: str):
        self.path = str(path)

    def get_stream_source(self) -> str:
        return self.path

    def get_dimensions(self) -> tuple[int, int]:
        import av

        with av.open(self.path) as container:
            stream = container.streams.video[0]
            return stream.width, stream.height

    def __repr__(self) -> str:
        return f"VideoFile({self.path!r})"


def video_from_file(path: str):
    """ComfyUI's core VIDEO value for a video file (VideoFromFile), or a plain `VideoFile` without ComfyUI."""
    return _VideoFromFile(str(path)) if _VideoFromFile is not None else VideoFile(path)
