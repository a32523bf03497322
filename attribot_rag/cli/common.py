"""What the subcommands share: the model and method arguments, and a user-facing error."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from ..methods import METHODS
from ..options import BUDGETS, AttributionOptions

if TYPE_CHECKING:
    from ..attributor import Attributor


class CliError(Exception):
    """An error shown as one line, without a traceback; exit code 2 for usage, 1 at run time."""

    def __init__(self, message: str, exit_code: int = 2):
        super().__init__(message)
        self.exit_code = exit_code


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", help="Hugging Face id, local path or .gguf file (default: the embedded SmolLM2-135M-Instruct)")
    parser.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: cuda if available)")
    parser.add_argument("--dtype", help="float32, bfloat16, float16 (default: bfloat16 on GPUs, float32 on CPU)")
    parser.add_argument("--target", help="a larger model that rescores the best sentences (method pruned)")


def add_method_arguments(parser: argparse.ArgumentParser) -> None:
    methods = ", ".join(f"{name}: {spec.summary}" for name, spec in METHODS.items())
    parser.add_argument("--method", default="auto", choices=[*METHODS, "auto"], help=f"default auto: what --budget maps to. {methods}")
    parser.add_argument("--budget", default="balanced", choices=list(BUDGETS), help="what --method auto runs (default balanced)")
    parser.add_argument("--keep-documents", type=int, default=2, help="hierarchical: documents kept for the sentence pass")
    parser.add_argument("--keep-sentences", type=int, default=5, help="pruned: sentences the target rescores")


def options_from(args: argparse.Namespace) -> AttributionOptions:
    return AttributionOptions(method=args.method, budget=args.budget, keep_documents=args.keep_documents, keep_sentences=args.keep_sentences)


def load_attributor(args: argparse.Namespace, progress: bool = False) -> Attributor:
    from ..attributor import Attributor

    return Attributor(args.model, device=args.device, dtype=args.dtype, target=args.target, progress=progress)
