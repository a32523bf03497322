"""The ``attribot-rag`` command end to end: real runs of the embedded model, and every user
error as one line on standard error with exit code 2 (usage) or 1 (run time), checked before
any model loads."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from attribot_rag.cli import main

REQUEST = {
    "question": "When was the Veltrana Bridge completed?",
    "documents": [
        "The Veltrana Bridge spans the river Osk. It was completed in 1742.",
        {"text": "Bananas are yellow fruits. They grow in tropical climates.", "id": "bananas"},
    ],
    "answer": "It was completed in 1742.",
}


def _write(path: Path, content: object) -> str:
    path.write_text(content if isinstance(content, str) else json.dumps(content), encoding="utf-8")
    return str(path)


def _cli(*argv: str) -> subprocess.Popen:
    """The installed command as a user runs it: its own process, exit code and streams."""
    command = Path(sys.executable).with_name("attribot-rag")
    return subprocess.Popen(
        [str(command), *argv], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


@pytest.mark.model
def test_attribute_prints_the_table_and_which_method_auto_chose(tmp_path: Path, capsys) -> None:
    assert main(["attribute", "--input", _write(tmp_path / "q.json", REQUEST), "--method", "exact"]) == 0
    out, err = capsys.readouterr()
    assert out.startswith("answer: It was completed in 1742.\nmethod: exact\n")
    assert "   1 " in out and "It was completed in 1742.[1]" in out
    assert err == "", "no progress bars or notes off a terminal"
    threads = torch.get_num_threads()
    try:
        assert main(["attribute", "--input", str(tmp_path / "q.json"), "--budget", "fast", "--threads", "1"]) == 0
        assert torch.get_num_threads() == 1  # torch's process-wide setting
    finally:
        torch.set_num_threads(threads)
    assert "method: fast, chosen by auto for budget fast (rescore=0, rescore_margin=None)\n" in capsys.readouterr().out


@pytest.mark.model
def test_json_from_standard_input_and_a_closed_pipe(tmp_path: Path) -> None:
    run = _cli("attribute", "--input", "-", "--json", "--method", "exact")
    out, err = run.communicate(json.dumps(REQUEST), timeout=300)
    assert run.returncode == 0 and err == ""
    assert json.loads(out)["answer"] == REQUEST["answer"]
    # `attribot-rag attribute --json | head -1`: the reader is gone before the result is ready.
    closed = _cli("attribute", "--input", _write(tmp_path / "q.json", REQUEST), "--json", "--method", "exact")
    closed.stdout.close()
    err = closed.stderr.read()
    assert closed.wait(timeout=300) == 1 and err == ""


@pytest.mark.model
@pytest.mark.slow
@pytest.mark.parametrize("path", ["core", "langchain"])
def test_demo_answers_and_attributes_a_bundled_question_with_the_default_method(path: str, capsys) -> None:
    if path == "langchain":
        pytest.importorskip("langchain_attribot")
    assert main(["demo", "--questions", "1", *(["--plain"] if path == "core" else [])]) == 0
    out, err = capsys.readouterr()
    assert f"path: {path}" in out and "Q: " in out and "A: " in out and "Sources:" in out and err == ""
    assert ", chosen by auto for budget balanced" in out  # the default the README recommends, on every path


USER_ERRORS = {
    "string documents": ({"question": "q", "documents": "abc"}, [], "q.json: documents: Input should be a valid list"),
    "missing question": ({"documents": ["a"]}, [], "q.json: give either 'question' or 'messages'"),
    "top-level list": (
        [REQUEST],
        [],
        'q.json: the top level must be a JSON object {"question", "documents", "answer"}, not an array',
    ),
    "number document": (
        {**REQUEST, "documents": ["a", 3]},
        [],
        'q.json: documents: document 1 is a number: give a string or an object with "text"',
    ),
    "null documents": ({**REQUEST, "documents": None}, [], "q.json: documents: Input should be a valid list"),
    "unknown key": ({**REQUEST, "anwser": "typo"}, [], "q.json: anwser: Extra inputs are not permitted"),
    "empty answer": ({**REQUEST, "answer": ""}, [], "q.json: answer: must not be empty (leave it out instead)"),
    "blank document": ({**REQUEST, "documents": ["a", " \n"]}, [], "q.json: document 1 is empty"),
    "lone surrogate": (
        '{"question": "wh\\udc00o?", "documents": ["a"]}',
        [],
        "q.json: question has a lone surrogate U+DC00 at character 2",
    ),
    "invalid JSON": (
        '{"question": "q",\n "documents": [}',
        [],
        "q.json: invalid JSON at line 2, column 16: Expecting value",
    ),
    "not UTF-8": (b'{"question": "caf\xe9"}', [], "q.json: not UTF-8 text (byte 17)"),
    "budget with another method": (
        REQUEST,
        ["--method", "exact", "--budget", "fast"],
        "--budget chooses what --method auto runs; it does not apply to --method exact",
    ),
    "pruned without target": (REQUEST, ["--method", "pruned"], "method pruned needs --target"),
    "keep_documents 0": (
        REQUEST,
        ["--keep-documents", "0"],
        "keep_documents: Input should be greater than or equal to 1",
    ),
    "rescore -1": (REQUEST, ["--rescore", "-1"], "rescore: Input should be greater than or equal to 0"),
    "keep_similar -1": (REQUEST, ["--keep-similar", "-1"], "keep_similar: Input should be greater than or equal to 0"),
    "model path missing": (
        REQUEST,
        ["--model", "/nonexistent/model"],
        "--model /nonexistent/model: no such file or directory",
    ),
    "model directory without a model": (REQUEST, ["--model", "."], "--model .: not a model directory (no config.json)"),
    "device not usable": (REQUEST, ["--device", "DEVICE"], "--device DEVICE: not usable here ("),
    "threads 0": (REQUEST, ["--threads", "0"], "--threads must be at least 1, not 0"),
    "input is a directory": (None, ["--input", "."], "--input .: is a directory, not a JSON file"),
    "input missing": (
        None,
        ["--input", "missing.json"],
        "--input missing.json: cannot read it (No such file or directory)",
    ),
}


@pytest.mark.parametrize(("content", "arguments", "message"), USER_ERRORS.values(), ids=USER_ERRORS.keys())
def test_user_errors_are_one_line_with_exit_code_2_before_any_model_loads(
    tmp_path: Path, monkeypatch, capsys, content, arguments, message
) -> None:
    def no_model(*args, **kwargs):
        raise AssertionError("a model was loaded before the input was checked")

    monkeypatch.setattr("attribot_rag.api.attributor.Attributor.__init__", no_model)
    if "DEVICE" in arguments:  # a device this machine's torch cannot use: cuda here, or a GPU too many
        import torch

        device = f"cuda:{torch.cuda.device_count()}" if torch.cuda.is_available() else "cuda"
        arguments, message = [device if a == "DEVICE" else a for a in arguments], message.replace("DEVICE", device)
    monkeypatch.chdir(tmp_path)
    if isinstance(content, bytes):
        (tmp_path / "q.json").write_bytes(content)
    elif content is not None:
        _write(tmp_path / "q.json", content)
    argv = ["attribute", *([] if "--input" in arguments else ["--input", "q.json"]), *arguments]
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and err.startswith(f"attribot-rag attribute: error: {message}"), err


def test_a_runtime_failure_is_one_line_with_exit_code_1(tmp_path: Path, capsys) -> None:
    # Offline (as the tests run), a Hugging Face id that is not in the local cache cannot load.
    assert (
        main(["attribute", "--input", _write(tmp_path / "q.json", REQUEST), "--model", "attribot-tests/no-such-model"])
        == 1
    )
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(
        "attribot-rag attribute: error: cannot load attribot-tests/no-such-model: "
    ), err


@pytest.mark.model
def test_an_option_whose_extra_is_missing_is_one_line_with_exit_code_1(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "bm25s", None)  # as if the similarity extra were not installed
    request = _write(tmp_path / "q.json", REQUEST)
    assert main(["attribute", "--input", request, "--method", "hierarchical", "--keep-similar", "1"]) == 1
    err = capsys.readouterr().err
    assert err == "attribot-rag attribute: error: keep_similar needs bm25s: pip install 'attribot-rag[similarity]'\n"


def test_help_is_fast_and_imports_no_torch() -> None:
    code = (
        "import sys\nfrom attribot_rag.cli import main\n"
        "for argv in (['--help'], ['attribute', '--help'], ['demo', '--help']):\n"
        "    try:\n        main(argv)\n    except SystemExit as done:\n        assert done.code == 0\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers'))\n"
        "print(heavy, file=sys.stderr)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stderr == "[]\n", done.stderr
    assert "--budget" in done.stdout and "--input" in done.stdout


def test_threads_on_the_ray_engine_is_refused_because_actors_follow_their_cpus(tmp_path: Path, capsys) -> None:
    argv = ["batch", "--input", "in.jsonl", "--output", str(tmp_path / "out.jsonl"), "--engine", "ray"]
    assert main([*argv, "--threads", "2"]) == 2
    assert capsys.readouterr().err == (
        "attribot-rag batch: error: --threads is for --engine local; "
        "a Ray actor runs one torch thread per CPU (--cpus-per-actor)\n"
    )
