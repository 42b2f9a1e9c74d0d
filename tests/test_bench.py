"""The benchmarks under bench/ still fit the code they measure: each one imports, and its
--help parses (a benchmark is run by hand, so a rename would otherwise go unnoticed)."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCHES = sorted(p.stem for p in (ROOT / "bench").glob("bench_*.py"))


def test_there_are_benchmarks():
    assert {"bench_push", "bench_memory", "bench_merge", "bench_verify"} <= set(BENCHES)


@pytest.mark.parametrize("name", BENCHES)
def test_a_benchmark_imports_and_explains_itself(name):
    importlib.import_module(f"bench.{name}")
    result = subprocess.run([sys.executable, str(ROOT / "bench" / f"{name}.py"), "--help"], cwd=ROOT,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "usage:" in result.stdout
