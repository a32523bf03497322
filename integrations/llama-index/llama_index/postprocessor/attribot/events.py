"""Instrumentation events of the attribution step, so that tracers (Phoenix, Langfuse, your own
handler) see it: inside the ``AttriBoTPostprocessor.attribute`` span, a child of the call's."""

from llama_index.core.instrumentation.events import BaseEvent

from .citations import CitationResult


class AttributionStartEvent(BaseEvent):
    """Attribution of one answer begins: the method that runs (what ``auto`` chose for the
    budget), the budget, and how many nodes (with text) the call passed on."""

    method: str
    budget: str
    nodes: int
    answer: str

    @classmethod
    def class_name(cls) -> str:
        return "AttributionStartEvent"


class AttributionEndEvent(BaseEvent):
    """Attribution of one answer ended, with its citations (the error form if it failed)."""

    result: CitationResult

    @classmethod
    def class_name(cls) -> str:
        return "AttributionEndEvent"
