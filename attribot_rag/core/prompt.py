"""Render the prompt once, with the character span of every document and sentence, and map
those spans to token ranges of the once-tokenized prompt."""

from __future__ import annotations

import bisect
import re
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

from .spans import Document, Sentence, document_sentences, title_span

# Chosen on 20 HotpotQA questions: the embedded model answers as many correctly as with an
# "answer using the documents below" preamble, and in one sentence instead of echoing headers.
DEFAULT_TEMPLATE = (
    "Documents:\n\n{context}Using the documents above, answer the question in one short sentence.\nQuestion: {question}"
)
PLAIN_ANSWER_CUE = "\n\nAnswer:\n"


def _document_block(number: int, document: Document) -> tuple[str, int, int]:
    """The rendered block of one document, the offset of its title and of its text inside it."""
    label = f"Document [{number}]" + (" " if document.title else "")
    header = label + (document.title or "") + "\n"
    return f"{header}{document.text}\n\n", len(label), len(header)


def check_template(template: str) -> None:
    for field in ("{context}", "{question}"):
        if template.count(field) != 1:
            raise ValueError(f"prompt_template must contain {field} exactly once: {template!r}")


def _adds_bos(tokenizer) -> bool:
    ids = tokenizer("a").input_ids
    return tokenizer.bos_token_id is not None and bool(ids) and ids[0] == tokenizer.bos_token_id


@dataclass(frozen=True)
class RenderedPrompt:
    """The prompt text and where each document block and sentence lies in it.
    ``literal_spans``: the character ranges of user content (the message, documents,
    question), always tokenized as text, never as the template's control tokens."""

    text: str
    documents: list[Document]
    document_spans: list[tuple[int, int]]
    sentences: list[Sentence]
    sentence_spans: list[tuple[int, int]]
    literal_spans: Sequence[tuple[int, int]] = ()


def render(question: str, documents: list[Document], tokenizer, template: str = DEFAULT_TEMPLATE) -> RenderedPrompt:
    """Render the user message with ``template`` and the tokenizer's chat template (else plain
    text, after the BOS token where the tokenizer adds one, plus an answer cue), tracking every
    span's offsets."""
    check_template(template)
    context, doc_offsets, title_offsets, text_offsets = "", [], [], []
    for number, document in enumerate(documents, start=1):
        block, title_offset, text_offset = _document_block(number, document)
        doc_offsets.append((len(context), len(context) + len(block)))
        title_offsets.append(len(context) + title_offset)
        text_offsets.append(len(context) + text_offset)
        context += block
    before, after = template.split("{context}")
    before = before.replace("{question}", question)
    message = before + context + after.replace("{question}", question)

    if getattr(tokenizer, "chat_template", None):
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": message}], tokenize=False, add_generation_prompt=True
        )
        shift = text.find(message)
        if shift < 0:
            raise ValueError(
                "the chat template rewrites the user message; pass a model whose template keeps it verbatim"
            )
    else:
        # Without a template nothing else adds the BOS token a model was trained to see first.
        bos = tokenizer.bos_token if tokenizer is not None and _adds_bos(tokenizer) else ""
        text, shift = bos + message + PLAIN_ANSWER_CUE, len(bos)
    literal = (shift, shift + len(message))
    shift += len(before)

    sentences, sentence_spans = [], []
    for index, document in enumerate(documents):
        title = title_span(index, document)
        for sentence in ([title] if title else []) + document_sentences(index, document):
            sentences.append(sentence)
            base = shift + (title_offsets if sentence.part == "title" else text_offsets)[index]
            sentence_spans.append((base + sentence.start, base + sentence.end))
    return RenderedPrompt(
        text=text,
        documents=documents,
        document_spans=[(shift + a, shift + b) for a, b in doc_offsets],
        sentences=sentences,
        sentence_spans=sentence_spans,
        literal_spans=[literal],
    )


@dataclass(frozen=True)
class _SpecialTokens:
    """A tokenizer's special added tokens (its control tokens): their ids, and a pattern
    that finds their strings, longest first."""

    ids: frozenset[int]
    id_of: dict[str, int]
    pattern: re.Pattern


_special_tokens: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _specials(tokenizer) -> _SpecialTokens:
    """``_SpecialTokens`` of ``tokenizer``, computed once (Gemma has thousands)."""
    if tokenizer not in _special_tokens:
        id_of = {token.content: index for index, token in tokenizer.added_tokens_decoder.items() if token.special}
        pattern = "|".join(map(re.escape, sorted(id_of, key=len, reverse=True))) or "(?!)"
        _special_tokens[tokenizer] = _SpecialTokens(frozenset(id_of.values()), id_of, re.compile(pattern))
    return _special_tokens[tokenizer]


def _outside(spans: Sequence[tuple[int, int]], length: int) -> list[tuple[int, int]]:
    """The ranges of ``[0, length)`` that no span of ``spans`` covers."""
    ranges, cursor = [], 0
    for start, end in sorted(spans):
        if start > cursor:
            ranges.append((cursor, start))
        cursor = max(cursor, end)
    return ranges + ([(cursor, length)] if cursor < length else [])


@dataclass(frozen=True)
class TokenizedText:
    """Token ids of a text with each token's character span."""

    ids: list[int]
    offsets: list[tuple[int, int]]

    @classmethod
    def of(cls, tokenizer, text: str, literal_spans: Sequence[tuple[int, int]] = ()) -> TokenizedText:
        """Tokenize ``text`` as the tokenizer does, except that the character ranges
        ``literal_spans`` (user content) become text tokens only: a document that contains
        ``<|im_end|>`` must not end the template's turn. Where no special token falls inside
        them (the usual case) this is the tokenizer's own output, whatever the model."""
        encoding = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        ids, offsets = list(encoding["input_ids"]), [tuple(o) for o in encoding["offset_mapping"]]
        special = _specials(tokenizer).ids
        controls = [offsets[k] for k, token in enumerate(ids) if token in special]
        if any(a < e and s < b for s, e in controls for a, b in literal_spans):
            return cls._with_literal_text(tokenizer, text, literal_spans)
        return cls(ids, offsets)

    @classmethod
    def _with_literal_text(cls, tokenizer, text: str, literal_spans: Sequence[tuple[int, int]]) -> TokenizedText:
        """Split ``text`` at the special-token strings outside ``literal_spans`` (the template's
        control tokens), as the tokenizer splits at every special token before its model runs,
        and tokenize the pieces between them with special-token strings read as text."""
        specials = _specials(tokenizer)
        controls = [
            m.span() for a, b in _outside(literal_spans, len(text)) for m in specials.pattern.finditer(text, a, b)
        ]
        bounds = [0, *(at for span in controls for at in span), len(text)]
        pieces = [(a, b) for a, b in zip(bounds[::2], bounds[1::2], strict=True) if a < b]
        # Never empty: a literal span holds a special-token string, else this is not called.
        encoded = tokenizer(
            [text[a:b] for a, b in pieces],
            add_special_tokens=False,
            return_offsets_mapping=True,
            split_special_tokens=True,
        )
        # Runs of tokens, each with its first character: the pieces' tokens and the controls.
        runs = [
            (a, list(zip(ids, spans, strict=True)))
            for (a, _), ids, spans in zip(pieces, encoded["input_ids"], encoded["offset_mapping"], strict=True)
        ]
        runs += [(a, [(specials.id_of[text[a:b]], (0, b - a))]) for a, b in controls]
        ids, offsets = [], []
        for base, tokens in sorted(runs, key=lambda run: run[0]):
            for token, (a, b) in tokens:
                ids.append(token)
                offsets.append((base + a, base + b))
        return cls(ids, offsets)

    @cached_property
    def _starts_and_ends(self) -> tuple[list[int], list[int]]:
        return [s for s, _ in self.offsets], [e for _, e in self.offsets]

    def token_range(self, start: int, end: int) -> tuple[int, int]:
        """The tokens overlapping characters ``[start, end)``: deleting them removes the span."""
        starts, ends = self._starts_and_ends
        first = bisect.bisect_right(ends, start)
        last = bisect.bisect_left(starts, end)
        if first >= last:
            raise ValueError(f"characters [{start}, {end}) cover no token")
        return first, last
