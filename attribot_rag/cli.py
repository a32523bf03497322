"""The ``attribot-rag`` command: attribute an answer given in a JSON file, or run the demo."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from importlib.metadata import entry_points
from importlib.resources import files
from typing import get_args

from .attributor import BUDGETS, Attributor, Method
from .results import AttributionResult
from .spans import Document, split_sentences


def _table(result: AttributionResult, top: int) -> str:
    lines = [f"{'rank':>4}  {'score':>8}  {'document':<24}  sentence"]
    for rank, span in enumerate(result.top(top), start=1):
        lines.append(f"{rank:>4}  {span.score:>8.3f}  {span.doc_id[:24]:<24}  {span.text}")
    return "\n".join(lines)


def _complete_sentences(text: str) -> str:
    """A generated answer cut after its last complete sentence (a short answer stays whole)."""
    spans = split_sentences(text)
    complete = [end for _, end in spans if text[end - 1] in ".!?。"]
    return text[: complete[-1]] if complete else text


def _attributor(args: argparse.Namespace, progress: bool = True) -> Attributor:
    return Attributor(args.model, device=args.device, dtype=args.dtype, target=args.target, progress=progress)


def attribute_command(args: argparse.Namespace) -> int:
    with open(args.input, encoding="utf-8") as handle:
        data = json.load(handle)
    documents = [Document(text=d) if isinstance(d, str) else Document(**d) for d in data["documents"]]
    attributor = _attributor(args)
    answer = data.get("answer") or _complete_sentences(attributor.generate(data["question"], documents))
    result = attributor.attribute(
        data["question"], documents, answer, method=args.method, keep_documents=args.keep_documents, keep_sentences=args.keep_sentences, budget=args.budget
    )
    if args.json:
        print(result.model_dump_json(indent=2))
    else:
        print(f"answer: {answer}\n\n{_table(result, args.top)}\n\n{result.cited_answer()}")
        print("\ntimings: " + ", ".join(f"{k} {v:.2f} s" for k, v in result.timings.items()))
    return 0


def answer_and_attribute(attributor: Attributor, question: str, documents: list[Document]) -> AttributionResult:
    """The core's demo path: the model answers from the attribution prompt, then the answer is
    attributed hierarchically."""
    answer = _complete_sentences(attributor.generate(question, documents, max_new_tokens=40))
    return attributor.attribute(question, documents, answer, method="hierarchical", keep_documents=2)


def _demo_path(plain: bool) -> tuple[str, Callable[[Attributor, str, list[Document]], AttributionResult]]:
    """An installed integration's demo path (entry point group ``attribot_rag.demo``, e.g. the
    LangChain RAG chain of ``langchain-attribot``) unless ``plain``; else the core's."""
    found = [] if plain else sorted(entry_points(group="attribot_rag.demo"), key=lambda e: e.name)
    return (found[0].name, found[0].load()) if found else ("core", answer_and_attribute)


def demo_command(args: argparse.Namespace) -> int:
    demo = json.loads(files("attribot_rag").joinpath("data/demo.json").read_text(encoding="utf-8"))
    start = time.perf_counter()
    attributor = _attributor(args, progress=False)
    path, answer = _demo_path(args.plain)
    print(f"model: {args.model or 'embedded SmolLM2-135M-Instruct'} (loaded in {time.perf_counter() - start:.1f} s); path: {path}")
    print(f"data: {demo['source']}\n")
    for item in demo["questions"]:
        documents = [Document(**d) for d in item["documents"]]
        t0 = time.perf_counter()
        result = answer(attributor, item["question"], documents)
        elapsed = time.perf_counter() - t0
        print(f"Q: {item['question']}\n   (HotpotQA {item['hotpotqa_id']}; gold answer: {item['gold_answer']})")
        print(f"A: {result.answer}\n")
        print(_table(result, 3))
        print("\n" + result.cited_answer())
        print(f"\nanswer and attribution {elapsed:.1f} s, of which attribution {result.timings['score']:.1f} s ({result.method}, {len(documents)} documents)")
        print("-" * 80)
    print(f"total {time.perf_counter() - start:.1f} s")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="attribot-rag", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    for name, help_text in (("attribute", "attribute an answer to its documents"), ("demo", "run three bundled HotpotQA questions")):
        command = commands.add_parser(name, help=help_text)
        command.add_argument("--model", help="Hugging Face id or local path (default: the embedded SmolLM2-135M-Instruct)")
        command.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: cuda if available)")
        command.add_argument("--dtype", help="float32, bfloat16, float16 (default: bfloat16 on GPUs, float32 on CPU)")
        command.add_argument("--target", help="a larger model that rescores the best sentences (method pruned)")
    attribute = commands.choices["attribute"]
    commands.choices["demo"].add_argument("--plain", action="store_true", help="the core's own path, even where an integration provides one")
    attribute.add_argument("--input", required=True, help='JSON file: {"question": ..., "documents": [str | {"text", "id", "title"}], "answer": ...}; without "answer", the model answers')
    attribute.add_argument("--method", default="hierarchical", choices=get_args(Method))
    attribute.add_argument("--budget", default="balanced", choices=list(BUDGETS), help="what --method auto runs")
    attribute.add_argument("--keep-documents", type=int, default=2)
    attribute.add_argument("--keep-sentences", type=int, default=5)
    attribute.add_argument("--top", type=int, default=5, help="sentences in the table")
    attribute.add_argument("--json", action="store_true", help="print the whole result as JSON")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return attribute_command(args) if args.command == "attribute" else demo_command(args)
    except (ValueError, TypeError, FileNotFoundError, KeyError, json.JSONDecodeError) as error:
        print(f"attribot-rag: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
