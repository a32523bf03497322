"""``python -m benchmarks.faithfulness``: see the package's docstring."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

import torch

from benchmarks.baselines import BASELINES
from benchmarks.data import load_questions, select_documents
from benchmarks.faithfulness.args import OUR_METHODS, metadata, parse_args, run_name, second_model_dir
from benchmarks.faithfulness.report import write
from benchmarks.faithfulness.resume import reevaluate, reevaluated, saved_rows
from benchmarks.faithfulness.rows import QuestionRow
from benchmarks.faithfulness.run import Config, Models, run_question, warm_up


def run(args: argparse.Namespace, models: Models, meta: dict[str, Any], saved: dict[str, QuestionRow]) -> str:
    """Every question not kept from an earlier run, the results rewritten after each; returns
    the results' name."""
    name = run_name(args)
    config = Config(
        setting=args.setting,
        answer=args.answer,
        max_new_tokens=args.max_new_tokens,
        methods=args.methods,
        our_methods=OUR_METHODS,
        baselines=BASELINES,
        contextcite_ablations=args.contextcite_ablations,
    )
    items = load_questions(args.data, args.n)
    # the earlier run's questions (their metrics recomputed by today's code) stay in the
    # results until measured again, so that stopping a resumed run never loses them
    rows: list[QuestionRow | None] = [
        reevaluated(saved[item["id"]], select_documents(item, args.setting)) if item["id"] in saved else None
        for item in items
    ]
    for i, item in enumerate(items):
        print(f"[{i + 1}/{len(items)}] {item['id']}: {item['question']}", flush=True)
        with_reference = args.reference_n is None or i < args.reference_n
        row = rows[i]
        if row is not None and (row.skipped is not None or row.reference or not with_reference):
            print("  kept from the earlier run", flush=True)
            continue
        with_second = args.second_n is None or i < args.second_n
        rows[i] = run_question(item, models, config, with_reference, i < args.contextcite_n, with_second)
        write([r for r in rows if r is not None], meta, args.out, name, final=False)
    write([r for r in rows if r is not None], meta, args.out, name, final=True)
    return name


def main() -> None:
    args = parse_args()
    if args.reevaluate:
        reevaluate(args.reevaluate)
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    start = time.perf_counter()
    second_dir = second_model_dir(args.second_model)
    models = Models.load(second_dir)
    meta = metadata(args, second_dir, start)
    try:
        saved, previous = (
            saved_rows(args.out / f"faithfulness_{run_name(args)}.json", meta) if args.resume else ({}, {})
        )
    except ValueError as error:
        sys.exit(str(error))
    if previous:
        meta["_start"] = start - previous["wall_seconds"]  # wall time of all parts, without the breaks
        meta["resumed"] = [*previous.get("resumed", []), meta["started"]]
        meta["started"] = previous["started"]
    warm_up(models, "contextcite" in args.methods and args.contextcite_n > 0)
    meta["load_and_warm_up_seconds"] = time.perf_counter() - start
    name = run(args, models, meta, saved)
    print((args.out / f"faithfulness_{name}.md").read_text())


if __name__ == "__main__":
    main()
