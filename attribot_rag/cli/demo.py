"""``attribot-rag demo``: answer and attribute three bundled HotpotQA questions."""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from importlib.metadata import entry_points
from importlib.resources import files
from typing import TYPE_CHECKING

from .attribute import method_line, table
from .common import CliError, add_model_arguments, load_attributor

if TYPE_CHECKING:
    from ..api.attributor import Attributor
    from ..api.results import AttributionResult
    from ..core.spans import Document


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser)
    parser.add_argument(
        "--plain", action="store_true", help="the core's own path, even where an integration provides one"
    )
    parser.add_argument(
        "--html", metavar="FILE", help="also write one self-contained HTML page with every question's citations"
    )
    parser.add_argument(
        "--questions",
        type=int,
        choices=range(1, 4),
        default=3,
        metavar="N",
        help="answer the first N of the three questions (default 3)",
    )


def answer_and_attribute(attributor: Attributor, question: str, documents: list[Document]) -> AttributionResult:
    """The core's demo path: the model answers from the attribution prompt, then the answer is
    attributed with the default settings."""
    return attributor.attribute(question, documents, attributor.generate_answer(question, documents, max_new_tokens=40))


def demo_path(plain: bool) -> tuple[str, Callable[[Attributor, str, list[Document]], AttributionResult]]:
    """An installed integration's demo path (entry point group ``attribot_rag.demo``, e.g. the
    LangChain RAG chain of ``langchain-attribot``) unless ``plain``; else the core's."""
    found = [] if plain else sorted(entry_points(group="attribot_rag.demo"), key=lambda e: e.name)
    if not found:
        return "core", answer_and_attribute
    try:
        return found[0].name, found[0].load()
    except ImportError as error:  # an integration installed without its dependencies
        raise CliError(
            f"the {found[0].name} demo path cannot be imported ({error}); `attribot-rag demo --plain` runs the core's",
            exit_code=1,
        ) from None


def run(args: argparse.Namespace) -> int:
    from ..core.spans import Document

    demo = json.loads(files("attribot_rag").joinpath("data/demo.json").read_text(encoding="utf-8"))
    path, answer = demo_path(args.plain)
    start = time.perf_counter()
    attributor = load_attributor(args)
    print(
        f"model: {args.model or 'embedded SmolLM2-135M-Instruct'} (loaded in {time.perf_counter() - start:.1f} s); path: {path}"
    )
    print(f"data: {demo['source']}\n")
    pages: list[tuple[AttributionResult, str]] = []
    for item in demo["questions"][: args.questions]:
        documents = [Document(**d) for d in item["documents"]]
        t0 = time.perf_counter()
        result = answer(attributor, item["question"], documents)
        elapsed = time.perf_counter() - t0
        print(f"Q: {item['question']}\n   (HotpotQA {item['hotpotqa_id']}; gold answer: {item['gold_answer']})")
        print(f"A: {result.answer}\n{method_line(result)}\n")
        print(table(result, 3))
        print("\n" + result.cited_answer())
        print(
            f"\nanswer and attribution {elapsed:.1f} s, of which attribution {result.timings['score'].wall_seconds:.1f} s ({result.method}, {len(documents)} documents)"
        )
        print("-" * 80)
        pages.append(
            (result, f"{item['question']} (HotpotQA {item['hotpotqa_id']}; gold answer: {item['gold_answer']})")
        )
    print(f"total {time.perf_counter() - start:.1f} s")
    if args.html:
        from ..api.html import render_html

        with open(args.html, "w", encoding="utf-8") as handle:
            handle.write(
                render_html([r for r, _ in pages], [h for _, h in pages], title="attribot-rag demo: HotpotQA questions")
            )
    return 0
