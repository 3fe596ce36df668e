"""A real ComfyUI server with this pack linked in, for the host tests, the browser test and the bench.

Standard library only, so bench scripts can use it too. The server gets its own `--base-directory`
(custom_nodes/ with this repository linked in, models/, input/, output/, user/) and, where ComfyUI
has one, an in-memory database, so neither the checkout nor the ComfyUI install is written to.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
PACK_DIR_NAME = "ComfyUI-MotionStream"
START_TIMEOUT = 300
BASE_FOLDERS = ("custom_nodes", "models/diffusion_models", "models/vae_approx", "input", "output", "user")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def make_base_directory(base: Path) -> Path:
    """ComfyUI's folders under `base`, with this repository linked in as a custom node pack."""
    for folder in BASE_FOLDERS:
        (base / folder).mkdir(parents=True, exist_ok=True)
    link = base / "custom_nodes" / PACK_DIR_NAME
    if not link.exists():
        link.symlink_to(REPO_ROOT, target_is_directory=True)
    return base


class ComfyServer:
    def __init__(self, base: Path, port: int, process: subprocess.Popen, log_path: Path):
        self.base, self.port, self.process, self.log_path = base, port, process, log_path
        self.url = f"http://127.0.0.1:{port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def request(self, method: str, path: str, body=None, timeout: float = 60):
        """(status, parsed JSON or text) of one HTTP request."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, method=method,
                                         headers={"Content-Type": "application/json"} if data else {})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                status, raw = response.status, response.read()
        except urllib.error.HTTPError as error:
            status, raw = error.code, error.read()
        try:
            return status, json.loads(raw)
        except ValueError:
            return status, raw.decode(errors="replace")

    def history(self, prompt_id: str, timeout: float = 30) -> dict:
        """The prompt's history entry (stored just after `execution_success` is sent)."""
        deadline = time.monotonic() + timeout
        while True:
            status, history = self.request("GET", f"/history/{prompt_id}")
            if status == 200 and prompt_id in history:
                return history[prompt_id]
            assert time.monotonic() < deadline, f"no history for {prompt_id}"
            time.sleep(0.2)

    def queue_prompt(self, graph: dict, client_id: str):
        return self.request("POST", "/prompt", {"prompt": graph, "client_id": client_id})

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


class ServerStartError(RuntimeError):
    pass


def start_comfyui(comfy_path: Path, python: str, base: Path, timeout: float = START_TIMEOUT,
                  env: dict[str, str] | None = None) -> ComfyServer:
    """Starts ComfyUI (`comfy_path`, run by `python`, with `env` added to the environment) on a free port
    with `base` as its base directory (see make_base_directory) and waits until it answers.
    ServerStartError (with the log's tail) when it exits or does not answer in time."""
    comfy_path = Path(comfy_path).resolve()
    if not (comfy_path / "main.py").is_file():
        raise ServerStartError(f"{comfy_path} is not a ComfyUI checkout (no main.py)")
    port = free_port()
    command = [python, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(port),
               "--disable-auto-launch", "--base-directory", str(base)]
    if "--database-url" in (comfy_path / "comfy" / "cli_args.py").read_text():
        command += ["--database-url", "sqlite:///:memory:"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    env.pop("MOTIONSTREAM_MODELS_DIR", None)
    log_path = base / "comfyui.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, cwd=comfy_path, stdout=log, stderr=subprocess.STDOUT, env=env)
    server = ComfyServer(base, port, process, log_path)
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise ServerStartError(f"ComfyUI exited with {process.returncode} under {python} (it needs ComfyUI's "
                                   f"requirements):\n{server.log()[-6000:]}")
        try:
            if server.request("GET", "/system_stats", timeout=5)[0] == 200:
                return server
        except OSError:
            pass
        if time.monotonic() > deadline:
            server.stop()
            raise ServerStartError(f"ComfyUI did not answer within {timeout} s:\n{server.log()[-6000:]}")
        time.sleep(1)
