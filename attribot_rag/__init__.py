"""attribot-rag: faithful, fast leave-one-out citations for RAG answers.

The public names load lazily (PEP 562), so that ``attribot-rag --help`` and the light modules
(options, spans, results) do not import torch and transformers.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from ._version import __version__

_EXPORTS = {
    "Attributor": "attributor",
    "shared_attributor": "attributor",
    "METHODS": "methods",
    "LoadedModel": "models",
    "load_model": "models",
    "BUDGETS": "options",
    "AttributionOptions": "options",
    "CitationOptions": "options",
    "AnswerSentence": "scores",
    "AttributionResult": "results",
    "AttributionSettings": "results",
    "Timing": "results",
    "Citations": "citations",
    "SpanScore": "scores",
    "AttributionOutOfMemory": "scorer",
    "RemoteAttributor": "remote",
    "RemoteAttributionError": "remote",
    "RemoteInputError": "remote",
    "Document": "spans",
}
__all__ = sorted([*_EXPORTS, "__version__"])

if TYPE_CHECKING:
    from .attributor import Attributor, shared_attributor
    from .citations import Citations
    from .methods import METHODS
    from .models import LoadedModel, load_model
    from .options import BUDGETS, AttributionOptions, CitationOptions
    from .remote import RemoteAttributionError, RemoteAttributor, RemoteInputError
    from .results import AttributionResult, AttributionSettings, Timing
    from .scorer import AttributionOutOfMemory
    from .scores import AnswerSentence, SpanScore
    from .spans import Document


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'attribot_rag' has no attribute {name!r}")
    value = getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value
    return value
