"""Documents and their sentence spans, with character offsets into each document's text."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

import blingfire
from pydantic import BaseModel, ConfigDict, Field, model_validator

_LINES = re.compile(r"[^\r\n]+")


class Document(BaseModel):
    """A retrieved document.

    ``sentences`` optionally gives your own sentence split; each sentence must occur in
    ``text`` in order. With ``sentences`` and no ``text``, the text is their concatenation.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    text: str = ""
    id: str | None = None
    title: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    sentences: list[str] | None = None

    @model_validator(mode="after")
    def _text_from_sentences(self) -> Document:
        if not self.text and self.sentences:
            self.text = "".join(self.sentences)
        return self


def document_name(index: int, document: Document) -> str:
    """How citations name a document without an ``id``: its title, else ``document N``
    (numbered from 1, as the prompt numbers it)."""
    return (document.title or "").strip() or f"document {index + 1}"


SpanPart = Literal["text", "title"]


@dataclass(frozen=True)
class Sentence:
    """A citable span of document ``doc_index``: ``text[start:end]`` of that document, or with
    ``part="title"`` its ``title[start:end]`` (a title the prompt shows is context an answer
    may copy from, so it is ablated and cited like a sentence)."""

    doc_index: int
    start: int
    end: int
    part: SpanPart = "text"


def _strip(text: str, start: int, end: int) -> tuple[int, int]:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return start, end


def split_sentences(text: str) -> list[tuple[int, int]]:
    """Character spans of the sentences of ``text``, whitespace trimmed.

    Blingfire does the splitting (abbreviations, decimals, CJK, offsets kept); line breaks
    always end a sentence, since retrieved text often has headings and list items without
    punctuation.
    """
    spans = []
    for line in _LINES.finditer(text):
        _, offsets = blingfire.text_to_sentences_and_offsets(line.group())
        for start, end in offsets:
            span = _strip(text, line.start() + start, line.start() + end)
            if span[0] < span[1]:
                spans.append(span)
    return spans


# A short reply that opens an answer ("No. Vinegar damages the seals.") is a claim of its own:
# the splitter keeps it with the next sentence, which would hide what supports the reply.
_SHORT_REPLY = re.compile(
    r"(?i)(?:yes|no|nope|correct|incorrect|right|wrong|true|false|indeed|exactly|sure|certainly|absolutely)[.!]\s+(?=\S)"
)


def split_claims(answer: str) -> list[tuple[int, int]]:
    """Character spans of the claims of ``answer``: its sentences (``split_sentences``), with a
    leading short reply ("Yes.", "No.", "Correct.") split off as a claim of its own; the whole
    answer when it has no sentence."""
    spans = split_sentences(answer) or [(0, len(answer))]
    start, end = spans[0]
    reply = _SHORT_REPLY.match(answer, start, end)
    if reply:
        split = _strip(answer, start, reply.end())
        spans[:1] = [split, (reply.end(), end)]
    return spans


def locate_sentences(text: str, sentences: list[str]) -> list[tuple[int, int]]:
    """Character spans of user-given ``sentences`` in ``text``, searched in order."""
    spans, cursor = [], 0
    for sentence in sentences:
        needle = sentence.strip()
        if not needle:
            continue
        start = text.find(needle, cursor)
        if start < 0:
            raise ValueError(f"sentence {needle[:60]!r} does not occur in the document text (in order)")
        spans.append((start, start + len(needle)))
        cursor = start + len(needle)
    return spans


def title_span(doc_index: int, document: Document) -> Sentence | None:
    """The title of ``document`` as a span, whitespace trimmed (``None``: no title)."""
    start, end = _strip(document.title or "", 0, len(document.title or ""))
    return Sentence(doc_index, start, end, "title") if start < end else None


def document_sentences(doc_index: int, document: Document) -> list[Sentence]:
    """The sentence spans of one document: its own split if given, else the segmenter's."""
    if document.sentences is not None:
        spans = locate_sentences(document.text, document.sentences)
    else:
        spans = split_sentences(document.text)
    return [Sentence(doc_index, start, end) for start, end in spans]
