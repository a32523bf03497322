"""The methods compute the leave-one-out scores they promise, checked against an independent
reference: each span is cut out of ``result.prompt`` at its reported offsets by the test
itself, the text is tokenized as the README's contract says, and the model's plain forward
(full logits, float32 log-softmax) gives the answer's log-probability. Nothing of the
library's ablation, tokenization or scoring code is shared with the reference, so an offset
bug, a wrong deletion or a wrong token alignment fails here even where ``naive`` and ``exact``
agree."""

from __future__ import annotations

import copy
import inspect
from functools import cache

import pytest
import torch
from transformers import DynamicCache

from attribot_rag import BUDGETS, AttributionResult, Attributor, Document, LoadedModel
from attribot_rag.core.ablation import masked_tokens, removal
from attribot_rag.core.prompt import TokenizedText

# Cached and uncached float32 forwards differ by rounding only; one nat is a large score.
TOLERANCE = 2e-3

LAYOUTS = {
    # Invented facts: the model can only take them from the context.
    "three documents": (
        "When was the Veltrana Bridge completed?",
        [
            Document(
                text="The Veltrana Bridge spans the river Osk. It was completed in 1742. The engineer Mira Quell designed it.",
                id="veltrana",
                title="Veltrana Bridge",
            ),
            "Bananas are yellow fruits. They grow in tropical climates.",
            Document(
                text="Mount Harrow is the tallest peak in Dorland. Its summit is covered in snow.", title="Mount Harrow"
            ),
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


@cache  # the tests share their reference forwards
@torch.inference_mode()
def logprob(loaded: Attributor | LoadedModel, prompt: str, answer: str) -> float:
    """log p(answer | prompt) by the model's plain forward: the README's contract, written
    out independently (prompt and answer tokenized without special tokens, answer after
    prompt, no end-of-turn token)."""
    model, tokenizer = loaded.model, loaded.tokenizer
    prompt_ids = tokenizer(prompt, add_special_tokens=False).input_ids
    answer_ids = tokenizer(answer, add_special_tokens=False).input_ids
    ids = torch.tensor([prompt_ids + answer_ids], device=model.device)
    logits = model(input_ids=ids, use_cache=False, logits_to_keep=len(answer_ids) + 1).logits[0, :-1].float()
    return logits.log_softmax(-1).gather(-1, torch.tensor(answer_ids, device=model.device)[:, None]).sum().item()


def removed_ranges(text: str, spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The characters the README's rule deletes to remove ``spans``, written out here apart from
    the library: spans with only whitespace between them go as one; one that begins or ends with
    whitespace goes alone; else it takes the whitespace after it inside a line, the whitespace
    before it at a line's end, and for a whole line the shorter line break around it."""
    merged: list[list[int]] = []
    for start, end in sorted(spans):
        if merged and text[merged[-1][1] : start].strip() == "":
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    ranges = []
    for start, end in merged:
        before = len(text[:start]) - len(text[:start].rstrip())
        after = len(text[end:]) - len(text[end:].lstrip())
        run_before, run_after = text[start - before : start], text[end : end + after]
        if text[start:end] != text[start:end].strip():
            before = after = 0
        elif after and "\n" not in run_after:
            before = 0
        elif before and "\n" not in run_before:
            after = 0
        elif before and after:
            before, after = (before, 0) if before <= after else (0, after)
        ranges.append((start - before, end + after))
    return ranges


def without(text: str, *spans: tuple[int, int]) -> str:
    """``text`` without the character spans ``spans``, by the rule."""
    for start, end in reversed(removed_ranges(text, list(spans))):
        text = text[:start] + text[end:]
    return text


def shifted(text: str, removed: list[tuple[int, int]], position: int) -> int:
    """Where ``position`` of ``text`` lies in ``without(text, *removed)``."""
    return position - sum(
        min(end, position) - start for start, end in removed_ranges(text, removed) if start < position
    )


def reference_scores(loaded, prompt: str, answer: str, spans: list[tuple[int, int]]) -> list[float]:
    full = logprob(loaded, prompt, answer)
    return [full - logprob(loaded, without(prompt, span), answer) for span in spans]


def _spans(result: AttributionResult, level: str) -> list[tuple[int, int]]:
    return [(s.prompt_start, s.prompt_end) for s in getattr(result, level)]


def _scores(result: AttributionResult, level: str) -> list[float | None]:
    return [s.score for s in getattr(result, level)]


def _check_offsets(result: AttributionResult) -> None:
    """The reported offsets point at the span's own text (so the reference cuts the right one)."""
    for sentence in result.sentences:
        assert result.prompt[sentence.prompt_start : sentence.prompt_end] == sentence.text
    for number, document in enumerate(result.documents, start=1):
        block = result.prompt[document.prompt_start : document.prompt_end]
        assert block.startswith(f"Document [{number}]") and document.text in block


@pytest.mark.parametrize("method", ["exact", "naive"])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_scores_equal_an_independent_reference(attributor: Attributor, layout: str, method: str) -> None:
    question, documents, answer = LAYOUTS[layout]
    result = attributor.attribute(question, documents, answer, method=method)
    _check_offsets(result)
    assert result.full_logprob == pytest.approx(logprob(attributor, result.prompt, answer), abs=TOLERANCE)
    for level in ("documents", "sentences"):
        expected = reference_scores(attributor, result.prompt, answer, _spans(result, level))
        assert _scores(result, level) == pytest.approx(expected, abs=TOLERANCE), level
    # the scores are not trivially equal: some spans matter
    assert max(abs(s) for s in _scores(result, "sentences")) > 0.1


def test_a_custom_prompt_template_is_rendered_and_scored_exactly(attributor: Attributor) -> None:
    """The question before the documents, and text after them: every offset moves."""
    template = "Question: {question}\n\nSources:\n{context}End of sources. Answer in one sentence."
    custom = Attributor(LoadedModel(attributor.model, attributor.tokenizer, "custom"), prompt_template=template)
    question, documents, answer = LAYOUTS["three documents"]
    result = custom.attribute(question, documents, answer, method="exact")
    message = template.replace("{question}", question).split("{context}")
    assert message[0] in result.prompt and message[1] in result.prompt
    assert result.prompt.index(message[0]) < result.documents[0].prompt_start
    assert result.documents[-1].prompt_end == result.prompt.index(message[1])
    _check_offsets(result)
    for level in ("documents", "sentences"):
        expected = reference_scores(attributor, result.prompt, answer, _spans(result, level))
        assert _scores(result, level) == pytest.approx(expected, abs=TOLERANCE), level


def test_batched_equals_one_at_a_time(attributor: Attributor) -> None:
    question, documents, answer = LAYOUTS["three documents"]
    batched = Attributor(
        LoadedModel(attributor.model, attributor.tokenizer, "batched"), batch_size=4
    )  # the same weights, batches of 4
    one = attributor.attribute(question, documents, answer, method="exact")
    many = batched.attribute(question, documents, answer, method="exact")
    for level in ("documents", "sentences"):
        assert _scores(many, level) == pytest.approx(_scores(one, level), abs=TOLERANCE)


def _check_sentences_scored_on_the_pruned_prompt(
    attributor: Attributor, result: AttributionResult, answer: str, kept: set[int]
) -> None:
    """Sentences of the ``kept`` documents carry their LOO on the prompt without the other
    documents (computed here independently); all other sentences are unscored."""
    dropped = [span for i, span in enumerate(_spans(result, "documents")) if i not in kept]
    pruned_prompt = without(result.prompt, *dropped)
    full = logprob(attributor, pruned_prompt, answer)
    for sentence in result.sentences:
        if sentence.doc_index not in kept:
            assert sentence.score is None
            continue
        # the sentence's offsets in the pruned prompt: the dropped blocks before it are gone
        start, end = (shifted(result.prompt, dropped, at) for at in (sentence.prompt_start, sentence.prompt_end))
        assert pruned_prompt[start:end] == sentence.text
        expected = full - logprob(attributor, without(pruned_prompt, (start, end)), answer)
        assert sentence.score == pytest.approx(expected, abs=TOLERANCE), sentence.text


def test_hierarchical_scores_sentences_on_the_prompt_pruned_to_the_kept_documents(attributor: Attributor) -> None:
    question, documents, answer = LAYOUTS["three documents"]
    result = attributor.attribute(question, documents, answer, method="hierarchical", keep_documents=2)
    _check_offsets(result)
    doc_scores = reference_scores(attributor, result.prompt, answer, _spans(result, "documents"))
    assert _scores(result, "documents") == pytest.approx(doc_scores, abs=TOLERANCE)
    kept = set(sorted(range(3), key=lambda i: doc_scores[i], reverse=True)[:2])
    _check_sentences_scored_on_the_pruned_prompt(attributor, result, answer, kept)


def test_keep_similar_also_scores_the_documents_bm25_ranks_highest(attributor: Attributor) -> None:
    """A document that repeats the question's words but does not help the answer: its LOO is
    the lowest, so LOO alone never keeps it; BM25 ranks it first, and ``keep_similar`` has its
    sentences scored, with LOO on the pruned prompt like the rest."""
    ids = [*(d.id for d in BUDGET_DOCUMENTS[:3]), "echo"]
    echo = Document(
        text="Tourists ask when the Veltrana Bridge was completed. Guides answer every question about the Veltrana Bridge.",
        id="echo",
    )
    documents = [*BUDGET_DOCUMENTS[:3], echo]

    def scored(result: AttributionResult) -> set[str]:
        return {ids[s.doc_index] for s in result.sentences if s.score is not None}

    loo_only = attributor.attribute(BUDGET_QUESTION, documents, BUDGET_ANSWER, method="hierarchical", keep_documents=2)
    assert min(loo_only.documents, key=lambda d: d.score).doc_id == "echo"
    assert scored(loo_only) == {"bridge", "harrow"}
    union = attributor.attribute(
        BUDGET_QUESTION, documents, BUDGET_ANSWER, method="hierarchical", keep_documents=1, keep_similar=1
    )
    assert scored(union) == {"bridge", "echo"}
    _check_sentences_scored_on_the_pruned_prompt(attributor, union, BUDGET_ANSWER, {0, 3})
    assert union.settings is not None and union.settings.options["keep_similar"] == 1


def test_pruned_reports_the_targets_scores_on_the_pruned_context(attributor: Attributor) -> None:
    """The target is a different model (the embedded one with its last layer perturbed), so
    the proxy's and the target's scores of the same sentences differ and the test can tell
    whose scores the result reports."""
    question, documents, answer = LAYOUTS["three documents"]
    target_model = copy.deepcopy(attributor.model)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in target_model.model.layers[-1].parameters():
            parameter.add_(torch.randn(parameter.shape, generator=generator) * 0.05)
    target = LoadedModel(target_model, attributor.tokenizer, "perturbed")
    with_target = Attributor(LoadedModel(attributor.model, attributor.tokenizer, "proxy"), target=target)
    with pytest.raises(ValueError, match="target"):
        attributor.attribute(question, documents, answer, method="pruned")

    result = with_target.attribute(question, documents, answer, method="pruned", keep_sentences=2)
    assert result.target == "perturbed"
    _check_offsets(result)
    # the proxy's exact sentence LOO chooses the sentences ...
    proxy_scores = reference_scores(attributor, result.prompt, answer, _spans(result, "sentences"))
    kept = sorted(range(len(proxy_scores)), key=lambda i: proxy_scores[i], reverse=True)[:2]
    assert [i for i, s in enumerate(result.sentences) if s.score is not None] == sorted(kept)
    # ... and the target rescores them on the context without the other sentences
    dropped = [_spans(result, "sentences")[i] for i in range(len(proxy_scores)) if i not in kept]
    pruned_prompt = without(result.prompt, *dropped)
    full = {name: logprob(model, pruned_prompt, answer) for name, model in (("target", target), ("proxy", attributor))}
    differs = 0.0
    for i in kept:
        sentence = result.sentences[i]
        start, end = (shifted(result.prompt, dropped, at) for at in (sentence.prompt_start, sentence.prompt_end))
        assert pruned_prompt[start:end] == sentence.text
        ablated = without(pruned_prompt, (start, end))
        assert sentence.score == pytest.approx(full["target"] - logprob(target, ablated, answer), abs=TOLERANCE)
        differs = max(differs, abs(sentence.score - (full["proxy"] - logprob(attributor, ablated, answer))))
    assert differs > 0.05  # the proxy's scores would have failed the line above
    assert result.full_logprob == pytest.approx(logprob(attributor, result.prompt, answer), abs=TOLERANCE)


def test_the_sentence_that_carries_the_answer_ranks_first_when_the_answer_paraphrases_it(
    attributor: Attributor,
) -> None:
    """The answer shares one word ("1742") with the sentence that carries it and most of its
    words with a distractor: word overlap picks the distractor, leave-one-out the carrier."""
    carrier = "Its last stone was laid in 1742."
    distractor = "The Veltrana Bridge was completed by the engineer Mira Quell, who completed many bridges."
    documents = [
        Document(
            text=f"The Veltrana Bridge spans the river Osk. {carrier} {distractor}",
            id="veltrana",
            title="Veltrana Bridge",
        ),
        "Bananas are yellow fruits. They grow in tropical climates.",
        Document(
            text="Mount Harrow is the tallest peak in Dorland. Its summit is covered in snow.", title="Mount Harrow"
        ),
    ]
    question, answer = "When was the Veltrana Bridge completed?", "The Veltrana Bridge was completed in 1742."

    def words(text: str) -> set[str]:
        return {w.strip(".,").lower() for w in text.split()}

    for method in ("exact", "hierarchical", "fast"):
        result = attributor.attribute(question, documents, answer, method=method)
        assert max(result.sentences, key=lambda s: len(words(s.text) & words(answer))).text == distractor
        assert result.top(1)[0].text == carrier, method
        assert result.top_documents(1)[0].doc_id == "veltrana", method


def test_answer_sentences_partition_the_score(attributor: Attributor) -> None:
    question, documents, _ = LAYOUTS["three documents"]
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


def test_fast_estimate_finds_the_carrying_sentence_and_feeds_hierarchical(attributor: Attributor) -> None:
    question, documents, answer = LAYOUTS["three documents"]
    fast = attributor.attribute(question, documents, answer, method="fast")
    assert fast.top(1)[0].text == "It was completed in 1742."
    assert fast.top_documents(1)[0].doc_id == "veltrana"
    # with the same document kept, the sentence pass is exact whichever pass chose it
    exact_docs = attributor.attribute(question, documents, answer, method="hierarchical", keep_documents=1)
    fast_docs = attributor.attribute(
        question, documents, answer, method="hierarchical", keep_documents=1, doc_method="fast"
    )
    assert _scores(fast_docs, "sentences") == pytest.approx(_scores(exact_docs, "sentences"), abs=TOLERANCE)
    assert _scores(fast_docs, "documents") == pytest.approx(_scores(fast, "documents"), abs=TOLERANCE)


@torch.inference_mode()
def test_fast_is_the_answer_read_from_the_full_prompts_cache_without_the_span(attributor: Attributor) -> None:
    """The frozen-context estimate, written out independently: the full prompt's keys and
    values with the span's token positions left out (the rest keep their rotary positions), and
    only the prompt's last token and the answer computed on them, one span at a time."""
    question, documents, answer = LAYOUTS["three documents"]
    fast = attributor.attribute(question, documents, answer, method="fast")
    model, text = attributor.model, fast.prompt
    prompt = TokenizedText.of(attributor.tokenizer, text)
    answer_ids = attributor.tokenizer(answer, add_special_tokens=False).input_ids
    last = len(prompt.ids) - 1
    cache_keyword = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
    head = model(input_ids=torch.tensor([prompt.ids[:last]]), use_cache=True).past_key_values
    tail = torch.tensor([prompt.ids[last:] + answer_ids])

    def answer_logprob(dropped: range) -> float:
        keep = torch.tensor([k for k in range(last) if k not in dropped])
        layers = [(layer.keys[:, :, keep], layer.values[:, :, keep]) for layer in head.layers]
        positions = torch.arange(last, last + tail.shape[1])[None]
        cache = {cache_keyword: DynamicCache(layers)}  # "cache" in newer transformers
        logits = model(input_ids=tail, position_ids=positions, **cache).logits[0, :-1]
        return logits.float().log_softmax(-1).gather(-1, torch.tensor(answer_ids)[:, None]).sum().item()

    full = answer_logprob(range(0))
    for level in ("documents", "sentences"):
        expected = [
            full - answer_logprob(range(*masked_tokens(prompt, text, *removal(text, [span])[0])))
            for span in _spans(fast, level)
        ]
        assert _scores(fast, level) == pytest.approx(expected, abs=TOLERANCE)


def test_fast_rescore_gives_its_top_sentences_their_exact_loo(attributor: Attributor) -> None:
    """The frozen estimate ranks; its top ``rescore`` sentences get exact LOO (which the
    estimate differs from by up to ~1.4 nats here), every other span keeps the estimate."""
    question, documents, answer = LAYOUTS["three documents"]
    exact = _scores(attributor.attribute(question, documents, answer, method="exact"), "sentences")
    fast = _scores(attributor.attribute(question, documents, answer, method="fast"), "sentences")
    rescored = attributor.attribute(question, documents, answer, method="fast", rescore=3)
    top = sorted(range(len(fast)), key=lambda i: -fast[i])[:3]
    assert max(abs(exact[i] - fast[i]) for i in top) > 0.1  # a test that can fail
    assert _scores(rescored, "sentences") == pytest.approx(
        [exact[i] if i in top else fast[i] for i in range(len(fast))], abs=TOLERANCE
    )
    assert rescored.settings is not None and rescored.settings.options == {"rescore": 3, "rescore_margin": None}


BUDGET_QUESTION = "When was the Veltrana Bridge completed?"
BUDGET_ANSWER = "It was completed in 1742."
BUDGET_DOCUMENTS = [
    Document(text="The Veltrana Bridge spans the river Osk. It was completed in 1742.", id="bridge"),
    Document(text="Mount Harrow is the tallest peak in Dorland. Its summit is covered in snow.", id="harrow"),
    Document(text="Bananas are yellow fruits. They grow in tropical climates.", id="bananas"),
    Document(text="Mira Quell was an engineer from Dorland. She designed several bridges.", id="quell"),
]


@pytest.mark.parametrize("budget", BUDGETS)
def test_auto_runs_what_the_budget_maps_to(attributor: Attributor, budget: str) -> None:
    """With more documents than ``keep_documents``, the budget's settings show in which
    sentences are scored, and ``auto`` gives the very scores of the explicit settings."""
    settings = BUDGETS[budget]
    assert settings.get("keep_documents", 1) < len(BUDGET_DOCUMENTS)
    auto = attributor.attribute(BUDGET_QUESTION, BUDGET_DOCUMENTS, BUDGET_ANSWER, method="auto", budget=budget)
    explicit = attributor.attribute(BUDGET_QUESTION, BUDGET_DOCUMENTS, BUDGET_ANSWER, **settings)
    assert auto.method == settings["method"] and auto.settings.method == settings["method"]
    assert auto.settings.budget == budget and explicit.settings.budget is None
    for level in ("documents", "sentences"):
        assert _scores(auto, level) == _scores(explicit, level)
    scored_documents = {s.doc_index for s in auto.sentences if s.score is not None}
    if "keep_documents" in settings:
        best = sorted(range(len(BUDGET_DOCUMENTS)), key=lambda i: auto.documents[i].score, reverse=True)
        assert scored_documents == set(best[: settings["keep_documents"]])
        assert auto.settings.options["keep_documents"] == settings["keep_documents"]
    else:
        assert scored_documents == set(range(len(BUDGET_DOCUMENTS)))
    assert auto.top(1)[0].text == "It was completed in 1742."


def test_window_overflow_says_by_exactly_how_many_tokens(attributor: Attributor) -> None:
    window = attributor.model.config.max_position_embeddings
    question, answer = "Who wrote it?", "Ann wrote it."
    documents = ["Ann wrote it.", "The cat sat on the mat. " * (window // 6)]
    prompt = attributor.attribute(question, documents[:1], answer, method="exact").prompt
    # the overlong prompt differs from the short one by the second document's block only
    block = "Document [2]\n" + documents[1] + "\n\n"
    at = prompt.index("Ann wrote it.\n\n") + len("Ann wrote it.\n\n")
    long_prompt = prompt[:at] + block + prompt[at:]
    tokens = len(attributor.tokenizer(long_prompt, add_special_tokens=False).input_ids)
    total = tokens + len(attributor.tokenizer(answer, add_special_tokens=False).input_ids)
    assert total > window
    with pytest.raises(
        ValueError, match=rf"\b{total} tokens, {total - window} more than .*context window of {window}\b"
    ):
        attributor.attribute(question, documents, answer, method="exact")


def test_timings_are_wall_and_cpu_and_the_context_gain_can_be_switched_off(attributor: Attributor) -> None:
    question, documents, answer = LAYOUTS["one document"]
    with_gain = attributor.attribute(question, documents, answer, method="exact")
    without = attributor.attribute(question, documents, answer, method="exact", context_gain=False)
    assert set(with_gain.timings) == {"prepare", "score", "context_gain"}
    assert set(without.timings) == {"prepare", "score"} and without.context_gain is None
    assert with_gain.context_gain is not None and with_gain.context_gain > 0  # the answer rests on the document
    for timing in with_gain.timings.values():
        assert timing.wall_seconds >= 0 and timing.cpu_seconds >= 0
    assert with_gain.timings["score"].cpu_seconds > 0  # the forwards ran in this process
    assert _scores(without, "sentences") == _scores(with_gain, "sentences")
