"""Nothing crashes, nothing is lost: odd text, memory errors, threads, other prompt formats."""

import copy
import threading

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from attribot_rag import AttributionOutOfMemory, Attributor, Document, LoadedModel
from attribot_rag.prompt import TokenizedText, render
from attribot_rag.scorer import Scorer

TOLERANCE = 2e-3
QUESTION = "When was the Veltrana Bridge completed?"
DOCUMENTS = [
    "The Veltrana Bridge spans the river Osk. It was completed in 1742.",
    "Bananas are yellow fruits. They grow in tropical climates.",
]
ANSWER = "It was completed in 1742."

# Letters, CJK, Arabic/Hebrew, emoji, combining marks, digits, punctuation, spaces, newlines.
ALPHABET = st.sampled_from(list("abcdefghij ABC   ..!?,;:'\"-\n0123456789東京日本語の首都です。عربيשלום😀🎉é\u0301ñ\u0308\t"))
TEXT = st.text(ALPHABET, min_size=1, max_size=80).filter(lambda t: t.strip())


def _scores(result):
    return [s.score for s in result.documents + result.sentences]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(TEXT, min_size=1, max_size=4))
def test_every_sentence_token_range_decodes_back_to_its_text(attributor: Attributor, texts) -> None:
    rendered = render("Which?", [Document(text=t) for t in texts], attributor.tokenizer)
    tokens = TokenizedText.of(attributor.tokenizer, rendered.text)
    for start, end in rendered.sentence_spans + rendered.document_spans:
        a, b = tokens.token_range(start, end)
        decoded = attributor.tokenizer.decode(tokens.ids[a:b])
        assert decoded.strip() == rendered.text[start:end].strip()


@settings(max_examples=3, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.text(ALPHABET, min_size=1, max_size=40).filter(lambda t: t.strip()), min_size=1, max_size=2))
def test_exact_equals_naive_on_random_layouts(attributor: Attributor, texts) -> None:
    naive = attributor.attribute("What is it?", texts, "It is 42.", method="naive")
    exact = attributor.attribute("What is it?", texts, "It is 42.", method="exact")
    assert _scores(exact) == pytest.approx(_scores(naive), abs=TOLERANCE)


@pytest.mark.parametrize(
    "documents",
    [
        ["Ein Satz ohne Punkt am Ende", "東京は日本の首都です。שלום עולם. مرحبا بالعالم. Emoji 🎉 and e\u0301 combining."],
        ["Control\x00 characters\x07 inside. Tabs\tand\x1b escapes.", "Bananas are yellow fruits."],
        ["The Veltrana Bridge was completed in 1742.", "The Veltrana Bridge was completed in 1742."],
        [" ".join(["a very long sentence that keeps going"] * 40) + "."],
    ],
    ids=["mixed scripts", "control characters", "duplicate documents", "very long sentence"],
)
def test_odd_documents_score_like_the_reference(attributor: Attributor, documents) -> None:
    naive = attributor.attribute(QUESTION, documents, ANSWER, method="naive")
    exact = attributor.attribute(QUESTION, documents, ANSWER, method="exact")
    assert _scores(exact) == pytest.approx(_scores(naive), abs=TOLERANCE)
    for span in exact.sentences:
        assert exact.prompt[span.prompt_start : span.prompt_end] == span.text


def test_out_of_memory_halves_the_batch_and_gives_the_same_scores(attributor: Attributor, monkeypatch) -> None:
    rendered = render(QUESTION, [Document(text=t) for t in DOCUMENTS], attributor.tokenizer)
    ids = lambda text: TokenizedText.of(attributor.tokenizer, text).ids  # noqa: E731
    ablations = [ids(rendered.text[:a] + rendered.text[b:]) for a, b in rendered.sentence_spans]
    answer = ids(ANSWER)
    expected_full, expected = Scorer(attributor.model, batch_size=1).loo(ids(rendered.text), answer, ablations)

    real, sizes = Scorer._score_batch, []

    def short_of_memory(self, batch, *args):
        sizes.append(len(batch))
        if len(batch) > 1:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(self, batch, *args)

    monkeypatch.setattr(Scorer, "_score_batch", short_of_memory)
    full, ablated = Scorer(attributor.model, batch_size=4).loo(ids(rendered.text), answer, ablations)
    assert sizes[:3] == [4, 2, 1] and set(sizes[3:]) == {1}
    assert torch.allclose(ablated, expected, atol=TOLERANCE) and torch.allclose(full, expected_full)


def test_out_of_memory_at_batch_one_is_a_clear_error_and_the_model_stays_usable(attributor: Attributor, monkeypatch) -> None:
    def no_memory(self, *args):
        raise torch.OutOfMemoryError("CUDA out of memory")

    monkeypatch.setattr(Scorer, "_score_batch", no_memory)
    with pytest.raises(AttributionOutOfMemory, match="single ablation"):
        attributor.attribute(QUESTION, DOCUMENTS, ANSWER, method="exact")
    monkeypatch.undo()
    assert attributor.attribute(QUESTION, DOCUMENTS, ANSWER, method="exact").top(1)[0].text == "It was completed in 1742."


def test_other_runtime_errors_are_not_mistaken_for_memory(attributor: Attributor, monkeypatch) -> None:
    def broken(self, *args):
        raise RuntimeError("shape mismatch")

    monkeypatch.setattr(Scorer, "_score_batch", broken)
    with pytest.raises(RuntimeError, match="shape mismatch"):
        attributor.attribute(QUESTION, DOCUMENTS, ANSWER, method="exact")


def test_eight_threads_share_one_attributor(attributor: Attributor) -> None:
    questions = [QUESTION, "What colour are bananas?"]
    answers = [ANSWER, "Bananas are yellow."]
    sequential = [_scores(attributor.attribute(questions[i % 2], DOCUMENTS, answers[i % 2], method="exact")) for i in range(2)]
    results: dict[int, list] = {}

    def work(i: int) -> None:
        results[i] = _scores(attributor.attribute(questions[i % 2], DOCUMENTS, answers[i % 2], method="exact"))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == list(range(8))
    for i, scores in results.items():
        assert scores == sequential[i % 2]  # bit-identical: same machine, same input


def test_same_input_gives_bit_identical_scores(attributor: Attributor) -> None:
    first = attributor.attribute(QUESTION, DOCUMENTS, ANSWER, method="hierarchical")
    second = attributor.attribute(QUESTION, DOCUMENTS, ANSWER, method="hierarchical")
    assert _scores(first) == _scores(second) and first.full_logprob == second.full_logprob


def test_model_without_chat_template_gets_a_plain_prompt(attributor: Attributor) -> None:
    tokenizer = copy.deepcopy(attributor.tokenizer)
    tokenizer.chat_template = None
    plain = Attributor(LoadedModel(attributor.model, tokenizer, "plain"))
    result = plain.attribute(QUESTION, DOCUMENTS, ANSWER, method="exact")
    assert result.prompt.endswith("\n\nAnswer:\n") and "<|im_start|>" not in result.prompt
    naive = plain.attribute(QUESTION, DOCUMENTS, ANSWER, method="naive")
    assert _scores(result) == pytest.approx(_scores(naive), abs=TOLERANCE)


def test_truncate_drops_last_retrieved_documents_and_says_so(attributor: Attributor) -> None:
    window = attributor.model.config.max_position_embeddings
    documents = DOCUMENTS + ["Filler sentence about nothing. " * (window // 5)]
    with pytest.raises(ValueError, match="truncate='documents'"):
        attributor.attribute(QUESTION, documents, ANSWER, method="exact")
    result = attributor.attribute(QUESTION, documents, ANSWER, method="exact", truncate="documents")
    assert result.dropped_documents == [2]
    assert [d.doc_index for d in result.documents] == [0, 1]
    assert result.top(1)[0].text == "It was completed in 1742."
