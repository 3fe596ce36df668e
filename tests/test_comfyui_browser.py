"""Live drags in the real ComfyUI front end, end to end: headless chromium (tests/js/comfyui_live.mjs)
loads the embedded demo workflow from a real ComfyUI server, streams it until Stop, drags the demo's
orange sprite with the mouse in the track editor's Region mode mid-stream, and presses the preview's Stop.
The same stream without the drag is the reference: the frames before the edit are the same, after it
the sprite follows the drag.

Skipped unless COMFYUI_PATH is set (see tests/test_comfyui_host.py, whose server fixture this reuses)
and node, chromium and playwright-core are there; with MOTIONSTREAM_REQUIRE_BROWSER=1 a missing
browser tool fails instead. Behaviour only: nothing here depends on how fast the machine is.
"""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import test_comfyui_host
from browser_tools import missing

pytestmark = pytest.mark.skipif(not os.environ.get("COMFYUI_PATH"), reason="COMFYUI_PATH is not set")
comfy = test_comfyui_host.comfy  # the ComfyUI server fixture, one server for this module

REPO_ROOT = Path(__file__).resolve().parents[1]
JS_TESTS = REPO_ROOT / "tests" / "js"
SCRIPT = JS_TESTS / "comfyui_live.mjs"
WORKFLOW = REPO_ROOT / "example_workflows" / "motionstream_anywhere_embedded_demo.json"
FIRST_DRAG_CHUNK = 3  # the drag starts once this chunk is in
# Stop once chunk 9 is in and 9 frames past the drag's end (a live drag steers as much video as it lasted)
STOP_AFTER_CHUNK, AFTER_DRAG_FRAMES = 9, 9
SAME_FRAME_TOLERANCE = 8  # per channel: the same frame through JPEG twice
COMPARED_AFTER_EDIT = 3  # chunks made with the edit in both streams


@pytest.fixture(scope="module")
def node_path() -> str:
    node = shutil.which("node")
    if node is None:
        missing("node is not installed")
    chromium = Path(os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium"))
    if not os.access(chromium, os.X_OK):
        missing(f"chromium is not installed at {chromium} (bash tests/js/run_browser_test.sh installs it)")
    if not (JS_TESTS / "node_modules" / "playwright-core" / "package.json").is_file():
        missing("playwright-core is not installed (bash tests/js/run_browser_test.sh installs it)")
    return node


def _stream_in_browser(node: str, server, out_dir: Path, *options: str) -> dict:
    out = out_dir / "page.json"
    command = [node, str(SCRIPT), server.url, str(out), "--seconds", "400",
               "--first-drag-chunk", str(FIRST_DRAG_CHUNK), *options]
    result = subprocess.run(command, cwd=JS_TESTS, capture_output=True, text=True, timeout=900)
    if result.returncode != 0:
        pytest.fail(f"{' '.join(command)} exited with {result.returncode}\n{result.stderr[-4000:]}\n"
                    f"ComfyUI log:\n{server.log()[-4000:]}")
    return json.loads(out.read_text())


@pytest.fixture(scope="module")
def dragged(comfy, node_path, tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("browser_drag")
    page = _stream_in_browser(node_path, comfy, out_dir, "--drags", "1", "--stop-after-chunk", str(STOP_AFTER_CHUNK),
                              "--after-drag-frames", str(AFTER_DRAG_FRAMES), "--screenshots", str(out_dir))
    page["screenshot_dir"] = out_dir
    return page


@pytest.fixture(scope="module")
def undragged(comfy, node_path, tmp_path_factory, dragged):
    """The same stream, as long, without the drag."""
    return _stream_in_browser(node_path, comfy, tmp_path_factory.mktemp("browser_plain"), "--drags", "0",
                              "--stop-after-chunk", str(dragged["frames"][-1]["chunk_index"]))


def _decoded(page: dict) -> dict[int, list[np.ndarray]]:
    """chunk index -> its frames as int16 RGB arrays."""
    def decode(frame: str) -> np.ndarray:
        return np.asarray(Image.open(io.BytesIO(base64.b64decode(frame))).convert("RGB"), np.int16)

    return {message["chunk_index"]: [decode(frame) for frame in message["frames"]] for message in page["frames"]}


def _orange_centroid(frame: np.ndarray) -> np.ndarray:
    """Normalised (x, y) of the orange sprite's pixels."""
    red, green, blue = frame[..., 0], frame[..., 1], frame[..., 2]
    ys, xs = np.nonzero((red > 150) & (red - blue > 90) & (green > 60) & (green < 200))
    assert len(xs) > 20, "no orange sprite in the frame"
    return np.array([xs.mean() / frame.shape[1], ys.mean() / frame.shape[0]])


def _first_edited_chunk(page: dict) -> int:
    return next(message["chunk_index"] for message in page["frames"] if message["tracks_version"] >= 1)


def _chunk_of_frame(page: dict, frame: int) -> int:
    """The chunk that holds stream frame `frame` (the last chunk when the stream ended before it)."""
    end = 0
    for message in page["frames"]:
        end += message["count"]
        if frame < end:
            return message["chunk_index"]
    return page["frames"][-1]["chunk_index"]


def _editor_document() -> dict:
    """The track editor's value in the example workflow: the demo's point tracks."""
    nodes = json.loads(WORKFLOW.read_text())["nodes"]
    editor = next(node for node in nodes if node["type"] == "MotionStreamTrackEditor")
    return json.loads(editor["widgets_values"][0])


def test_the_page_streams_without_errors_and_the_drag_goes_out_as_small_handle_edits(dragged):
    assert not dragged["pageErrors"] and not dragged["warnings"], (dragged["pageErrors"], dragged["warnings"])
    end = dragged["runEnds"][0]
    assert end["type"] == "execution_success", end
    frames = dragged["frames"]
    assert len(frames) > STOP_AFTER_CHUNK and all(message["at"] < end["at"] for message in frames)
    assert [message["chunk_index"] for message in frames] == list(range(len(frames)))

    assert len(dragged["drags"]) == 1 and dragged["liveTracks"], "the drag posted its edits while it was drawn"
    document = _editor_document()
    editor_value, point_tracks = json.dumps(document, separators=(",", ":")), len(document["tracks"])
    for post in dragged["liveTracks"]:
        assert post["status"] == 200 and post["reply"]["ok"], post
        # the editor's own tracks and one region handle: never the grid of points the handle moves
        assert post["tracks"] == point_tracks and post["regions"] == 1 and post["regionKinds"] == ["live"], post
        assert post["regionKeyframes"] <= 40 and post["regionBytes"] < 4096, post
        assert post["bytes"] < len(editor_value) + 4096, post


def test_chunks_after_the_drag_carry_its_version_and_the_player_measures_them(dragged):
    versions = [message["tracks_version"] for message in dragged["frames"]]
    first = _first_edited_chunk(dragged)
    assert FIRST_DRAG_CHUNK <= first < len(versions) - COMPARED_AFTER_EDIT, versions
    assert versions == sorted(versions) and set(versions[:first]) == {0}, versions
    assert all(message["edit_to_frames_ms"] is not None for message in dragged["frames"][first:])
    assert versions[-1] <= max(post["reply"]["version"] for post in dragged["liveTracks"])

    latencies = dragged["latencies"]
    assert latencies, "the player measured no drag-to-screen latency"
    for sample in latencies:
        assert sample["version"] in versions and 0 <= sample["serverMs"] <= sample["totalMs"], sample


def test_frames_before_the_edit_are_unchanged_and_after_it_the_sprite_follows_the_drag(dragged, undragged):
    assert not undragged["liveTracks"] and {m["tracks_version"] for m in undragged["frames"]} == {0}
    with_drag, without = _decoded(dragged), _decoded(undragged)
    first = _first_edited_chunk(dragged)
    for chunk in range(first):
        for a, b in zip(with_drag[chunk], without[chunk], strict=True):
            assert np.abs(a - b).max() <= SAME_FRAME_TOLERANCE, f"chunk {chunk} changed before the edit"
    last = min(max(with_drag), max(without))
    assert last - first + 1 >= COMPARED_AFTER_EDIT, (first, last)
    for chunk in range(first + 1, last + 1):
        assert min(np.abs(a - b).mean() for a, b in zip(with_drag[chunk], without[chunk])) > 3, chunk

    # The drag took the orange sprite towards its drop point; without it the sprite stays. Where the demo's own
    # tracks still hold the sprites (without tracks they fade), the closest it came to the drop point. (Those
    # tracks also pin the sprite where it was, so the model follows the region drag only part of the way.)
    document = _editor_document()
    demo_end = _chunk_of_frame(dragged, int(document["duration"] * document["fps"] + 1e-6) + 1)
    drop = np.array(dragged["drags"][0]["to"])

    def closest(frames: dict) -> float:
        return min(np.linalg.norm(_orange_centroid(frame) - drop) for chunk in range(first, min(last + 1, demo_end))
                   for frame in frames[chunk])

    dragged_to, stayed_at = closest(with_drag), closest(without)
    assert dragged_to < stayed_at - 0.05, (dragged_to, stayed_at)


def test_stop_ends_the_stream_with_its_video_file(comfy, dragged):
    statuses = dragged["statuses"]
    assert [status["state"] for status in statuses] == ["streaming", "stopped"], statuses
    written = sum(message["count"] for message in dragged["frames"])
    assert statuses[-1]["frames"] == written and dragged["frames"][-1]["done"]
    file = statuses[-1]["file"]
    assert (comfy.base / "output" / file["subfolder"] / file["filename"]).is_file(), file
    assert dragged["player"]["state"] == "stopped" and dragged["player"]["frameCount"] == written
    for name in ("editor_mid_drag", "preview_mid_stream", "stopped"):
        assert (dragged["screenshot_dir"] / f"{name}.png").is_file(), name
