"""The ``attribot-rag`` command. One module per subcommand, each with ``add_arguments(parser)``
and ``run(args) -> int``; parsing imports none of torch or transformers (``--help`` is fast),
each subcommand imports what it needs when it runs."""

from __future__ import annotations

import argparse
import sys
from importlib import import_module

from .common import CliError

# name -> (module, help): the one list of subcommands.
COMMANDS: dict[str, tuple[str, str]] = {
    "attribute": ("attribute", "attribute an answer to its documents (a JSON file)"),
    "demo": ("demo", "answer and attribute three bundled HotpotQA questions"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="attribot-rag", description="Faithful, fast leave-one-out citations for RAG answers.")
    commands = parser.add_subparsers(dest="command", required=True)
    for name, (module, help_text) in COMMANDS.items():
        command = commands.add_parser(name, help=help_text, description=help_text)
        import_module(f".{module}", __name__).add_arguments(command)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Exit codes: 0 done, 1 a runtime failure, 2 a usage error (bad arguments or input)."""
    args = build_parser().parse_args(argv)
    try:
        return import_module(f".{COMMANDS[args.command][0]}", __name__).run(args)
    except CliError as error:
        print(f"attribot-rag {args.command}: error: {error}", file=sys.stderr)
        return error.exit_code
    except (ValueError, TypeError) as error:  # the core's refusal of bad input
        print(f"attribot-rag {args.command}: error: {error}", file=sys.stderr)
        return 2
    except OSError as error:
        print(f"attribot-rag {args.command}: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("attribot-rag: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
