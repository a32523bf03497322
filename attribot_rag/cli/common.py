"""What the subcommands share: the model and method arguments, and a user-facing error."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Literal, get_args, get_origin

from pydantic import ValidationError

from ..api.options import AttributionOptions
from ..api.records import describe_errors

if TYPE_CHECKING:
    from ..api.attributor import Attributor


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
    parser.add_argument(
        "--threads",
        type=int,
        metavar="N",
        help="torch CPU threads (default: one per core); on a shared or busy machine 1 or 2 cost far less CPU",
    )


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def add_option_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per field of ``AttributionOptions``, its choices, type and help taken from
    the field; an absent flag keeps the field's default."""
    for name, field in AttributionOptions.model_fields.items():
        kind = field.annotation
        choices = get_args(kind) if get_origin(kind) is Literal else None
        default = "" if field.default is None else f" (default: {field.default})"
        help_text = f"{field.description}{default}"
        if kind is bool:
            parser.add_argument(_flag(name), action=argparse.BooleanOptionalAction, default=None, help=help_text)
        elif choices:
            parser.add_argument(_flag(name), choices=choices, help=help_text)
        else:
            number = float if float in (kind, *get_args(kind)) else int  # int | None, float | None
            parser.add_argument(_flag(name), type=number, metavar="N", help=help_text)


def options_from(args: argparse.Namespace) -> AttributionOptions:
    """The options the flags of ``add_option_arguments`` give; ``--budget`` with another
    method than auto is refused (it would be ignored)."""
    if getattr(args, "budget", None) and getattr(args, "method", None) not in (None, "auto"):
        raise CliError(f"--budget chooses what --method auto runs; it does not apply to --method {args.method}")
    fields = AttributionOptions.model_fields
    given = {name: getattr(args, name) for name in fields if getattr(args, name, None) is not None}
    try:
        return AttributionOptions(**given)
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
    if args.threads is not None and args.threads < 1:
        raise CliError(f"--threads must be at least 1, not {args.threads}")
    from transformers.utils import logging as transformers_logging

    from ..api.attributor import Attributor

    progress = sys.stderr.isatty() if progress is None else progress
    if not progress:  # transformers' loading bars: a process-wide switch, which the command owns
        transformers_logging.disable_progress_bar()
    try:
        return Attributor(
            args.model,
            device=args.device,
            dtype=args.dtype,
            target=args.target,
            progress=progress,
            threads=args.threads,
        )
    except OSError as error:  # not found, offline, unreadable: say which model
        models = (args.model or "the embedded model") + (f" or --target {args.target}" if args.target else "")
        raise CliError(f"cannot load {models}: {error}", exit_code=1) from None
