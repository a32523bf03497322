"""LlamaIndex integration of attribot-rag: leave-one-out citations for RAG answers.

``AttributorLLM``, the offline demo LLM of the examples and tests, is in ``local_models``."""

from llama_index.postprocessor.attribot._version import __version__ as __version__
from llama_index.postprocessor.attribot.base import AttriBoTPostprocessor
from llama_index.postprocessor.attribot.citations import CitationResult
from llama_index.postprocessor.attribot.events import AttributionEndEvent, AttributionStartEvent

__all__ = ["AttriBoTPostprocessor", "AttributionEndEvent", "AttributionStartEvent", "CitationResult"]
