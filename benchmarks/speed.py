"""Time naive, exact and hierarchical LOO side by side on HotpotQA (or SQuAD 2.0) questions.

    .venv/bin/python benchmarks/speed.py --n 3

Each question runs every method in turn (same model, same prompt). On a shared, noisy machine
wall time swings with the neighbours' load, so the process's CPU time is recorded too (with
one torch thread, OMP_NUM_THREADS=1, it is the work done); medians over questions are reported.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from attribot_rag import Attributor, Document

ROOT = Path(__file__).resolve().parent
DEFAULT_DATA = ROOT.parent.parent / "shared" / "data" / "hotpotqa_dev_sample.jsonl"
METHODS = ("naive", "exact", "hierarchical")


def load_questions(path: Path, n: int) -> list[dict]:
    with path.open(encoding="utf-8") as handle:
        return [json.loads(line) for _, line in zip(range(n), handle)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="HotpotQA or SQuAD 2.0 sample (JSON lines)")
    parser.add_argument("--n", type=int, default=3, help="questions")
    parser.add_argument("--model", default=None, help="default: the embedded SmolLM2-135M-Instruct")
    parser.add_argument("--device", default=None)
    parser.add_argument("--keep-documents", type=int, default=2)
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "speed.json")
    args = parser.parse_args()

    attributor = Attributor(args.model, device=args.device)
    rows = []
    for item in load_questions(args.data, args.n):
        documents = [Document(title=d["title"], id=d["title"], sentences=d["sentences"]) for d in item["documents"]]
        gold = item.get("answer") or next((a["text"] for a in item.get("answers", [])), "not in the documents")
        answer = f"The answer is {gold}."
        row = {"id": item["id"], "documents": len(documents)}
        for method in METHODS:
            wall, cpu = time.perf_counter(), time.process_time()
            result = attributor.attribute(item["question"], documents, answer, method=method, keep_documents=args.keep_documents)
            row[method] = time.perf_counter() - wall
            row[f"{method} cpu"] = time.process_time() - cpu
        row["sentences"] = len(result.sentences)
        row["prompt_tokens"] = len(attributor.tokenizer(result.prompt, add_special_tokens=False).input_ids)
        rows.append(row)
        print(json.dumps(row), flush=True)

    timings = [f"{m}{kind}" for kind in ("", " cpu") for m in METHODS]
    medians = {t: statistics.median(r[t] for r in rows) for t in timings}
    ratios = {
        f"{a}/{b}{kind}": statistics.median(r[a + kind] / r[b + kind] for r in rows)
        for kind in ("", " cpu")
        for a, b in (("naive", "exact"), ("exact", "hierarchical"), ("naive", "hierarchical"))
    }
    report = {
        "command": "benchmarks/speed.py " + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if v is not None),
        "machine": {"platform": platform.platform(), "threads": torch.get_num_threads(), "device": str(attributor.model.device)},
        "model": str(args.model or "SmolLM2-135M-Instruct (embedded)"),
        "questions": rows,
        "median_seconds": medians,
        "median_ratios": ratios,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print("median seconds: " + ", ".join(f"{m} {s:.2f}" for m, s in medians.items()))
    print("median ratios:  " + ", ".join(f"{k} {v:.2f}x" for k, v in ratios.items()))
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
