"""Records per minute of batch jobs: the local engine against Ray Data with 1 and 2 actors.

    .venv/bin/python -m benchmarks.batch --n 50

Each engine attributes the same HotpotQA records (10 documents, 1,500-2,000-token prompts; the
answer "The answer is <gold>.", as in ``benchmarks.speed``) with the same settings. Reported per engine:
the job's wall time from the call to its last result (model loading included: each Ray actor
loads its own), records per minute over the job, and the steady rate between the first and the
last result (loading excluded). Ray's own start is timed apart. The engines' scores are checked
equal. One torch thread per engine process or actor (OMP_NUM_THREADS=1, cpus_per_actor=1).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict
from functools import partial
from pathlib import Path
from typing import Any

import ray
import torch

from attribot_rag import AttributionOptions, Attributor
from attribot_rag.serving import ray as ray_engine
from attribot_rag.serving.batch import BatchResult, attribute_records
from benchmarks import RESULTS
from benchmarks.data import HOTPOTQA, batch_records
from benchmarks.measure import time_job


def timed(run: Callable[[], Iterable[BatchResult]]) -> tuple[dict[str, Any], dict[str, BatchResult]]:
    """A job's timing (``measure.JobTiming``) and its results by id."""
    timing, results = time_job(run, lambda item: item.error is not None)
    return asdict(timing), {item.id: item for item in results}


def scores(item: BatchResult) -> tuple | None:
    r = item.result
    return None if r is None else (r.full_logprob, [s.score for s in r.documents], [s.score for s in r.sentences])


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.batch", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=HOTPOTQA)
    parser.add_argument("--n", type=int, default=50, help="records")
    parser.add_argument("--budget", default="balanced", choices=["fast", "balanced", "faithful"])
    parser.add_argument("--actors", type=int, nargs="+", default=[1, 2], help="Ray actor pool sizes to run")
    parser.add_argument("--out", type=Path, default=RESULTS / "batch.json")
    return parser


def engines(
    records: list[dict[str, Any]], options: AttributionOptions, actors: list[int]
) -> tuple[dict[str, dict[str, Any]], float]:
    """Each engine's timing (the local one first; Ray's checked equal to it) and Ray's start."""
    timings: dict[str, dict[str, Any]] = {}
    timings["local"], reference = timed(lambda: attribute_records(records, Attributor(), options))
    print("local", json.dumps(timings["local"]), flush=True)
    os.environ.setdefault("RAY_worker_niceness", "0")  # actors at this process's priority (Ray's default: 15 nicer)
    start = time.perf_counter()
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, logging_level="warning")
    ray_start_s = round(time.perf_counter() - start, 2)
    for count in actors:
        name = f"ray, {count} actor{'s' * (count > 1)}"
        timings[name], results = timed(
            partial(ray_engine.attribute_records, records, options, actors=count, cpus_per_actor=1)
        )
        timings[name]["scores_equal_local"] = all(scores(results[i]) == scores(reference[i]) for i in reference)
        print(name, json.dumps(timings[name]), flush=True)
    ray.shutdown()
    return timings, ray_start_s


def main() -> None:
    args = parser().parse_args()
    torch.set_num_threads(1)
    timings, ray_start_s = engines(
        batch_records(args.data, args.n), AttributionOptions(budget=args.budget), args.actors
    )
    report = {
        "command": f".venv/bin/python -m benchmarks.batch --n {args.n} --budget {args.budget} --actors {' '.join(map(str, args.actors))}",
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "torch_threads_per_engine": 1,
            "device": "cpu",
            "ray": ray.__version__,
        },
        "model": "SmolLM2-135M-Instruct (embedded)",
        "data": args.data.name,
        "budget": args.budget,
        "ray_start_s": ray_start_s,
        "engines": timings,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
