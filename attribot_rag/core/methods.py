"""Attribution methods: small functions over a scorer and a prepared problem.

Each returns ``Drops``: per answer-token log-prob drops of every span it scored, so that a
span's score is the sum of its drops and an answer sentence's score the sum over its tokens.
Ablations delete characters by one rule (``ablation.removal``: a span with one adjacent
whitespace run, so that the prompt without it reads as written text) and re-tokenize (about a
millisecond); deleting token ranges instead would keep the space that byte-level BPE glues to a
sentence's first token and move scores by up to 0.4 nats.
"""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Literal, get_args

from .ablation import ablate, cut, masked_tokens, removal, shift
from .prompt import RenderedPrompt, TokenizedText
from .similarity import bm25_scores

if TYPE_CHECKING:  # the registry stays importable without torch (CLI parsing, option checks)
    import torch

    from .scorer import FullPass, Scorer

Span = tuple[int, int]


@dataclass(frozen=True)
class Problem:
    """One question, documents and answer, rendered and tokenized for one model."""

    scorer: Scorer
    tokenizer: object
    rendered: RenderedPrompt
    prompt: TokenizedText
    answer: TokenizedText


@dataclass
class Drops:
    """Per answer-token log-prob drops (``full - ablated``) of each scored span."""

    full: torch.Tensor
    answer_offsets: list[tuple[int, int]]
    documents: dict[int, torch.Tensor] = field(default_factory=dict)
    sentences: dict[int, torch.Tensor] = field(default_factory=dict)


def _loo(
    problem: Problem,
    spans: list[Span],
    removed: Sequence[Span] = (),
    naive: bool = False,
    known: FullPass | None = None,
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Drop of each span on the prompt without ``removed``, relative to that prompt
    (``known``: the full prompt's ``full_pass``, when nothing is removed)."""
    text, cuts = ablate(problem.rendered.text, removed)
    literal = shift(list(problem.rendered.literal_spans), cuts)  # user text stays text

    def tokens(ablated: tuple[str, list[Span]]) -> list[int]:
        return TokenizedText.of(problem.tokenizer, ablated[0], shift(literal, ablated[1])).ids

    base = problem.prompt.ids if not cuts else tokens((text, []))
    ablations = [tokens(ablate(text, [span])) for span in shift(spans, cuts)]
    if naive:
        full, ablated = problem.scorer.naive_loo(base, problem.answer.ids, ablations)
    else:
        full, ablated = problem.scorer.loo(base, problem.answer.ids, ablations, None if removed else known)
    return full, [full - row for row in ablated]


def context_gain(problem: Problem, full: torch.Tensor) -> float:
    """log p(answer | prompt) - log p(answer | prompt without any document): how much the answer
    rests on the documents at all, the cheapest groundedness signal (one forward of the short
    prompt that is left)."""
    text, cuts = ablate(problem.rendered.text, problem.rendered.document_spans)
    ids = TokenizedText.of(problem.tokenizer, text, shift(list(problem.rendered.literal_spans), cuts)).ids
    return float(full.sum() - problem.scorer.naive_logprobs(ids, problem.answer.ids).sum())


def _top(scores: dict[int, torch.Tensor], k: int) -> list[int]:
    return heapq.nlargest(k, scores, key=lambda i: float(scores[i].sum()))


def _frozen(
    problem: Problem, spans: list[Span], known: FullPass | None = None
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Frozen-context drops of each span: only the answer (and the prompt's last token, which
    predicts its first) is recomputed, with the span masked out of its attention."""
    prompt, text = problem.prompt, problem.rendered.text
    masked = [masked_tokens(prompt, text, *removal(text, [span])[0]) for span in spans]
    tail = len(prompt.ids) - 1
    full, ablated = problem.scorer.frozen_loo(prompt.ids, problem.answer.ids, tail, masked, known)
    return full, [full - row for row in ablated]


def _documents_and_sentences(problem: Problem, loo: Callable = _loo, **kwargs: object) -> Drops:
    rendered = problem.rendered
    n_docs = len(rendered.document_spans)
    full, drops = loo(problem, rendered.document_spans + rendered.sentence_spans, **kwargs)
    return Drops(
        full,
        problem.answer.offsets,
        documents=dict(enumerate(drops[:n_docs])),
        sentences=dict(enumerate(drops[n_docs:])),
    )


def naive(problem: Problem) -> Drops:
    """The reference: every ablated prompt re-rendered, re-tokenized, one uncached forward
    through the model's own head."""
    return _documents_and_sentences(problem, partial(_loo, naive=True))


def exact(problem: Problem) -> Drops:
    """LOO of every document and every sentence, prefix-cached."""
    return _documents_and_sentences(problem)


def sentence_loo(problem: Problem, keep: list[int] | None = None) -> Drops:
    """LOO of the sentences in ``keep`` (all by default) on the prompt without the other
    sentences, relative to that pruned prompt."""
    spans = problem.rendered.sentence_spans
    keep = list(range(len(spans))) if keep is None else keep
    removed = [span for i, span in enumerate(spans) if i not in set(keep)]
    full, drops = _loo(problem, [spans[i] for i in keep], removed)
    return Drops(full, problem.answer.offsets, sentences=dict(zip(keep, drops, strict=True)))


def fast(problem: Problem, rescore: int = 0, rescore_margin: float | None = None) -> Drops:
    """Frozen-context estimate of every document's and sentence's LOO; the ``rescore`` sentences
    it ranks highest then get their exact LOO instead (the estimate prunes, exact LOO scores:
    AttriBoT's pruning and rescoring with one model), sharing the full prompt's forward. With a
    ``rescore_margin`` (nats), only those within it of the best estimate are rescored, and none
    when the best has no such rival: exact LOO decides only what the estimate leaves close."""
    known = problem.scorer.full_pass(problem.prompt.ids, problem.answer.ids)
    drops = _documents_and_sentences(problem, _frozen, known=known)
    top = _top(drops.sentences, rescore)
    if rescore_margin is not None and top:
        best = float(drops.sentences[top[0]].sum())
        top = [i for i in top if best - float(drops.sentences[i].sum()) <= rescore_margin]
        top = top if len(top) > 1 else []
    if top:
        _, exact_drops = _loo(problem, [problem.rendered.sentence_spans[i] for i in top], known=known)
        drops.sentences.update(zip(top, exact_drops, strict=True))
    return drops


def similar_documents(problem: Problem, k: int) -> list[int]:
    """The ``k`` documents BM25 (``bm25s``, English stop words) ranks highest for the answer and
    the user text around the documents (the question): a lexical second opinion on which
    documents matter, blind to what the model read but strong at recalling supporting context."""
    if k == 0:
        return []
    rendered = problem.rendered
    answer = problem.tokenizer.decode(problem.answer.ids)  # type: ignore[attr-defined]
    corpus = [f"{document.title or ''} {document.text}" for document in rendered.documents]
    try:
        values = bm25_scores(f"{_text_around_documents(rendered)} {answer}", corpus)
    except ImportError as error:
        raise ImportError("keep_similar needs bm25s: pip install 'attribot-rag[similarity]'") from error
    return heapq.nlargest(k, range(len(corpus)), key=lambda i: (values[i], -i))


def _text_around_documents(rendered: RenderedPrompt) -> str:
    """The user's text in the prompt (its literal spans) without the documents: the question,
    or in a chat the messages around the retrieved context."""
    pieces = []
    for start, end in rendered.literal_spans:
        inside = [
            (max(a, start) - start, min(b, end) - start) for a, b in rendered.document_spans if a < end and start < b
        ]
        pieces.append(cut(rendered.text[start:end], inside))
    return " ".join(pieces)


def hierarchical(problem: Problem, keep_documents: int, doc_method: str = "exact", keep_similar: int = 0) -> Drops:
    """Document LOO (exact, or the frozen-context estimate with ``doc_method="fast"``), then
    exact sentence LOO inside the top ``keep_documents`` documents, and the top ``keep_similar``
    by BM25 (``similar_documents``), on the prompt pruned to those documents. Similarity only
    picks which sentences get scored; every score stays LOO."""
    rendered = problem.rendered
    full, doc_drops = (_frozen if doc_method == "fast" else _loo)(problem, rendered.document_spans)
    documents = dict(enumerate(doc_drops))
    kept = set(_top(documents, keep_documents)) | set(similar_documents(problem, keep_similar))
    removed = [span for i, span in enumerate(rendered.document_spans) if i not in kept]
    sentence_ids = [i for i, s in enumerate(rendered.sentences) if s.doc_index in kept]
    _, sent_drops = _loo(problem, [rendered.sentence_spans[i] for i in sentence_ids], removed)
    return Drops(
        full, problem.answer.offsets, documents=documents, sentences=dict(zip(sentence_ids, sent_drops, strict=True))
    )


def pruned(proxy: Problem, target: Problem, keep_sentences: int) -> Drops:
    """The proxy's sentence LOO keeps the top ``keep_sentences`` sentences; the target rescores
    them on the context pruned to them (AttriBoT's proxy pruning). ``full`` stays the proxy's
    log-prob of the answer given the full prompt, the prompt the result reports."""
    proxy_drops = sentence_loo(proxy)
    drops = sentence_loo(target, _top(proxy_drops.sentences, keep_sentences))
    drops.full = proxy_drops.full
    return drops


def _every_span_forwards(problem: Problem, **_: object) -> int:
    """The full prompt and one ablation per document and per sentence."""
    return 1 + len(problem.rendered.document_spans) + len(problem.rendered.sentence_spans)


def _hierarchical_forwards(problem: Problem, keep_documents: int, keep_similar: int = 0, **_: object) -> int:
    """Documents, then at most the sentences of the ``keep_documents + keep_similar`` longest
    documents."""
    per_document = Counter(sentence.doc_index for sentence in problem.rendered.sentences)
    kept = keep_documents + keep_similar
    return 2 + len(problem.rendered.document_spans) + sum(heapq.nlargest(kept, per_document.values()))


def _fast_forwards(problem: Problem, rescore: int = 0, **_: object) -> int:
    """Every span's frozen estimate (an upper bound: its tails are packed), then at most
    ``rescore`` sentences' exact ablations."""
    return _every_span_forwards(problem) + min(rescore, len(problem.rendered.sentence_spans))


def _pruned_forwards(proxy: Problem, target: Problem, keep_sentences: int) -> int:
    """The proxy's sentence pass, then the target's rescoring of the kept sentences."""
    sentences = len(proxy.rendered.sentence_spans)
    return 2 + sentences + min(keep_sentences, sentences)


@dataclass(frozen=True)
class MethodSpec:
    """A registered method: its function, the options it takes (fields of
    ``AttributionOptions``), whether it needs a target model, one line for help texts, and
    the forward passes it plans (called like ``run``; an upper bound, for the cost guard)."""

    run: Callable[..., Drops]
    summary: str
    options: tuple[str, ...] = ()
    needs_target: bool = False
    forwards: Callable[..., int] = _every_span_forwards


# The one list of methods: the CLI's choices, the options model, the integrations' fields and
# the benchmarks derive from it.
METHODS: dict[str, MethodSpec] = {
    "naive": MethodSpec(naive, "the reference: one uncached forward per ablated prompt"),
    "exact": MethodSpec(exact, "the same scores, prefix-cached"),
    "hierarchical": MethodSpec(
        hierarchical,
        "documents, then sentences of the top keep_documents (and the keep_similar most BM25-similar)",
        ("keep_documents", "doc_method", "keep_similar"),
        forwards=_hierarchical_forwards,
    ),
    "pruned": MethodSpec(
        pruned,
        "the proxy keeps keep_sentences sentences; the target rescores them",
        ("keep_sentences",),
        needs_target=True,
        forwards=_pruned_forwards,
    ),
    "fast": MethodSpec(
        fast,
        "frozen-context estimate of all spans in a few forwards; exact LOO of its top rescore sentences"
        " (those within rescore_margin of the best)",
        ("rescore", "rescore_margin"),
        forwards=_fast_forwards,
    ),
}
MethodName = Literal["naive", "exact", "hierarchical", "pruned", "fast"]
if set(get_args(MethodName)) != set(METHODS):  # the literal is for type checkers; keep it in step
    raise ImportError(f"MethodName {get_args(MethodName)} differs from METHODS {tuple(METHODS)}")
