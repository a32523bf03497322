"""The test tiers of ``attribot_rag.testing`` (what every suite's conftest.py imports): a test
that uses the session model is a ``model`` test, ``-m "not model"`` runs without loading it,
``cuda`` tests are skipped without a GPU, and markers are strict. Run in a separate pytest."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch

CONFTEST = (
    "from attribot_rag.testing import attributor, pytest_collection_modifyitems, pytest_configure  # noqa: F401\n"
)
TESTS = """
import pytest

def test_fast():
    pass

@pytest.fixture
def answer(attributor):
    return attributor.generate("Which?", ["It."])

def test_uses_the_model_through_a_fixture(answer):
    pass

@pytest.mark.cuda
def test_gpu():
    pass

@pytest.mark.slow
def test_slow():
    pass
"""


def _pytest(folder: Path, *args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--strict-markers", "-rs", "-q", *args]
    env = {**os.environ, "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}  # only the tiers under test
    return subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True, timeout=120)


def test_tiers_select_and_skip(tmp_path: Path) -> None:
    (tmp_path / "conftest.py").write_text(CONFTEST)
    (tmp_path / "test_tiered.py").write_text(TESTS)

    fast = _pytest(tmp_path, "-m", "not model")
    assert fast.returncode == 0, fast.stdout + fast.stderr
    if torch.cuda.is_available():
        assert "3 passed, 1 deselected" in fast.stdout
    else:
        assert "2 passed, 1 skipped, 1 deselected" in fast.stdout
        assert "needs a CUDA GPU" in fast.stdout
    assert "torch" not in fast.stderr  # nothing tried to load a model

    listed = _pytest(tmp_path, "-m", "model or slow", "--collect-only")
    assert "test_uses_the_model_through_a_fixture" in listed.stdout and "test_slow" in listed.stdout
    assert "2/4 tests collected (2 deselected)" in listed.stdout


def test_markers_are_strict(tmp_path: Path) -> None:
    (tmp_path / "conftest.py").write_text(CONFTEST)
    (tmp_path / "test_typo.py").write_text("import pytest\n\n@pytest.mark.modle\ndef test_typo():\n    pass\n")
    typo = _pytest(tmp_path)
    assert typo.returncode != 0 and "'modle' not found in `markers`" in typo.stdout + typo.stderr
