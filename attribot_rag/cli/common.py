"""What the subcommands share: the model and method arguments, and a user-facing error."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import ValidationError

from ..methods import METHODS
from ..options import BUDGETS, AttributionOptions
from ..records import describe_errors

if TYPE_CHECKING:
    from ..attributor import Attributor


class CliError(Exception):
    """An error shown as one line, without a traceback; exit code 2 for usage, 1 at run time."""

    def __init__(self, message: str, exit_code: int = 2):
        super().__init__(message)
        self.exit_code = exit_code


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model", help="Hugging Face id, local path or .gguf file (default: the embedded SmolLM2-135M-Instruct)"
    )
    parser.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: cuda if available)")
    parser.add_argument("--dtype", help="float32, bfloat16, float16 (default: bfloat16 on GPUs, float32 on CPU)")
    parser.add_argument("--target", help="a larger model that rescores the best sentences (method pruned)")


def add_method_arguments(parser: argparse.ArgumentParser) -> None:
    methods = ", ".join(f"{name}: {spec.summary}" for name, spec in METHODS.items())
    parser.add_argument("--method", choices=[*METHODS, "auto"], help=f"default auto: what --budget maps to. {methods}")
    parser.add_argument(
        "--budget", choices=list(BUDGETS), help="what --method auto runs (default balanced); implies --method auto"
    )
    parser.add_argument(
        "--keep-documents", type=int, default=2, help="hierarchical: documents kept for the sentence pass"
    )
    parser.add_argument(
        "--doc-method", choices=["exact", "fast"], default="exact", help="hierarchical: the document pass"
    )
    parser.add_argument(
        "--keep-similar",
        type=int,
        default=0,
        metavar="N",
        help="hierarchical: also keep the N documents BM25 ranks highest (needs the similarity extra)",
    )
    parser.add_argument("--keep-sentences", type=int, default=5, help="pruned: sentences the target rescores")
    parser.add_argument(
        "--rescore", type=int, default=0, metavar="N", help="fast: its top N sentences get their exact LOO"
    )
    parser.add_argument(
        "--max-forwards", type=int, metavar="N", help="refuse an attribution that plans more than N forward passes"
    )


def options_from(args: argparse.Namespace) -> AttributionOptions:
    """The options of the method arguments; ``--budget`` with another method than auto is
    refused (it would be ignored)."""
    if args.budget and args.method not in (None, "auto"):
        raise CliError(f"--budget chooses what --method auto runs; it does not apply to --method {args.method}")
    try:
        return AttributionOptions(
            method=args.method or "auto",
            budget=args.budget or "balanced",
            keep_documents=args.keep_documents,
            doc_method=args.doc_method,
            keep_similar=args.keep_similar,
            keep_sentences=args.keep_sentences,
            rescore=args.rescore,
            max_forwards=args.max_forwards,
        )
    except ValidationError as error:
        raise CliError(describe_errors(error)) from None


def _check_model_argument(flag: str, value: str | None) -> None:
    """A ``--model`` that is clearly a path (absolute, relative, ``~``, ``.gguf``) must exist,
    and a directory must hold a model; anything else is a Hugging Face id."""
    if value is None:
        return
    path = Path(value).expanduser()
    if path.is_dir() and not (path / "config.json").is_file():
        raise CliError(f"{flag} {value}: not a model directory (no config.json)")
    if not path.exists() and (value.startswith(("/", "./", "../", "~")) or value.endswith(".gguf")):
        raise CliError(f"{flag} {value}: no such file or directory")


def _check_device(device: str | None) -> None:
    """Refuse a device this torch cannot use (``cuda`` on a CPU-only build, a GPU index that
    does not exist) before any model loads."""
    if device is None:
        return
    import torch

    try:
        torch.empty(0, device=device)
    except (RuntimeError, AssertionError, ValueError) as error:
        raise CliError(f"--device {device}: not usable here ({' '.join(str(error).split())})") from None


def load_attributor(args: argparse.Namespace, progress: bool | None = None) -> Attributor:
    """The Attributor of the model arguments, after checking them; progress bars (loading,
    ablations) by default only on a terminal."""
    _check_model_argument("--model", args.model)
    _check_model_argument("--target", args.target)
    _check_device(args.device)
    from ..attributor import Attributor

    progress = sys.stderr.isatty() if progress is None else progress
    try:
        return Attributor(args.model, device=args.device, dtype=args.dtype, target=args.target, progress=progress)
    except OSError as error:  # not found, offline, unreadable: say which model
        models = (args.model or "the embedded model") + (f" or --target {args.target}" if args.target else "")
        raise CliError(f"cannot load {models}: {error}", exit_code=1) from None
