"""``attribot-rag serve``: the citation service (``attribot_rag.serving.service``) under uvicorn, or
as Ray Serve replicas with ``--ray``. Checks its settings (API key off loopback, a key HTTP
can carry) and that the port is free before loading anything; its limits' flags and defaults
are ``ServiceSettings``'s."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import sys
import time
from typing import Any

from pydantic import ValidationError

from ..api.records import describe_errors
from ..serving.service_settings import ServiceSettings, check_binding
from .common import CliError, add_model_arguments, add_option_arguments, load_attributor, options_from

DEFAULTS = ServiceSettings()
# Each limit's flag, from its ServiceSettings field (type, default and meaning).
LIMITS = ("max_queue", "timeout", "max_documents", "max_body", "max_connections", "receive_timeout")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser)
    add_option_arguments(parser)
    forwards = next(action for action in parser._actions if action.dest == "max_forwards")
    forwards.default = DEFAULTS.options.max_forwards
    forwards.help = (
        f"{forwards.help}; also caps every request's (default here {forwards.default}: about an exact "
        "attribution of 100 documents of 19 sentences, so that one request cannot hold the model for hours)"
    )
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
    for name in LIMITS:
        field = ServiceSettings.model_fields[name]
        parser.add_argument(
            f"--{name.replace('_', '-')}",
            type=type(field.default),
            default=field.default,
            help=f"{field.description} (default {field.default})",
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
    """The service's settings, refused (exit 2) before any model loads: no key off loopback,
    a key HTTP cannot carry."""
    key = os.environ.get(args.api_key_env, "").strip() if args.api_key_env else None
    try:
        settings = ServiceSettings(
            options=options_from(args), api_key=key, **{name: getattr(args, name) for name in LIMITS}
        )
        check_binding(args.host, settings)
    except ValidationError as error:
        raise CliError(describe_errors(error, lambda location: _flag(location, args))) from None
    except ValueError as error:
        raise CliError(str(error)) from None
    if args.replicas < 1:
        raise CliError("--replicas must be at least 1")
    return settings


def _flag(location: Any, args: argparse.Namespace) -> str:
    """The flag that set a ``ServiceSettings`` field."""
    if location[0] == "api_key":
        return f"--api-key-env {args.api_key_env}"
    return "--" + "-".join(map(str, location)).replace("_", "-")


def check_port(host: str, port: int) -> None:
    """Refuse a port this process cannot listen on (busy, privileged) in one line, before the
    model loads for minutes only to fail there (with uvicorn's own flags: address reuse)."""
    try:
        family, kind, protocol, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        with socket.socket(family, kind, protocol) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(address)
    except OSError as error:
        reason = "it is in use (another server?)" if error.errno == 98 else error.strerror or str(error)
        raise CliError(f"cannot listen on {host}:{port}: {reason}; choose another --port") from None


def run(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    try:
        from ..serving.service import create_app, serve
    except ImportError as error:
        raise CliError(
            f"needs the serve extra ({error.name} is missing): pip install 'attribot-rag[serve]'", exit_code=1
        ) from None
    check_port(args.host, args.port)
    print(f"attribot-rag serve: loading model {args.model or 'SmolLM2-135M-Instruct (embedded)'} …", flush=True)
    if args.ray:
        return _run_ray(args, settings)
    serve(create_app(load_attributor(args, progress=False), settings), args.host, args.port, settings)
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
    from ..serving.service import ray_application

    model = {
        "model": args.model,
        "device": args.device,
        "dtype": args.dtype,
        "target": args.target,
        "threads": args.threads,
    }
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
