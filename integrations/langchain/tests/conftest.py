import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402
from attribot_rag import Attributor  # noqa: E402


@pytest.fixture(scope="session")
def attributor() -> Attributor:
    """The embedded default model, loaded once for the whole test session (never mocked)."""
    return Attributor()


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """On two shared cores torch's one-thread-per-core default oversubscribes them as soon as
    another process computes (measured on this directory: 246 s with 2 threads, 75 s with 1).
    An explicit OMP_NUM_THREADS wins; the setting is restored after each test here."""
    if "OMP_NUM_THREADS" in os.environ or (os.cpu_count() or 1) > 2:
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
