"""Shared by every test suite of the repository: one embedded model per session, offline."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest  # noqa: E402

from attribot_rag import Attributor  # noqa: E402


@pytest.fixture(scope="session")
def attributor() -> Attributor:
    """The embedded default model, loaded once for the whole test session (never mocked)."""
    return Attributor()
