"""Batch jobs, local engine: one bad record is one error line, scores equal direct calls, and a
job killed mid-way resumes with every id exactly once (the real embedded model)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from attribot_rag import AttributionResult, Attributor, Document
from attribot_rag.batch import attribute_records, completed_ids, read_jsonl, with_ids
from attribot_rag.cli import main

# Six short records, the third bad (no documents); the ids: line numbers, and one of their own.
RECORDS: list[dict] = [
    {
        "question": "Where is the Eiffel Tower?",
        "documents": ["The Eiffel Tower is in Paris. It opened in 1889.", "Bananas are yellow."],
        "answer": "It is in Paris.",
    },
    {
        "id": "moon",
        "question": "Who walked on the Moon first?",
        "documents": [
            {"text": "Neil Armstrong walked on the Moon in 1969.", "id": "apollo", "title": "Apollo 11"},
            "The Moon orbits the Earth.",
            "Cats sleep a lot.",
        ],
        "answer": "Neil Armstrong, in 1969.",
    },
    {"question": "What color is the sky?", "documents": [], "answer": "Blue."},
    {
        "question": "What do cats do?",
        "documents": ["Cats sleep a lot. They purr.", "Dogs bark."],
        "answer": "Cats sleep a lot.",
        "options": {"method": "exact"},
    },
    {
        "question": "What is water made of?",
        "documents": ["Water is hydrogen and oxygen.", "Salt is sodium chloride."],
        "answer": "Hydrogen and oxygen.",
    },
    {
        "question": "Which planet is red?",
        "documents": ["Mars looks red. It has iron oxide dust.", "Venus is hot.", "Jupiter is big."],
        "answer": "Mars is red.",
    },
]
IDS = [1, "moon", 3, 4, 5, 6]


@pytest.fixture(scope="module")
def expected(attributor: Attributor) -> dict[int | str, AttributionResult]:
    """Each good record attributed by a direct ``attribute()`` call."""
    direct = {}
    for record_id, record in zip(IDS, RECORDS, strict=True):
        if record["documents"]:
            documents = [d if isinstance(d, str) else Document(**d) for d in record["documents"]]
            direct[record_id] = attributor.attribute(
                record["question"], documents, record["answer"], **record.get("options", {})
            )
    return direct


def scores(result: AttributionResult) -> tuple:
    return result.full_logprob, [s.score for s in result.documents], [s.score for s in result.sentences]


def write_jsonl(path: Path, records: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def output_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_one_bad_record_is_one_error_line_and_scores_equal_direct_calls(attributor: Attributor, expected: dict) -> None:
    results = list(attribute_records(RECORDS, attributor))
    assert [r.id for r in results] == IDS
    assert [r.id for r in results if r.error is not None] == [3]
    assert results[2].result is None and "documents" in results[2].error
    for item in results:
        if item.error is None:
            assert item.result is not None
            assert scores(item.result) == scores(expected[item.id])
    assert results[3].result.method == "exact"  # the record's own options win
    line = json.loads(results[2].model_dump_json())
    assert line == {"id": 3, "result": None, "error": results[2].error}


def test_a_failing_attribution_is_its_record_error_line(attributor: Attributor) -> None:
    too_long = {"id": "long", "question": "Why?", "documents": ["word " * 10_000], "answer": "Because."}
    [item] = attribute_records([too_long], attributor)
    assert item.id == "long" and item.result is None
    assert item.error.startswith("ValueError: prompt and answer are")


def test_reader_keeps_every_line_as_a_record_or_an_error(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_text(
        '{"question": "q"}\n\nnot json\n[1, 2]\n{"id": [1], "question": "q"}\n{"id": "x"}\n{"id": "x"}\n',
        encoding="utf-8",
    )
    records = list(with_ids(read_jsonl(path)))
    assert [record_id for record_id, _ in records] == [1, 3, 4, 5, "x", "x"]
    assert records[0][1] == {"question": "q", "id": 1}  # the id: its line number
    assert [type(r).__name__ for _, r in records] == [
        "dict",
        "InvalidRecord",
        "InvalidRecord",
        "InvalidRecord",
        "dict",
        "InvalidRecord",
    ]
    assert "not JSON" in records[1][1].error and "duplicate id 'x'" in records[5][1].error


def test_completed_ids_cuts_a_half_written_last_line(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    path.write_text(
        '{"id": 1, "result": null, "error": "e"}\n{"id": "a", "result": null, "error": null}\n{"id": 3, "res',
        encoding="utf-8",
    )
    assert completed_ids(path) == {1, "a"}
    assert path.read_text(encoding="utf-8").endswith("null}\n")
    path.write_text('{"id": 1}\nnot an output line\n', encoding="utf-8")
    with pytest.raises(ValueError, match="cannot resume"):
        completed_ids(path)


def test_existing_output_needs_resume(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    records, output = write_jsonl(tmp_path / "in.jsonl", RECORDS), tmp_path / "out.jsonl"
    output.write_text('{"id": 1, "result": null, "error": "e"}\n', encoding="utf-8")
    assert main(["batch", "--input", str(records), "--output", str(output)]) == 2
    assert "pass --resume" in capsys.readouterr().err
    assert output.read_text(encoding="utf-8") == '{"id": 1, "result": null, "error": "e"}\n'


def test_killed_job_resumes_with_every_id_exactly_once(tmp_path: Path, expected: dict) -> None:
    records, output = write_jsonl(tmp_path / "in.jsonl", RECORDS), tmp_path / "out.jsonl"
    command = [
        sys.executable,
        "-c",
        "import sys; from attribot_rag.cli import main; sys.exit(main())",
        "batch",
        "--input",
        str(records),
        "--output",
        str(output),
    ]
    job = subprocess.Popen(command, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not (output.exists() and output.read_bytes().count(b"\n") >= 2):
        assert job.poll() is None and time.monotonic() < deadline, "the job ended or stalled before its second line"
        time.sleep(0.01)
    os.kill(job.pid, signal.SIGKILL)
    job.wait()
    killed = output_lines(output)
    assert 2 <= len(killed) < len(RECORDS), "the kill came too late to leave work for --resume"
    with output.open("a", encoding="utf-8") as handle:  # as if killed while writing a line
        handle.write('{"id": 6, "result": {"meth')
    subprocess.run([*command, "--resume"], check=True, stderr=subprocess.DEVNULL, timeout=300)
    lines = output_lines(output)
    assert sorted(map(str, (line["id"] for line in lines))) == sorted(map(str, IDS))
    assert lines[: len(killed)] == killed
    by_id = {line["id"]: line for line in lines}
    assert by_id[3]["result"] is None and by_id[3]["error"]
    for record_id, result in expected.items():
        assert by_id[record_id]["error"] is None
        assert scores(AttributionResult.model_validate(by_id[record_id]["result"])) == scores(result)
