"""Attribute many answers on Ray Data: one ``Attributor`` per actor, an actor per GPU.

``AttributorActor`` is the callable class for ``Dataset.map_batches`` (usable in your own
pipelines); ``attribute_records`` is the engine behind ``attribot-rag batch --engine ray``: it
yields the same ``BatchResult`` lines as ``attribot_rag.serving.batch.attribute_records``, as actors
finish them. Needs the ``[ray]`` extra; nothing else in attribot-rag imports Ray.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import warnings
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

try:
    import ray
    import ray.data
except ImportError as error:  # pragma: no cover - depends on the environment
    raise ImportError("the Ray engine needs Ray: pip install 'attribot-rag[ray]'") from error

from ..api.options import AttributionOptions
from ..api.records import AttributionRequest
from ..api.results import AttributionResult
from .batch import BatchResult, InvalidRecord, Record, attribute_request, with_ids

if TYPE_CHECKING:
    import pyarrow

# An actor that dies (a crash, the OOM killer) is always restarted (a dead actor would not be
# replaced, and its pool would fail every record after), and the record it was running is
# retried this often, then gets an error line. Ray Data's own default retries forever: one
# record that kills its actor every time would stall the job.
MAX_RESTARTS = -1
MAX_TASK_RETRIES = 2


class RayEngineError(RuntimeError):
    """The job itself failed (typically: the actors could not load the model); the records
    finished before it are kept."""


def _cause(error: Exception) -> str:
    """The last ``SomeError: message`` line of a Ray error, whose text holds whole tracebacks."""
    lines = [line.strip() for line in str(error).splitlines()]
    causes = [line for line in lines if re.match(r"^[\w.]+(Error|Exception): ", line)]
    return causes[-1] if causes else lines[0]


def _actor_threads() -> int | None:
    """One torch thread per CPU Ray assigned to this actor (at least one; one where it holds
    none, as Ray does), whatever ``OMP_NUM_THREADS`` the node's environment holds (Ray sets it
    only where it is unset); ``None`` outside a Ray worker, which keeps torch's setting."""
    context = ray.get_runtime_context() if ray.is_initialized() else None
    if context is None or context.worker.mode != ray.WORKER_MODE:
        return None
    cpus = context.get_assigned_resources().get("CPU")
    return max(1, math.floor(cpus)) if cpus is not None else 1


def _without_nulls(value: Any) -> Any:
    """Arrow fills a field missing from some rows with null; in a record null means absent."""
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_nulls(v) for v in value]
    return value


class AttributorActor:
    """``map_batches`` class: loads one ``Attributor`` per actor and adds ``result`` (the
    ``AttributionResult`` as JSON text, or null) and ``error`` (text, or null) to each row.

    Each row is a record: its fields (``question``, ``documents``, ``answer``, ``messages``,
    ``options``; other columns are ignored and kept), or with ``column=`` one column holding the
    record as JSON text (for records whose fields differ in type from row to row). Torch runs
    one thread per CPU the actor holds (``num_cpus``). Use ``batch_format="pyarrow"``::

        ds.map_batches(AttributorActor, fn_constructor_kwargs={"options": {"budget": "fast"}},
                       batch_format="pyarrow", batch_size=1,
                       compute=ray.data.ActorPoolStrategy(size=4), num_gpus=1)
    """

    def __init__(
        self,
        model: str | None = None,
        device: str | None = None,
        dtype: str | None = None,
        target: str | None = None,
        options: AttributionOptions | dict[str, Any] | None = None,
        column: str | None = None,
    ):
        from ..api.attributor import Attributor

        self.attributor = Attributor(model, device=device, dtype=dtype, target=target, threads=_actor_threads())
        self.options = AttributionOptions.model_validate(options or {})
        self.column = column

    def _record(self, row: dict[str, Any]) -> Record:
        if self.column is None:
            return _without_nulls({k: v for k, v in row.items() if k in AttributionRequest.model_fields})
        try:
            return json.loads(row[self.column])
        except (TypeError, json.JSONDecodeError) as error:
            return InvalidRecord(0, f"column {self.column!r} is not a JSON record: {error}")

    def __call__(self, batch: pyarrow.Table) -> pyarrow.Table:
        import pyarrow as pa

        results, errors = [], []
        for row in batch.to_pylist():
            result, error = attribute_request(self._record(row), self.attributor, self.options)
            results.append(result.model_dump_json() if result is not None else None)
            errors.append(error)
        return batch.append_column("result", pa.array(results, pa.string())).append_column(
            "error", pa.array(errors, pa.string())
        )


@contextmanager
def connected(address: str | None = None) -> Iterator[None]:
    """Use the Ray this process is already connected to, else join ``address``, else start a
    local Ray (all CPUs, no dashboard); disconnect (and stop a started Ray) on the way out."""
    if ray.is_initialized():
        yield
        return
    if address is None:
        ray.init(num_cpus=os.cpu_count(), include_dashboard=False, logging_level=logging.WARNING)
    else:
        ray.init(address=address, logging_level=logging.WARNING)
    try:
        yield
    finally:
        ray.shutdown()


def attribute_records(
    records: Iterable[Record],
    options: AttributionOptions | None = None,
    *,
    model: str | None = None,
    device: str | None = None,
    dtype: str | None = None,
    target: str | None = None,
    address: str | None = None,
    actors: int | None = None,
    gpus_per_actor: float | None = None,
    cpus_per_actor: float = 1,
) -> Iterator[BatchResult]:
    """``attribot_rag.serving.batch.attribute_records`` on a Ray Data actor pool: ``actors`` actors
    (default: the cluster's GPUs / ``gpus_per_actor``, else 1), each holding one ``Attributor``
    on ``gpus_per_actor`` GPUs (default: 1 if the cluster has GPUs, else 0) and
    ``cpus_per_actor`` CPUs (its torch threads). Yields results in the order they finish.

    The records pass through this process (ids, resume and duplicate checks need them) into
    ``ray.data.from_items``, one block per record, so that a failure touches one record: an
    actor that dies is restarted and its record retried (``MAX_RESTARTS``,
    ``MAX_TASK_RETRIES``), then the record gets an error line."""
    items: list[dict[str, str]] = []
    for record_id, record in with_ids(records):
        if isinstance(record, InvalidRecord):
            yield BatchResult(id=record_id, error=record.error)
            continue
        data = record.model_dump(mode="json", exclude_none=True) if isinstance(record, AttributionRequest) else record
        try:
            items.append({"key": json.dumps(record_id), "record": json.dumps(data)})
        except (TypeError, ValueError) as error:
            yield BatchResult(id=record_id, error=f"record is not JSON: {error}")
    if not items:
        return
    with connected(address):
        gpus = ray.cluster_resources().get("GPU", 0)
        if gpus_per_actor is None:
            gpus_per_actor = 1 if gpus else 0
        if actors is None:
            actors = max(1, int(gpus // gpus_per_actor)) if gpus_per_actor else 1
        dataset: ray.data.Dataset = ray.data.from_items(items, override_num_blocks=len(items))
        with warnings.catch_warnings():
            # Ray 2.60 deprecates **ray_remote_args in favour of named parameters, but names
            # none for max_restarts and max_task_retries; they still reach the actors.
            warnings.filterwarnings("ignore", message=".*ray_remote_args.*deprecated")
            dataset = dataset.map_batches(
                AttributorActor,
                fn_constructor_kwargs={
                    "model": model,
                    "device": device,
                    "dtype": dtype,
                    "target": target,
                    "options": options,
                    "column": "record",
                },
                batch_format="pyarrow",
                batch_size=1,
                compute=ray.data.ActorPoolStrategy(size=actors, max_tasks_in_flight_per_actor=1),
                num_gpus=gpus_per_actor,
                num_cpus=cpus_per_actor,
                max_restarts=MAX_RESTARTS,
                max_task_retries=MAX_TASK_RETRIES,
            )
        # A record whose retries are spent loses its block, not the job: it is reported below.
        dataset.context.max_errored_blocks = -1
        dataset.context.enable_progress_bars = False
        pending = {item["key"] for item in items}
        try:
            for row in dataset.iter_rows():
                pending.discard(row["key"])
                result = row["result"]
                yield BatchResult(
                    id=json.loads(row["key"]),
                    result=None if result is None else AttributionResult.model_validate_json(result),
                    error=row["error"],
                )
        except ray.exceptions.RayError as error:
            raise RayEngineError(f"the Ray job failed ({type(error).__name__}): {_cause(error)}") from error
    for key in sorted(pending):
        yield BatchResult(
            id=json.loads(key),
            error=f"no result after {MAX_TASK_RETRIES} retries: its Ray actor died each time (out of memory or a crash; see the Ray logs)",
        )
