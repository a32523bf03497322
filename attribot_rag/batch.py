"""Attribute many answers: a function over records (the Python API), and resumable JSONL jobs.

A record is the CLI's JSON object (``AttributionRequest``) plus an ``id``; each finished record
becomes one output line ``{"id", "result", "error"}``, written and flushed at once, so a killed
job leaves a valid file and ``resume`` carries on where it stopped. One bad record becomes its
own error line: it never stops the job and is never lost. The engines (this module's
``attribute_records``, ``attribot_rag.ray.attribute_records``) share the per-record step
``attribute_request`` and the driver-side ``with_ids``, so they produce the same lines.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from itertools import chain
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeGuard

from pydantic import BaseModel, ValidationError

from .options import AttributionOptions
from .records import AttributionRequest
from .results import AttributionResult

if TYPE_CHECKING:
    from .attributor import Attributor

RecordId = str | int


@dataclass(frozen=True)
class InvalidRecord:
    """A record that could not even be read (a line that is not a JSON object, a repeated id):
    it still has an id and becomes an error line."""

    id: RecordId
    error: str


Record = Mapping[str, Any] | AttributionRequest | InvalidRecord


class BatchResult(BaseModel):
    """One output line: the record's ``id`` and its ``result``, or the ``error`` that stopped it."""

    id: RecordId
    result: AttributionResult | None = None
    error: str | None = None


def _describe(error: ValidationError) -> str:
    """A validation error on one line: each wrong field and why."""
    return "; ".join(f"{'.'.join(map(str, e['loc'])) or 'record'}: {e['msg']}" for e in error.errors())


def _is_id(value: object) -> TypeGuard[RecordId]:
    return isinstance(value, (str, int)) and not isinstance(value, bool)


def _id_of(record: object, position: int) -> RecordId:
    if isinstance(record, InvalidRecord):
        return record.id
    given = (
        record.id
        if isinstance(record, AttributionRequest)
        else record.get("id")
        if isinstance(record, Mapping)
        else None
    )
    return given if _is_id(given) else position


def with_ids(records: Iterable[Record]) -> Iterator[tuple[RecordId, Record]]:
    """Each record with its id (its own, else its 1-based position); a repeated id becomes an
    error, so that ids key the output."""
    seen: set[RecordId] = set()
    for position, record in enumerate(records, start=1):
        record_id = _id_of(record, position)
        if record_id in seen:
            record = InvalidRecord(record_id, f"duplicate id {record_id!r}: ids must be unique")
        seen.add(record_id)
        yield record_id, record


def attribute_request(
    record: Record, attributor: Attributor, options: AttributionOptions | None = None
) -> tuple[AttributionResult | None, str | None]:
    """One record's ``(result, error)``: validation errors and failures of the attribution
    (too long, out of memory, ...) are returned, so that one record never stops a job."""
    if isinstance(record, InvalidRecord):
        return None, record.error
    try:
        request = record if isinstance(record, AttributionRequest) else AttributionRequest.model_validate(record)
    except ValidationError as error:
        return None, _describe(error)
    try:
        return request.attribute(attributor, options), None
    except Exception as error:  # noqa: BLE001 - any failure of one record is that record's error line
        return None, f"{type(error).__name__}: {error}"


def attribute_records(
    records: Iterable[Record], attributor: Attributor, options: AttributionOptions | None = None
) -> Iterator[BatchResult]:
    """Attribute each record (a dict in the CLI's JSON form, an ``AttributionRequest``) in
    order with one ``Attributor``; a record's own ``options`` override ``options``. Yields one
    ``BatchResult`` per record, errors included; ids are the records' own or their 1-based
    positions."""
    for record_id, record in with_ids(records):
        result, error = attribute_request(record, attributor, options)
        yield BatchResult(id=record_id, result=result, error=error)


def read_jsonl(path: str | os.PathLike[str]) -> Iterator[Record]:
    """The records of a JSONL file, each with an id (its line number when it has none); a line
    that is not a JSON object, or whose id is not a string or an integer, becomes an
    ``InvalidRecord``. Blank lines are skipped."""
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                yield InvalidRecord(number, f"line {number} is not JSON: {error}")
                continue
            if not isinstance(record, dict):
                yield InvalidRecord(number, f"line {number} is not a JSON object")
                continue
            if record.get("id") is None:
                record["id"] = number
            elif not _is_id(record["id"]):
                yield InvalidRecord(number, f"line {number}: 'id' must be a string or an integer")
                continue
            yield record


def count_records(path: str | os.PathLike[str]) -> int:
    """The number of non-blank lines of a JSONL file (the progress bar's total)."""
    with open(path, encoding="utf-8") as handle:
        return sum(1 for line in handle if line.strip())


def completed_ids(path: str | os.PathLike[str]) -> set[RecordId]:
    """The ids an output file already holds. A last line without its newline (the job was
    killed while writing it) is cut off the file, so that appending continues a valid JSONL."""
    data = Path(path).read_bytes()
    complete = data.rfind(b"\n") + 1
    if complete < len(data):
        os.truncate(path, complete)
    ids: set[RecordId] = set()
    for number, line in enumerate(data[:complete].splitlines(), start=1):
        if not line.strip():
            continue
        try:
            ids.add(json.loads(line)["id"])
        except (json.JSONDecodeError, KeyError, TypeError):
            raise ValueError(f"{path}:{number} is not an output line of attribot-rag batch; cannot resume it") from None
    return ids


@dataclass
class JobSummary:
    results: int = 0
    errors: int = 0
    skipped: int = 0
    seconds: float = 0.0


def attribute_file(
    input_path: str | os.PathLike[str],
    output_path: str | os.PathLike[str],
    engine: Callable[[Iterable[Record]], Iterator[BatchResult]],
    resume: bool = False,
    progress: bool | None = None,
) -> JobSummary:
    """Run ``engine`` (records -> results, in any order) on a JSONL file, appending one line
    per finished record to ``output_path`` and flushing it. With ``resume`` the ids already in
    the output are skipped; without it an existing non-empty output is an error (it may hold
    hours of work). ``progress``: a bar with rate and ETA (default: when stderr is a terminal).
    The engine is not called when nothing is left to do."""
    start = time.perf_counter()
    output = Path(output_path)
    exists = output.exists() and output.stat().st_size > 0
    if exists and not resume:
        raise FileExistsError(f"{output} exists; pass --resume to continue it, or remove it")
    done = completed_ids(output) if exists else set()
    total = count_records(input_path)
    pending = (record for record in read_jsonl(input_path) if _id_of(record, 0) not in done)
    summary = JobSummary(skipped=len(done))
    first = next(pending, None)
    if first is None:
        return summary
    from tqdm import tqdm

    show = sys.stderr.isatty() if progress is None else progress
    with (
        open(output, "a", encoding="utf-8") as sink,
        tqdm(total=total, initial=len(done), unit="record", disable=not show) as bar,
    ):
        for item in engine(chain([first], pending)):
            sink.write(item.model_dump_json() + "\n")
            sink.flush()
            if item.error is None:
                summary.results += 1
            else:
                summary.errors += 1
            bar.update()
    summary.seconds = time.perf_counter() - start
    return summary
