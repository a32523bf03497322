"""The prompt the LLM read: render given chat messages (or a completion string) with the proxy's
chat template and find the documents in them, so that attribution ablates exactly the document
text the LLM saw and keeps everything else (system prompt, history, instructions) as context."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from jinja2 import TemplateError

from .prompt import PLAIN_ANSWER_CUE, RenderedPrompt, _adds_bos
from .spans import Document, document_sentences

Messages = str | Sequence[Mapping[str, Any]]
Span = tuple[int, int]


def as_messages(messages: Messages) -> list[dict[str, Any]]:
    """Validate ``messages``: a non-empty list of ``{"role", "content"}`` dicts with text
    contents, or a completion string (one user message)."""
    if isinstance(messages, str):
        messages = [{"role": "user", "content": messages}]
    if not isinstance(messages, Sequence) or not messages:
        raise ValueError("messages must be a completion string or a non-empty list of {'role', 'content'} dicts")
    out = []
    for index, message in enumerate(messages):
        if not isinstance(message, Mapping) or not isinstance(message.get("role"), str):
            raise TypeError(f"message {index} must be a dict with a 'role' and a 'content'")
        if not isinstance(message.get("content"), str):
            raise TypeError(f"message {index} content must be a str, not {type(message.get('content')).__name__}")
        out.append(dict(message))
    if not any(m["content"].strip() for m in out):
        raise ValueError("messages are empty")
    return out


def _template_ranges(messages: list[dict[str, Any]], tokenizer) -> tuple[str, list[Span]]:
    """The chat template's rendering and each message content's character range in it.

    Contents are first replaced by placeholders (private-use characters no template touches), so
    that a content is never mistaken for template text that happens to contain it (a short reply
    inside the default system prompt, say); where the template transforms contents (``| trim``),
    the real rendering is searched in order instead."""

    def render(chat: list[dict[str, Any]]) -> str:
        try:
            return tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
        except TemplateError as error:  # e.g. a role the template does not know
            raise ValueError(f"the proxy's chat template cannot render these messages: {error}") from None

    text = render(messages)
    marks = [f"\ue000{i}\ue001" for i in range(len(messages))]
    skeleton = render([{**m, "content": mark} for m, mark in zip(messages, marks, strict=True)])
    out, ranges, cursor = "", [], 0
    for mark, message in zip(marks, messages, strict=True):
        at = skeleton.find(mark, cursor)
        if at < 0:
            break
        out += skeleton[cursor:at]
        ranges.append((len(out), len(out) + len(message["content"])))
        out += message["content"]
        cursor = at + len(mark)
    else:
        if out + skeleton[cursor:] == text:
            return text, ranges
    ranges, cursor = [], 0
    for index, message in enumerate(messages):
        content = message["content"]
        at = text.find(content, cursor)
        if at < 0:
            at = text.find(content.strip(), cursor)
            content = content.strip()
        if at < 0:
            raise ValueError(
                f"the chat template rewrites message {index}; pass a model whose template keeps contents verbatim"
            )
        ranges.append((at, at + len(content)))
        cursor = at + len(content)
    return text, ranges


def render_chat(messages: Messages, tokenizer) -> tuple[str, list[Span]]:
    """``messages`` as the proxy reads them, with each content's range in the text: its chat
    template with the generation prompt, else (no template) the BOS token where the tokenizer
    adds one, the contents separated by blank lines, and the answer cue, as ``render`` does."""
    messages = as_messages(messages)
    if getattr(tokenizer, "chat_template", None):
        return _template_ranges(messages, tokenizer)
    text = tokenizer.bos_token if tokenizer is not None and _adds_bos(tokenizer) else ""
    ranges = []
    for index, message in enumerate(messages):
        text += "\n\n" if index else ""
        ranges.append((len(text), len(text) + len(message["content"])))
        text += message["content"]
    return text + PLAIN_ANSWER_CUE, ranges


def locate(text: str, ranges: list[Span], documents: list[Document]) -> list[Span | None]:
    """Where each document's text lies in ``text``, inside one of the content ``ranges``: the
    first occurrence after the previous document's, else the first anywhere that overlaps no
    other document's; ``None`` where the prompt does not hold it.

    A document that is also part of a longer document (a sentence quoted on its own) is first
    sought only outside the longer one's occurrences, so that it is found at its own place
    instead of inside the other, which would then be reported unseen."""

    def occurrences(needle: str) -> list[Span]:
        out = []
        for start, end in ranges:
            at = text.find(needle, start, end)
            while at >= 0:
                out.append((at, at + len(needle)))
                at = text.find(needle, at + 1, end)
        return out

    every = [occurrences(document.text) for document in documents]
    longer = [
        [
            span
            for other, spans in zip(documents, every, strict=True)
            if len(other.text) > len(document.text)
            for span in spans
        ]
        for document in documents
    ]
    own = [
        [(a, b) for a, b in spans if not any(start <= a and b <= end for start, end in outer)]
        for spans, outer in zip(every, longer, strict=True)
    ]
    found: list[Span | None] = [None] * len(documents)
    for pool in (own, every):  # own places first; a place inside a longer document only if none is left
        cursor = 0
        for index, spans in enumerate(pool):
            if found[index] is None:
                taken = [span for span in found if span is not None]
                free = [(a, b) for a, b in spans if not any(s < b and a < e for s, e in taken)]
                found[index] = next((span for span in free if span[0] >= cursor), None) or next(iter(free), None)
            if (span := found[index]) is not None:
                cursor = span[1]
    return found


def render_messages(messages: Messages, documents: list[Document], tokenizer) -> tuple[RenderedPrompt, list[int]]:
    """The rendered ``messages`` with the located ``documents`` as spans (in prompt order; each
    document's span is its text, its sentences inside it), and the input index of each located
    document. Everything else is fixed context; the message contents are literal spans (a
    ``<|im_end|>`` typed by a user or quoted in a document stays text)."""
    text, ranges = render_chat(messages, tokenizer)
    spans = locate(text, ranges, documents)
    order = sorted((span, index) for index, span in enumerate(spans) if span is not None)
    located = [documents[index] for _, index in order]
    sentences, sentence_spans = [], []
    for position, ((start, _), index) in enumerate(order):
        for sentence in document_sentences(position, documents[index]):
            sentences.append(sentence)
            sentence_spans.append((start + sentence.start, start + sentence.end))
    rendered = RenderedPrompt(
        text=text,
        documents=located,
        document_spans=[span for span, _ in order],
        sentences=sentences,
        sentence_spans=sentence_spans,
        literal_spans=ranges,  # every message's content is user text, never control tokens
    )
    return rendered, [index for _, index in order]
