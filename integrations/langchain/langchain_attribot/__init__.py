"""LangChain integration of attribot-rag: faithful leave-one-out citations for RAG chains.

``AttriBoTCallbackHandler`` watches any RAG chain or LangGraph graph and keeps the citations
of each invocation; ``with_citations`` builds a chain whose output carries them.
``AttributorChatModel`` and ``MiniLMEmbeddings`` are local, offline stand-ins for an app's
models (examples, tests).
"""

from ._version import __version__ as __version__
from .callbacks import AsyncAttriBoTCallbackHandler, AttriBoTCallbackHandler
from .citations import (
    CITATIONS_EVENT,
    AnswerSentenceCitations,
    Citation,
    CitationResult,
)
from .local_models import AttributorChatModel, MiniLMEmbeddings
from .runnables import format_documents, with_citations

__all__ = [
    "CITATIONS_EVENT",
    "AnswerSentenceCitations",
    "AsyncAttriBoTCallbackHandler",
    "AttriBoTCallbackHandler",
    "AttributorChatModel",
    "Citation",
    "CitationResult",
    "MiniLMEmbeddings",
    "format_documents",
    "with_citations",
]
