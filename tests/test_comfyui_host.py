"""The pack inside a real ComfyUI server: it loads, lists its nodes, runs a graph and streams frames.

Skipped unless COMFYUI_PATH points at a ComfyUI checkout. ComfyUI runs under COMFYUI_PYTHON (default:
this interpreter), which needs ComfyUI's requirements; this test suite's own virtualenv usually does
not have them, e.g.

    COMFYUI_PATH=/tmp/ComfyUI COMFYUI_PYTHON=/tmp/comfy-venv/bin/python pytest tests/test_comfyui_host.py

The server gets a temporary `--base-directory` (custom_nodes/ with this repository linked in, models/,
input/, output/, user/) and an in-memory database, so the checkout is not written to. No real weights
are needed: the graph runs a tiny random Track-v0-shaped text-to-video model (with a track head) and
the random TAEHV fixture. Its CONDITIONING comes from core's `LotusConditioning`, the one core node
that makes a CONDITIONING without a text encoder ([1, 2, 1024] embeddings, so the tiny model has
text_dim 1024); image-to-video paths (CLIP vision, the Wan VAE) are not exercised here.
"""

from __future__ import annotations

import base64
import json
import os
import sys
import shutil
import socket
import struct
import time
import uuid
from pathlib import Path

import pytest
import torch

from comfyui_server import ComfyServer, make_base_directory, PACK_DIR_NAME, ServerStartError, start_comfyui
from tiny_models import random_dit, tiny_config

COMFYUI_PATH = os.environ.get("COMFYUI_PATH")
pytestmark = pytest.mark.skipif(not COMFYUI_PATH, reason="COMFYUI_PATH is not set")

TINY_MODEL = "motionstream_tiny_t2v_track.safetensors"
TINY_VAE = "taehv_random_weights.safetensors"
LOTUS_TEXT_DIM = 1024
START_TIMEOUT = 300
RUN_TIMEOUT = 300
WIDTH, HEIGHT, FRAMES = 80, 48, 17  # latent 10x6, 5 latent frames: Track-v0 blocks of 1, 3 and 1 of 3


def _write_tiny_model(path: Path) -> None:
    """Random weights shaped like Track-v0 but text-to-video: 16 latent + 16 track channels in."""
    from motionstream_core.motion.track_head import TrackEncoder
    from motionstream_core.model.weights import save_state_dict

    config = tiny_config(in_channels=32, out_channels=16, text_dim=LOTUS_TEXT_DIM)
    state = dict(random_dit(config).state_dict())
    torch.manual_seed(3)
    encoder = TrackEncoder(id_dim=32, channels=16)
    state.update({f"track_encoder.{key}": value for key, value in encoder.state_dict().items()})
    save_state_dict(state, path, metadata={"config": json.dumps(config.to_dict())})


@pytest.fixture(scope="module")
def comfy(tmp_path_factory, fixtures_dir):
    base = make_base_directory(tmp_path_factory.mktemp("comfyui_base"))
    _write_tiny_model(base / "models" / "diffusion_models" / TINY_MODEL)
    shutil.copy(fixtures_dir / TINY_VAE, base / "models" / "vae_approx" / TINY_VAE)
    comfy_path = Path(COMFYUI_PATH).resolve()
    if (comfy_path / "input" / "example.png").is_file():
        shutil.copy(comfy_path / "input" / "example.png", base / "input" / "example.png")
    try:
        server = start_comfyui(comfy_path, os.environ.get("COMFYUI_PYTHON") or sys.executable, base, START_TIMEOUT)
    except ServerStartError as error:
        pytest.fail(str(error))
    try:
        yield server
    finally:
        server.stop()


# ---------------------------------------------------------------------------------------------
# A minimal websocket client (RFC 6455, client side), so the tests need nothing beyond the stdlib
# ---------------------------------------------------------------------------------------------


class WebSocket:
    def __init__(self, host: str, port: int, path: str, timeout: float = 10):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall((
            f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ConnectionError("websocket handshake: connection closed")
            head += chunk
        head, self.buffer = head.split(b"\r\n\r\n", 1)
        status = head.split(b"\r\n", 1)[0]
        if b" 101 " not in status + b" ":
            raise ConnectionError(f"websocket handshake failed: {status!r}")

    def _read(self, count: int) -> bytes:
        while len(self.buffer) < count:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("websocket closed")
            self.buffer += chunk
        data, self.buffer = self.buffer[:count], self.buffer[count:]
        return data

    def _send(self, opcode: int, payload: bytes = b"") -> None:
        mask = os.urandom(4)
        header = bytes([0x80 | opcode])
        if len(payload) < 126:
            header += bytes([0x80 | len(payload)])
        elif len(payload) < 1 << 16:
            header += bytes([0x80 | 126]) + struct.pack("!H", len(payload))
        else:
            header += bytes([0x80 | 127]) + struct.pack("!Q", len(payload))
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(header + mask + masked)

    def receive(self, timeout: float):
        """The next message: str (text), bytes (binary), or None when the server closed."""
        self.sock.settimeout(timeout)
        message, message_opcode = b"", None
        while True:
            first, second = self._read(2)
            opcode, final = first & 0x0F, bool(first & 0x80)
            length = second & 0x7F
            if length == 126:
                length = struct.unpack("!H", self._read(2))[0]
            elif length == 127:
                length = struct.unpack("!Q", self._read(8))[0]
            mask = self._read(4) if second & 0x80 else None
            payload = self._read(length)
            if mask:
                payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
            if opcode == 0x8:
                return None
            if opcode == 0x9:
                self._send(0xA, payload)
                continue
            if opcode == 0xA:
                continue
            if opcode in (0x1, 0x2):
                message_opcode, message = opcode, payload
            else:  # continuation
                message += payload
            if final:
                return message.decode() if message_opcode == 0x1 else message

    def close(self) -> None:
        try:
            self._send(0x8)
        except OSError:
            pass
        self.sock.close()


def run_prompt(comfy: ComfyServer, graph: dict) -> tuple[str, list[dict]]:
    """Queues a graph and collects the JSON websocket messages until it finishes: (prompt id, messages)."""
    client_id = uuid.uuid4().hex
    ws = WebSocket("127.0.0.1", comfy.port, f"/ws?clientId={client_id}")
    try:
        status, reply = comfy.queue_prompt(graph, client_id)
        assert status == 200, f"the prompt was rejected: {json.dumps(reply, indent=1)[:4000]}"
        prompt_id = reply["prompt_id"]
        messages = []
        deadline = time.monotonic() + RUN_TIMEOUT
        while time.monotonic() < deadline:
            try:
                message = ws.receive(timeout=max(1.0, deadline - time.monotonic()))
            except socket.timeout:
                break
            if message is None:
                break
            if isinstance(message, bytes):  # binary previews
                continue
            message = json.loads(message)
            messages.append(message)
            data = message.get("data") or {}
            if data.get("prompt_id") == prompt_id and message["type"] in (
                "execution_success", "execution_error", "execution_interrupted"
            ):
                break
        return prompt_id, messages
    finally:
        ws.close()


def messages_of(messages: list[dict], kind: str, prompt_id: str | None = None) -> list[dict]:
    return [m["data"] for m in messages if m["type"] == kind
            and (prompt_id is None or (m.get("data") or {}).get("prompt_id") == prompt_id)]


def _tracks_json() -> str:
    return json.dumps({
        "format": "motionstream-tracks", "version": 1, "width": WIDTH, "height": HEIGHT, "fps": 16, "duration": 1.0,
        "tracks": [{"id": 1, "keyframes": [{"t": 0.0, "x": 0.2, "y": 0.5}, {"t": 1.0, "x": 0.8, "y": 0.4}]},
                   {"id": 2, "static": True, "keyframes": [{"t": 0.0, "x": 0.7, "y": 0.7}]}],
    })


@pytest.fixture(scope="module")
def lotus(comfy):
    """The graphs take their CONDITIONING from LotusConditioning (ComfyUI 0.3.6x and later)."""
    status, info = comfy.request("GET", "/object_info/LotusConditioning")
    if status != 200 or "LotusConditioning" not in info:
        pytest.skip("this ComfyUI has no LotusConditioning, the only core CONDITIONING source without a text encoder")


def _common_nodes() -> dict:
    return {
        "1": {"class_type": "LotusConditioning", "inputs": {}},
        "2": {"class_type": "MotionStreamModelLoader", "inputs": {"model_name": TINY_MODEL, "weight_dtype": "fp32"}},
        "3": {"class_type": "MotionStreamTinyVAELoader", "inputs": {"tiny_vae_name": TINY_VAE, "dtype": "fp32"}},
        "4": {"class_type": "MotionStreamTrackEditor", "inputs": {"tracks_json": _tracks_json()}},
    }


# ---------------------------------------------------------------------------------------------
# (a) loading, (b) the node list, the live route
# ---------------------------------------------------------------------------------------------


def test_pack_imports_without_failure(comfy):
    log = comfy.log()
    assert "Import times for custom nodes" in log, log[-4000:]
    lines = [line for line in log.splitlines() if PACK_DIR_NAME in line]
    assert any("seconds" in line for line in lines), f"the pack is not in the import list:\n{log[-4000:]}"
    failed = [line for line in lines if "IMPORT FAILED" in line or "Cannot import" in line]
    assert not failed, "\n".join(failed) + "\n" + log[-6000:]


def test_object_info_lists_every_pack_node(comfy, pack):
    status, info = comfy.request("GET", "/object_info")
    assert status == 200
    missing = set(pack.NODE_CLASS_MAPPINGS) - set(info)
    assert not missing, f"not in /object_info: {sorted(missing)}"
    for name, cls in pack.NODE_CLASS_MAPPINGS.items():
        served = info[name]
        assert served["output"] == list(cls.RETURN_TYPES), name
        expected = cls.INPUT_TYPES()
        for section in ("required", "optional"):
            assert list(served["input"].get(section, {})) == list(expected.get(section, {})), f"{name} {section}"
        assert served["category"].startswith("MotionStream"), name
    assert TINY_MODEL in info["MotionStreamModelLoader"]["input"]["required"]["model_name"][0]
    assert TINY_VAE in info["MotionStreamTinyVAELoader"]["input"]["required"]["tiny_vae_name"][0]


def test_the_demo_image_is_served_for_the_track_editor(comfy):
    import io
    import urllib.request

    import numpy as np
    from PIL import Image

    from motionstream_core.demo import load_demo_image

    with urllib.request.urlopen(comfy.url + "/motionstream/demo_image.png", timeout=30) as response:
        assert response.headers["Content-Type"] == "image/png"
        served = np.asarray(Image.open(io.BytesIO(response.read())).convert("RGB"))
    expected = (load_demo_image().movedim(0, -1).clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    assert np.array_equal(served, expected)


def test_live_tracks_route_is_registered(comfy):
    status, reply = comfy.request("POST", "/motionstream/live_tracks", "nonsense")
    assert status == 400 and "error" in reply, reply
    status, reply = comfy.request("POST", "/motionstream/live_tracks",
                                  {"prompt_id": "none", "node_id": "1", "tracks": json.loads(_tracks_json())})
    assert status == 404 and "no MotionStream stream" in reply["error"], reply


# ---------------------------------------------------------------------------------------------
# (c) graphs that run
# ---------------------------------------------------------------------------------------------


def test_streaming_graph_runs_and_streams_frames(comfy, lotus):
    graph = {
        **_common_nodes(),
        "5": {"class_type": "MotionStreamStreamingSampler", "inputs": {
            "model": ["2", 0], "positive": ["1", 0], "width": WIDTH, "height": HEIGHT, "num_frames": FRAMES,
            "seed": 7, "fps": 16.0, "sink_frames": -1, "window_frames": -1, "denoising_steps": "", "shift": 0.0,
            "tiny_vae": ["3", 0], "tracks": ["4", 0]}},
        "6": {"class_type": "MotionStreamDrawTracks", "inputs": {"images": ["5", 0], "tracks": ["4", 0], "radius": 2, "tail": 4}},
        "7": {"class_type": "SaveAnimatedWEBP", "inputs": {
            "images": ["6", 0], "filename_prefix": "motionstream_test/stream", "fps": 16.0, "lossless": False,
            "quality": 50, "method": "fastest"}},
        "8": {"class_type": "SaveLatent", "inputs": {"samples": ["5", 1], "filename_prefix": "latents/motionstream_test"}},
    }
    prompt_id, messages = run_prompt(comfy, graph)
    errors = messages_of(messages, "execution_error", prompt_id)
    assert not errors, json.dumps(errors, indent=1)[:6000] + "\n" + comfy.log()[-4000:]
    assert messages_of(messages, "execution_success", prompt_id), [m["type"] for m in messages]

    progress = [p for p in messages_of(messages, "progress", prompt_id) if p.get("node") == "5"]
    assert progress, "the sampler reported no progress"
    assert progress[-1]["value"] == progress[-1]["max"] == (FRAMES - 1) // 4 + 1

    frames = messages_of(messages, "motionstream.frames", prompt_id)
    assert [f["chunk_index"] for f in frames] == [0, 1, 2]
    assert [f["done"] for f in frames] == [False, False, True]
    assert all(f["node"] == "5" and f["fps"] == 16.0 for f in frames)
    counts = [len(f["frames"]) for f in frames]
    assert sum(counts) == FRAMES, counts
    jpeg = base64.b64decode(frames[0]["frames"][0])
    assert jpeg[:2] == b"\xff\xd8", "frames are base64 JPEGs"

    outputs = comfy.history(prompt_id)["outputs"]
    saved = outputs["7"]["images"][0]
    path = comfy.base / "output" / saved["subfolder"] / saved["filename"]
    assert path.is_file() and path.stat().st_size > 0
    assert list((comfy.base / "output" / "latents").glob("motionstream_test*.latent"))


def test_teacher_graph_runs(comfy, lotus):
    graph = {
        **_common_nodes(),
        "5": {"class_type": "MotionStreamTeacherSampler", "inputs": {
            "model": ["2", 0], "positive": ["1", 0], "negative": ["1", 0], "width": WIDTH, "height": HEIGHT,
            "num_frames": FRAMES, "seed": 1, "steps": 2, "shift": 5.0, "solver": "euler", "text_scale": 3.0,
            "motion_scale": 1.5, "fps": 16.0, "tracks": ["4", 0]}},
        "6": {"class_type": "SaveLatent", "inputs": {"samples": ["5", 0], "filename_prefix": "latents/motionstream_teacher"}},
    }
    prompt_id, messages = run_prompt(comfy, graph)
    errors = messages_of(messages, "execution_error", prompt_id)
    assert not errors, json.dumps(errors, indent=1)[:6000]
    assert messages_of(messages, "execution_success", prompt_id)
    progress = [p for p in messages_of(messages, "progress", prompt_id) if p.get("node") == "5"]
    assert progress and progress[-1]["value"] == 2
    assert list((comfy.base / "output" / "latents").glob("motionstream_teacher*.latent"))


# ---------------------------------------------------------------------------------------------
# (d) the example workflows pass ComfyUI's own validation, but for model files this server lacks
# ---------------------------------------------------------------------------------------------


def test_example_workflows_pass_comfyui_validation(comfy, pack):
    import test_workflows as tw

    definitions = {**tw.load_spec()["nodes"], **tw.pack_definitions(pack)}
    dynamic = {(name, spec["name"]) for name, d in definitions.items() for spec in d["inputs"] if spec.get("dynamic")}
    for path in tw.WORKFLOWS:
        prompt = tw.api_prompt(tw.load_workflow(path), definitions)
        status, reply = comfy.queue_prompt(prompt, uuid.uuid4().hex)
        if status == 200:  # everything was there, so it was queued: take it back
            comfy.request("POST", "/queue", {"delete": [reply["prompt_id"]]})
            comfy.request("POST", "/interrupt", {})
            continue
        assert isinstance(reply, dict) and "node_errors" in reply, f"{path.name}: {reply}"
        assert reply["node_errors"], f"{path.name}: rejected without node errors: {reply['error']}"
        for node_id, entry in reply["node_errors"].items():
            for error in entry["errors"]:
                name = error.get("extra_info", {}).get("input_name")
                ok = error["type"] == "value_not_in_list" and (entry["class_type"], name) in dynamic
                assert ok, f"{path.name}: node {node_id} ({entry['class_type']}): {error['message']}: {error['details']}"


def test_the_embedded_example_workflow_runs_with_nothing_downloaded(comfy, pack):
    """The first example workflow exactly as the front end queues it: no model, input or download; the demo
    image is previewed, the sampler streams a frames message per chunk and writes the one video (listed in the
    history as its output), SaveAnimatedWEBP the tracks drawn over it."""
    import av
    import test_workflows as tw

    definitions = {**tw.load_spec()["nodes"], **tw.pack_definitions(pack)}
    prompt = tw.api_prompt(tw.load_workflow(tw.WORKFLOW_DIR / "motionstream_anywhere_embedded_demo.json"), definitions)
    ids = {node["class_type"]: node_id for node_id, node in prompt.items()}
    num_frames = prompt[ids["MotionStreamStreamingSampler"]]["inputs"]["num_frames"]
    videos_before = {path for path in (comfy.base / "output").rglob("*") if path.suffix in (".mp4", ".webm")}
    prompt_id, messages = run_prompt(comfy, prompt)
    errors = messages_of(messages, "execution_error", prompt_id)
    assert not errors, json.dumps(errors, indent=1)[:6000] + "\n" + comfy.log()[-4000:]
    assert messages_of(messages, "execution_success", prompt_id), [m["type"] for m in messages]

    frames = messages_of(messages, "motionstream.frames", prompt_id)
    chunks = 1 + (num_frames - 1 + 2) // 3  # a first chunk of 1 frame, then 3 (the last one cut to the end)
    assert [(f["chunk_index"], f["done"]) for f in frames] == [(index, index == chunks - 1) for index in range(chunks)]
    assert len(frames[0]["frames"]) == 1 and sum(len(f["frames"]) for f in frames) == num_frames
    outputs = comfy.history(prompt_id)["outputs"]
    preview = outputs[ids["MotionStreamDemoImage"]]["images"][0]
    assert preview["type"] == "temp" and preview["filename"].endswith(".png")
    own = messages_of(messages, "motionstream.status", prompt_id)[-1]["file"]
    assert own["subfolder"] == "video" and own["filename"].startswith("MotionStream_demo_")
    assert outputs[ids["MotionStreamStreamingSampler"]]["images"] == [{**own, "type": "output"}]
    videos = {path for path in (comfy.base / "output").rglob("*") if path.suffix in (".mp4", ".webm")} - videos_before
    assert videos == {comfy.base / "output" / "video" / own["filename"]}, f"the sampler's file is the only video: {videos}"
    with av.open(str(comfy.base / "output" / "video" / own["filename"])) as container:
        assert sum(1 for _ in container.decode(video=0)) == num_frames
    assert list((comfy.base / "output" / "MotionStream").glob("demo_tracks_overlay*.webp"))



# ---------------------------------------------------------------------------------------------
# (e) until Stop: the preview's Stop over HTTP, the VIDEO output into core SaveVideo
# ---------------------------------------------------------------------------------------------


def test_an_endless_stream_ends_on_stop_and_its_video_goes_to_core_save_video(comfy, pack):
    from motionstream_core.demo import load_demo_tracks
    from motionstream_core.motion.formats.widget_json import tracks_to_widget_json

    embedded = pack.nodes.model_loaders.EMBEDDED_MODELS
    graph = {
        "1": {"class_type": "MotionStreamModelLoader", "inputs": {"model_name": next(iter(embedded)), "weight_dtype": "auto"}},
        "2": {"class_type": "MotionStreamDemoImage", "inputs": {}},
        "3": {"class_type": "MotionStreamTrackEditor", "inputs": {"tracks_json": tracks_to_widget_json(load_demo_tracks())}},
        "4": {"class_type": "MotionStreamStreamingSampler", "inputs": {
            "model": ["1", 0], "width": 128, "height": 128, "num_frames": 5, "seed": 0, "fps": 16.0, "sink_frames": -1,
            "window_frames": -1, "denoising_steps": "", "shift": 0.0, "start_image": ["2", 0], "tracks": ["3", 0],
            "filename_prefix": "endless/stream", "until_stopped": True, "pace_to_playback": True}},
        "5": {"class_type": "SaveVideo", "inputs": {"video": ["4", 2], "filename_prefix": "endless/saved",
                                                   "format": "auto", "codec": "auto"}},
    }
    client_id = uuid.uuid4().hex
    ws = WebSocket("127.0.0.1", comfy.port, f"/ws?clientId={client_id}")
    try:
        status, reply = comfy.queue_prompt(graph, client_id)
        assert status == 200, json.dumps(reply, indent=1)[:4000]
        prompt_id = reply["prompt_id"]
        messages, stop_reply, token, began = [], None, None, None
        deadline = time.monotonic() + RUN_TIMEOUT
        while time.monotonic() < deadline:
            message = ws.receive(timeout=max(1.0, deadline - time.monotonic()))
            if message is None:
                break
            if isinstance(message, bytes):
                continue
            message = json.loads(message)
            messages.append(message)
            data = message.get("data") or {}
            if message["type"] == "motionstream.status" and data.get("state") == "streaming":
                token = data["live_token"]
            if message["type"] == "motionstream.frames" and began is None:
                began = time.monotonic()
            if message["type"] == "motionstream.frames" and data.get("chunk_index") == 20 and stop_reply is None:
                stop_reply = comfy.request("POST", "/motionstream/stop", {
                    "prompt_id": prompt_id, "node_id": "4", "token": token, "client_id": client_id})
                stopped_at = time.monotonic()
            if data.get("prompt_id") == prompt_id and message["type"] in (
                    "execution_success", "execution_error", "execution_interrupted"):
                break
    finally:
        ws.close()
    errors = messages_of(messages, "execution_error", prompt_id)
    assert not errors, json.dumps(errors, indent=1)[:6000] + "\n" + comfy.log()[-4000:]
    assert stop_reply == (200, {"ok": True, "stopping": True})
    frames = messages_of(messages, "motionstream.frames", prompt_id)
    written = sum(len(f["frames"]) for f in frames)
    assert 21 <= len(frames) <= 22 and written == 1 + 3 * (len(frames) - 1)
    # paced to playback: 61 frames at 16 fps take about 3.8 s to show; the stream ran along with them
    assert stopped_at - began >= (written - 1 - 6 - 3) / 16, (stopped_at - began, written)
    statuses = messages_of(messages, "motionstream.status", prompt_id)
    assert [s["state"] for s in statuses] == ["streaming", "stopped"] and statuses[-1]["frames"] == written
    own = statuses[-1]["file"]
    path = comfy.base / "output" / own["subfolder"] / own["filename"]
    assert own["subfolder"] == "endless" and path.is_file() and not list(path.parent.glob("*.partial"))
    import av

    with av.open(str(path)) as container:
        assert sum(1 for _ in container.decode(video=0)) == written
        assert "workflow" not in container.metadata and json.loads(container.metadata["prompt"])["4"]["inputs"]["until_stopped"]
    saved = comfy.history(prompt_id)["outputs"]["5"]["images"][0]
    with av.open(str(comfy.base / "output" / saved["subfolder"] / saved["filename"])) as container:
        assert sum(1 for _ in container.decode(video=0)) == written, "core SaveVideo reads the VIDEO output"
