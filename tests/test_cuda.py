"""The scorer and the Attributor on a CUDA GPU (``pytest -m cuda``, step 1 of
``scripts/gpu_check.sh``), on random-weight models of a real shape (Llama-3.2-1B) built on the
device: exactness needs no trained weights. ``exact`` against ``naive`` in float32 and bf16,
batched against one row at a time, the out-of-memory backoff under a real CUDA out-of-memory
error, two threads sharing one Attributor, ``fast`` and ``rescore``.

Each test but the out-of-memory one also runs on the CPU with a tiny shape: the same code, so
the GPU check is known to work before a device sees it. Measured differences are recorded
(``record_property``) for the check's JSON."""

from __future__ import annotations

import heapq
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
from transformers import AutoTokenizer

from attribot_rag import Attributor, LoadedModel
from attribot_rag.core.scorer import Scorer
from benchmarks import gpu

pytestmark = pytest.mark.model  # builds language models (random weights), on either device

SHAPE = {"cuda": "llama-3.2-1b", "cpu": "tiny-large"}
# documents, sentences each, tokens per sentence, answer tokens: ~450 and ~80 prompt tokens
SIZE = {"cuda": (4, 3, 30, 30), "cpu": (2, 2, 10, 8)}
FLOAT32 = 2e-3  # nats: the prefix cache, batching and packing change rounding only


@pytest.fixture(scope="module", params=[pytest.param("cuda", marks=pytest.mark.cuda), "cpu"])
def device(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(gpu.tokenizer_dir())


@pytest.fixture(scope="module")
def float32(device: str, tokenizer) -> LoadedModel:
    torch.manual_seed(0)
    return LoadedModel(gpu.random_model(SHAPE[device], device, torch.float32), tokenizer, SHAPE[device])


@pytest.fixture(scope="module")
def bfloat16(float32: LoadedModel, device: str) -> LoadedModel:
    """The float32 model's weights rounded to bf16."""
    model = gpu.random_model(float32.name, device, torch.bfloat16)
    model.load_state_dict(float32.model.state_dict())
    return LoadedModel(model, float32.tokenizer, float32.name)


@pytest.fixture(scope="module")
def problem(device: str, tokenizer) -> tuple:
    return gpu.workload(tokenizer, *SIZE[device])


def _batch_sizes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The rows of every batched exact forward from now on (the real method runs)."""
    sizes: list[int] = []
    real = Scorer._score_batch

    def counted(self, ablations, *args):
        sizes.append(len(ablations))
        return real(self, ablations, *args)

    monkeypatch.setattr(Scorer, "_score_batch", counted)
    return sizes


def test_exact_equals_naive_in_float32(float32: LoadedModel, problem: tuple, device: str, record_property) -> None:
    attributor = Attributor(float32)
    naive = attributor.attribute(*problem, method="naive")
    exact = attributor.attribute(*problem, method="exact")
    difference = gpu.max_difference(exact, naive)
    record_property("float32 exact vs naive max abs diff (nats)", difference)
    assert difference <= FLOAT32
    assert max(map(abs, gpu.scores(exact)[:-1])) > 5 * FLOAT32  # the scores say something
    assert exact.settings.device.startswith(device) and exact.settings.dtype == "float32"


def test_exact_equals_naive_in_bfloat16_within_bf16s_own_error(
    float32: LoadedModel, bfloat16: LoadedModel, problem: tuple, record_property
) -> None:
    """The tolerance is measured on the spot: caching and batching in bf16 may move scores by
    no more than computing in bf16 at all does (bf16 against float32, same weights, naive).
    On the CPU this held with room (0.35 to 0.65 of it on tiny and 4-layer shapes)."""
    reference = Attributor(float32).attribute(*problem, method="naive")
    attributor = Attributor(bfloat16)
    naive = attributor.attribute(*problem, method="naive")
    exact = attributor.attribute(*problem, method="exact")
    tolerance = gpu.max_difference(naive, reference)
    difference = gpu.max_difference(exact, naive)
    record_property("bf16 exact vs naive max abs diff (nats)", difference)
    record_property("bf16 vs float32 naive max abs diff (nats)", tolerance)
    assert difference <= tolerance
    assert exact.settings.dtype == "bfloat16"


def test_batched_equals_one_row_at_a_time(
    float32: LoadedModel, problem: tuple, device: str, monkeypatch: pytest.MonkeyPatch, record_property
) -> None:
    one = Attributor(float32, batch_size=1).attribute(*problem, method="exact")
    sizes = _batch_sizes(monkeypatch)
    # on the GPU the batch size follows free memory; the CPU runs one row at a time unless told
    batched = Attributor(float32, batch_size=None if device == "cuda" else 8).attribute(*problem, method="exact")
    difference = gpu.max_difference(batched, one)
    record_property("float32 batched vs one row max abs diff (nats)", difference)
    record_property("largest batch", max(sizes))
    assert max(sizes) > 1
    assert difference <= FLOAT32


@pytest.mark.cuda
def test_a_real_out_of_memory_error_halves_the_batch_and_the_model_stays_usable(tokenizer, record_property) -> None:
    """A memory cap the scorer does not know about (``set_per_process_memory_fraction``): its
    memory rule plans one batch of all 32 ablations, the forward runs out of device memory,
    and the batch halves until it fits; later calls start at the halved size."""
    torch.manual_seed(0)
    model = gpu.random_model("llama-3.2-1b", "cuda", torch.float32)
    prompt = list(range(1000, 2024))
    answer = list(range(3000, 3032))
    # one token replaced at the same place: one shared prefix, equal lengths, one batch
    ablations = [[*prompt[:8], token, *prompt[9:]] for token in range(4000, 4032)]
    full, reference = Scorer(model, batch_size=1).loo(prompt, answer, ablations)
    scorer = Scorer(model)
    row = scorer.row_bytes(len(prompt), len(prompt) - 7 + len(answer), len(answer))
    torch.cuda.empty_cache()
    baseline = torch.cuda.memory_allocated()
    sizes: list[int] = []
    real = scorer._score_batch

    def counted(batch, *args):
        sizes.append(len(batch))
        return real(batch, *args)

    scorer._score_batch = counted  # type: ignore[method-assign]
    total = torch.cuda.get_device_properties(0).total_memory
    torch.cuda.set_per_process_memory_fraction((torch.cuda.memory_reserved() + 6 * row) / total)
    try:
        capped_full, capped = scorer.loo(prompt, answer, ablations)
        cap, first = scorer._batch_cap, list(sizes)
        sizes.clear()
        later = scorer.loo(prompt, answer, ablations)[1]
        later_sizes = list(sizes)
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0)
    record_property("batch sizes tried", str(first))
    record_property("batch size after the backoff", cap)
    assert first[0] == len(ablations) and cap is not None and 1 <= cap < len(ablations)
    assert later_sizes[0] == cap and max(later_sizes) <= cap  # later calls start at the halved size
    assert torch.allclose(capped, reference, atol=FLOAT32) and torch.allclose(later, reference, atol=FLOAT32)
    assert torch.allclose(capped_full, full, atol=FLOAT32)
    # usable afterwards, with nothing of the failed forwards left allocated
    assert torch.allclose(scorer.loo(prompt, answer, ablations)[1], reference, atol=FLOAT32)
    torch.cuda.empty_cache()
    assert torch.cuda.memory_allocated() <= baseline + 64 * 2**20


def test_two_threads_share_one_attributor(bfloat16: LoadedModel, tokenizer, device: str) -> None:
    """Two threads, each attributing its own answer twice at the same time, get what each
    gets alone: calls are serialised, nothing of one leaks into the other."""
    problems = [gpu.workload(tokenizer, *SIZE[device], seed=seed) for seed in (1, 2)]
    attributor = Attributor(bfloat16)
    alone = [gpu.scores(attributor.attribute(*p, method="exact")) for p in problems]
    start = threading.Barrier(2)

    def work(index: int) -> list[list[float]]:
        start.wait()
        return [gpu.scores(attributor.attribute(*problems[index], method="exact")) for _ in range(2)]

    with ThreadPoolExecutor(2) as pool:
        together = list(pool.map(work, [0, 1]))
    assert together == [[alone[0]] * 2, [alone[1]] * 2]
    assert alone[0] != alone[1]


def test_fast_and_rescore(float32: LoadedModel, problem: tuple, device: str, record_property) -> None:
    """``fast`` scores every span from the frozen context; ``rescore=3`` replaces its 3 best
    sentences' estimates by their exact LOO and keeps the rest."""
    attributor = Attributor(float32)
    fast = attributor.attribute(*problem, method="fast")
    rescored = attributor.attribute(*problem, method="fast", rescore=3)
    exact = attributor.attribute(*problem, method="exact")
    top = set(heapq.nlargest(3, range(len(fast.sentences)), key=lambda i: fast.sentences[i].score))
    for i, sentence in enumerate(rescored.sentences):
        expected = exact.sentences[i] if i in top else fast.sentences[i]
        assert sentence.score == pytest.approx(expected.score, abs=FLOAT32), i
    assert [d.score for d in rescored.documents] == pytest.approx([d.score for d in fast.documents], abs=FLOAT32)
    record_property(
        "fast vs exact max abs diff (nats)",
        max(abs(a.score - b.score) for a, b in zip(fast.sentences, exact.sentences, strict=True)),
    )
    assert fast.settings.device.startswith(device)
