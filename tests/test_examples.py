"""The examples in examples/ run as a user runs them (a fresh interpreter, the embedded model,
offline) and cite the sentence that carries their answer."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"

pytestmark = [pytest.mark.model, pytest.mark.slow]


def run_example(name: str, *args: str, cwd: Path) -> str:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / name), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_langchain_example(tmp_path: Path) -> None:
    out = run_example("langchain_rag.py", "Where was Marie Curie born?", cwd=tmp_path)
    assert "Q: Where was Marie Curie born?" in out
    assert "marie-curie: She was born in Warsaw." in out, out


def test_llamaindex_example(tmp_path: Path) -> None:
    out = run_example("llamaindex_rag.py", cwd=tmp_path)
    assert "no citations" not in out, out
    assert "In 1911 she won a second Nobel Prize, in chemistry" in out, out
