"""The GPU benchmark runs end to end on the CPU with tiny random-weight shapes."""

import importlib.util
import json
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu.py"


def test_gpu_benchmark_tiny_run_reports_every_figure(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("gpu_benchmark", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.main(["--tiny", "--repeats", "1", "--out", str(tmp_path / "gpu.json")])
    (row,) = json.loads((tmp_path / "gpu.json").read_text())["workloads"]
    for key in (
        "tiny-large generate 8 tokens",
        "tiny-large naive",
        "tiny-large exact",
        "tiny-large hierarchical",
        "tiny-small hierarchical (fast documents)",
        "tiny-large exact FLOP-limit seconds",
    ):
        assert row[key] > 0, key
    assert row["exact recomputed tokens"] > row["prompt_tokens"]
    assert "tiny-large exact / FLOP limit" in row["ratios"]
