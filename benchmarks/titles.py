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
from transformers import AutoTokenizer

from attribot_rag import Attributor
from attribot_rag.models import embedded_model_dir
from attribot_rag.prompt import render

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


# Each span as (document index, part, text); each method's scores parallel to them.
Spans = list[tuple[int, str, str]]


def question_row(item: dict, spans: Spans, scores: dict[str, list[float | None]]) -> dict[str, Any]:
    """Per method, both rankings' top span: gold or not, in a gold paragraph, the answer's title."""
    answer = gold_answer(item) or ""
    gold = set(gold_sentences(item))
    gold_documents = {spans[g][0] for g in gold}
    answer_title = {
        i for i, (_, part, text) in enumerate(spans) if part == "title" and _normal(text) == _normal(answer)
    }
    row: dict[str, Any] = {"id": item["id"], "answer": answer, "title_answer": bool(answer_title), "methods": {}}
    for method, values in scores.items():
        text_only = [v if spans[i][1] == "text" else None for i, v in enumerate(values)]
        row["methods"][method] = {
            ranking: {
                "gold_top1": float(top in gold),
                "top_in_gold_document": float(spans[top][0] in gold_documents),
                "top_is_answer_title": float(top in answer_title),
                "top_part": spans[top][1],
            }
            for ranking, ranked in (("titles", values), ("text only", text_only))
            for top in [ev.ranking(ranked)[0]]
        }
    return row


def attributed(attributor: Attributor, item: dict, methods: list[str]) -> tuple[Spans, dict[str, list[float | None]]]:
    """Run each method on the question (gold answer) and return its spans and scores."""
    results = {
        method: attributor.attribute(item["question"], documents_of(item), gold_answer(item) or "", method=method)
        for method in methods
    }
    first = next(iter(results.values()))
    return [(s.doc_index, s.part, s.text) for s in first.sentences], {
        method: [s.score for s in result.sentences] for method, result in results.items()
    }


def from_speed_run(path: Path, tokenizer: Any, methods: list[str]) -> list[dict]:
    """The rows of a ``speed.py agreement --documents 4`` run (titles citable), spans re-rendered."""
    run = json.loads(path.read_text())
    items = {item["id"]: select_documents(item, "gold4") for item in load_questions(DATA, 10**6)}
    rows = []
    for stored in run["rows"]:
        item = items[stored["id"]]
        documents = documents_of(item)
        rendered = render(item["question"], documents, tokenizer)
        spans = [
            (
                s.doc_index,
                s.part,
                (documents[s.doc_index].title or "" if s.part == "title" else documents[s.doc_index].text)[
                    s.start : s.end
                ],
            )
            for s in rendered.sentences
        ]
        scores = {m: stored["settings"][m]["sentences"] for m in methods if m in stored["settings"]}
        if len(spans) != len(next(iter(scores.values()))):
            raise ValueError(f"{path} was run before titles became spans")
        rows.append(question_row(item, spans, scores))
    return rows


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


def write(rows: list[dict], methods: list[str], out: Path, command: str) -> None:
    lines = summary(rows, methods)
    out.write_text(json.dumps({"command": command, "rows": rows, "table": lines}, indent=1))
    header = [
        "# Citable titles: HotpotQA, 2 gold + 2 distractor paragraphs, gold answer",
        "",
        f"Command: `{command}`; {len(rows)} questions; means with 95% bootstrap intervals.",
        "",
    ]
    out.with_suffix(".md").write_text("\n".join(header + lines) + "\n")


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
    parser.add_argument(
        "--from-run",
        type=Path,
        help="analyse a speed.py agreement --documents 4 JSON instead of running (no model run)",
    )
    parser.add_argument("--out", type=Path, default=None, help="default: results/titles_<select>.json")
    args = parser.parse_args()
    args.out = args.out or ROOT / "results" / f"titles_{'from_run' if args.from_run else args.select}.json"
    torch.set_num_threads(1)
    if args.from_run:  # the tokenizer alone: no model loads
        tokenizer = AutoTokenizer.from_pretrained(str(embedded_model_dir()))
        rows = from_speed_run(args.from_run, tokenizer, args.methods)
        write(rows, args.methods, args.out, f"benchmarks/titles.py {' '.join(sys.argv[1:])}")
    else:
        attributor = Attributor()
        items = load_questions(DATA, 10**6)
        chosen = [item for item in items if is_title_answer(item)] if args.select == "title-answers" else items
        rows = []
        for item in chosen[: args.n]:
            item = select_documents(item, "gold4")
            if not gold_answer(item):
                continue
            rows.append(question_row(item, *attributed(attributor, item, args.methods)))
            write(rows, args.methods, args.out, f"benchmarks/titles.py {' '.join(sys.argv[1:])}")
            print(
                f"{item['id']}: title answer {rows[-1]['title_answer']}, " + json.dumps(rows[-1]["methods"]), flush=True
            )
    print("\n".join(summary(rows, args.methods)))


if __name__ == "__main__":
    main()
