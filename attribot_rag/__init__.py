"""attribot-rag: faithful, fast leave-one-out citations for RAG answers.

The public names load lazily (PEP 562), so that ``attribot-rag --help`` and the light modules
(options, spans, results) do not import torch and transformers.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from ._version import __version__

_EXPORTS = {
    "Attributor": "api.attributor",
    "shared_attributor": "api.attributor",
    "METHODS": "core.methods",
    "LoadedModel": "core.models",
    "load_model": "core.models",
    "BUDGETS": "api.options",
    "AttributionOptions": "api.options",
    "CitationOptions": "api.options",
    "AnswerSentence": "api.scores",
    "AttributionResult": "api.results",
    "AttributionSettings": "api.results",
    "Timing": "api.results",
    "Citations": "api.citations",
    "SpanScore": "api.scores",
    "AttributionOutOfMemory": "core.scorer",
    "RemoteAttributor": "serving.remote",
    "RemoteAttributionError": "serving.remote",
    "RemoteInputError": "serving.remote",
    "Document": "core.spans",
}
__all__ = sorted([*_EXPORTS, "__version__"])

if TYPE_CHECKING:
    from .api.attributor import Attributor, shared_attributor
    from .api.citations import Citations
    from .api.options import BUDGETS, AttributionOptions, CitationOptions
    from .api.results import AttributionResult, AttributionSettings, Timing
    from .api.scores import AnswerSentence, SpanScore
    from .core.methods import METHODS
    from .core.models import LoadedModel, load_model
    from .core.scorer import AttributionOutOfMemory
    from .core.spans import Document
    from .serving.remote import RemoteAttributionError, RemoteAttributor, RemoteInputError


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'attribot_rag' has no attribute {name!r}")
    value = getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value
    return value
