"""``attribot-rag serve`` in a subprocess on a free loopback port: a real server with a real
model for the service's tests, the integrations' remote tests (each suite runs from its own
directory too, so this lives in the package) and ``benchmarks/serve.py``."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time

import httpx

SERVE = [sys.executable, "-c", "import sys; from attribot_rag.cli import main; sys.exit(main())", "serve"]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class ServiceProcess:
    """``with ServiceProcess("--max-queue", "2") as server: server.url``; waits until
    ``/healthz`` says the model is loaded and fails with the server's log if it exits."""

    def __init__(self, *args: str, env: dict[str, str] | None = None, startup: float = 180.0):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.args = [*SERVE, "--port", str(self.port), *args]
        self.env = {**os.environ, **(env or {})}
        self.startup = startup
        self.log = tempfile.NamedTemporaryFile("w+", prefix="attribot-serve-", suffix=".log")  # noqa: SIM115 (closed in stop)
        self.process: subprocess.Popen | None = None

    def start(self) -> ServiceProcess:
        self.process = subprocess.Popen(self.args, stdout=self.log, stderr=subprocess.STDOUT, env=self.env)
        deadline = time.monotonic() + self.startup
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited with {self.process.returncode}:\n{self.output()}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=2).json().get("status") == "ok":
                    return self
            except (httpx.HTTPError, ValueError):
                pass
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"the server did not start within {self.startup:g} s:\n{self.output()}")

    def output(self) -> str:
        self.log.flush()
        with open(self.log.name, encoding="utf-8", errors="replace") as handle:
            return handle.read()

    def stop(self) -> None:
        """SIGTERM (uvicorn and the Ray driver shut down cleanly on it), then SIGKILL."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def __enter__(self) -> ServiceProcess:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()
        self.log.close()
