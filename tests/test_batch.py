"""Batch jobs, local engine: one bad record is one error line, scores equal direct calls, and a
job killed mid-way resumes with every id exactly once (the real embedded model)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from itertools import combinations
from pathlib import Path

import pytest

from attribot_rag import AttributionResult, Attributor, Document
from attribot_rag.cli import main
from attribot_rag.serving.batch import attribute_file, attribute_records, completed, count_records, read_jsonl, with_ids

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


def test_completed_cuts_a_half_written_last_line(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    path.write_text(
        '{"id": 1, "result": null, "error": "e"}\n{"id": "a", "result": null, "error": null}\n{"id":3,"res',
        encoding="utf-8",
    )
    assert completed(path).ids == {1, "a"}
    assert path.read_text(encoding="utf-8").endswith("null}\n")
    path.write_text('{"id": 1}\nnot an output line\n', encoding="utf-8")
    with pytest.raises(ValueError, match="cannot resume"):
        completed(path)


@pytest.mark.parametrize(
    "text",
    [
        '{"id": 1, "result": null, "error": "e"}\n{"id": 2, "question": "q", "documents": ["d"]}\n',
        '{"id": 1, "result": null, "error": "e"}\n{"id": 2, "question": "q", "documents": ["d"]}',
        '{"id": 1, "result": null, "error": "e"}\n{"question": "q", "documents": ["d", "e"], "ans',
        '{"id": 1, "question": "q", "documents": ["d"]}',
    ],
    ids=["a record line", "an unterminated record", "a record cut off", "one unterminated record"],
)
def test_a_file_with_a_line_not_ours_is_never_resumed_nor_truncated(tmp_path: Path, text: str) -> None:
    """A line is ours only with our keys (``id``, and ``result`` or ``error``); a cut-off last
    line only where it begins as ours do. Else the file (an input, say) is left as it is."""
    path = tmp_path / "not-ours.jsonl"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ValueError, match="not an output line of attribot-rag batch"):
        completed(path)
    assert path.read_text(encoding="utf-8") == text


def test_the_input_file_is_never_the_output(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The issue's case: ``--output`` given the input file, whose last record has no newline,
    with ``--resume``: the record was cut from the disk. Refused before any model loads, by
    name, through a symlink or a relative path too."""
    records = tmp_path / "in.jsonl"
    data = write_jsonl(records, RECORDS).read_bytes().rstrip(b"\n")
    records.write_bytes(data)
    (tmp_path / "link.jsonl").symlink_to(records)
    monkeypatch.chdir(tmp_path)
    for output in (str(records), "link.jsonl", "./in.jsonl"):
        for resume in ([], ["--resume"]):
            assert main(["batch", "--input", str(records), "--output", output, *resume]) == 2
            assert "is the input file" in capsys.readouterr().err
            assert records.read_bytes() == data


def test_a_line_that_is_not_utf8_is_its_own_error_line(tmp_path: Path) -> None:
    """One bad byte costs its line, not the job (it refused the whole file, naming no line)."""
    path = tmp_path / "in.jsonl"
    good = json.dumps({"id": "a", "question": "q", "documents": ["d"]}).encode()
    path.write_bytes(good + b'\n{"question": "caf\xe9"}\n\n' + good.replace(b'"a"', b'"b"') + b"\n")
    records = list(read_jsonl(path))
    assert count_records(path) == len(records) == 3
    assert [r["id"] if isinstance(r, dict) else r.id for r in records] == ["a", 2, "b"]
    assert records[1].error == "line 2 is not UTF-8 text (byte 17)"


def test_every_input_record_gets_one_line_whatever_a_resumed_output_held(
    tmp_path: Path, attributor: Attributor
) -> None:
    """Repeated ids with ``--resume``: the repeats' error lines are told from the first
    record's line, so whatever subset of the lines a killed job left (the Ray engine writes
    the repeats' lines first), the resumed file holds exactly the full job's lines. It used to
    skip every record of an id already in the file: 18 records gave 17 lines."""
    records = write_jsonl(
        tmp_path / "in.jsonl",
        [
            {"id": "a", "question": "Who?", "documents": ["Ann wrote it."], "answer": "Ann."},
            {"id": "a", "question": "Who?", "documents": ["Bob wrote it."], "answer": "Bob."},
            {"id": "b", "question": "Who?", "documents": []},
            {"id": "a", "question": "Who?", "documents": []},
            {"id": 5, "question": "Who?", "documents": []},
        ],
    )

    def engine(pending):
        return attribute_records(pending, attributor)

    def without_timings(path: Path) -> list[str]:
        """The file's lines, sorted, without the one field that differs from run to run."""
        lines = output_lines(path)
        for line in lines:
            if line["result"] is not None:
                del line["result"]["timings"]
        return sorted(json.dumps(line, sort_keys=True) for line in lines)

    full, output = tmp_path / "full.jsonl", tmp_path / "out.jsonl"
    attribute_file(records, full, engine)
    lines = full.read_text(encoding="utf-8").splitlines(keepends=True)
    assert len(lines) == 5
    for kept in range(1, len(lines)):
        for subset in combinations(lines, kept):
            output.write_text("".join(subset), encoding="utf-8")
            summary = attribute_file(records, output, engine, resume=True)
            assert without_timings(output) == without_timings(full), subset
            assert summary.skipped == kept and summary.results + summary.errors == len(lines) - kept


def test_a_full_disk_names_the_output_file(tmp_path: Path, attributor: Attributor) -> None:
    records = write_jsonl(tmp_path / "in.jsonl", RECORDS[2:3])  # an error line: no model call
    with pytest.raises(OSError, match=r"cannot write /dev/full \(No space left on device\)"):
        attribute_file(records, "/dev/full", lambda pending: attribute_records(pending, attributor))


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
