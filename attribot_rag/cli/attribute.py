"""``attribot-rag attribute``: attribute an answer given in a JSON file."""

from __future__ import annotations

import argparse
import json

from pydantic import ValidationError

from ..records import AttributionRequest
from ..results import AttributionResult
from .common import CliError, add_method_arguments, add_model_arguments, load_attributor, options_from


def table(result: AttributionResult, top: int) -> str:
    """The top sentences, one line each."""
    lines = [f"{'rank':>4}  {'score':>8}  {'document':<24}  sentence"]
    for rank, span in enumerate(result.top(top), start=1):
        lines.append(f"{rank:>4}  {span.score:>8.3f}  {span.doc_id[:24]:<24}  {span.text}")
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser)
    parser.add_argument(
        "--input",
        required=True,
        help='JSON file: {"question": ..., "documents": [str | {"text", "id", "title"}], "answer": ...}; without "answer", the model answers',
    )
    add_method_arguments(parser)
    parser.add_argument("--top", type=int, default=5, help="sentences in the table")
    parser.add_argument("--json", action="store_true", help="print the whole result as JSON")


def run(args: argparse.Namespace) -> int:
    with open(args.input, encoding="utf-8") as handle:
        data = json.load(handle)
    try:
        request = AttributionRequest.model_validate(data)
    except ValidationError as error:
        raise CliError(f"{args.input}: {error}") from None
    attributor = load_attributor(args, progress=True)
    result = request.attribute(attributor, options_from(args))
    if args.json:
        print(result.model_dump_json(indent=2))
    else:
        print(f"answer: {result.answer}\n\n{table(result, args.top)}\n\n{result.cited_answer()}")
        print("\ntimings: " + ", ".join(f"{k} {v:.2f} s" for k, v in result.timings.items()))
    return 0
