"""`bench/bench_demo.py --drags`: point and region drags built from a clip as a user's editor would, and the option runs."""

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import torch

from motionstream_core.motion.drag_control import default_grid_size
from motionstream_core.synthetic import SyntheticMotionConfig, generate_clip

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "bench_demo.py"


def load_bench_demo():
    spec = importlib.util.spec_from_file_location("bench_demo_under_test", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_point_drags_are_the_centre_tracks_read_back_from_the_widget_json():
    bench = load_bench_demo()
    clip = generate_clip(SyntheticMotionConfig(num_frames=10, min_sprites=3, max_sprites=3), 5)
    tracks = bench.point_drag_tracks(clip)
    centres = (clip.metadata.track_offsets == 0).all(dim=1).nonzero().squeeze(1)
    assert tracks.num_tracks == clip.metadata.num_sprites
    assert tracks.num_frames == clip.tracks.num_frames
    assert torch.allclose(tracks.points, clip.tracks.points[:, centres], atol=1e-3)
    assert torch.equal(tracks.visibility, clip.tracks.visibility[:, centres])
    assert torch.equal(tracks.static, clip.tracks.static[centres])


def test_region_drags_follow_the_sprites_and_anchor_the_static_ones():
    bench = load_bench_demo()
    config = SyntheticMotionConfig(num_frames=10, min_sprites=2, max_sprites=2, trajectory_kinds=("static", "linear"))
    clip = next(c for c in (generate_clip(config, seed) for seed in range(50))
                if set(c.metadata.trajectory_kinds) == {"static", "linear"})
    metadata = clip.metadata
    document = bench.region_drag_document(clip)
    assert document["region_grid"] == default_grid_size(metadata.width, metadata.height)
    for region, kind, sprite, path in zip(document["regions"], metadata.trajectory_kinds, metadata.sprites,
                                          metadata.centre_paths.unbind(1)):
        assert region["kind"] == ("anchor" if kind == "static" else "path")
        assert region["radius"] * min(metadata.width, metadata.height) > sprite.bounding_radius
        first = region["keyframes"][0]
        assert first["t"] == 0
        assert math.isclose(first["x"] * metadata.width, float(path[0, 0]), abs_tol=0.01)
        assert math.isclose(first["y"] * metadata.height, float(path[0, 1]), abs_tol=0.01)
        assert len(region["keyframes"]) == (1 if kind == "static" else metadata.num_frames)
    tracks = bench.region_drag_tracks(clip)
    grid = document["region_grid"]
    assert (tracks.num_frames, tracks.num_tracks) == (metadata.num_frames, grid * grid)
    # The grid point nearest the moving sprite's grab point moves the way the sprite does.
    moving = metadata.trajectory_kinds.index("linear")
    path = metadata.centre_paths[:, moving].to(torch.float32)
    nearest = int((tracks.points[0] - path[0]).norm(dim=-1).argmin())
    moved, wanted = tracks.points[-1, nearest] - tracks.points[0, nearest], path[-1] - path[0]
    assert float(moved @ wanted) > 0


def test_the_drags_option_runs_on_one_clip():
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--threads", "1", "--clips", "1", "--frames", "4", "--skip", "epe", "drift", "speed",
         "--drags", "five", "point", "region"],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    cases = report["drags"]["cases"]
    assert list(cases) == ["five", "point", "region"]
    for summary in cases.values():
        assert {"epe_px", "median_epe_px", "lost_fraction", "clips_within_4px", "tracks_per_clip"} <= set(summary)
        assert len(summary["per_clip_epe"]) == 1
    assert cases["region"]["tracks_per_clip"] == report["drags"]["region_grid"] ** 2
