import pytest

from attribot_rag import Attributor


@pytest.fixture(scope="session")
def attributor() -> Attributor:
    """The embedded default model, loaded once for the whole test session."""
    return Attributor()
