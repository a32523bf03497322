"""Instrumentation events of the attribution step, so that tracers (Phoenix, Langfuse, your own
event handler) see it: dispatched inside the ``AttriBoTPostprocessor.attribute`` span, itself
a child of the query or chat span whose answer it attributes."""

from __future__ import annotations

from llama_index.core.instrumentation.events import BaseEvent

from .citations import CitationResult


class AttributionStartEvent(BaseEvent):
    """Attribution of one answer begins: the method that runs (what ``auto`` chose for the
    budget), the budget, and how many nodes (with text) were recorded for the call."""

    method: str
    budget: str
    nodes: int
    answer: str

    @classmethod
    def class_name(cls) -> str:
        return "AttributionStartEvent"


class AttributionEndEvent(BaseEvent):
    """Attribution of one answer ended, with its citations. A failed attribution ends its span
    with the error instead (``SpanDropEvent``)."""

    result: CitationResult

    @classmethod
    def class_name(cls) -> str:
        return "AttributionEndEvent"
