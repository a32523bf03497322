"""``attribot-rag serve``: the citation service (``attribot_rag.service``) under uvicorn, or
as Ray Serve replicas with ``--ray``. Checks its settings (API key off loopback) before
loading anything."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import time
from typing import TYPE_CHECKING

from pydantic import ValidationError

from .common import CliError, add_method_arguments, add_model_arguments, load_attributor, options_from

if TYPE_CHECKING:
    from ..service import ServiceSettings

MIN_KEY_LENGTH = 16


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser)
    add_method_arguments(parser)
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to bind (default 127.0.0.1: this machine only; any other needs --api-key-env)",
    )
    parser.add_argument("--port", type=int, default=8000, help="default 8000")
    parser.add_argument(
        "--api-key-env",
        metavar="NAME",
        help="environment variable holding the API key that clients send as 'Authorization: Bearer KEY'",
    )
    parser.add_argument(
        "--max-queue",
        type=int,
        default=16,
        help="requests that may wait for the model; past it 503 with Retry-After (default 16)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=300.0,
        help="seconds to answer a request, queue included; past it 504 (default 300)",
    )
    parser.add_argument(
        "--max-documents", type=int, default=100, help="documents per request; past it 422 (default 100)"
    )
    parser.add_argument(
        "--max-body", type=int, default=1_000_000, help="request body bytes; past it 413 (default 1000000)"
    )
    ray = parser.add_argument_group("Ray Serve (the ray extra)")
    ray.add_argument(
        "--ray", action="store_true", help="serve with Ray Serve: on the cluster of RAY_ADDRESS, else a local Ray"
    )
    ray.add_argument("--replicas", type=int, default=1, help="replicas, each with its own model (default 1)")
    ray.add_argument(
        "--gpus-per-replica",
        type=float,
        default=0,
        help="GPUs each replica reserves; fractions share a GPU (default 0)",
    )
    ray.add_argument("--cpus-per-replica", type=float, default=1, help="CPUs each replica reserves (default 1)")


def settings_from(args: argparse.Namespace) -> ServiceSettings:
    """The service's settings, refused (exit 2) before any model loads: no key off loopback."""
    try:
        from ..service import ServiceSettings, check_binding
    except ImportError as error:
        raise CliError(
            f"needs the serve extra ({error.name} is missing): pip install 'attribot-rag[serve]'", exit_code=1
        ) from None
    key = None
    if args.api_key_env:
        key = os.environ.get(args.api_key_env, "").strip()
        if len(key) < MIN_KEY_LENGTH:
            raise CliError(
                f"--api-key-env {args.api_key_env}: the variable must hold a key of at least {MIN_KEY_LENGTH} characters"
            )
    try:
        settings = ServiceSettings(
            options=options_from(args),
            api_key=key,
            max_queue=args.max_queue,
            timeout=args.timeout,
            max_documents=args.max_documents,
            max_body=args.max_body,
        )
        check_binding(args.host, settings)
    except ValidationError as error:
        raise CliError(
            "; ".join(f"--{'-'.join(map(str, e['loc'])).replace('_', '-')}: {e['msg']}" for e in error.errors())
        ) from None
    except ValueError as error:
        raise CliError(str(error)) from None
    if args.replicas < 1:
        raise CliError("--replicas must be at least 1")
    return settings


def run(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    if args.ray:
        return _run_ray(args, settings)
    import uvicorn

    from ..service import create_app

    app = create_app(load_attributor(args, progress=False), settings)
    uvicorn.run(app, host=args.host, port=args.port, log_level="info")
    return 0


def _run_ray(args: argparse.Namespace, settings: ServiceSettings) -> int:
    if not os.environ.get("RAY_ADDRESS"):
        # A Ray started here serves this machine alone: Ray keeps its own ports (GCS, raylet,
        # workers) on loopback when it is not to form a cluster, which this variable says.
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    try:
        import ray
        from ray import serve
    except ImportError:
        raise CliError("--ray needs the ray extra: pip install 'attribot-rag[serve,ray]'", exit_code=1) from None
    from ..service import ray_application

    model = {"model": args.model, "device": args.device, "dtype": args.dtype, "target": args.target}
    ray.init(include_dashboard=False, logging_level=logging.WARNING)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # after Ray's own handler: clean up below on a plain kill
    try:
        try:
            serve.start(http_options={"host": args.host, "port": args.port})
            application = ray_application(model, settings, args.replicas, args.gpus_per_replica, args.cpus_per_replica)
            serve.run(application, name="attribot-rag", route_prefix="/")
        except (ray.exceptions.RayError, RuntimeError) as error:  # a replica or the proxy failed: the Ray log says why
            raise CliError(
                f"Ray Serve did not start: {type(error).__name__}: {str(error).splitlines()[0]}", exit_code=1
            ) from None
        print(f"attribot-rag serve: {args.replicas} replica(s) ready on http://{args.host}:{args.port}", flush=True)
        while True:
            time.sleep(3600)
    finally:
        serve.shutdown()
        ray.shutdown()
