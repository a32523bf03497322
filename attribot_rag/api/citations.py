"""Citations drawn from an attribution: one framework-neutral view that the command line, the
HTML page, the service and both integrations show.

A citation means *the answer leans on this span*: without it, the model finds the claim less
likely (its leave-one-out score on the claim's own tokens). It does not mean *this span states
the claim*. Two guards keep a reader from taking one for the other:

- a claim whose best span does not clear the bar (``min_score`` nats, and ``min_share`` of the
  answer's largest claim score) is marked unsupported instead of cited with a near-zero score;
- where a cited span and its claim disagree on a number or a name the claim states, the
  marker says so (``"the source says 15, not 40"``): a cheap textual check, see ``mismatch``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict

from .scores import AnswerSentence, SpanScore

# The bar a cited span clears, chosen on the claim benchmark (docs/benchmarks.md, "Claims").
DEFAULT_MIN_SCORE = 1.0
DEFAULT_MIN_SHARE = 0.1
UNSUPPORTED = "not supported by the documents"


class JsonSafeModel(BaseModel):
    """A frozen model whose ``model_dump_json`` never fails: a value JSON cannot hold (an
    object in a document's metadata) is written as its ``repr``. The integrations' citation
    results, which carry the frameworks' documents, build on it."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    def model_dump_json(self, **kwargs: Any) -> str:
        kwargs.setdefault("fallback", repr)
        return super().model_dump_json(**kwargs)


class Marker(BaseModel):
    """One ``[number]`` after a claim: the source's number, its score on the claim's own
    tokens (nats), and a disagreement between the two on a number or a name, if any."""

    model_config = ConfigDict(frozen=True)

    number: int
    score: float
    mismatch: str | None = None


class Claim(BaseModel):
    """An answer sentence (a leading "Yes." or "No." is a claim of its own), its markers, and
    ``score``: its best span's score on its tokens (``None``: no span scored)."""

    model_config = ConfigDict(frozen=True)

    index: int
    text: str
    start: int
    end: int
    score: float | None
    markers: list[Marker]

    @property
    def supported(self) -> bool:
        return bool(self.markers)


class Source(BaseModel):
    """A numbered source: ``result.sentences[sentence]`` (its score over the whole answer) and
    the claims that cite it."""

    model_config = ConfigDict(frozen=True)

    number: int
    sentence: int
    span: SpanScore
    claims: list[int]


class Citations(BaseModel):
    """The citations of one answer: each claim's markers, the numbered sources, and ``error``
    (the attribution failed: the answer is kept, uncited)."""

    model_config = ConfigDict(frozen=True)

    answer: str
    claims: list[Claim]
    sources: list[Source]
    error: str | None = None

    @classmethod
    def failed(cls, answer: str, error: BaseException | str) -> Citations:
        """The error form: the answer as it is, no claims, and what went wrong in one line."""
        message = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
        return cls(answer=answer, claims=[], sources=[], error=message)

    def cited_answer(self, scores: bool = False) -> str:
        """The answer with ``[n]`` after each supported claim (``[n 1.23]`` with ``scores``),
        a mark on each unsupported one, and the numbered sources."""
        if self.error is not None:
            return self.answer
        parts, cursor = [], 0
        for claim in self.claims:
            if claim.supported:
                marks = "".join(f"[{m.number}{f' {m.score:.2f}' if scores else ''}]" for m in claim.markers)
            else:
                marks = f" ({UNSUPPORTED})"
            parts.append(self.answer[cursor : claim.end] + marks)
            cursor = claim.end
        parts.append(self.answer[cursor:])
        notes = {(m.number, m.mismatch) for claim in self.claims for m in claim.markers if m.mismatch is not None}
        lines = [f"[{s.number}] {s.span.doc_id}: {s.span.text}" for s in self.sources]
        lines += [f"[{number}] cited, but {note}" for number, note in sorted(notes)]
        return "".join(parts) + ("\n\nSources:\n" + "\n".join(lines) if lines else "")


def check_thresholds(per_claim: int, min_score: float, min_share: float) -> None:
    if per_claim < 1:
        raise ValueError(f"per_claim must be at least 1, not {per_claim}")
    if not math.isfinite(min_score):
        raise ValueError(f"min_score must be a finite number of nats, not {min_score}")
    if not (math.isfinite(min_share) and 0 <= min_share <= 1):
        raise ValueError(f"min_share must be between 0 and 1, not {min_share}")


def citation_bar(best: Sequence[float | None], min_score: float, min_share: float) -> float:
    """The score a source must exceed to be cited, given each claim's best score (``None``:
    nothing scored): ``max(min_score, min_share * the largest of them)``."""
    return max(min_score, min_share * max((score for score in best if score is not None), default=0.0))


def cite(
    answer: str,
    sentences: Sequence[SpanScore],
    answer_sentences: Sequence[AnswerSentence],
    per_claim: int = 1,
    min_score: float = DEFAULT_MIN_SCORE,
    min_share: float = DEFAULT_MIN_SHARE,
) -> Citations:
    """Each claim cites its ``per_claim`` best spans whose score on the claim's tokens exceeds
    ``max(min_score, min_share * the answer's largest claim score)``; sources are numbered in
    order of first citation."""
    check_thresholds(per_claim, min_score, min_share)
    best = [max((s.score for s in claim.sentences if s.score is not None), default=None) for claim in answer_sentences]
    bar = citation_bar(best, min_score, min_share)
    numbers: dict[int, int] = {}
    cited_by: dict[int, list[int]] = {}
    claims = []
    for c, claim in enumerate(answer_sentences):
        ranked = sorted(
            ((s.score, k) for k, s in enumerate(claim.sentences) if s.score is not None and s.score > bar),
            reverse=True,
        )[:per_claim]
        markers = []
        for score, k in ranked:
            number = numbers.setdefault(k, len(numbers) + 1)
            cited_by.setdefault(k, []).append(c)
            markers.append(Marker(number=number, score=score, mismatch=mismatch(claim.text, sentences[k].text)))
        claims.append(Claim(index=c, text=claim.text, start=claim.start, end=claim.end, score=best[c], markers=markers))
    sources = [Source(number=n, sentence=k, span=sentences[k], claims=cited_by[k]) for k, n in numbers.items()]
    return Citations(answer=answer, claims=claims, sources=sources)


_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")
_NAME = re.compile(r"[A-Z][\w'’-]*(?:\s+(?:of\s+|de\s+|the\s+)?[A-Z][\w'’-]*)*")
# Capitalised because they open a sentence, not because they name something.
_NOT_NAMES = frozenset(
    [
        "a",
        "an",
        "the",
        "it",
        "its",
        "he",
        "she",
        "they",
        "we",
        "i",
        "you",
        "his",
        "her",
        "their",
        "this",
        "that",
        "these",
        "those",
        "there",
        "here",
        "in",
        "on",
        "at",
        "by",
        "for",
        "from",
        "of",
        "to",
        "with",
        "and",
        "but",
        "or",
        "so",
        "yes",
        "no",
        "not",
        "also",
        "after",
        "before",
        "when",
        "while",
        "during",
        "since",
        "as",
        "because",
        "if",
        "although",
        "however",
        "both",
        "each",
        "some",
        "many",
        "most",
        "one",
    ]
)


def _numbers(text: str) -> set[str]:
    return {number.replace(",", "") for number in _NUMBER.findall(text)}


def _names(text: str) -> set[str]:
    """Runs of capitalised words, but a single word that opens a sentence ("Cats purr.") only
    where it is the whole text (a short answer: "Tulsa.")."""
    whole = text.strip().rstrip(".!?")
    names = set()
    for match in _NAME.finditer(text):
        name = match.group()
        opens = not text[: match.start()].strip() or text[: match.start()].rstrip()[-1] in ".!?:;"
        if name.lower() not in _NOT_NAMES and (" " in name or not opens or name == whole):
            names.add(name)
    return names


def mismatch(claim: str, source: str) -> str | None:
    """Where ``source`` states a number (or a name) and ``claim`` states another that
    ``source`` does not: ``"the source says 15, not 40"``. A textual check: numbers written
    as digits, names as capitalised words; a paraphrase ("fifteen", "the capital") is not
    seen, nor a one-word name that opens a sentence of a longer text; a claim that combines
    two sources may be flagged against one of them."""
    claimed, stated = _numbers(claim), _numbers(source)
    if claimed - stated and stated - claimed:
        return f"the source says {', '.join(sorted(stated - claimed))}, not {', '.join(sorted(claimed - stated))}"
    lowered = source.lower()
    missing = sorted(name for name in _names(claim) if name.lower() not in lowered)
    others = sorted(name for name in _names(source) if name.lower() not in claim.lower())
    if missing and others:
        return f"the source names {', '.join(others)}, not {', '.join(missing)}"
    return None
