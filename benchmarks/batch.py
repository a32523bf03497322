"""Records per minute of batch jobs: the local engine against Ray Data with 1 and 2 actors.

    .venv/bin/python benchmarks/batch.py --n 50

Each engine attributes the same HotpotQA records (10 documents, 1,500-2,000-token prompts; the
answer "The answer is <gold>.", as in speed.py) with the same settings. Reported per engine:
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
from collections.abc import Callable, Iterator
from functools import partial
from itertools import islice
from pathlib import Path

import ray
import torch

from attribot_rag import AttributionOptions, Attributor
from attribot_rag import ray as ray_engine
from attribot_rag.batch import BatchResult, attribute_records

ROOT = Path(__file__).resolve().parent


def load_records(path: Path, n: int) -> list[dict]:
    records = []
    with path.open(encoding="utf-8") as handle:
        for line in islice(handle, n):
            item = json.loads(line)
            documents = [
                {"text": "".join(d["sentences"]), "title": d["title"], "id": d["title"]} for d in item["documents"]
            ]
            records.append(
                {
                    "id": item["id"],
                    "question": item["question"],
                    "documents": documents,
                    "answer": f"The answer is {item['answer']}.",
                }
            )
    return records


def timed(run: Callable[[], Iterator[BatchResult]]) -> tuple[dict, dict]:
    """Wall times of a job: to the first and the last result; and the results by id. Also this
    process's CPU time (the whole work of the local engine, a driver's share for Ray) and the
    machine's load average, since neighbours' load moves wall times on a shared machine."""
    load_before, cpu = os.getloadavg()[0], time.process_time()
    start, arrivals, results = time.perf_counter(), [], {}
    for item in run():
        arrivals.append(time.perf_counter() - start)
        results[item.id] = item
    n = len(arrivals)
    steady = (n - 1) / (arrivals[-1] - arrivals[0]) * 60 if n > 1 and arrivals[-1] > arrivals[0] else None
    timing = {
        "records": n,
        "errors": sum(r.error is not None for r in results.values()),
        "first_result_s": round(arrivals[0], 2),
        "wall_s": round(arrivals[-1], 2),
        "records_per_min": round(n / arrivals[-1] * 60, 3),
        "steady_records_per_min": round(steady, 3) if steady else None,
        "seconds_per_record_steady": round(60 / steady, 2) if steady else None,
        "process_cpu_s": round(time.process_time() - cpu, 2),
        "load_average_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)],
    }
    return timing, results


def scores(item: BatchResult) -> tuple | None:
    r = item.result
    return None if r is None else (r.full_logprob, [s.score for s in r.documents], [s.score for s in r.sentences])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=ROOT / "data" / "hotpotqa_dev_sample.jsonl")
    parser.add_argument("--n", type=int, default=50, help="records")
    parser.add_argument("--budget", default="balanced", choices=["fast", "balanced", "faithful"])
    parser.add_argument("--actors", type=int, nargs="+", default=[1, 2], help="Ray actor pool sizes to run")
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "batch.json")
    args = parser.parse_args()

    torch.set_num_threads(1)
    records, options = load_records(args.data, args.n), AttributionOptions(budget=args.budget)
    engines: dict[str, dict] = {}

    def local() -> Iterator[BatchResult]:
        return attribute_records(records, Attributor(), options)

    engines["local"], reference = timed(local)
    print("local", json.dumps(engines["local"]), flush=True)

    os.environ.setdefault("RAY_worker_niceness", "0")  # actors at this process's priority (Ray's default: 15 nicer)
    start = time.perf_counter()
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, logging_level="warning")
    ray_start_s = round(time.perf_counter() - start, 2)
    for actors in args.actors:
        name = f"ray, {actors} actor{'s' * (actors > 1)}"
        engines[name], results = timed(
            partial(ray_engine.attribute_records, records, options, actors=actors, cpus_per_actor=1)
        )
        engines[name]["scores_equal_local"] = all(scores(results[i]) == scores(reference[i]) for i in reference)
        print(name, json.dumps(engines[name]), flush=True)
    ray.shutdown()

    report = {
        "command": f"benchmarks/batch.py --n {args.n} --budget {args.budget} --actors {' '.join(map(str, args.actors))}",
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
        "engines": engines,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
