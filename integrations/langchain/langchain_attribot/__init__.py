"""LangChain integration of attribot-rag: faithful leave-one-out citations for RAG chains.

``AttriBoTCallbackHandler`` watches any RAG chain or LangGraph graph and keeps the citations
of each invocation; ``with_citations`` builds a chain whose output carries them. The local,
offline stand-ins for an app's models (examples, tests) are in ``langchain_attribot.local_models``.
"""

from ._version import __version__ as __version__
from .callbacks import AttriBoTCallbackHandler
from .citations import CITATIONS_EVENT, CitationResult
from .runnables import format_documents, with_citations

__all__ = ["CITATIONS_EVENT", "AttriBoTCallbackHandler", "CitationResult", "format_documents", "with_citations"]
