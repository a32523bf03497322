"""LangChain integration of attribot-rag: faithful leave-one-out citations for RAG chains.

``AttriBoTCallbackHandler`` watches any RAG chain and keeps the citations of each
invocation; ``with_citations`` builds a chain whose output carries them.
"""

from .callbacks import AsyncAttriBoTCallbackHandler, AttriBoTCallbackHandler
from .citations import (
    CITATIONS_EVENT,
    AnswerSentenceCitations,
    Citation,
    CitationResult,
)
from .runnables import format_documents, with_citations

__all__ = [
    "CITATIONS_EVENT",
    "AnswerSentenceCitations",
    "AsyncAttriBoTCallbackHandler",
    "AttriBoTCallbackHandler",
    "Citation",
    "CitationResult",
    "format_documents",
    "with_citations",
]
__version__ = "0.1.0"
