"""Attribute many answers: a function over records (the Python API), and resumable JSONL jobs.

A record is the CLI's JSON object (``AttributionRequest``) plus an ``id``; each finished record
becomes one output line ``{"id", "result", "error"}``, written and flushed at once, so a killed
job leaves a valid file and ``resume`` carries on where it stopped. One bad record becomes its
own error line: it never stops the job and is never lost. The engines (this module's
``attribute_records``, ``attribot_rag.serving.ray.attribute_records``) share the per-record step
``attribute_request`` and the driver-side ``with_ids``, so they produce the same lines.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from itertools import chain
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, TypeGuard

from pydantic import BaseModel, ValidationError

from ..api.options import AttributionOptions
from ..api.records import AttributionRequest, describe_errors
from ..api.results import AttributionResult

if TYPE_CHECKING:
    from ..api.attributor import Attributor

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


def duplicate_error(record_id: RecordId) -> str:
    """The error line of a record whose id an earlier record has; ``resume`` tells these lines
    from the first record's line by this text."""
    return f"duplicate id {record_id!r}: ids must be unique"


def with_ids(records: Iterable[Record]) -> Iterator[tuple[RecordId, Record]]:
    """Each record with its id (its own, else its 1-based position); a repeated id becomes an
    error, so that ids key the output."""
    seen: set[RecordId] = set()
    for position, record in enumerate(records, start=1):
        record_id = _id_of(record, position)
        if record_id in seen:
            record = InvalidRecord(record_id, duplicate_error(record_id))
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
        return None, describe_errors(error)
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


def _lines(path: str | os.PathLike[str]) -> Iterator[tuple[int, str | UnicodeDecodeError]]:
    """Each non-blank line's number and text, decoded line by line: a line that is not UTF-8
    is its ``UnicodeDecodeError``, and costs that line only."""
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as error:
                yield number, error
                continue
            if line.strip():
                yield number, line


def read_jsonl(path: str | os.PathLike[str]) -> Iterator[Record]:
    """The records of a JSONL file, each with an id (its line number when it has none); a line
    that is not UTF-8, not a JSON object, or whose id is not a string or an integer, becomes
    an ``InvalidRecord``. Blank lines are skipped."""
    for number, line in _lines(path):
        if isinstance(line, UnicodeDecodeError):
            yield InvalidRecord(number, f"line {number} is not UTF-8 text (byte {line.start})")
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
    return sum(1 for _ in _lines(path))


_OUTPUT_KEYS = frozenset(BatchResult.model_fields)
# How every output line begins (``model_dump_json`` writes no spaces): a last line cut off
# while it was written still begins so.
_OUTPUT_START = b'{"id":'


def _is_output_line(value: object) -> TypeGuard[dict[str, Any]]:
    """Whether a parsed line is one of ours: an ``id`` and a ``result`` or an ``error``, and no
    other key (an input record has other keys, and never these two)."""
    return (
        isinstance(value, dict)
        and _is_id(value.get("id"))
        and value.keys() <= _OUTPUT_KEYS
        and bool(value.keys() & {"result", "error"})
    )


@dataclass
class Finished:
    """What an output file already holds: the ids whose record has its line, and per id the
    error lines of its repeats (``duplicate_error``)."""

    ids: set[RecordId]
    repeats: Counter[RecordId]

    @property
    def lines(self) -> int:
        return len(self.ids) + self.repeats.total()

    def skips(self, records: Iterable[tuple[RecordId, Record]]) -> Iterator[tuple[RecordId, Record]]:
        """The records (``with_ids``' pairs) whose line is not in the file yet: one line per
        input record, repeated ids included."""
        repeats = Counter(self.repeats)
        for record_id, record in records:
            if isinstance(record, InvalidRecord) and record.error == duplicate_error(record_id):
                if repeats[record_id] > 0:
                    repeats[record_id] -= 1
                    continue
            elif record_id in self.ids:
                continue
            yield record_id, record


def completed(path: str | os.PathLike[str]) -> Finished:
    """What the output file ``path`` already holds. Every line must be one of ours, else
    nothing is touched (an ``--output`` given the input file, say); a last line without its
    newline that begins as ours do (the job was killed while writing it) is cut off the file,
    so that appending continues a valid JSONL."""
    data = Path(path).read_bytes()
    complete = data.rfind(b"\n") + 1
    lines = data[:complete].splitlines()
    finished = Finished(set(), Counter())
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except ValueError:  # not JSON, or not UTF-8
            value = None
        if not _is_output_line(value):
            raise ValueError(f"{path}:{number} is not an output line of attribot-rag batch; cannot resume it")
        if value.get("error") == duplicate_error(value["id"]):
            finished.repeats[value["id"]] += 1
        else:
            finished.ids.add(value["id"])
    tail = data[complete:]
    if tail.strip():
        try:
            ours = _is_output_line(json.loads(tail))
        except ValueError:  # cut off mid-line
            ours = tail.startswith(_OUTPUT_START)
        if not ours:
            raise ValueError(
                f"{path}:{len(lines) + 1} is not an output line of attribot-rag batch, nor one cut off "
                "while written; cannot resume it"
            )
    if complete < len(data):
        os.truncate(path, complete)
    return finished


@dataclass
class JobSummary:
    results: int = 0
    errors: int = 0
    skipped: int = 0
    seconds: float = 0.0


def _same_file(a: str | os.PathLike[str], b: str | os.PathLike[str]) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist (yet)
        return False


def _append(sink: BinaryIO, line: str, path: Path) -> None:
    """Write ``line`` to the unbuffered ``sink``, in one system call where it can (a job killed
    meanwhile leaves at most one line cut off, which ``completed`` drops); a failure (disk
    full, a lost mount) names the file, whose earlier lines stay valid."""
    data = line.encode("utf-8")
    try:
        while data:
            data = data[sink.write(data) :]
    except OSError as error:
        raise OSError(
            f"cannot write {path} ({error.strerror or error}); the lines before this one are kept: "
            "resume the job once it can be written"
        ) from error


def attribute_file(
    input_path: str | os.PathLike[str],
    output_path: str | os.PathLike[str],
    engine: Callable[[Iterable[Record]], Iterator[BatchResult]],
    resume: bool = False,
    progress: bool | None = None,
) -> JobSummary:
    """Run ``engine`` (records -> results, in any order) on a JSONL file, appending one line
    per finished record to ``output_path`` as it finishes. With ``resume`` the records whose
    line is in the output already are skipped; without it an existing non-empty output is an
    error (it may hold hours of work), and the input file is never an output. ``progress``: a
    bar with rate and ETA (default: when stderr is a terminal). The engine is not called when
    nothing is left to do."""
    start = time.perf_counter()
    output = Path(output_path)
    if _same_file(input_path, output):
        raise ValueError(f"the output {output} is the input file {input_path}; write the results to another file")
    exists = output.exists() and output.stat().st_size > 0
    if exists and not resume:
        raise FileExistsError(f"{output} exists; pass --resume to continue it, or remove it")
    finished = completed(output) if exists else Finished(set(), Counter())
    total = count_records(input_path)
    pending = (record for _, record in finished.skips(with_ids(read_jsonl(input_path))))
    first = next(pending, None)
    if first is None:
        return JobSummary(skipped=total)
    from tqdm import tqdm

    summary = JobSummary()
    show = sys.stderr.isatty() if progress is None else progress
    try:
        sink = open(output, "ab", buffering=0)  # noqa: SIM115 - closed below; unbuffered: whole lines
    except OSError as error:
        raise OSError(f"cannot write {output} ({error.strerror or error})") from error
    with sink, tqdm(total=total, initial=finished.lines, unit="record", disable=not show) as bar:
        for item in engine(chain([first], pending)):
            _append(sink, item.model_dump_json() + "\n", output)
            if item.error is None:
                summary.results += 1
            else:
                summary.errors += 1
            bar.update()
    summary.skipped = total - summary.results - summary.errors
    summary.seconds = time.perf_counter() - start
    return summary
