"""Two parts of the GPU check (``scripts/gpu_check.sh``, docs/gpu.md):

    python -m benchmarks.gpu_check serve --device cuda --out $OUT/serve.json
    python -m benchmarks.gpu_check summary --out $OUT --steps STEPS.tsv --device NAME

``serve``: the serving path on the device. A random-weight Llama-3.2-1B-shaped model (bf16 on
a GPU; ``--tiny``: a tiny shape) is saved to a temporary folder with its tokenizer; the same
``--n`` requests (~2,100-token prompts, 100-token answers, the default options) are timed as
direct ``Attributor`` calls one after another, then sent to ``attribot-rag serve --device``
over loopback from ``--concurrency`` client threads (``benchmarks.serve``'s two phases).
Reports requests per second of both, and whether every served result equals its direct call.

``summary``: ``gpu_check.json``, the whole check in one file: each step's exit status and
time, every test's outcome and recorded measurements (from the pytest JUnit XML), the
benchmark's and the serving check's JSON. Written after every step, so a run cut short still
leaves what it measured.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import tempfile
import time
import xml.etree.ElementTree as ElementTree
from pathlib import Path
from typing import Any

STEPS = ("install wheels", "install project", "cuda tests", "benchmark", "serve")
TESTS_XML, BENCHMARK_JSON, SERVE_JSON = "cuda_tests.xml", "gpu.json", "serve.json"


def serve(args: argparse.Namespace) -> dict[str, Any]:
    import torch
    from transformers import AutoTokenizer

    from attribot_rag import AttributionOptions, Attributor, RemoteAttributor
    from attribot_rag.core.models import auto_dtype
    from attribot_rag.core.prompt import TokenizedText, render
    from attribot_rag.serving.service_process import ServiceProcess
    from benchmarks.gpu import max_difference, random_model, tokenizer_dir, workload
    from benchmarks.serve import direct_phase, served_phase

    dtype = str(auto_dtype(args.device)).removeprefix("torch.")
    shape, size = ("tiny-small", (2, 2, 10, 8)) if args.tiny else ("llama-3.2-1b", (10, 5, 40, 100))
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir())
    requests = [workload(tokenizer, *size, seed=seed) for seed in range(args.n)]
    options = AttributionOptions()  # what the server runs for requests without options
    deadline = time.monotonic() + args.max_seconds
    with tempfile.TemporaryDirectory(prefix="attribot-gpu-check-") as folder:
        model = random_model(shape, args.device, getattr(torch, dtype))
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        del model
        attributor = Attributor(folder, device=args.device, dtype=dtype)
        attributor.attribute_with(*requests[0], options)  # warm-up: kernels, allocator
        direct, direct_results = direct_phase(attributor, requests, options, deadline)
        print("direct", json.dumps(direct), flush=True)
        if args.device.startswith("cuda"):
            torch.cuda.empty_cache()  # the server's batch sizes follow the device's free memory
        server_args = ("--model", folder, "--device", args.device, "--dtype", dtype, "--max-queue", str(args.n))
        with ServiceProcess(*server_args) as server:
            with RemoteAttributor(server.url, timeout=600) as remote:
                remote.attribute_with(*requests[0], options)  # warm-up
            served, served_results = served_phase(server, requests, options, args.concurrency, deadline)
        print("served", json.dumps(served), flush=True)
    pairs = [(a, b) for a, b in zip(direct_results, served_results, strict=True) if a is not None and b is not None]
    equal = sum(a.model_dump(exclude={"timings"}) == b.model_dump(exclude={"timings"}) for a, b in pairs)
    return {
        "device": torch.cuda.get_device_name(args.device) if args.device.startswith("cuda") else "cpu",
        "model": f"random-weight {shape}, {dtype}",
        "options": options.resolved().model_dump(include={"method", "rescore"}),
        "prompt_tokens": len(TokenizedText.of(tokenizer, render(*requests[0][:2], tokenizer).text).ids),
        "requests": args.n,
        "concurrency": args.concurrency,
        "direct": direct,
        "served": served,
        "served_equal_to_direct": f"{equal}/{len(pairs)}",
        "served_vs_direct_max_abs_diff_nats": max((max_difference(a, b) for a, b in pairs), default=None),
    }


def test_cases(path: Path) -> dict[str, Any] | None:
    """The outcomes of a pytest JUnit XML file (``-o junit_family=xunit1``), each case with
    the measurements its test recorded (``record_property``)."""
    if not path.is_file():
        return None
    try:
        root = ElementTree.parse(path).getroot()
    except ElementTree.ParseError as error:
        return {"error": f"{path.name} is not readable XML: {error}"}
    cases = []
    for case in root.iter("testcase"):
        outcome, message = "passed", None
        for kind in ("failure", "error", "skipped"):
            element = case.find(kind)
            if element is not None:
                outcome, message = (
                    {"failure": "failed", "error": "error", "skipped": "skipped"}[kind],
                    element.get("message"),
                )
                break
        cases.append(
            {
                "test": f"{case.get('classname')}::{case.get('name')}",
                "outcome": outcome,
                "seconds": float(case.get("time") or 0),
                "message": message,
                "properties": {p.get("name"): _number(p.get("value")) for p in case.iter("property")},
            }
        )
    counts = {
        outcome: sum(c["outcome"] == outcome for c in cases) for outcome in ("passed", "failed", "error", "skipped")
    }
    return {**counts, "cases": cases}


def _number(value: str | None) -> Any:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return value


def _json(path: Path) -> Any:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except ValueError as error:
        return {"error": f"{path.name} is not readable JSON: {error}"}


def summary(args: argparse.Namespace) -> dict[str, Any]:
    steps = []
    for line in args.steps.read_text().splitlines() if args.steps.is_file() else []:
        name, rc, seconds, limit = line.rsplit("\t", 3)
        steps.append(
            {
                "step": name,
                "rc": int(rc),
                "seconds": float(seconds),
                "limit_s": float(limit),
                "timed_out": int(rc) in (124, 137),
            }
        )
    expected = [s for s in STEPS if not (args.dry_run and s.startswith("install"))]
    return {
        "dry_run": args.dry_run,
        "device": args.device,
        "commit": args.commit,
        "complete": [s["step"] for s in steps] == expected and all(s["rc"] == 0 for s in steps),
        "seconds": round(sum(s["seconds"] for s in steps), 1),
        "steps": steps,
        "tests": test_cases(args.out / TESTS_XML),
        "benchmark": _json(args.out / BENCHMARK_JSON),
        "serve": _json(args.out / SERVE_JSON),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.gpu_check", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
    serving = commands.add_parser("serve", help="the serving path on the device")
    serving.add_argument("--device", default="cuda")
    serving.add_argument("--tiny", action="store_true", help="a tiny shape and workload (CPU dry run)")
    serving.add_argument("--n", type=int, default=16, help="requests (default 16)")
    serving.add_argument("--concurrency", type=int, default=16, help="client threads (default 16)")
    serving.add_argument("--max-seconds", type=float, default=60, help="stop sending after this long, per phase")
    serving.add_argument("--out", type=Path, required=True)
    summarizing = commands.add_parser("summary", help="gpu_check.json from the steps' results")
    summarizing.add_argument("--out", type=Path, required=True, help="the folder of the steps' results")
    summarizing.add_argument("--steps", type=Path, required=True, help="tab-separated: step, rc, seconds, limit")
    summarizing.add_argument("--device", required=True, help="the machine, in words")
    summarizing.add_argument("--commit")
    summarizing.add_argument("--dry-run", action="store_true")
    args = parser.parse_args(argv)
    if args.command == "serve":
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # a timeout still stops the server
        report = serve(args)
        path = args.out
    else:
        report = summary(args)
        path = args.out / "gpu_check.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"written to {path}", flush=True)


if __name__ == "__main__":
    main()
