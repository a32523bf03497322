"""Checks of the caller's text before any model work, shared by the Python API and the
records the CLI, batch jobs and the service read (so it imports no torch)."""

from __future__ import annotations

import re
from collections.abc import Sequence

from ..core.spans import Document

_SURROGATE = re.compile("[\ud800-\udfff]")


def check_unicode(name: str, text: str) -> str:
    """Refuse a lone surrogate (``"\\ud800"``, from bad JSON escapes or ``surrogateescape``
    decoding): it has no UTF-8 encoding, so the tokenizer would fail on it with an error that
    names neither the argument nor the place."""
    found = _SURROGATE.search(text)
    if found:
        raise ValueError(
            f"{name} has a lone surrogate U+{ord(found.group()):04X} at character {found.start()}: not valid Unicode text"
        )
    return text


def check_text(name: str, value: object) -> str:
    """``value`` as a non-blank ``str`` of valid Unicode, else an error naming ``name``."""
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, not {type(value).__name__}")
    if not value.strip():
        raise ValueError(f"{name} is empty")
    return check_unicode(name, value)


def as_documents(documents: Sequence[Document | str]) -> list[Document]:
    """Validate ``documents`` (``Document`` objects or plain strings)."""
    if isinstance(documents, (str, Document)) or not isinstance(documents, Sequence):
        raise TypeError("documents must be a list of Document objects or strings")
    if not documents:
        raise ValueError("no documents: attribution needs at least one")
    result = []
    for index, document in enumerate(documents):
        if isinstance(document, str):
            document = Document(text=document)
        elif not isinstance(document, Document):
            raise TypeError(f"document {index} is a {type(document).__name__}, not a Document or str")
        if not document.text.strip():
            raise ValueError(f"document {index} is empty")
        for field in ("text", "title", "id"):
            value = getattr(document, field)
            if value is not None:
                check_unicode(f"document {index}" + ("" if field == "text" else f" {field}"), value)
        result.append(document)
    return result
