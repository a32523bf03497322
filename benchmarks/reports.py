"""Shared pieces of the benchmarks' reports: table cells and the description of the machine."""

from __future__ import annotations

import platform
import sys
from typing import Any

import torch


def cell(value: Any, digits: int = 2) -> str:
    """A table cell: ``–`` for a missing value, floats to ``digits`` places."""
    if value is None:
        return "–"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def mean_ci(stats: dict[str, Any]) -> str:
    """A mean with its 95% bootstrap interval (``evaluation.summarize``), ``–`` without values."""
    if stats["mean"] is None:
        return "–"
    ci = f" [{stats['ci'][0]:.2f}, {stats['ci'][1]:.2f}]" if stats.get("ci") else ""
    return f"{stats['mean']:.2f}{ci}"


def machine() -> dict[str, Any]:
    """The platform, processor, torch version and threads a run measured on."""
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }


def command_line(benchmark: str) -> str:
    """The command that reruns this run of ``benchmark`` (its arguments as given)."""
    return " ".join([".venv/bin/python", "-m", f"benchmarks.{benchmark}", *sys.argv[1:]])
