"""``attribot-rag batch``: attribute every record of a JSONL file, locally or on Ray."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

from ..core.methods import METHODS
from .common import CliError, add_model_arguments, add_option_arguments, load_attributor, options_from

if TYPE_CHECKING:
    from ..serving.batch import BatchResult, Record


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser)
    parser.add_argument(
        "--input",
        required=True,
        help='JSONL file, one record a line: the JSON of `attribot-rag attribute` plus an optional "id" (default: the line number)',
    )
    parser.add_argument(
        "--output",
        required=True,
        help='JSONL file (not the input), one line per record as it finishes: {"id", "result", "error"}',
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="skip the records whose line --output holds and append the rest (every line must be one of ours)",
    )
    add_option_arguments(parser)
    ray = parser.add_argument_group("engine")
    ray.add_argument(
        "--engine",
        choices=["local", "ray"],
        default="local",
        help="local: this process (default); ray: Ray Data actors",
    )
    ray.add_argument(
        "--address",
        help="ray: the cluster to join, e.g. ray://head:10001 or auto (default: start a local Ray and stop it after)",
    )
    ray.add_argument(
        "--actors",
        type=int,
        help="ray: actors, one model each (default: the cluster's GPUs / --gpus-per-actor, else 1)",
    )
    ray.add_argument(
        "--gpus-per-actor", type=float, help="ray: GPUs per actor (default: 1 if the cluster has GPUs, else 0)"
    )
    ray.add_argument(
        "--cpus-per-actor", type=float, default=1, help="ray: CPUs per actor, and its torch threads (default 1)"
    )


def _check(args: argparse.Namespace) -> None:
    """Refuse what would fail on every record, before any model loads."""
    if METHODS[options_from(args).resolved().method].needs_target and not args.target:
        raise CliError(f"--method {args.method} needs --target")
    for name in ("actors", "gpus_per_actor", "cpus_per_actor"):
        value = getattr(args, name)
        if value is not None and (value < 0 or (name == "actors" and value < 1)):
            raise CliError(f"--{name.replace('_', '-')} must be {'at least 1' if name == 'actors' else 'non-negative'}")
    if args.engine == "local" and any(getattr(args, n) is not None for n in ("address", "actors", "gpus_per_actor")):
        raise CliError("--address, --actors and --gpus-per-actor need --engine ray")
    if args.engine == "ray" and args.threads is not None:
        raise CliError("--threads is for --engine local; a Ray actor runs one torch thread per CPU (--cpus-per-actor)")


def run(args: argparse.Namespace) -> int:
    from ..serving.batch import attribute_file, attribute_records

    _check(args)
    options = options_from(args)
    job_failures: tuple[type[Exception], ...] = ()
    if args.engine == "ray":
        try:
            from ..serving import ray as ray_engine
        except ImportError as error:
            raise CliError(str(error)) from None
        job_failures = (ray_engine.RayEngineError,)

        def engine(records: Iterable[Record]) -> Iterator[BatchResult]:
            return ray_engine.attribute_records(
                records,
                options,
                model=args.model,
                device=args.device,
                dtype=args.dtype,
                target=args.target,
                address=args.address,
                actors=args.actors,
                gpus_per_actor=args.gpus_per_actor,
                cpus_per_actor=args.cpus_per_actor,
            )

    else:

        def engine(records: Iterable[Record]) -> Iterator[BatchResult]:
            return attribute_records(records, load_attributor(args), options)

    try:
        summary = attribute_file(args.input, args.output, engine, resume=args.resume)
    except FileExistsError as error:
        raise CliError(str(error)) from None
    except job_failures as error:  # the job, not a record, failed (Ray: the actors could not start)
        raise CliError(str(error), exit_code=1) from None
    print(
        f"attribot-rag batch: {summary.results} results, {summary.errors} errors, {summary.skipped} already in {args.output}; {summary.seconds:.1f} s",
        file=sys.stderr,
    )
    return 0
