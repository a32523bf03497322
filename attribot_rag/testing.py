"""Pytest support for the test suites of attribot-rag and its integrations, so that each suite
runs from its own directory with the same fixture and tiers. A ``conftest.py`` imports it:

    from attribot_rag.testing import attributor, pytest_collection_modifyitems, pytest_configure  # noqa: F401

- ``attributor``: the embedded default model, loaded once per process (``shared_attributor``,
  the instance the integrations use by default), never mocked.
- Tiers (strict markers): ``model`` is set on every test that uses ``attributor`` (a test that
  loads a model otherwise marks itself), so ``pytest -m "not model"`` is the fast tier;
  ``slow`` marks tests of more than about 30 s on one CPU thread; ``cuda`` tests are skipped
  where CUDA is not available.
- ``generating()``, ``generation_ends(seconds)``: whether a streamed answer's generation
  thread still runs, and waiting for it to stop (the streaming tests of both integrations).
- Offline: no test reaches the Hugging Face hub.
"""

from __future__ import annotations

import os
import threading
import time
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:  # the fast tier imports no torch
    from .api.attributor import Attributor

MARKERS = {
    "model": "loads a language model (the embedded SmolLM2-135M unless the test says otherwise)",
    "slow": "takes more than about 30 s on one CPU thread",
    "cuda": "needs a CUDA GPU (skipped without one)",
}


def pytest_configure(config: pytest.Config) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    registered = "\n".join(config.getini("markers"))
    for name, description in MARKERS.items():
        if f"{name}:" not in registered:
            config.addinivalue_line("markers", f"{name}: {description}")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    cuda: bool | None = None
    for item in items:
        if "attributor" in getattr(item, "fixturenames", ()) and not item.get_closest_marker("model"):
            item.add_marker(pytest.mark.model)
        if item.get_closest_marker("cuda") and not item.get_closest_marker("skip"):
            if cuda is None:
                import torch

                cuda = torch.cuda.is_available()
            if not cuda:
                item.add_marker(pytest.mark.skip(reason="needs a CUDA GPU"))


@pytest.fixture(scope="session")
def attributor() -> Attributor:
    """The embedded default model, loaded once per process and shared by every suite."""
    from .api.attributor import shared_attributor

    return shared_attributor()


def generating() -> bool:
    """Whether a streamed generation is still running (its thread holds the model)."""
    from .api.streaming import STREAM_THREAD

    return any(t.name == STREAM_THREAD and t.is_alive() for t in threading.enumerate())


def generation_ends(seconds: float = 10) -> bool:
    """Whether every streamed generation stops within ``seconds``."""
    deadline = time.monotonic() + seconds
    while generating() and time.monotonic() < deadline:
        time.sleep(0.01)
    return not generating()
