"""`bench/bench_demo.py --drags`: point, two-point, anchor, partial and region drags built from a clip as a user's
editor would, and the option runs (the occlusion and persistence scores themselves: test_synthetic_benchmark_cases)."""

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import torch

from motionstream_core.motion.drag_control import default_grid_size
from motionstream_core.synthetic import (
    SyntheticMotionConfig, generate_clip, partial_track_spans, region_drag_document, region_drag_tracks,
)

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
    config = SyntheticMotionConfig(num_frames=10, min_sprites=2, max_sprites=2, trajectory_kinds=("static", "linear"))
    clip = next(c for c in (generate_clip(config, seed) for seed in range(50))
                if set(c.metadata.trajectory_kinds) == {"static", "linear"})
    metadata = clip.metadata
    document = region_drag_document(clip)
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
    tracks = region_drag_tracks(clip)
    grid = document["region_grid"]
    assert (tracks.num_frames, tracks.num_tracks) == (metadata.num_frames, grid * grid)
    # The grid point nearest the moving sprite's grab point moves the way the sprite does.
    moving = metadata.trajectory_kinds.index("linear")
    path = metadata.centre_paths[:, moving].to(torch.float32)
    nearest = int((tracks.points[0] - path[0]).norm(dim=-1).argmin())
    moved, wanted = tracks.points[-1, nearest] - tracks.points[0, nearest], path[-1] - path[0]
    assert float(moved @ wanted) > 0


def static_and_moving_clip(frames: int = 10):
    config = SyntheticMotionConfig(num_frames=frames, min_sprites=2, max_sprites=2, trajectory_kinds=("static", "linear"))
    return next(c for c in (generate_clip(config, seed) for seed in range(50))
                if set(c.metadata.trajectory_kinds) == {"static", "linear"})


def test_two_drags_are_each_sprites_centre_and_one_ring_point():
    bench = load_bench_demo()
    clip = generate_clip(SyntheticMotionConfig(num_frames=8, min_sprites=3, max_sprites=3), 9)
    metadata = clip.metadata
    tracks = bench.two_drag_tracks(clip)
    assert (tracks.num_frames, tracks.num_tracks) == (metadata.num_frames, 2 * metadata.num_sprites)
    chosen = torch.cat([(metadata.track_sprite == s).nonzero().squeeze(1)[:2] for s in range(metadata.num_sprites)])
    assert metadata.track_sprite[chosen].tolist() == [s for s in range(metadata.num_sprites) for _ in range(2)]
    assert bool((metadata.track_offsets[chosen[0::2]] == 0).all()) and bool((metadata.track_offsets[chosen[1::2]] != 0).any(dim=1).all())
    assert torch.allclose(tracks.points, clip.tracks.points[:, chosen], atol=1e-3)
    assert torch.equal(tracks.visibility, clip.tracks.visibility[:, chosen])


def test_anchor_drags_pin_static_sprites_on_every_frame_and_drag_moving_ones_by_their_centre():
    bench = load_bench_demo()
    clip = static_and_moving_clip()
    metadata = clip.metadata
    tracks = bench.anchor_drag_tracks(clip)
    centres = bench.centre_track_indices(clip)
    assert (tracks.num_frames, tracks.num_tracks) == (metadata.num_frames, metadata.num_sprites)
    for sprite, kind in enumerate(metadata.trajectory_kinds):
        document = bench.anchor_drag_document(clip)["tracks"][sprite]
        assert torch.allclose(tracks.points[:, sprite], clip.tracks.points[:, centres[sprite]], atol=1e-3)
        if kind == "static":
            assert document["static"] and len(document["keyframes"]) == 1
            assert bool(tracks.static[sprite]) and bool(tracks.visibility[:, sprite].all())
        else:
            assert not bool(tracks.static[sprite])
            assert torch.equal(tracks.visibility[:, sprite], clip.tracks.visibility[:, centres[sprite]])


def test_partial_drags_are_invisible_outside_their_span_and_scored_only_inside_it():
    bench = load_bench_demo()
    clip = static_and_moving_clip(frames=7)
    metadata = clip.metadata
    spans = partial_track_spans(clip)
    tracks = bench.partial_drag_tracks(clip)
    centres = bench.centre_track_indices(clip)
    assert (tracks.num_frames, tracks.num_tracks) == (metadata.num_frames, metadata.num_sprites)
    assert not bool((tracks.visibility & ~spans.given).any())
    assert torch.equal(tracks.visibility, clip.tracks.visibility[:, centres] & spans.given)
    assert torch.equal(tracks.static, clip.tracks.static[centres])
    inside = spans.given & clip.tracks.visibility[:, centres]
    assert torch.allclose(tracks.points[inside], clip.tracks.points[:, centres][inside], atol=1e-3)
    requested, given = bench.partial_tracks(clip)
    assert torch.equal(given, spans.given)
    assert torch.equal(requested.visibility, clip.tracks.visibility & spans.given[:, metadata.track_sprite])
    assert torch.equal(requested.track_ids, clip.tracks.track_ids)


def test_the_drags_option_runs_the_new_cases_on_one_clip():
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--threads", "1", "--clips", "1", "--frames", "25", "--skip", "epe", "drift", "speed",
         "--drags", "two", "anchors", "partial", "none", "occlusion"],
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    table = result.stdout.split("drag kinds", 1)[1]
    for column in ("static px", "kept", "moved px", "back px", "RGB after"):
        assert column in table
    report = json.loads(result.stdout.strip().splitlines()[-1])
    cases = report["drags"]["cases"]
    assert list(cases) == ["two", "anchors", "partial", "none", "occlusion"]
    assert cases["none"]["tracks_per_clip"] == 0
    for case in ("partial", "none"):
        persistence = cases[case]["persistence"]
        assert {"kept_fraction", "displacement_px", "mean_confidence", "spans"} <= set(persistence)
        assert math.isnan(persistence["kept_fraction"]) or 0 <= persistence["kept_fraction"] <= 1
    assert "persistence" not in cases["two"] and "reappearance" not in cases["none"]
    reappearance = cases["occlusion"]["reappearance"]
    assert {"position_error_px", "lost_fraction", "colour_error", "colour_error_before"} <= set(reappearance)
    assert cases["occlusion"]["tracks_per_clip"] == 2  # one drag per sprite: the mover and the occluder
    assert cases["occlusion"]["clips_with_static"] == 1  # the occluder


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
