"""Exactness in each dtype, with the tolerance each earns, and the dtype settings: the prefix
cache, batching and packing change only rounding, and ``budget="faithful"`` always scores
in float32."""

from __future__ import annotations

import os

import pytest
import torch

from attribot_rag import Attributor, Document, LoadedModel
from attribot_rag.core import models


def _bf16_on_amx() -> bool:
    """Whether oneDNN runs bf16 matmuls on AMX tiles here (Intel Sapphire Rapids and later,
    unless ``ONEDNN_MAX_CPU_ISA`` caps it below AMX)."""
    isa = os.environ.get("ONEDNN_MAX_CPU_ISA", "ALL").upper()
    return bool(getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)()) and (isa == "ALL" or "AMX" in isa)


# Largest |exact - naive| and |batched - one at a time| seen on these layouts, times ~3:
# float32 4e-6 nats (same float32 head on both paths); bfloat16 6e-3 with AVX-512 BF16 kernels
# and 0.22 with AMX tiles (the body's rounding differs between a full forward and a cached
# suffix, and AMX's more with the row count). bfloat16 against float32 is another matter: up
# to 0.86 nats on 4-document HotpotQA questions (benchmarks/results/speed_4docs.md).
TOLERANCE = {torch.float32: 2e-3, torch.bfloat16: 0.7 if _bf16_on_amx() else 2e-2}

QUESTION = "When was the Veltrana Bridge completed?"
DOCUMENTS = [
    Document(
        text="The Veltrana Bridge spans the river Osk. It was completed in 1742. The engineer Mira Quell designed it.",
        id="veltrana",
        title="Veltrana Bridge",
    ),
    "Bananas are yellow fruits. They grow in tropical climates.",
    Document(text="Mount Harrow is the tallest peak in Dorland. Its summit is covered in snow.", title="Mount Harrow"),
]
ANSWER = "It was completed in 1742."


@pytest.fixture(scope="module", params=["float32", "bfloat16"])
def by_dtype(request, attributor: Attributor) -> Attributor:
    if attributor.model.dtype == getattr(torch, request.param):
        return attributor
    return Attributor(dtype=request.param)


def _scores(result) -> list[float]:
    return [s.score for s in result.documents] + [s.score for s in result.sentences] + [result.full_logprob]


def test_exact_equals_naive_within_the_dtypes_tolerance(by_dtype: Attributor) -> None:
    tolerance = TOLERANCE[by_dtype.model.dtype]
    naive = by_dtype.attribute(QUESTION, DOCUMENTS, ANSWER, method="naive")
    exact = by_dtype.attribute(QUESTION, DOCUMENTS, ANSWER, method="exact")
    assert _scores(exact) == pytest.approx(_scores(naive), abs=tolerance)
    assert max(abs(s.score) for s in exact.sentences) > 10 * tolerance  # the scores say something
    assert exact.top(1)[0].text == "It was completed in 1742."
    assert exact.settings.dtype == str(by_dtype.model.dtype).removeprefix("torch.")


def test_batched_equals_one_at_a_time(by_dtype: Attributor) -> None:
    one = by_dtype.attribute(QUESTION, DOCUMENTS, ANSWER, method="exact")
    batched = Attributor(LoadedModel(by_dtype.model, by_dtype.tokenizer, "batched"), batch_size=4)
    many = batched.attribute(QUESTION, DOCUMENTS, ANSWER, method="exact")
    assert _scores(many) == pytest.approx(_scores(one), abs=TOLERANCE[by_dtype.model.dtype])


def test_packed_tails_equal_one_per_forward_in_float32(attributor: Attributor) -> None:
    # In bfloat16 on CPU, packing changes the kernels' rounding by up to 0.33 nats on this
    # example: another reason the faithful budget is float32.
    float32 = attributor if attributor.model.dtype == torch.float32 else Attributor(dtype="float32")
    packed = float32.attribute(QUESTION, DOCUMENTS, ANSWER, method="fast")
    single = Attributor(LoadedModel(float32.model, float32.tokenizer, "single"), batch_size=1)
    assert _scores(packed) == pytest.approx(
        _scores(single.attribute(QUESTION, DOCUMENTS, ANSWER, method="fast")), abs=TOLERANCE[torch.float32]
    )


def test_the_head_in_float32_is_the_models_own_head(attributor: Attributor) -> None:
    float32 = attributor if attributor.model.dtype == torch.float32 else Attributor(dtype="float32")
    scorer = float32._scorers[id(float32._proxy)]
    ids = float32.tokenizer("The bridge was completed in 1742. It spans the river.").input_ids
    ours = scorer.naive_logprobs(ids[:5], ids[5:])
    with torch.inference_mode():
        logits = float32.model(input_ids=torch.tensor([ids])).logits[0, 4:-1].float()
    theirs = logits.log_softmax(-1).gather(-1, torch.tensor(ids[5:])[:, None])[:, 0]
    assert torch.allclose(ours, theirs, atol=1e-4)


def test_faithful_budget_scores_in_float32_from_a_bf16_attributor(attributor: Attributor) -> None:
    bf16 = Attributor(dtype="bfloat16")
    float32 = attributor if attributor.model.dtype == torch.float32 else Attributor(dtype="float32")
    faithful = bf16.attribute(QUESTION, DOCUMENTS, ANSWER, budget="faithful")
    reference = float32.attribute(QUESTION, DOCUMENTS, ANSWER, method="exact")
    assert faithful.settings.dtype == "float32" and faithful.settings.method == "exact"
    assert _scores(faithful) == pytest.approx(_scores(reference), abs=TOLERANCE[torch.float32])
    assert bf16.model.dtype == torch.bfloat16  # the Attributor's own model is unchanged
    assert bf16.attribute(QUESTION, DOCUMENTS, ANSWER, method="exact").settings.dtype == "bfloat16"
    # a model object cannot be reloaded in float32: a clear refusal, not a silent bf16 result
    given = Attributor(LoadedModel(bf16.model, bf16.tokenizer, "given"))
    with pytest.raises(ValueError, match="float32"):
        given.attribute(QUESTION, DOCUMENTS, ANSWER, budget="faithful")


def test_auto_dtype(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(models, "cpu_has_native_bf16", lambda: True)
    monkeypatch.setattr(models, "CPU_BF16", True)
    assert models.resolve_dtype("auto", "cpu") == torch.bfloat16
    monkeypatch.setattr(models, "cpu_has_native_bf16", lambda: False)
    assert models.resolve_dtype(None, "cpu") == torch.float32  # emulated bf16 is slower than float32
    assert models.resolve_dtype("float32", "cpu") == torch.float32
    with pytest.raises(ValueError, match="auto"):
        models.resolve_dtype("float33", "cpu")
