"""Every option is declared once (``AttributionOptions``, ``CitationOptions``) and reachable
from every surface: Python keywords, the command line, a service request, the LangChain handler
and the LlamaIndex postprocessor. A new field that one surface forgets fails here."""

from __future__ import annotations

import argparse
from typing import Literal, get_args, get_origin

import pytest
from langchain_attribot import AttriBoTCallbackHandler
from llama_index.postprocessor.attribot import AttriBoTPostprocessor

from attribot_rag import AttributionOptions, CitationOptions
from attribot_rag.api.records import AttributionRequest
from attribot_rag.cli.common import add_option_arguments, options_from


def _other_value(options: type[AttributionOptions], name: str) -> object:
    """A valid value of field ``name`` that differs from its default."""
    field = options.model_fields[name]
    if get_origin(field.annotation) is Literal:
        return next(choice for choice in get_args(field.annotation) if choice != field.default)
    if field.annotation is bool:
        return not field.default
    if field.annotation is float:
        return 0.25 if field.default != 0.25 else 0.5
    return 7  # the integer fields (max_forwards included) take 7


@pytest.mark.parametrize("name", list(AttributionOptions.model_fields))
def test_every_attribution_option_reaches_the_command_line_and_the_service(name: str) -> None:
    value = _other_value(AttributionOptions, name)
    expected = AttributionOptions(**{name: value})
    parser = argparse.ArgumentParser()
    add_option_arguments(parser)
    flag = "--" + name.replace("_", "-")
    argv = [flag] if value is True else [f"--no-{name.replace('_', '-')}"] if value is False else [flag, str(value)]
    assert options_from(parser.parse_args(argv)) == expected
    request = AttributionRequest.model_validate(
        {"question": "q", "documents": ["d"], "answer": "a", "options": {name: value}}
    )
    assert request.options == expected


@pytest.mark.parametrize("name", list(CitationOptions.model_fields))
def test_every_citation_option_reaches_both_integrations(name: str) -> None:
    value = _other_value(CitationOptions, name)
    expected = CitationOptions(**{name: value})
    # keywords and options= alike; constructing loads no model
    assert AttriBoTCallbackHandler(**{name: value}).options == expected
    assert AttriBoTCallbackHandler(options=expected).options == expected
    assert AttriBoTPostprocessor(**{name: value}).options == expected
    assert AttriBoTPostprocessor(options=expected).options == expected
    if name in AttributionOptions.model_fields:
        assert expected.attribution() == AttributionOptions(**{name: value})
