"""LlamaIndex integration of attribot-rag: leave-one-out citations for RAG answers."""

from llama_index.postprocessor.attribot._version import __version__ as __version__
from llama_index.postprocessor.attribot.base import AttriBoTPostprocessor
from llama_index.postprocessor.attribot.citations import (
    AnswerSentenceCitations,
    CitationResult,
    NodeCitation,
    SentenceCitation,
)
from llama_index.postprocessor.attribot.events import (
    AttributionEndEvent,
    AttributionStartEvent,
)
from llama_index.postprocessor.attribot.local_models import AttributorLLM

__all__ = [
    "AnswerSentenceCitations",
    "AttriBoTPostprocessor",
    "AttributionEndEvent",
    "AttributionStartEvent",
    "AttributorLLM",
    "CitationResult",
    "NodeCitation",
    "SentenceCitation",
]
