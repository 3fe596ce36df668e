"""Benchmark scripts are not run by the suite, but they must not rot: each one imports and parses its options."""

import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"


# Modules whose names start with "_" are helpers the scripts share, not scripts.
@pytest.mark.parametrize("script", sorted(p for p in BENCH.glob("*.py") if not p.name.startswith("_")),
                         ids=lambda path: path.name)
def test_bench_script_starts(script):
    result = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "usage" in result.stdout.lower()
