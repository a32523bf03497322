"""What the benchmarks measure besides agreement: CPU time (one torch thread: the work done,
whatever the neighbours' load), wall time, and tokens forwarded through a model's decoder."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class TokenCounter:
    """Tokens that went through the decoders of the models it is attached to (rows x new
    positions per forward, so padding counts too): a measure of compute that, unlike time,
    does not depend on what else runs on the machine. It leaves out attention's growth with
    context length and the vocabulary projection (ContextCite projects every position, our
    scorer the answer only)."""

    def __init__(self) -> None:
        self.tokens = 0

    def attach(self, model: Any) -> None:
        def count(module: Any, args: tuple, kwargs: dict) -> None:
            ids = kwargs.get("input_ids", args[0] if args else None)
            if ids is None:
                ids = kwargs["inputs_embeds"][..., 0]
            self.tokens += ids.numel()

        model.get_decoder().register_forward_pre_hook(count, with_kwargs=True)


@dataclass(frozen=True)
class Measured(Generic[T]):
    """A call's result, the process CPU time it took and the tokens it forwarded."""

    result: T
    seconds: float
    tokens: int


def timed(call: Callable[[], T], counter: TokenCounter | None = None) -> Measured[T]:
    """``call()`` with its CPU time and, given a ``counter``, the tokens it forwarded."""
    before = counter.tokens if counter else 0
    start = time.process_time()
    result = call()
    seconds = time.process_time() - start
    return Measured(result, seconds, counter.tokens - before if counter else 0)


@dataclass(frozen=True)
class CpuAndWall(Generic[T]):
    result: T
    cpu: float
    wall: float


def cpu_and_wall(call: Callable[[], T]) -> CpuAndWall[T]:
    """``call()`` with the process CPU time and the wall time it took."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = call()
    return CpuAndWall(result, time.process_time() - cpu, time.perf_counter() - wall)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` (Linux /proc): another process's work."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class JobTiming:
    """A batch job's timing: wall times to its first and last result, records per minute over
    the job and between the first and the last result (loading excluded), this process's CPU
    time and the machine's load average before and after, since neighbours' load moves wall
    times on a shared machine."""

    records: int
    errors: int
    first_result_s: float
    wall_s: float
    records_per_min: float
    steady_records_per_min: float | None
    seconds_per_record_steady: float | None
    process_cpu_s: float
    load_average_1min: list[float]


def time_job(results: Callable[[], Iterable[T]], failed: Callable[[T], bool]) -> tuple[JobTiming, list[T]]:
    """Run a job that yields results and time their arrivals."""
    load_before, cpu = os.getloadavg()[0], time.process_time()
    start, arrivals, items = time.perf_counter(), [], []
    for item in results():
        arrivals.append(time.perf_counter() - start)
        items.append(item)
    n = len(arrivals)
    steady = (n - 1) / (arrivals[-1] - arrivals[0]) * 60 if n > 1 and arrivals[-1] > arrivals[0] else None
    timing = JobTiming(
        records=n,
        errors=sum(failed(item) for item in items),
        first_result_s=round(arrivals[0], 2),
        wall_s=round(arrivals[-1], 2),
        records_per_min=round(n / arrivals[-1] * 60, 3),
        steady_records_per_min=round(steady, 3) if steady else None,
        seconds_per_record_steady=round(60 / steady, 2) if steady else None,
        process_cpu_s=round(time.process_time() - cpu, 2),
        load_average_1min=[round(load_before, 2), round(os.getloadavg()[0], 2)],
    )
    return timing, items
