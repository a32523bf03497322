"""The faithfulness benchmark's command line, the settings it can run, and the metadata that
heads its results."""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import torch

import benchmarks.faithfulness
from attribot_rag import BUDGETS, METHODS
from benchmarks import RESULTS, ROOT
from benchmarks.baselines import BASELINES
from benchmarks.data import DATA_DIR, FILES

DEFAULT_N = {"squad2": 20, "hotpotqa": 10}
# setting name -> attribute() keyword arguments: every registered method that needs no target
# (naive has exact's scores), variants of hierarchical, and what each budget maps to.
OUR_METHODS: dict[str, dict[str, Any]] = {
    **{
        name: dict(method=name)
        for name, spec in METHODS.items()
        if not spec.needs_target and name not in ("naive", "exact", "hierarchical")
    },
    **{f"hierarchical-k{k}": dict(method="hierarchical", keep_documents=k) for k in (1, 2, 3)},
    "hierarchical-k2-fastdoc": dict(method="hierarchical", keep_documents=2, doc_method="fast"),
    # LOO or similarity: BM25's top documents are kept too (scores stay LOO)
    "hierarchical-k2-fastdoc-similar2": dict(
        method="hierarchical", keep_documents=2, doc_method="fast", keep_similar=2
    ),
    "hierarchical-k1-fastdoc-similar2": dict(
        method="hierarchical", keep_documents=1, doc_method="fast", keep_similar=2
    ),
    "fast-rescore3": dict(method="fast", rescore=3),
    **{f"budget-{budget}": dict(method="auto", budget=budget) for budget in BUDGETS if budget != "faithful"},
}
ALL_METHODS = [*OUR_METHODS, *BASELINES, "contextcite", "pruned", "pruned-reverse"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line, checked; ``--n`` filled in with the dataset's default."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.faithfulness",
        description=benchmarks.faithfulness.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--dataset", choices=sorted(FILES), default="squad2")
    parser.add_argument("--data", type=Path, default=None, help=f"JSONL file (default: {DATA_DIR}/<dataset file>)")
    parser.add_argument("--n", type=int, default=None, help="questions (default: 20 for squad2, 10 for hotpotqa)")
    parser.add_argument(
        "--methods", nargs="+", choices=ALL_METHODS, default=ALL_METHODS, help="besides exact, which always runs"
    )
    parser.add_argument(
        "--reference-n",
        type=int,
        default=None,
        help="questions (the first ones) with exact LOO as reference (default: all); the rest get gold metrics only",
    )
    parser.add_argument("--contextcite-ablations", type=int, nargs="+", default=[32, 64])
    parser.add_argument("--contextcite-n", type=int, default=10, help="questions (the first ones) for ContextCite")
    parser.add_argument(
        "--second-model",
        default="auto",
        help="directory of a second model family for the cross-family block; 'auto': Gemma 3 270M if installed (see benchmarks/second_model.py); 'none': skip",
    )
    parser.add_argument(
        "--second-n",
        type=int,
        default=None,
        help="questions (the first ones) for the cross-family block (default: all)",
    )
    parser.add_argument(
        "--setting",
        choices=["full", "gold4"],
        default="full",
        help="HotpotQA: all 10 paragraphs, or the 2 gold + 2 distractors",
    )
    parser.add_argument(
        "--answer",
        choices=["model", "gold"],
        default="model",
        help="the proxy's own greedy answer, or the dataset's (a bigger LLM that answered right)",
    )
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (default 1: on a shared 2-core machine two threads made a forward 5x slower, 10.9 s vs 2.1 s, from OpenMP waits)",
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument(
        "--reevaluate", type=Path, metavar="JSON", help="recompute the metrics and reports of a saved run, and stop"
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="keep the questions an earlier run with the same settings wrote to --out, and run the rest",
    )
    args = parser.parse_args(argv)
    args.n = args.n or DEFAULT_N[args.dataset]
    if args.reference_n is not None and args.reference_n < args.n and not set(args.methods) & set(OUR_METHODS):
        # the sentences, prompt and context gain of a question come from an attribution
        parser.error("questions without exact LOO (--reference-n < --n) need one of our methods in --methods")
    args.data = args.data or DATA_DIR / FILES[args.dataset]
    return args


def second_model_dir(option: str) -> str | None:
    """The second model's directory: ``option``, Gemma 3 270M for ``auto`` (if installed), or
    none."""
    if option == "none":
        return None
    if option != "auto":
        return option
    try:
        from benchmarks.second_model import gemma_dir

        return str(gemma_dir())
    except (FileNotFoundError, ImportError) as error:
        print(f"no second model: {error}", flush=True)
        return None


def run_name(args: argparse.Namespace) -> str:
    """The results' name: faithfulness_<name>.{json,md,png}."""
    return "_".join([args.dataset, *([args.setting] if args.setting != "full" else []), f"{args.answer}-answer"])


def metadata(args: argparse.Namespace, second_dir: str | None, start: float) -> dict[str, Any]:
    """What heads the results: how to rerun the run, its settings and the machine."""
    path: Path = args.data
    return {
        "_start": start,
        # a resumed run's results are those of the same command run without a break
        "command": " ".join(
            [".venv/bin/python", "-m", "benchmarks.faithfulness", *(a for a in sys.argv[1:] if a != "--resume")]
        ),
        "dataset": args.dataset,
        "setting": args.setting,
        "answer": args.answer,
        "data": str(path.relative_to(ROOT.parent) if path.is_relative_to(ROOT.parent) else path),
        "n": args.n,
        "methods": ["exact", *args.methods],
        "reference_n": args.reference_n,
        "contextcite_ablations": args.contextcite_ablations,
        "contextcite_n": args.contextcite_n,
        "second_model": second_dir,
        "second_n": args.second_n,
        "max_new_tokens": args.max_new_tokens,
        "model": "SmolLM2-135M-Instruct (embedded, float32)",
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores (shared with other jobs), torch {torch.__version__}, {torch.get_num_threads()} threads",
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
