"""The settings every entry point shares (``AttributionOptions``), without a model."""

from __future__ import annotations

from typing import get_type_hints

import pytest
from pydantic import ValidationError

from attribot_rag import BUDGETS, METHODS, AttributionOptions
from attribot_rag.api.options import OptionKeywords


def test_defaults_are_auto_and_balanced() -> None:
    options = AttributionOptions()
    assert (options.method, options.budget) == ("auto", "balanced")
    assert options.resolved().method == BUDGETS["balanced"]["method"]


@pytest.mark.parametrize("budget", BUDGETS)
def test_auto_resolves_to_its_budget_and_explicit_methods_stay(budget: str) -> None:
    resolved = AttributionOptions(method="auto", budget=budget, keep_documents=1).resolved()
    for name, value in BUDGETS[budget].items():
        assert getattr(resolved, name) == value
    explicit = AttributionOptions(method="exact", budget=budget)
    assert explicit.resolved() is explicit


@pytest.mark.parametrize("method", METHODS)
def test_method_options_are_those_the_method_takes(method: str) -> None:
    expected = {
        "keep_documents": 4,
        "keep_sentences": 7,
        "doc_method": "fast",
        "rescore": 2,
        "rescore_margin": 0.5,
        "keep_similar": 1,
    }
    options = AttributionOptions(method=method, **expected)
    assert options.method_options() == {name: expected[name] for name in METHODS[method].options}


def test_auto_method_options_come_from_the_budget() -> None:
    options = AttributionOptions(method="auto", budget="balanced", keep_documents=9)
    resolved_method = BUDGETS["balanced"]["method"]
    assert set(options.method_options()) == set(METHODS[resolved_method].options)
    for name, value in options.method_options().items():
        assert value == BUDGETS["balanced"].get(name, getattr(options, name))


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("method", "fastest", "unknown method 'fastest'; choose naive, exact"),
        ("budget", "cheap", "unknown budget 'cheap'; choose fast, balanced, faithful"),
        ("doc_method", "naive", "unknown doc_method"),
        ("truncate", "sentences", "unknown truncate"),
        ("keep_documents", 0, "keep_documents\n  Input should be greater than or equal to 1"),
        ("keep_sentences", -2, "keep_sentences\n  Input should be greater than or equal to 1"),
        ("rescore", -1, "rescore\n  Input should be greater than or equal to 0"),
        ("keep_similar", -1, "keep_similar\n  Input should be greater than or equal to 0"),
        ("max_forwards", 0, "max_forwards\n  Input should be greater than or equal to 1"),
        ("context_gain", "maybe", "context_gain\n  Input should be a valid boolean"),
        ("colour", "red", "Extra inputs are not permitted"),
    ],
)
def test_bad_settings_name_the_choices(field: str, value: object, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        AttributionOptions(**{field: value})


def test_options_are_frozen_and_round_trip() -> None:
    options = AttributionOptions(method="hierarchical", keep_documents=3)
    with pytest.raises(ValidationError):
        options.keep_documents = 4
    assert AttributionOptions.model_validate_json(options.model_dump_json()) == options


def test_the_keyword_form_takes_every_option_with_its_type() -> None:
    """``attribute(**options)`` is typed by ``OptionKeywords``: it must name every field of
    ``AttributionOptions`` with the same type, or an editor would offer a stale signature."""
    fields = {name: field.annotation for name, field in AttributionOptions.model_fields.items()}
    assert get_type_hints(OptionKeywords) == fields
