"""The benchmark suite keeps working: `python -m bench --quick` runs every case and prints its table (no timings judged)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_bench_quick_prints_the_table():
    """Every case of the suite runs at tiny sizes and appears in the printed table with a ratio column."""
    done = subprocess.run([sys.executable, "-m", "bench", "--quick"], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "case" in out and "baseline" in out and "ratio" in out
    for case in ("tiny graph", "training step", "engine overhead", "engine vs PyTorch", "large: Relu",
                 "throughput", "memory", "malloc", "Convolution 3x3"):
        assert case in out, f"no {case!r} row in:\n{out}"
    assert "blas:" in out  # the BLAS kernel that ran is reported


def test_bench_rejects_an_unknown_case():
    """--only with a case the suite does not have fails with a message listing the cases."""
    done = subprocess.run([sys.executable, "-m", "bench", "--only", "nope"], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 2
    assert "unknown case 'nope'" in done.stderr and "tiny" in done.stderr


def test_per_call_breakdown_runs():
    """`python -m bench.percall` measures a few calls and prints p50 and each process's CPU per call."""
    done = subprocess.run([sys.executable, "-m", "bench.percall", "--calls", "20", "--rounds", "1"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "client CPU" in done.stdout and "server CPU" in done.stdout
    assert [line.split()[0] for line in done.stdout.splitlines()[1:]] == ["Run", "echo", "Run"]
