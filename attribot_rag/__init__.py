"""attribot-rag: faithful, fast leave-one-out citations for RAG answers."""

from .attributor import Attributor
from .models import LoadedModel, load_model
from .results import AnswerSentence, AttributionResult, Citation, SpanScore
from .scorer import AttributionOutOfMemory
from .spans import Document

__all__ = [
    "AnswerSentence",
    "AttributionOutOfMemory",
    "AttributionResult",
    "Attributor",
    "Citation",
    "Document",
    "LoadedModel",
    "SpanScore",
    "load_model",
]
__version__ = "0.1.0"
