"""What citable titles change: HotpotQA, 2 gold + 2 distractor paragraphs, the gold answer scored.

    .venv/bin/python benchmarks/titles.py --n 30
    .venv/bin/python benchmarks/titles.py --n 20 --select title-answers

A document's title, rendered in its header, is a citable span since titles became spans.
Each span's LOO score depends only on the prompt and that span, so one run gives both
rankings: over every span (titles citable) and over the text sentences only (as before).
Per method: gold top-1 (the top span is a supporting sentence), the top span in a gold
paragraph, and, on the questions whose answer is the title of one of their paragraphs (4 of
exact's 7 top-1 misses in the issue's sample), how often the top span is that title, a
supporting sentence, or either. Results: ``benchmarks/results/titles.{json,md}``, rewritten
after every question.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import torch

from attribot_rag import Attributor

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))
import evaluation as ev  # noqa: E402
from faithfulness import documents_of, gold_answer, gold_sentences, load_questions, select_documents  # noqa: E402

DATA = ROOT / "data" / "hotpotqa_dev_sample.jsonl"


def _normal(text: str) -> str:
    return " ".join(text.lower().strip(" .").split())


def is_title_answer(item: dict) -> bool:
    """Whether the (gold4) question's answer is the title of one of its paragraphs."""
    answer = _normal(gold_answer(item) or "")
    return any(_normal(d["title"]) == answer for d in select_documents(item, "gold4")["documents"])


def question_row(attributor: Attributor, item: dict, methods: list[str]) -> dict[str, Any] | None:
    item = select_documents(item, "gold4")
    answer = gold_answer(item)
    if not answer:
        return None
    gold = set(gold_sentences(item))
    row: dict[str, Any] = {"id": item["id"], "answer": answer, "methods": {}}
    for method in methods:
        result = attributor.attribute(item["question"], documents_of(item), answer, method=method)
        spans = result.sentences
        gold_documents = {spans[g].doc_index for g in gold}
        answer_title = {i for i, s in enumerate(spans) if s.part == "title" and _normal(s.text) == _normal(answer)}
        scores = [s.score for s in spans]
        text_only = [s.score if s.part == "text" else None for s in spans]
        row["title_answer"] = bool(answer_title)
        row["methods"][method] = {
            ranking: {
                "gold_top1": float(top in gold),
                "top_in_gold_document": float(spans[top].doc_index in gold_documents),
                "top_is_answer_title": float(top in answer_title),
                "top_part": spans[top].part,
            }
            for ranking, values in (("titles", scores), ("text only", text_only))
            for top in [ev.ranking(values)[0]]
        }
    return row


def summary(rows: list[dict], methods: list[str]) -> list[str]:
    lines = [
        "| method | ranking | questions | gold top-1 | top in gold paragraph | title-answer questions | top = answer's title | top = gold sentence | either |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for method in methods:
        for ranking in ("text only", "titles"):
            runs = [row["methods"][method][ranking] for row in rows]
            titled = [row["methods"][method][ranking] for row in rows if row["title_answer"]]

            def mean(values: list[float]) -> str:
                stats = ev.summarize(values)
                interval = f" [{stats['ci'][0]:.2f}, {stats['ci'][1]:.2f}]" if stats["ci"] else ""
                return "–" if stats["mean"] is None else f"{stats['mean']:.2f}{interval}"

            lines.append(
                f"| `{method}` | {ranking} | {len(runs)} | {mean([r['gold_top1'] for r in runs])} | "
                f"{mean([r['top_in_gold_document'] for r in runs])} | {len(titled)} | "
                f"{mean([r['top_is_answer_title'] for r in titled])} | {mean([r['gold_top1'] for r in titled])} | "
                f"{mean([max(r['top_is_answer_title'], r['gold_top1']) for r in titled])} |"
            )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=30, help="questions")
    parser.add_argument(
        "--select",
        choices=["all", "title-answers"],
        default="all",
        help="the first n questions, or of those whose answer is a title",
    )
    parser.add_argument("--methods", nargs="+", default=["exact", "fast"])
    parser.add_argument("--out", type=Path, default=None, help="default: results/titles_<select>.json")
    args = parser.parse_args()
    args.out = args.out or ROOT / "results" / f"titles_{args.select}.json"
    torch.set_num_threads(1)
    attributor = Attributor()
    rows: list[dict] = []
    items = load_questions(DATA, 10**6)
    chosen = [item for item in items if is_title_answer(item)] if args.select == "title-answers" else items
    for item in chosen[: args.n]:
        row = question_row(attributor, item, args.methods)
        if row is None:
            continue
        rows.append(row)
        lines = summary(rows, args.methods)
        report = {"command": "benchmarks/titles.py " + " ".join(sys.argv[1:]), "rows": rows, "table": lines}
        args.out.write_text(json.dumps(report, indent=1))
        header = [
            "# Citable titles: HotpotQA, 2 gold + 2 distractor paragraphs, gold answer",
            "",
            f"Command: `{report['command']}`; {len(rows)} questions; means with 95% bootstrap intervals.",
            "",
        ]
        args.out.with_suffix(".md").write_text("\n".join(header + lines) + "\n")
        print(f"{row['id']}: title answer {row['title_answer']}, " + json.dumps(row["methods"]), flush=True)
    print("\n".join(summary(rows, args.methods)))


if __name__ == "__main__":
    main()
