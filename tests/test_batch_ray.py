"""Batch jobs on Ray Data: a local Ray started once per session (2 CPUs, no dashboard), actors
holding the real embedded model; with as many torch threads as the local engine, their results
equal its results exactly (CPU, float32)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pytest
import ray
import torch
from test_batch import IDS, RECORDS, write_jsonl

from attribot_rag import BUDGETS, Attributor
from attribot_rag.api.records import AttributionRequest
from attribot_rag.cli import main
from attribot_rag.serving import ray as ray_engine
from attribot_rag.serving.batch import attribute_records
from attribot_rag.serving.ray import AttributorActor

pytestmark = pytest.mark.model


@pytest.fixture(scope="session")
def local_ray() -> Iterator[None]:
    """One local Ray for the session (starting one takes seconds); reused if already running.
    Its workers run at the test's own priority, not Ray's default of 15 nicer, which starves
    them on a busy machine."""
    if ray.is_initialized():
        yield
        return
    os.environ.setdefault("RAY_worker_niceness", "0")
    ray.init(num_cpus=2, include_dashboard=False, logging_level="warning")
    yield
    ray.shutdown()


@pytest.fixture
def torch_threads() -> Iterator[None]:
    """``Attributor(threads=)`` sets torch's process-wide thread count: restore it after."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_ray_engine_equals_local_engine(local_ray: None, torch_threads: None) -> None:
    """An actor runs one torch thread per CPU; the local engine given as many (``threads=``,
    ``--threads``) sums in the same order, so the scores are bit-identical."""
    records: list = [*RECORDS]
    records[1] = AttributionRequest.model_validate(RECORDS[1])  # the API takes requests too
    local = {r.id: r for r in attribute_records(records, Attributor(dtype="float32", threads=1))}
    on_ray = list(ray_engine.attribute_records(records, dtype="float32", actors=1, cpus_per_actor=1))
    assert sorted(map(str, (r.id for r in on_ray))) == sorted(map(str, IDS))
    for item in on_ray:
        expected = local[item.id]
        assert item.error == expected.error
        if expected.result is None:
            assert item.result is None
        else:
            assert item.result.model_dump(exclude={"timings"}) == expected.result.model_dump(exclude={"timings"})
    assert local[3].error and local[1].result.settings.dtype == "float32"


def test_an_actor_runs_one_torch_thread_per_cpu_whatever_the_environment(local_ray: None) -> None:
    """A node whose environment sets ``OMP_NUM_THREADS`` (Ray sets it only where it is unset)
    still runs as many torch threads as the actor's CPUs: the thread count that makes the
    scores equal the local engine's is the one the job asked for."""

    class Reporting(AttributorActor):  # defined here, so Ray ships it to the workers by value
        def __call__(self, batch: pa.Table) -> pa.Table:
            return batch.append_column("threads", pa.array([torch.get_num_threads()] * batch.num_rows))

    rows = (
        ray.data.from_items([{"record": "{}"}])
        .map_batches(
            Reporting,
            fn_constructor_kwargs={"dtype": "float32", "column": "record"},
            batch_format="pyarrow",
            compute=ray.data.ActorPoolStrategy(size=1),
            num_cpus=1,
            runtime_env={"env_vars": {"OMP_NUM_THREADS": "2"}},
        )
        .take_all()
    )
    assert [row["threads"] for row in rows] == [1]


def test_cli_ray_engine_writes_one_line_per_record(tmp_path: Path, local_ray: None) -> None:
    records, output = (
        write_jsonl(tmp_path / "in.jsonl", [RECORDS[0], RECORDS[2], "not a record"]),
        tmp_path / "out.jsonl",
    )
    argv = [
        "batch",
        "--input",
        str(records),
        "--output",
        str(output),
        "--budget",
        "fast",
        "--engine",
        "ray",
        "--actors",
        "1",
    ]
    assert main(argv) == 0
    lines = {line["id"]: line for line in map(json.loads, output.read_text(encoding="utf-8").splitlines())}
    assert sorted(lines) == [1, 2, 3]
    assert lines[1]["result"]["settings"]["method"] == "fast" and lines[1]["error"] is None
    assert "documents" in lines[2]["error"] and "not a JSON object" in lines[3]["error"]


def test_actor_takes_rows_of_fields_and_keeps_other_columns() -> None:
    """As in a user's own pipeline (``ray.data.read_json``): a record's fields are columns,
    missing ones null, other columns are passed through."""
    rows = [
        {**RECORDS[0], "options": {"method": "exact"}, "gold": "Paris"},
        {**RECORDS[4], "options": None, "gold": "H2O"},
        {**RECORDS[5], "documents": [], "options": None, "gold": "Mars"},
    ]
    out = AttributorActor(dtype="float32")(pa.Table.from_pylist(rows)).to_pylist()
    assert [row["gold"] for row in out] == ["Paris", "H2O", "Mars"]
    assert (
        json.loads(out[0]["result"])["settings"]["method"] == "exact"
        and json.loads(out[1]["result"])["settings"]["method"] == BUDGETS["balanced"]["method"]
    )
    assert out[0]["error"] is None and out[2]["result"] is None and "documents" in out[2]["error"]


@pytest.mark.slow
def test_a_record_that_kills_its_actor_is_retried_then_gets_an_error_line(
    local_ray: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A process crash (as the OOM killer would cause) on one record: Ray restarts the actor and
    retries the record, then its line says so; the other records are attributed."""

    class Crashing(AttributorActor):  # defined here, so Ray ships it to the workers by value
        def __call__(self, batch: pa.Table) -> pa.Table:
            if json.loads(batch.column("record")[0].as_py())["question"] == "crash":
                os._exit(1)
            return super().__call__(batch)

    monkeypatch.setattr(ray_engine, "AttributorActor", Crashing)
    monkeypatch.setattr(ray_engine, "MAX_TASK_RETRIES", 1)
    records = [RECORDS[0], {"question": "crash", "documents": ["x"], "answer": "y"}, RECORDS[4]]
    results = {r.id: r for r in ray_engine.attribute_records(records, actors=1)}
    assert sorted(results) == [1, 2, 3]
    assert results[2].result is None and results[2].error.startswith("no result after 1 retries")
    assert results[1].error is None and results[3].error is None
