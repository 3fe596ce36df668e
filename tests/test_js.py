"""Runs the front-end tests (tests/js) under pytest and checks the editor's JSON against the Python importer.

Needs `node` (skipped without it). The browser test also needs chromium and playwright-core
(`bash tests/js/run_browser_test.sh` installs both); it is skipped when they are missing unless
MOTIONSTREAM_REQUIRE_BROWSER=1, which turns every missing tool into a failure (CI sets it).
"""

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from browser_tools import missing
from motionstream_core.motion.formats import tracks_from_widget_json, tracks_to_widget_json
from motionstream_core.motion.tracks import TrackSet

REPO_ROOT = Path(__file__).resolve().parents[1]
JS_TESTS = REPO_ROOT / "tests" / "js"
STATE_MODULE = (REPO_ROOT / "js" / "track_editor_state.js").as_uri()


@pytest.fixture(scope="module")
def node() -> str:
    path = shutil.which("node")
    if path is None:
        missing("node is not installed")
    return path


def _run(command: list[str], timeout: float, stdin: str | None = None) -> str:
    result = subprocess.run(command, cwd=REPO_ROOT, input=stdin, capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        pytest.fail(f"{' '.join(command)} exited with {result.returncode}\n{result.stdout[-6000:]}\n{result.stderr[-6000:]}")
    return result.stdout


def _run_js(node: str, script: str, stdin: str = "") -> str:
    return _run([node, "--input-type=module", "-e", script], timeout=60, stdin=stdin)


def test_track_editor_state_unit_tests(node):
    _run([node, "--test", str(JS_TESTS / "track_editor_state.test.mjs")], timeout=120)


# Edits in the editor, then every frame's position as the editor previews it.
EDITOR_SCRIPT = f"""
import {{ TrackEditorState, positionAt }} from {json.dumps(STATE_MODULE)};
const state = new TrackEditorState({{ width: 832, height: 480, fps: 8, duration: 3 }});
const samples = Array.from({{ length: 40 }}, (_, i) => ({{
  t: i * 0.016 * (1 + (i % 3) * 0.2), x: 0.1 + 0.02 * i, y: 0.5 + 0.3 * Math.sin(i / 6) }}));
const curve = state.addTrackFromDrag(samples);
state.setTrackTiming(curve, {{ start: 0.5, duration: 2 }});
state.setKeyframeVisible(curve, 1, false);
state.addAnchor(0.9, 0.1, {{ start: 1 }});
const straight = state.addTrackFromDrag([{{ t: 0, x: 0.2, y: 0.2 }}, {{ t: 1, x: 0.6, y: 0.9 }}], {{ duration: 1 }});
state.moveTrack(straight, 0.05, -0.1);
const frames = Math.floor(state.clip.duration * state.clip.fps + 1e-6) + 1;
const positions = state.tracks.map((track) =>
  Array.from({{ length: frames }}, (_, frame) => positionAt(track, frame / state.clip.fps)));
console.log(JSON.stringify({{ json: state.exportJson(), positions }}));
"""


def test_editor_json_reads_in_python_as_the_editor_shows_it(node):
    result = json.loads(_run_js(node, EDITOR_SCRIPT))
    tracks = tracks_from_widget_json(result["json"])
    document = json.loads(result["json"])
    assert tracks.track_ids.tolist() == [track["id"] for track in document["tracks"]] == [0, 1, 2]
    assert tracks.static.tolist() == [False, True, False]
    assert tracks.num_frames == 25
    normalized = tracks.normalized_points().to(torch.float64)
    for column, frames in enumerate(result["positions"]):
        for frame, position in enumerate(frames):
            shown = position is not None and position["visible"]
            assert bool(tracks.visibility[frame, column]) == shown, (column, frame)
            if shown:
                assert normalized[frame, column].tolist() == pytest.approx([position["x"], position["y"]], abs=1e-5)
    # The editor hid the curve between its second and third keyframe.
    assert not bool(tracks.visibility[:, 0].all())


def test_python_widget_json_loads_in_the_editor(node):
    frames, count = 9, 3
    time = torch.arange(frames, dtype=torch.float64)[:, None]
    points = torch.stack([100 + 10 * time + 50 * torch.arange(count), 200 - 5 * time.expand(frames, count)], dim=-1)
    visibility = torch.ones(frames, count, dtype=torch.bool)
    visibility[6:, 1] = False
    points[:, 2] = points[0, 2]
    original = TrackSet(points, visibility, 832, 480, 16.0, track_ids=[5, 9, 11], static=[False, False, True])
    script = f"""
import {{ TrackEditorState }} from {json.dumps(STATE_MODULE)};
import {{ readFileSync }} from "node:fs";
const state = new TrackEditorState();
state.importJson(readFileSync(0, "utf8"));
console.log(state.exportJson());
"""
    round_trip = tracks_from_widget_json(_run_js(node, script, stdin=tracks_to_widget_json(original)))
    assert round_trip.track_ids.tolist() == [5, 9, 11]
    assert round_trip.static.tolist() == [False, False, True]
    assert torch.equal(round_trip.visibility, original.visibility)
    assert torch.equal(round_trip.specified, original.specified)
    # Coordinates are rounded to 4 decimals of the frame size; unspecified points have no position to keep.
    known = original.specified
    assert torch.allclose(round_trip.points[known], original.points[known], atol=832 * 5e-5)


def test_track_editor_in_chromium(node):
    chromium = Path(os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium"))
    if not os.access(chromium, os.X_OK):
        missing(f"chromium is not installed at {chromium} (bash tests/js/run_browser_test.sh installs it)")
    if not (JS_TESTS / "node_modules" / "playwright-core" / "package.json").is_file():
        missing("playwright-core is not installed (bash tests/js/run_browser_test.sh installs it)")
    _run(["bash", str(JS_TESTS / "run_browser_test.sh")], timeout=300)


# Region drags drawn in the editor, and the grid as the editor previews it at every frame.
REGION_SCRIPT = f"""
import {{ TrackEditorState, regionField, regionGridPoints }} from {json.dumps(STATE_MODULE)};
const state = new TrackEditorState({{ width: 832, height: 480, fps: 8, duration: 3 }});
state.importJson({{ ...state.toDocument(), version: 2, region_grid: 16, regions: [] }});
state.addRegionAnchor(0.3, 0.7, {{ radius: 0.12 }});
const drag = Array.from({{ length: 30 }}, (_, i) => ({{ t: i * 0.02, x: 0.35 + 0.01 * i, y: 0.5 + 0.1 * Math.sin(i / 5) }}));
const path = state.addRegionDrag(drag, {{ radius: 0.2 }});
state.setTrackTiming(path, {{ start: 0.5, duration: 1.5 }});
state.addRegionDrag([{{ t: 9, x: 0.6, y: 0.55 }}, {{ t: 9.3, x: 0.62, y: 0.4 }}, {{ t: 9.6, x: 0.7, y: 0.4 }}],
                    {{ live: true, start: 1.25, radius: 0.15 }});
state.addRegionDrag([{{ t: 0, x: 0.5, y: 0.5 }}, {{ t: 1, x: 0.5, y: 0.3 }}], {{ radius: 0.1, start: 1, duration: 1 }});
state.addTrackFromDrag([{{ t: 0, x: 0.1, y: 0.1 }}, {{ t: 1, x: 0.2, y: 0.3 }}]);
const field = regionField(state.regions, {{ aspect: 832 / 480, basePoints: regionGridPoints(state.regionGrid) }});
const frames = Math.floor(state.clip.duration * state.clip.fps + 1e-6) + 1;
const grid = Array.from({{ length: frames }}, (_, frame) => Array.from(field.positionsAt(frame / state.clip.fps)));
console.log(JSON.stringify({{ json: state.exportJson(), grid }}));
"""


def test_region_drags_read_in_python_as_the_editor_previews_them(node):
    result = json.loads(_run_js(node, REGION_SCRIPT))
    document = json.loads(result["json"])
    assert document["version"] == 2 and [r["kind"] for r in document["regions"]] == ["anchor", "path", "live", "path"]
    assert len(result["json"]) < 1200, "region drags travel as handles"
    tracks = tracks_from_widget_json(result["json"])
    assert tracks.num_tracks == 16 * 16 + 1 and tracks.num_frames == 25
    expected = torch.tensor(result["grid"], dtype=torch.float64).reshape(25, 256, 2)
    normalized = tracks.normalized_points().to(torch.float64)[:, :256]
    assert float((expected - normalized).abs().max()) < 5e-5  # float32 in Python, float64 in the editor
    assert float((expected[-1] - expected[0]).abs().max()) > 0.05, "the regions moved"
