"""Benchmark scripts must not rot: each one imports and parses its options, gpu_check runs whole in its CPU smoke mode,
and the fair growing-cache baseline of bench_streaming computes what the library computes. No timing is asserted."""

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parents[1] / "bench"


# Modules whose names start with "_" are helpers the scripts share, not scripts.
@pytest.mark.parametrize("script", sorted(p for p in BENCH.glob("*.py") if not p.name.startswith("_")),
                         ids=lambda path: path.name)
def test_bench_script_starts(script):
    result = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "usage" in result.stdout.lower()


def _bench_module(name):
    spec = importlib.util.spec_from_file_location(f"bench_{name}_under_test", BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_gpu_check_smoke_prints_the_table():
    """The one-command GPU measurement runs end to end on the CPU with --smoke (figures not checked)."""
    env = {**os.environ, "PYTHON": sys.executable}
    result = subprocess.run(["bash", str(BENCH / "gpu_check.sh"), "--smoke"], capture_output=True, text=True,
                            timeout=300, env=env)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    table = [line for line in result.stdout.splitlines() if line.startswith("| ")]
    assert table[0].startswith("| row | what | result | peak memory | command |")
    rows = {line.split(" | ")[0][2:]: line for line in table[2:]}
    expected = {"dit-eager", "dit-compiled", "stream-track-v0", "stream-track-v0-vae", "stream-paper",
                "stream-paper-vae", "taehv"}
    assert expected <= set(rows), sorted(rows)
    for name, line in rows.items():
        assert "failed" not in line and "skipped" not in line, line
        assert "`bash bench/gpu_check.sh --smoke --only " in line, line
    assert "frames/s" in rows["stream-track-v0-vae"] and "first chunk" in rows["stream-paper"]
    # Token counts are derived from the latent size (smoke: 8x4 latent -> 4x2 patches -> 8 per frame).
    assert "3 latent frames x 8 = 24 tokens" in rows["dit-eager"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message given when there is no GPU")
def test_gpu_check_without_cuda_says_so():
    result = subprocess.run([sys.executable, str(BENCH / "gpu_check.py")], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "CUDA" in result.stderr and "--smoke" in result.stderr


def test_fair_growing_baseline_computes_what_the_library_growing_cache_computes():
    """The benchmark's preallocated growing cache changes where keys live, not what the model computes."""
    from motionstream_core import CausalWanModel
    from tiny_models import random_dit, tiny_config

    bench = _bench_module("bench_streaming")
    model = random_dit(tiny_config(in_channels=8, out_channels=8))
    engine = CausalWanModel(model, "absolute")
    context = engine.encode_context(torch.randn(1, 16, 24))
    library = engine.new_cache(1, 4, 4, sink_frames=0, window_frames=1, policy="growing")
    geometry = engine.cache_geometry(1, 4, 4)
    preallocated = bench.PreallocatedGrowingKVCache(capacity_frames=9, **geometry.as_kwargs())
    generator = torch.Generator().manual_seed(0)
    for start in (0, 3, 6):
        latents = torch.randn(1, 8, 3, 4, 4, generator=generator)
        for timestep in (900.0, 500.0, 0.0):
            expected = engine.forward_chunk(latents, timestep, context, library, start)
            actual = engine.forward_chunk(latents, timestep, context, preallocated, start)
            torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="preallocated"):
        preallocated.plan(9, 3)


def _git_worktrees():
    result = subprocess.run(["git", "-C", str(BENCH.parent), "worktree", "list", "--porcelain"],
                            capture_output=True, text=True)
    return result.stdout if result.returncode == 0 else None


@pytest.mark.skipif(_git_worktrees() is None, reason="bench_versions needs the pack as a git checkout and git")
def test_bench_versions_smoke_runs_head_beside_the_working_tree_and_removes_its_worktree():
    """HEAD exists in any clone, shallow ones included: checked out into a temporary worktree, it runs beside the
    working tree, the table is printed, both built the same cache per branch, and the worktree is gone afterwards
    (figures not checked)."""
    before = _git_worktrees()
    result = subprocess.run([sys.executable, str(BENCH / "bench_versions.py"), "--baseline", "HEAD", "--smoke"],
                            capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    lines = result.stdout.splitlines()
    assert any(line.split()[:2] == ["1", "baseline"] for line in lines), result.stdout
    assert any(line.startswith("median") for line in lines), result.stdout
    assert "(temporary git worktree)" in result.stdout and "candidate: working tree" in result.stdout
    assert "geometry per branch: same" in result.stdout
    assert "load average (1/5/15 min) before:" in result.stdout
    assert _git_worktrees() == before
