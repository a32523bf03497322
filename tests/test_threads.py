"""``threads=``: torch's CPU thread count, for the library, the command line and Ray actors.
A busy 2-core machine spent 50 s of CPU per answer with torch's default threads (their OpenMP
workers spin), about 8 s with one."""

import pytest
import torch

from attribot_rag import Attributor


@pytest.mark.model
def test_threads_sets_torchs_process_wide_thread_count() -> None:
    before = torch.get_num_threads()
    try:
        Attributor(threads=1)
        assert torch.get_num_threads() == 1
        Attributor(threads=2)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("threads", [0, -1, 1.5, True, "2"])
def test_a_bad_thread_count_is_refused_before_loading(threads) -> None:
    with pytest.raises(ValueError, match="threads must be a positive integer"):
        Attributor("/nonexistent", threads=threads)
