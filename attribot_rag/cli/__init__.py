"""The ``attribot-rag`` command. One module per subcommand, each with ``add_arguments(parser)``
and ``run(args) -> int``; parsing imports none of torch or transformers (``--help`` is fast),
each subcommand imports what it needs when it runs."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import import_module

from .common import CliError

# name -> (module, help): the one list of subcommands.
COMMANDS: dict[str, tuple[str, str]] = {
    "attribute": ("attribute", "attribute an answer to its documents (a JSON file)"),
    "demo": ("demo", "answer and attribute three bundled HotpotQA questions"),
    "batch": ("batch", "attribute every record of a JSONL file, resumably, locally or on Ray"),
    "serve": ("serve", "serve attribution over HTTP (POST /v1/attribute), or as Ray Serve replicas"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="attribot-rag", description="Faithful, fast leave-one-out citations for RAG answers."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    for name, (module, help_text) in COMMANDS.items():
        command = commands.add_parser(name, help=help_text, description=help_text)
        import_module(f".{module}", __name__).add_arguments(command)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Exit codes: 0 done, 1 a runtime failure, 2 a usage error (bad arguments or input).
    Every error is one line on standard error, never a traceback."""
    args = build_parser().parse_args(argv)
    name = f"attribot-rag {args.command}"
    with _library_log(name):
        try:
            code = import_module(f".{COMMANDS[args.command][0]}", __name__).run(args)
            sys.stdout.flush()  # a closed pipe fails here, not in the interpreter's shutdown
            return code
        except CliError as error:
            return _fail(name, error, error.exit_code)
        except BrokenPipeError:  # the reader went away (`| head`): nothing more to say to it
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 1
        except (ValueError, TypeError) as error:  # the core's refusal of bad input
            return _fail(name, error, 2)
        except ImportError as error:  # an option's extra not installed ("keep_similar needs bm25s: ...")
            return _fail(name, error, 1)
        except OSError as error:  # files, the model cache, a model that cannot be found
            return _fail(name, error, 1)
        except RuntimeError as error:
            from ..core.scorer import AttributionOutOfMemory, NonFiniteLogprobs

            if not isinstance(error, (AttributionOutOfMemory, NonFiniteLogprobs)):
                raise
            return _fail(name, error, 1)
        except KeyboardInterrupt:
            print("attribot-rag: interrupted", file=sys.stderr)
            return 130


def _fail(name: str, error: BaseException, code: int) -> int:
    message = " ".join(str(error).split()) or type(error).__name__  # one line, however the library wrapped it
    print(f"{name}: error: {message}", file=sys.stderr)
    return code


@contextmanager
def _library_log(name: str) -> Iterator[None]:
    """Show the library's warnings (a read-only model cache, say) as one line each; on a
    terminal its notes too (the planned forward passes, a first conversion)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(f"{name}: %(message)s"))
    handler.setLevel(logging.INFO if sys.stderr.isatty() else logging.WARNING)
    logger = logging.getLogger("attribot_rag")
    level = logger.level
    logger.setLevel(handler.level)
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


if __name__ == "__main__":
    sys.exit(main())
