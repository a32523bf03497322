"""The fast methods compute the same leave-one-out scores as the naive reference."""

import pytest

from attribot_rag import Attributor, Document
from attribot_rag.models import embedded_model_dir

# Cached and uncached float32 forwards differ by rounding only; one nat is a large score.
TOLERANCE = 2e-3

LAYOUTS = {
    # Invented facts: the model can only take them from the context.
    "three documents": (
        "When was the Veltrana Bridge completed?",
        [
            Document(text="The Veltrana Bridge spans the river Osk. It was completed in 1742. The engineer Mira Quell designed it.", id="veltrana", title="Veltrana Bridge"),
            "Bananas are yellow fruits. They grow in tropical climates.",
            Document(text="Mount Harrow is the tallest peak in Dorland. Its summit is covered in snow.", title="Mount Harrow"),
        ],
        "It was completed in 1742.",
    ),
    "one document": (
        "What colour are bananas?",
        ["Bananas are yellow. Apples are often red. Grapes can be green."],
        "Bananas are yellow.",
    ),
    "unicode": (
        "Wie heißt die Hauptstadt von Japan?",
        [
            "東京は日本の首都です。人口は約1400万人です。",
            "Zürich liegt in der Schweiz. Café und Crème brûlée sind beliebt 🍮.",
        ],
        "Die Hauptstadt von Japan ist Tokio.",
    ),
    "repeated sentence": (
        "Where is the library?",
        [
            "The library is on Main Street. It opens at nine.",
            "The museum is closed on Mondays. The library is on Main Street.",
        ],
        "The library is on Main Street.",
    ),
}


def _scores(result, level):
    return [s.score for s in getattr(result, level)]


@pytest.mark.parametrize("layout", LAYOUTS)
def test_exact_equals_naive(attributor: Attributor, layout: str) -> None:
    question, documents, answer = LAYOUTS[layout]
    naive = attributor.attribute(question, documents, answer, method="naive")
    exact = attributor.attribute(question, documents, answer, method="exact")
    assert exact.full_logprob == pytest.approx(naive.full_logprob, abs=TOLERANCE)
    for level in ("documents", "sentences"):
        assert _scores(exact, level) == pytest.approx(_scores(naive, level), abs=TOLERANCE)
    # the scores are not trivially equal: some spans matter
    assert max(abs(s) for s in _scores(exact, "sentences")) > 0.1


def test_batched_equals_one_at_a_time(attributor: Attributor) -> None:
    question, documents, answer = LAYOUTS["three documents"]
    batched = Attributor(batch_size=4)
    one = attributor.attribute(question, documents, answer, method="exact")
    many = batched.attribute(question, documents, answer, method="exact")
    for level in ("documents", "sentences"):
        assert _scores(many, level) == pytest.approx(_scores(one, level), abs=TOLERANCE)


def test_the_sentence_that_carries_the_answer_ranks_first(attributor: Attributor) -> None:
    question, documents, answer = LAYOUTS["three documents"]
    for method in ("exact", "hierarchical"):
        result = attributor.attribute(question, documents, answer, method=method)
        assert result.top(1)[0].text == "It was completed in 1742."
        assert result.top_documents(1)[0].doc_id == "veltrana"


def test_hierarchical_documents_equal_exact_and_prune(attributor: Attributor) -> None:
    question, documents, answer = LAYOUTS["three documents"]
    exact = attributor.attribute(question, documents, answer, method="exact")
    hier = attributor.attribute(question, documents, answer, method="hierarchical", keep_documents=1)
    assert _scores(hier, "documents") == pytest.approx(_scores(exact, "documents"), abs=TOLERANCE)
    kept = max(range(3), key=lambda i: exact.documents[i].score)
    assert {s.doc_index for s in hier.sentences if s.score is not None} == {kept}
    # the kept document is the only context left: its sentences are scored relative to it
    assert [s for s in hier.sentences if s.doc_index != kept and s.score is not None] == []


def test_answer_sentences_partition_the_score(attributor: Attributor) -> None:
    question, documents, answer = LAYOUTS["three documents"]
    answer = "It was completed in 1742. Mira Quell designed it."
    result = attributor.attribute(question, documents, answer, method="exact")
    assert [c.text for c in result.answer_sentences] == ["It was completed in 1742.", "Mira Quell designed it."]
    for i, sentence in enumerate(result.sentences):
        parts = sum(c.sentences[i].score for c in result.answer_sentences)
        assert parts == pytest.approx(sentence.score, abs=1e-4)
    # each claim is best explained by the sentence that states it
    first, second = (claim.top(1)[0].text for claim in result.answer_sentences)
    assert first == "It was completed in 1742."
    assert second == "The engineer Mira Quell designed it."


def test_pruned_rescores_the_proxys_best_sentences(attributor: Attributor) -> None:
    question, documents, answer = LAYOUTS["three documents"]
    with_target = Attributor(target=embedded_model_dir())  # a second instance, loaded from its path
    with pytest.raises(ValueError, match="target"):
        attributor.attribute(question, documents, answer, method="pruned")
    exact = attributor.attribute(question, documents, answer, method="exact")
    pruned = with_target.attribute(question, documents, answer, method="pruned", keep_sentences=2)
    scored = [i for i, s in enumerate(pruned.sentences) if s.score is not None]
    best_two = sorted(range(len(exact.sentences)), key=lambda i: exact.sentences[i].score, reverse=True)[:2]
    assert sorted(scored) == sorted(best_two)
    assert pruned.target is not None


def test_fast_estimate_finds_the_carrying_sentence_and_feeds_hierarchical(attributor: Attributor) -> None:
    question, documents, answer = LAYOUTS["three documents"]
    fast = attributor.attribute(question, documents, answer, method="fast")
    assert fast.top(1)[0].text == "It was completed in 1742."
    assert fast.top_documents(1)[0].doc_id == "veltrana"
    # with the same document kept, the sentence pass is exact whichever pass chose it
    exact_docs = attributor.attribute(question, documents, answer, method="hierarchical", keep_documents=1)
    fast_docs = attributor.attribute(question, documents, answer, method="hierarchical", keep_documents=1, doc_method="fast")
    assert [s.score for s in fast_docs.sentences] == pytest.approx([s.score for s in exact_docs.sentences], abs=TOLERANCE)
    assert [s.score for s in fast_docs.documents] == pytest.approx([s.score for s in fast.documents], abs=TOLERANCE)
