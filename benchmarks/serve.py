"""The citation service under load against direct calls, in one run, on loopback only.

    modeljob nice -n 10 .venv/bin/python -m benchmarks.serve --n 100 --concurrency 8

Builds ``--n`` requests from SQuAD 2.0 questions (``--documents`` paragraphs each, the gold
answer as "The answer is X."), times them as direct ``Attributor`` calls one after another,
then sends them to ``attribot-rag serve`` (a subprocess on 127.0.0.1, one model) from
``--concurrency`` client threads through ``RemoteAttributor``, sampling ``/healthz`` for the
queue depth. Reports throughput, p50/p95 latency, queue depth, the CPU time per request (the
server's from /proc, so neighbours' load does not count) and whether every served result
equals its direct call. Bounded: at most ``--n`` requests and ``--max-seconds`` per phase.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import statistics
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

from attribot_rag import AttributionOptions, Attributor, RemoteAttributor
from attribot_rag.serving.service_process import ServiceProcess
from benchmarks import RESULTS, ROOT
from benchmarks.data import SQUAD2, service_requests
from benchmarks.measure import cpu_seconds


def summary(latencies: list[float], wall: float, cpu: float) -> dict[str, Any]:
    ordered = sorted(latencies)
    return {
        "requests": len(ordered),
        "wall_s": round(wall, 2),
        "throughput_per_s": round(len(ordered) / wall, 4),
        "latency_p50_s": round(statistics.median(ordered), 3),
        "latency_p95_s": round(ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))], 3),
        "cpu_s_per_request": round(cpu / len(ordered), 4),
    }


def direct_phase(
    attributor: Attributor, requests: list, options: AttributionOptions, deadline: float
) -> tuple[dict, list]:
    """One call after another; ``results`` parallel to ``requests`` (``None``: past the deadline)."""
    latencies: list[float] = []
    results: list[Any] = [None] * len(requests)
    wall, cpu = time.perf_counter(), time.process_time()
    for index, (question, documents, answer) in enumerate(requests):
        if time.monotonic() > deadline:
            break
        start = time.perf_counter()
        results[index] = attributor.attribute_with(question, documents, answer, options)
        latencies.append(time.perf_counter() - start)
    return summary(latencies, time.perf_counter() - wall, time.process_time() - cpu), results


def served_phase(
    server: ServiceProcess, requests: list, options: AttributionOptions, concurrency: int, deadline: float
) -> tuple[dict, list]:
    """``concurrency`` client threads; ``results`` parallel to ``requests``."""
    depths: list[int] = []
    stop = threading.Event()
    remote = RemoteAttributor(server.url, timeout=600)

    def sample() -> None:
        while not stop.wait(0.1):
            health = httpx.get(f"{server.url}/healthz", timeout=10).json()
            depths.append(health["queued"] + health["running"])

    def one(request: tuple) -> tuple[float, Any]:
        if time.monotonic() > deadline:
            return 0.0, None
        start = time.perf_counter()
        result = remote.attribute_with(*request, options)
        return time.perf_counter() - start, result

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    wall, cpu = time.perf_counter(), cpu_seconds(server.process.pid)
    with ThreadPoolExecutor(concurrency) as pool:
        done = list(pool.map(one, requests))
    wall, cpu = time.perf_counter() - wall, cpu_seconds(server.process.pid) - cpu
    stop.set()
    sampler.join()
    remote.close()
    row = summary([latency for latency, result in done if result is not None], wall, cpu)
    row.update(
        queue_depth_max=max(depths, default=0), queue_depth_mean=round(statistics.fmean(depths), 2) if depths else 0.0
    )
    return row, [result for _, result in done]


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.serve", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=100, help="requests (default 100)")
    parser.add_argument("--concurrency", type=int, default=8, help="client threads (default 8)")
    parser.add_argument("--documents", type=int, default=2, help="SQuAD paragraphs per request (default 2)")
    parser.add_argument("--method", default="auto")
    parser.add_argument("--budget", default="fast")
    parser.add_argument(
        "--max-seconds", type=float, default=900, help="stop sending after this long, per phase (default 900)"
    )
    parser.add_argument("--out", type=Path, default=RESULTS / "serve.json")
    return parser


def main() -> None:
    args = parser().parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # a kill still stops the server below
    requests = service_requests(SQUAD2, args.n, args.documents)
    options = AttributionOptions(method=args.method, budget=args.budget)
    method = ["--method", args.method, *(["--budget", args.budget] if args.method == "auto" else [])]
    with ServiceProcess("--max-queue", str(args.concurrency), *method) as server:
        direct, direct_results = direct_phase(Attributor(), requests, options, time.monotonic() + args.max_seconds)
        print("direct", json.dumps(direct), flush=True)
        served, served_results = served_phase(
            server, requests, options, args.concurrency, time.monotonic() + args.max_seconds
        )
        print("served", json.dumps(served), flush=True)
    pairs = [(a, b) for a, b in zip(direct_results, served_results, strict=True) if a is not None and b is not None]
    equal = sum(a.model_dump(exclude={"timings"}) == b.model_dump(exclude={"timings"}) for a, b in pairs)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(report(args, direct, served, f"{equal}/{len(pairs)}"), indent=2) + "\n", encoding="utf-8"
    )
    print(args.out.read_text(encoding="utf-8"), end="")


def report(args: argparse.Namespace, direct: dict[str, Any], served: dict[str, Any], equal: str) -> dict[str, Any]:
    """The run's results: its settings, the machine, both phases and how they compare."""
    return {
        "command": f"modeljob nice -n 10 .venv/bin/python -m benchmarks.serve --n {args.n} --concurrency {args.concurrency} --documents {args.documents}",
        "settings": {
            **vars(args),
            "out": str(args.out.relative_to(ROOT.parent)) if args.out.is_relative_to(ROOT.parent) else str(args.out),
        },
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "torch_threads": os.environ.get("OMP_NUM_THREADS"),
        },
        "direct": direct,
        "served": served,
        "served_over_direct": {
            "throughput": round(served["throughput_per_s"] / direct["throughput_per_s"], 3),
            "cpu_per_request": round(served["cpu_s_per_request"] / direct["cpu_s_per_request"], 3),
        },
        "served_equal_to_direct": equal,
    }


if __name__ == "__main__":
    main()
