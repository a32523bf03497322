"""The GPU benchmark runs end to end on the CPU with tiny random-weight shapes: every figure
of both workloads, and the issue's targets computed from them."""

import json
from pathlib import Path

import pytest

from benchmarks import gpu


@pytest.mark.model
def test_gpu_benchmark_tiny_run_reports_every_figure(tmp_path: Path) -> None:
    gpu.main(["--tiny", "--device", "cpu", "--repeats", "1", "--out", str(tmp_path / "gpu.json")])
    report = json.loads((tmp_path / "gpu.json").read_text())
    assert report["default method"] == {"method": "fast", "rescore": 5, "rescore_margin": 1.0}
    rows = report["workloads"]
    assert [row["documents"] for row in rows] == [2, 3]
    for row in rows:
        for key in (
            "tiny-large generate 8 tokens",
            "tiny-large naive",
            "tiny-large exact",
            "tiny-small hierarchical",
            "tiny-small hierarchical-fast",
            "tiny-small default",
            "tiny-large exact FLOP-limit seconds",
        ):
            assert row[key] > 0, key
        assert row["exact recomputed tokens"] > row["prompt_tokens"]
        assert row["tiny-large exact vs naive max abs diff (nats)"] < 2e-3  # float32 on the CPU
        assert set(row["targets"]) == {
            "tiny-small default >= 30x faster than tiny-large generation",
            "tiny-small hierarchical with the frozen document pass >= 60x faster than tiny-large generation",
            "tiny-large exact <= 1.25x its FLOP limit",
        }
        for target in row["targets"].values():
            assert isinstance(target["met"], bool) and target["ratio"] > 0
    assert rows[1]["prompt_tokens"] > rows[0]["prompt_tokens"]
