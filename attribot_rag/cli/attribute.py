"""``attribot-rag attribute``: attribute an answer given in a JSON file."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from pydantic import ValidationError

from ..api.records import AttributionRequest, describe_errors, json_type
from ..api.results import AttributionResult
from ..core.methods import METHODS
from .common import CliError, add_model_arguments, add_option_arguments, load_attributor, options_from


def table(result: AttributionResult, top: int) -> str:
    """The top sentences, one line each."""
    lines = [f"{'rank':>4}  {'score':>8}  {'document':<24}  sentence"]
    for rank, span in enumerate(result.top(top), start=1):
        text = f"[title] {span.text}" if span.part == "title" else span.text
        lines.append(f"{rank:>4}  {span.score:>8.3f}  {span.doc_id[:24]:<24}  {text}")
    return "\n".join(lines)


def method_line(result: AttributionResult) -> str:
    """Which method ran, and for ``auto`` the budget that chose it and its options."""
    settings = result.settings
    options = ", ".join(f"{k}={v}" for k, v in settings.options.items())
    chosen = f", chosen by auto for budget {settings.budget}" if settings.budget else ""
    return f"method: {settings.method}{chosen}" + (f" ({options})" if options else "")


def read_request(path: str) -> AttributionRequest:
    """The request in the JSON file ``path`` (``-``: standard input), checked before any model
    loads; every problem is a one-line ``CliError`` that names the file."""
    name = "standard input" if path == "-" else path
    try:
        raw = sys.stdin.buffer.read() if path == "-" else Path(path).read_bytes()
        data = json.loads(raw.decode("utf-8"))
    except IsADirectoryError:
        raise CliError(f"--input {path}: is a directory, not a JSON file") from None
    except OSError as error:
        raise CliError(f"--input {path}: cannot read it ({error.strerror or error})") from None
    except UnicodeDecodeError as error:
        raise CliError(f"{name}: not UTF-8 text (byte {error.start})") from None
    except json.JSONDecodeError as error:
        raise CliError(f"{name}: invalid JSON at line {error.lineno}, column {error.colno}: {error.msg}") from None
    if not isinstance(data, dict):
        raise CliError(
            f'{name}: the top level must be a JSON object {{"question", "documents", "answer"}}, not {json_type(data)}'
        )
    try:
        return AttributionRequest.model_validate(data)
    except ValidationError as error:
        raise CliError(f"{name}: {describe_errors(error)}") from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser)
    parser.add_argument(
        "--input",
        required=True,
        help='JSON file (- for standard input): {"question": ..., "documents": [str | {"text", "id", "title"}], "answer": ...}; without "answer", the model answers',
    )
    add_option_arguments(parser)
    parser.add_argument("--top", type=int, default=5, help="sentences in the table")
    parser.add_argument("--json", action="store_true", help="print the whole result as JSON")
    parser.add_argument(
        "--html",
        metavar="FILE",
        help="also write the result as a self-contained HTML page (answer, citations, tinted documents)",
    )


def run(args: argparse.Namespace) -> int:
    request = read_request(args.input)
    defaults = options_from(args)
    options = request.options or defaults
    if METHODS[options.resolved().method].needs_target and not args.target:
        raise CliError(f"method {options.resolved().method} needs --target")
    attributor = load_attributor(args)
    result = request.attribute(attributor, options)
    if args.json:
        print(result.model_dump_json(indent=2))
    else:
        print(f"answer: {result.answer}\n{method_line(result)}\n\n{table(result, args.top)}\n\n{result.cited_answer()}")
        print(
            "\ntimings: "
            + ", ".join(f"{k} {v.wall_seconds:.2f} s ({v.cpu_seconds:.2f} s CPU)" for k, v in result.timings.items())
        )
    if args.html:
        from ..api.html import render_html

        with open(args.html, "w", encoding="utf-8") as handle:
            handle.write(render_html(result, [request.question]))
    return 0
