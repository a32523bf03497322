"""The settings of one attribution, shared by the Python API, the CLI, the integrations, the
batch jobs and the service: one pydantic model, so every entry point validates them alike."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal, TypedDict, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..core.methods import METHODS, MethodName
from .citations import DEFAULT_MIN_SCORE, DEFAULT_MIN_SHARE

Method = Literal[MethodName, "auto"]
Budget = Literal["fast", "balanced", "faithful"]

# What method="auto" runs for each budget: the settings on our measured speed/faithfulness
# front (README, "How faithful, how fast" and "Performance"; docs/benchmarks.md, "At the
# floor"). On 60 4-paragraph HotpotQA questions the frozen estimate with up to 5 sentences
# rescored, those within 1 nat of its best, kept exact LOO's top sentence on 0.90 at 1.85
# forwards of the prompt (exact: 13); the estimate alone on 0.73 at 1.46. The margin and the 5
# were chosen on the odd-numbered 30 of them (0.93); on the even-numbered 30 they keep 0.87.
BUDGETS: dict[str, dict[str, Any]] = {
    "faithful": {"method": "exact"},
    "balanced": {"method": "fast", "rescore": 5, "rescore_margin": 1.0},
    "fast": {"method": "fast"},
}


class AttributionOptions(BaseModel):
    """How to attribute: the method (or ``"auto"`` with a ``budget``) and its options.

    Options a method does not use are ignored by it; ``resolved()`` replaces ``"auto"`` by the
    method and options its budget maps to (``BUDGETS``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    method: Method = Field(
        "auto",
        description="auto: what budget maps to; "
        + "; ".join(f"{name}: {spec.summary}" for name, spec in METHODS.items()),
    )
    budget: Budget = Field(
        "balanced",
        description="what method auto runs: "
        + ", ".join(f"{name} = {', '.join(f'{k} {v}' for k, v in mapped.items())}" for name, mapped in BUDGETS.items()),
    )
    keep_documents: int = Field(2, ge=1, description="hierarchical: documents kept for the sentence pass")
    keep_sentences: int = Field(5, ge=1, description="pruned: sentences the target rescores")
    doc_method: Literal["exact", "fast"] = Field("exact", description="hierarchical: the document pass")
    keep_similar: int = Field(
        0, ge=0, description="hierarchical: documents BM25 ranks highest also kept (needs the similarity extra)"
    )
    rescore: int = Field(
        0, ge=0, description="fast: its top sentences that get their exact LOO instead of the estimate"
    )
    rescore_margin: float | None = Field(
        None,
        ge=0,
        allow_inf_nan=False,
        description="fast: rescore only those of them within this many nats of the best estimate, "
        "and none when the best has no such rival (default: all of them)",
    )
    truncate: Literal["error", "documents"] = Field(
        "error", description="documents: drop the last-retrieved documents until the prompt fits"
    )
    max_forwards: int | None = Field(
        None, ge=1, description="refuse an attribution that plans more forward passes than this (default: no bound)"
    )
    context_gain: bool = Field(
        True, description="also compute the context gain (one more forward, of the prompt without any document)"
    )

    @model_validator(mode="before")
    @classmethod
    def _known_choices(cls, data: Any) -> Any:
        """Name the choices of a field in its error, as a user typing ``--method fastest``
        needs (the choices are the fields' own literal types)."""
        if isinstance(data, dict):
            for name, field in cls.model_fields.items():
                choices = get_args(field.annotation) if get_origin(field.annotation) is Literal else ()
                if choices and name in data and data[name] not in choices:
                    raise ValueError(f"unknown {name} {data[name]!r}; choose {', '.join(choices)}")
        return data

    def resolved(self) -> AttributionOptions:
        """The options with ``method="auto"`` replaced by what ``budget`` maps to."""
        if self.method != "auto":
            return self
        return self.model_copy(update=BUDGETS[self.budget])

    def method_options(self) -> dict[str, Any]:
        """The options the (resolved) method takes, by name."""
        return dict(self.plan().options)

    def plan(self) -> AttributionPlan:
        """These options resolved once, into what an attribution reads."""
        resolved = self.resolved()
        return AttributionPlan(
            method=resolved.method,
            options={name: getattr(resolved, name) for name in METHODS[resolved.method].options},
            budget=self.budget if self.method == "auto" else None,
            float32=self.method == "auto" and self.budget == "faithful",
            truncate=self.truncate == "documents",
            max_forwards=self.max_forwards,
            context_gain=self.context_gain,
        )


class AttributionPlan(BaseModel):
    """``AttributionOptions`` resolved: the method that runs and the options it takes, the
    budget it came from, whether it scores in float32 (``budget="faithful"``), whether the
    prompt may lose documents to fit, the cost bound, and whether the context gain is computed."""

    model_config = ConfigDict(frozen=True)

    method: MethodName
    options: dict[str, Any]
    budget: Budget | None
    float32: bool
    truncate: bool
    max_forwards: int | None
    context_gain: bool


class CitationOptions(AttributionOptions):
    """``AttributionOptions`` plus how citations are drawn from the scores: the settings of the
    integrations (LangChain handler, LlamaIndex postprocessor), validated alike in both."""

    per_claim: int = Field(1, ge=1, description="sources cited per claim (answer sentence)")
    min_score: float = Field(
        DEFAULT_MIN_SCORE, allow_inf_nan=False, description="the score (nats) a cited sentence must exceed"
    )
    min_share: float = Field(
        DEFAULT_MIN_SHARE,
        ge=0,
        le=1,
        description="... and this share of the answer's largest claim score; a claim no sentence clears is unsupported",
    )

    @classmethod
    def merged(cls, options: CitationOptions | Mapping[str, Any] | None = None, **fields: Any) -> CitationOptions:
        """``options`` (or its fields as a mapping, e.g. deserialised) refined by keyword
        ``fields``, the integrations' two ways of saying it: a keyword replaces that field, the
        others stay as ``options`` set them."""
        return cls(**{**cls.model_validate(options or {}).model_dump(exclude_unset=True), **fields})

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
    rescore_margin: float | None
    truncate: Literal["error", "documents"]
    max_forwards: int | None
    context_gain: bool
