"""The settings of one attribution, shared by the Python API, the CLI, the integrations, the
batch jobs and the service: one pydantic model, so every entry point validates them alike."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal, TypedDict

from pydantic import BaseModel, ConfigDict, Field, model_validator
from typing_extensions import Unpack

from .methods import METHODS, MethodName

Method = Literal[MethodName, "auto"]
Budget = Literal["fast", "balanced", "faithful"]

# What method="auto" runs for each budget: the settings on our measured speed/faithfulness
# front (README, "How faithful, how fast" and "Performance"). On 60 4-paragraph HotpotQA
# questions (benchmarks/results/faithfulness_hotpotqa_gold4_gold-answer.md) fast with 3
# sentences rescored kept exact LOO's top sentence on 0.87 at 2.8x less CPU, plain fast on 0.73
# at 4x; in the run before titles became spans (speed_4docs.md) hierarchical k=3, the former
# balanced, kept 0.80 at 0.71 of exact's time. On 30 10-paragraph questions
# (faithfulness_hotpotqa_gold-answer.md) balanced kept exact's top sentence on 12 of 13 at 7x
# less CPU; hierarchical with keep_similar found as much gold evidence for less, but agreed
# with exact less often: an option, not a budget.
BUDGETS: dict[str, dict[str, Any]] = {
    "faithful": {"method": "exact"},
    "balanced": {"method": "fast", "rescore": 3},
    "fast": {"method": "fast"},
}


class AttributionOptions(BaseModel):
    """How to attribute: the method (or ``"auto"`` with a ``budget``) and its options.

    Options a method does not use are ignored by it; ``resolved()`` replaces ``"auto"`` by the
    method and options its budget maps to (``BUDGETS``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    method: Method = "auto"
    budget: Budget = "balanced"
    keep_documents: int = Field(2, ge=1, description="hierarchical: documents kept for the sentence pass")
    keep_sentences: int = Field(5, ge=1, description="pruned: sentences the target rescores")
    doc_method: Literal["exact", "fast"] = Field("exact", description="hierarchical: the document pass")
    keep_similar: int = Field(
        0, ge=0, description="hierarchical: documents BM25 ranks highest also kept (needs the similarity extra)"
    )
    rescore: int = Field(
        0, ge=0, description="fast: its top sentences that get their exact LOO instead of the estimate"
    )
    truncate: Literal["error", "documents"] = Field(
        "error", description="documents: drop the last-retrieved documents until the prompt fits"
    )
    max_forwards: int | None = Field(
        None, ge=1, description="refuse an attribution that plans more forward passes than this (default: no bound)"
    )

    @model_validator(mode="before")
    @classmethod
    def _known_names(cls, data: Any) -> Any:
        """Name the choices in the error, as a user typing ``--method fastest`` needs."""
        if isinstance(data, dict):
            choices = {
                "method": [*METHODS, "auto"],
                "budget": list(BUDGETS),
                "doc_method": ["exact", "fast"],
                "truncate": ["error", "documents"],
            }
            for name, allowed in choices.items():
                if name in data and data[name] not in allowed:
                    raise ValueError(f"unknown {name} {data[name]!r}; choose {', '.join(allowed)}")
            for name in ("keep_documents", "keep_sentences"):
                if isinstance(data.get(name), int) and data[name] < 1:
                    raise ValueError("keep_documents and keep_sentences must be at least 1")
            for name in ("rescore", "keep_similar"):
                if isinstance(data.get(name), int) and data[name] < 0:
                    raise ValueError(f"{name} must be at least 0")
        return data

    def resolved(self) -> AttributionOptions:
        """The options with ``method="auto"`` replaced by what ``budget`` maps to."""
        if self.method != "auto":
            return self
        return self.model_copy(update=BUDGETS[self.budget])

    def method_options(self) -> dict[str, Any]:
        """The options the (resolved) method takes, by name."""
        resolved = self.resolved()
        return {name: getattr(resolved, name) for name in METHODS[resolved.method].options}


class CitationOptions(AttributionOptions):
    """``AttributionOptions`` plus how citations are drawn from the scores: the settings of the
    integrations (LangChain handler, LlamaIndex postprocessor), validated alike in both."""

    per_claim: int = Field(1, ge=1, description="sources cited per answer sentence")
    min_score: float = Field(0.0, description="the score (nats) a cited sentence must exceed")

    def attribution(self) -> AttributionOptions:
        """The attribution settings alone (what an ``Attributor`` or the service takes)."""
        return AttributionOptions(**self.model_dump(include=set(AttributionOptions.model_fields)))


class OptionKeywords(TypedDict, total=False):
    """``AttributionOptions`` as keyword arguments (meanings and defaults there), so that
    editors and type checkers know the keywords of ``attribute`` and ``attribute_messages``."""

    method: Method
    budget: Budget
    keep_documents: int
    keep_sentences: int
    doc_method: Literal["exact", "fast"]
    keep_similar: int
    rescore: int
    truncate: Literal["error", "documents"]
    max_forwards: int | None


class KeywordForms:
    """``attribute`` and ``attribute_messages`` with keyword options, over the subclass's
    ``attribute_with`` and ``attribute_messages_with``: one signature for the local
    ``Attributor`` and the service's ``RemoteAttributor``."""

    def attribute(self, question: str, documents: Sequence[Any], answer: str, **options: Unpack[OptionKeywords]) -> Any:
        """Score every document and sentence by how much the answer's log-probability drops
        without it. ``method="auto"`` (the default) runs what ``budget`` maps to (``BUDGETS``);
        ``hierarchical`` scores sentences of the top ``keep_documents`` only (its document pass
        exact, or frozen-context with ``doc_method="fast"``), and of the ``keep_similar``
        documents BM25 ranks highest; ``pruned`` needs a ``target``;
        ``fast`` is the frozen-context estimate, its top ``rescore`` sentences rescored with
        exact LOO. A prompt longer than the model's
        window is an error, or with ``truncate="documents"`` loses its last-retrieved documents
        (listed in ``dropped_documents``). An attribution that plans more than
        ``max_forwards`` forward passes is refused before it starts. The keywords and their
        defaults are ``AttributionOptions``'s."""
        return self.attribute_with(question, documents, answer, AttributionOptions(**options))  # type: ignore[attr-defined]

    def attribute_messages(
        self, messages: Any, answer: str, documents: Sequence[Any], **options: Unpack[OptionKeywords]
    ) -> Any:
        """Attribute ``answer`` to the documents inside the prompt the LLM read: ``messages``,
        chat messages (``{"role", "content"}`` dicts) or a completion string. Each document is
        located verbatim in the message contents; located documents and their sentences are
        scored, everything else is context never ablated; documents not in the prompt are
        listed in ``result.unseen_documents``. Options as for ``attribute``."""
        return self.attribute_messages_with(messages, answer, documents, AttributionOptions(**options))  # type: ignore[attr-defined]
