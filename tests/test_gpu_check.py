"""The GPU check's dry run (``scripts/gpu_check.sh --dry-run``): the script itself, its three
steps and its JSON, on the CPU with tiny shapes, so that it is known to work before a device
runs it (docs/gpu.md)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.model
@pytest.mark.slow
def test_the_dry_run_runs_every_step_and_writes_the_whole_summary(tmp_path: Path) -> None:
    env = {**os.environ, "OUT": str(tmp_path), "PYTHON": sys.executable}
    run = subprocess.run(
        ["bash", "scripts/gpu_check.sh", "--dry-run"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "cuda_tests.xml",
        "gpu.json",
        "gpu_check.json",
        "gpu_check.log",
        "serve.json",
    ]
    summary = json.loads((tmp_path / "gpu_check.json").read_text())
    assert summary["dry_run"] and summary["complete"] and summary["device"] == "cpu (dry run)"
    assert [(s["step"], s["rc"]) for s in summary["steps"]] == [("cuda tests", 0), ("benchmark", 0), ("serve", 0)]
    tests = summary["tests"]
    # every test ran on the CPU; its CUDA twin, and the CUDA-only out-of-memory test, skipped
    assert tests["failed"] == tests["error"] == 0 and tests["passed"] == 5 and tests["skipped"] == 6
    measured = {name for case in tests["cases"] for name in case["properties"]}
    assert "bf16 exact vs naive max abs diff (nats)" in measured
    assert "bf16 vs float32 naive max abs diff (nats)" in measured
    assert [w["documents"] for w in summary["benchmark"]["workloads"]] == [2, 3]
    serve = summary["serve"]
    assert serve["served_equal_to_direct"] == "16/16" and serve["requests"] == serve["concurrency"] == 16
    assert serve["served"]["throughput_per_s"] > 0 and serve["direct"]["throughput_per_s"] > 0
    log = (tmp_path / "gpu_check.log").read_text()
    assert "== serve: exit 0" in log and "== install" not in log  # the dry run installs nothing
