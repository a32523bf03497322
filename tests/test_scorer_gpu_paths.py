"""The scorer's device paths, tested on the CPU with injected memory figures and errors: the
batch-size rule, the out-of-memory backoff of every loop, batch splitting by prefix spread and
moving tensors to any device. The model is the real embedded one."""

from __future__ import annotations

import pytest
import torch

from attribot_rag.core.scorer import (
    MEMORY_SHARE,
    AttributionOutOfMemory,
    Scorer,
    is_out_of_memory,
    plan_batch,
    rows_that_fit,
)

GiB = 2**30


class FakeGpuScorer(Scorer):
    """The real scorer and model, told that it runs on a GPU with ``available`` bytes free."""

    def __init__(self, model, available: int, **kwargs):
        super().__init__(model, **kwargs)
        self.available = available

    @property
    def device(self) -> torch.device:
        return torch.device("cuda")

    def _available_memory(self) -> int:
        return self.available


@pytest.fixture(scope="module")
def model(attributor):
    return attributor.model


@pytest.fixture(scope="module")
def problem(attributor):
    prompt = attributor.tokenizer(
        "Documents: the bridge was completed in 1742. Bananas are yellow. The summit is snowy. Question: when?"
    ).input_ids
    answer = attributor.tokenizer(" In 1742.").input_ids
    # ablations: delete one word at a time (different shared prefixes and lengths)
    ablations = [prompt[:i] + prompt[i + 1 :] for i in range(2, len(prompt) - 2, 3)]
    return prompt, answer, ablations


def test_rows_that_fit_uses_a_share_of_memory_and_clamps() -> None:
    assert rows_that_fit(10 * GiB, GiB) == int(10 * MEMORY_SHARE)
    assert rows_that_fit(GiB // 10, GiB) == 1  # never zero: the backoff handles the rest
    assert rows_that_fit(1000 * GiB, GiB) == 64
    assert rows_that_fit(1000 * GiB, GiB, cap=8) == 8


def test_row_bytes_counts_cache_activations_and_answer_logits(model) -> None:
    scorer = Scorer(model)
    config = model.config
    kv = (
        2
        * config.num_hidden_layers
        * config.num_key_value_heads
        * (config.hidden_size // config.num_attention_heads)
        * 4
    )
    # the answer's float32 logits: rows x answer x vocabulary, with the log-softmax's copies
    assert scorer.row_bytes(0, 0, 100) == 3 * 100 * config.vocab_size * 4
    # cached tokens cost their keys/values only; computed ones their activations (MLP included) too
    assert scorer.row_bytes(1000, 0, 0) == 1000 * kv
    computed = scorer.row_bytes(0, 1000, 0) - 1000 * kv
    assert computed >= 1000 * 3 * config.intermediate_size * 4


def test_gpu_batch_size_follows_available_memory_and_remembers_a_halving(model) -> None:
    scorer = FakeGpuScorer(model, available=8 * GiB)
    row = scorer.row_bytes(2000, 2000, 50)
    assert scorer._batch_size(2000, 2000, 50) == int(8 * GiB * MEMORY_SHARE) // row
    scorer.available = row  # less than one row's share: still one row
    assert scorer._batch_size(2000, 2000, 50) == 1
    scorer.available = 8 * GiB
    scorer._batch_cap = 3  # what an out-of-memory error left behind
    assert scorer._batch_size(2000, 2000, 50) == 3
    # packed rows share one copy of the cache: more of them fit
    scorer._batch_cap = None
    assert scorer._batch_size(2000, 50, 10, packed=True) > scorer._batch_size(2000, 50, 10)


def test_cpu_batch_sizes(model) -> None:
    scorer = Scorer(model)
    assert scorer._batch_size(2000, 2000, 50) == 1  # padded ablations: one per forward
    assert scorer._batch_size(2000, 50, 10, packed=True) == 10  # equal-length tails: packed
    assert Scorer(model, batch_size=5)._batch_size(2000, 2000, 50) == 5


def test_out_of_memory_is_recognised() -> None:
    assert is_out_of_memory(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    assert is_out_of_memory(RuntimeError("CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`"))
    assert is_out_of_memory(RuntimeError("MPS backend out of memory"))
    assert not is_out_of_memory(RuntimeError("shape mismatch"))


def _failing_above(scorer: Scorer, method: str, rows: int, error: Exception) -> list[int]:
    """Make ``scorer.method`` raise ``error`` for batches of more than ``rows``; return the
    list of batch sizes it was called with."""
    real = getattr(scorer, method)
    sizes: list[int] = []

    def patched(*args, **kwargs):
        size = len(args[0]) if method == "_score_batch" else 1
        sizes.append(size)
        if size > rows:
            raise error
        return real(*args, **kwargs)

    setattr(scorer, method, patched)
    return sizes


def test_loo_halves_the_batch_on_out_of_memory_and_keeps_the_scores(model, problem) -> None:
    prompt, answer, _ = problem
    # one token replaced at the same place: one shared prefix, equal lengths, so one batch
    ablations = [[*prompt[:10], token, *prompt[11:]] for token in range(1000, 1008)]
    full, reference = Scorer(model).loo(prompt, answer, ablations)
    scorer = Scorer(model, batch_size=8)
    sizes = _failing_above(scorer, "_score_batch", 2, torch.OutOfMemoryError("CUDA out of memory"))
    batched_full, batched = scorer.loo(prompt, answer, ablations)
    assert sizes[:3] == [8, 4, 2] and scorer._batch_cap == 2  # halved, then retried
    assert torch.allclose(batched, reference, atol=2e-3) and torch.allclose(batched_full, full)
    # the halving is remembered: the next call starts at 2 rows
    sizes.clear()
    scorer.loo(prompt, answer, ablations)
    assert max(sizes) <= 2


def test_cublas_allocation_failure_backs_off_too(model, problem) -> None:
    prompt, answer, ablations = problem
    scorer = Scorer(model, batch_size=4)
    _failing_above(
        scorer,
        "_score_batch",
        1,
        RuntimeError("CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`"),
    )
    scorer.loo(prompt, answer, ablations)
    assert scorer._batch_cap == 1


def test_out_of_memory_at_one_row_raises_a_clear_error_and_the_scorer_stays_usable(model, problem) -> None:
    prompt, answer, ablations = problem
    scorer = Scorer(model)
    real = scorer._score_batch
    _failing_above(scorer, "_score_batch", 0, torch.OutOfMemoryError("CUDA out of memory"))
    with pytest.raises(AttributionOutOfMemory, match="single ablation"):
        scorer.loo(prompt, answer, ablations)
    scorer._score_batch = real
    assert scorer.loo(prompt, answer, ablations)[1].shape == (len(ablations), len(answer))


def test_other_errors_are_not_swallowed(model, problem) -> None:
    prompt, answer, ablations = problem
    scorer = Scorer(model, batch_size=4)
    _failing_above(scorer, "_score_batch", 0, RuntimeError("shape mismatch"))
    with pytest.raises(RuntimeError, match="shape mismatch"):
        scorer.loo(prompt, answer, ablations)
    assert scorer._batch_cap is None


def test_frozen_and_naive_loops_back_off_too(model, problem) -> None:
    prompt, answer, ablations = problem
    spans = [(i, i + 2) for i in range(1, len(prompt) - 6, 4)]
    tail = len(prompt) - 4
    _, reference = Scorer(model, batch_size=1).frozen_loo(prompt, answer, tail, spans)
    scorer = Scorer(model, batch_size=8)
    real = scorer._decoder
    calls: list[int] = []

    def decoder(*args, **kwargs):
        if kwargs.get("position_ids") is None:  # the full prompt's forward
            return real(*args, **kwargs)
        rows = kwargs["input_ids"].shape[1] // (len(prompt) - tail + len(answer))  # packed tails
        calls.append(rows)
        if rows > 2:
            raise torch.OutOfMemoryError("CUDA out of memory")
        return real(*args, **kwargs)

    scorer._decoder = decoder
    _, packed = scorer.frozen_loo(prompt, answer, tail, spans)
    assert max(calls) > 2 and scorer._batch_cap == 2
    assert torch.allclose(packed, reference, atol=2e-3)

    naive = Scorer(model)
    _failing_above(naive, "naive_logprobs", 0, torch.OutOfMemoryError("CUDA out of memory"))
    with pytest.raises(AttributionOutOfMemory):
        naive.naive_loo(prompt, answer, ablations[:2])


def test_batches_split_where_the_shared_prefix_spread_wastes_tokens() -> None:
    # sorted by shared prefix: one row starting at 100, three sharing 900 of 990 tokens
    prefixes = [900, 905, 910, 100]
    lengths = [990, 990, 990, 990]
    # batched with the others, the first row would make them recompute 800 tokens each
    assert plan_batch([3, 0, 1, 2], prefixes, lengths, answer=10) == [3]
    assert plan_batch([0, 1, 2], prefixes, lengths, answer=10) == [0, 1, 2]
    # padding counts too: rows sharing a prefix but of very different lengths split
    assert plan_batch([0, 1], [500, 500], [990, 600], answer=10) == [0]


def test_to_device_moves_to_any_device(model) -> None:
    class MetaScorer(Scorer):
        @property
        def device(self) -> torch.device:
            return torch.device("meta")  # stands for mps, xpu, ...: no pinning, a plain move

    moved = MetaScorer(model)._to_device(torch.arange(3))
    assert moved.device.type == "meta"
    assert Scorer(model)._to_device(torch.arange(3)).device.type == "cpu"
