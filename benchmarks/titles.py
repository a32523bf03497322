"""What citable titles change: HotpotQA, 2 gold + 2 distractor paragraphs, the gold answer scored.

    .venv/bin/python -m benchmarks.titles --n 30
    .venv/bin/python -m benchmarks.titles --n 20 --select title-answers

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
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import AutoTokenizer

from attribot_rag import Attributor
from attribot_rag.core.models import embedded_model_dir
from attribot_rag.core.prompt import render
from benchmarks import RESULTS
from benchmarks import evaluation as ev
from benchmarks.data import HOTPOTQA, Item, documents_of, gold_answer, gold_sentences, load_questions, select_documents
from benchmarks.reports import command_line, mean_ci


def _normal(text: str) -> str:
    return " ".join(text.lower().strip(" .").split())


def is_title_answer(item: Item) -> bool:
    """Whether the (gold4) question's answer is the title of one of its paragraphs."""
    answer = _normal(gold_answer(item) or "")
    return any(_normal(d["title"]) == answer for d in select_documents(item, "gold4")["documents"])


# Each span as (document index, part, text); each method's scores parallel to them.
Spans = list[tuple[int, str, str]]


@dataclass
class TopSpan:
    """What a ranking put first: a supporting sentence, in a gold paragraph, the answer's title."""

    gold_top1: float
    top_in_gold_document: float
    top_is_answer_title: float
    top_part: str


@dataclass
class TitlesRow:
    """One question: per method, the top span of each ranking (``titles``, ``text only``)."""

    id: str
    answer: str
    title_answer: bool
    methods: dict[str, dict[str, TopSpan]]


def question_row(item: Item, spans: Spans, scores: dict[str, list[float | None]]) -> TitlesRow:
    """Per method, both rankings' top span: gold or not, in a gold paragraph, the answer's title."""
    answer = gold_answer(item) or ""
    gold = set(gold_sentences(item))
    gold_documents = {spans[g][0] for g in gold}
    answer_title = {
        i for i, (_, part, text) in enumerate(spans) if part == "title" and _normal(text) == _normal(answer)
    }
    methods = {}
    for method, values in scores.items():
        text_only = [v if spans[i][1] == "text" else None for i, v in enumerate(values)]
        methods[method] = {
            ranking: TopSpan(
                gold_top1=float(top in gold),
                top_in_gold_document=float(spans[top][0] in gold_documents),
                top_is_answer_title=float(top in answer_title),
                top_part=spans[top][1],
            )
            for ranking, ranked in (("titles", values), ("text only", text_only))
            for top in [ev.ranking(ranked)[0]]
        }
    return TitlesRow(id=item["id"], answer=answer, title_answer=bool(answer_title), methods=methods)


def attributed(attributor: Attributor, item: Item, methods: list[str]) -> tuple[Spans, dict[str, list[float | None]]]:
    """Run each method on the question (gold answer) and return its spans and scores."""
    results = {
        method: attributor.attribute(item["question"], documents_of(item), gold_answer(item) or "", method=method)
        for method in methods
    }
    first = next(iter(results.values()))
    return [(s.doc_index, s.part, s.text) for s in first.sentences], {
        method: [s.score for s in result.sentences] for method, result in results.items()
    }


def from_speed_run(path: Path, tokenizer: Any, methods: list[str]) -> list[TitlesRow]:
    """The rows of a ``benchmarks.speed agreement --documents 4`` run (titles citable), spans re-rendered."""
    run = json.loads(path.read_text())
    items = {item["id"]: select_documents(item, "gold4") for item in load_questions(HOTPOTQA, 10**6)}
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


def summary(rows: list[TitlesRow], methods: list[str]) -> list[str]:
    lines = [
        "| method | ranking | questions | gold top-1 | top in gold paragraph | title-answer questions | top = answer's title | top = gold sentence | either |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for method in methods:
        for ranking in ("text only", "titles"):
            runs = [row.methods[method][ranking] for row in rows]
            titled = [row.methods[method][ranking] for row in rows if row.title_answer]

            def mean(values: list[float]) -> str:
                return mean_ci(ev.summarize(values))

            lines.append(
                f"| `{method}` | {ranking} | {len(runs)} | {mean([r.gold_top1 for r in runs])} | "
                f"{mean([r.top_in_gold_document for r in runs])} | {len(titled)} | "
                f"{mean([r.top_is_answer_title for r in titled])} | {mean([r.gold_top1 for r in titled])} | "
                f"{mean([max(r.top_is_answer_title, r.gold_top1) for r in titled])} |"
            )
    return lines


def write(rows: list[TitlesRow], methods: list[str], out: Path, command: str) -> None:
    lines = summary(rows, methods)
    out.write_text(json.dumps({"command": command, "rows": [asdict(row) for row in rows], "table": lines}, indent=1))
    header = [
        "# Citable titles: HotpotQA, 2 gold + 2 distractor paragraphs, gold answer",
        "",
        f"Command: `{command}`; {len(rows)} questions; means with 95% bootstrap intervals.",
        "",
    ]
    out.with_suffix(".md").write_text("\n".join(header + lines) + "\n")


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.titles", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
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
        help="analyse a benchmarks.speed agreement --documents 4 JSON instead of running (no model run)",
    )
    parser.add_argument("--out", type=Path, default=None, help="default: results/titles_<select>.json")
    return parser


def measure(args: argparse.Namespace) -> list[TitlesRow]:
    """Run the methods on the chosen questions, the results rewritten after each."""
    attributor = Attributor()
    items = load_questions(HOTPOTQA, 10**6)
    chosen = [item for item in items if is_title_answer(item)] if args.select == "title-answers" else items
    rows: list[TitlesRow] = []
    for item in chosen[: args.n]:
        item = select_documents(item, "gold4")
        if not gold_answer(item):
            continue
        rows.append(question_row(item, *attributed(attributor, item, args.methods)))
        write(rows, args.methods, args.out, command_line("titles"))
        methods = {method: {k: asdict(top) for k, top in tops.items()} for method, tops in rows[-1].methods.items()}
        print(f"{item['id']}: title answer {rows[-1].title_answer}, " + json.dumps(methods), flush=True)
    return rows


def main() -> None:
    args = parser().parse_args()
    args.out = args.out or RESULTS / f"titles_{'from_run' if args.from_run else args.select}.json"
    torch.set_num_threads(1)
    if args.from_run:  # the tokenizer alone: no model loads
        tokenizer = AutoTokenizer.from_pretrained(str(embedded_model_dir()))
        rows = from_speed_run(args.from_run, tokenizer, args.methods)
        write(rows, args.methods, args.out, command_line("titles"))
    else:
        rows = measure(args)
    print("\n".join(summary(rows, args.methods)))


if __name__ == "__main__":
    main()
