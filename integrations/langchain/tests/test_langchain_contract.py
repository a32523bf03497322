"""The integration contract shared with the LlamaIndex integration: every ``CitationOptions``
field reachable by keyword and through ``options=`` (and on to the core call), the model loaded
on first use, and the error form that keeps the answer. The attribution model is the real
embedded one; the answering LLM a fake with a fixed answer."""

from __future__ import annotations

import logging
from typing import Any, Literal, get_args, get_origin

import pytest
from langchain_attribot import AttriBoTCallbackHandler, format_documents, with_citations
from langchain_core.callbacks import CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.language_models import FakeListChatModel
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.retrievers import BaseRetriever
from langchain_core.runnables import RunnablePassthrough
from pydantic import ValidationError
from pydantic.fields import FieldInfo

from attribot_rag import AttributionOptions, AttributionResult, CitationOptions

QUESTION, ANSWER = "When was the tower built?", "It was built in 1889."
DOCUMENTS = [Document(id="tower", page_content="The tower was built in 1889. It is painted red.")]
PROMPT = ChatPromptTemplate.from_messages([("human", "Documents:\n{context}Question: {question}")])


class FixedRetriever(BaseRetriever):
    def _get_relevant_documents(self, query: str, *, run_manager: CallbackManagerForRetrieverRun) -> list[Document]:
        return DOCUMENTS


def answer_chain() -> Any:
    return PROMPT | FakeListChatModel(responses=[ANSWER]) | StrOutputParser()


def rag_chain() -> Any:
    return {"context": FixedRetriever() | format_documents, "question": RunnablePassthrough()} | answer_chain()


def other_value(field: FieldInfo) -> Any:
    """A valid value of ``field`` other than its default, read off its type."""
    default, annotation = field.default, field.annotation
    if get_origin(annotation) is Literal:
        return next(choice for choice in get_args(annotation) if choice != default)
    if annotation is bool:
        return not default
    if default is None:  # an optional bound
        return 10_000
    return default + 1 if isinstance(default, int) else default / 2


OTHERS = {name: other_value(field) for name, field in CitationOptions.model_fields.items()}


class RecordingAttributor:
    """The real attributor; keeps the options each call received."""

    def __init__(self, attributor: Any) -> None:
        self.attributor, self.options = attributor, []

    def attribute_messages_with(self, messages: Any, answer: str, documents: Any, options: Any) -> AttributionResult:
        self.options.append(options)
        return self.attributor.attribute_messages_with(messages, answer, documents, options)


@pytest.mark.parametrize("name", sorted(OTHERS))
def test_every_option_is_reachable_by_keyword_and_by_options(name: str) -> None:
    value = OTHERS[name]
    assert value != CitationOptions.model_fields[name].default
    options = CitationOptions(**{name: value})
    by_keyword = AttriBoTCallbackHandler(**{name: value})
    assert by_keyword.options == AttriBoTCallbackHandler(options=options).options == options
    assert getattr(by_keyword.options, name) == value
    # keywords refine options=, they do not reset its other fields
    other = next(n for n in OTHERS if n != name)
    merged = AttriBoTCallbackHandler(options=options, **{other: OTHERS[other]}).options
    assert (getattr(merged, name), getattr(merged, other)) == (value, OTHERS[other])


def test_the_options_reach_the_core_call(attributor: Any) -> None:
    """What the handler and ``with_citations`` hold is what the core receives, and the
    citations are drawn with their thresholds."""
    recorder = RecordingAttributor(attributor)
    options = CitationOptions(method="exact", context_gain=False, per_claim=2, min_score=0.0, min_share=0.0)
    handler = AttriBoTCallbackHandler(recorder, options=options)
    rag_chain().invoke(QUESTION, config={"callbacks": [handler]})
    result = handler.last_result
    assert recorder.options == [options.attribution()] and type(recorder.options[0]) is AttributionOptions
    assert result.error is None and result.options == options
    assert result.citations == result.attribution.citations(2, 0.0, 0.0)
    assert len(result.citations.claims[0].markers) == 2  # both sentences cleared a bar of 0
    # the page too is drawn with the handler's thresholds (the core's defaults cite one)
    assert result.to_html() == result.attribution.to_html(None, 2, 0.0, 0.0) != result.attribution.to_html()

    chain = with_citations(FixedRetriever(), answer_chain(), attributor=recorder, method="exact", per_claim=2)
    output = chain.invoke(QUESTION)
    assert recorder.options[-1] == AttributionOptions(method="exact")
    assert output["attribution"].options == CitationOptions(method="exact", per_claim=2)
    assert output["citations"] == output["attribution"].attribution.citations(2)


def test_settings_are_checked_when_made() -> None:
    with pytest.raises(ValidationError, match="per_claim"):
        AttriBoTCallbackHandler(per_claim=0)
    with pytest.raises(ValidationError, match="no_such_option"):
        with_citations(FixedRetriever(), answer_chain(), no_such_option=1)
    with pytest.raises(ValueError, match="either attributor or model"):
        AttriBoTCallbackHandler(object(), model="x")  # type: ignore[arg-type]


def test_the_model_loads_on_first_use_and_a_failed_load_keeps_the_answer(caplog: pytest.LogCaptureFixture) -> None:
    missing = "/nonexistent/attribot-model"
    handler = AttriBoTCallbackHandler(model=missing, device="cpu")  # no load here: it would fail
    chain = with_citations(FixedRetriever(), answer_chain(), model=missing, device="cpu")
    with caplog.at_level(logging.WARNING, logger="langchain_attribot"):
        assert rag_chain().invoke(QUESTION, config={"callbacks": [handler]}) == ANSWER
        output = chain.invoke(QUESTION)
    for result in (handler.last_result, output["attribution"]):
        assert not result.ok and missing in result.error and result.attribution is None
        assert result.answer == result.cited_answer() == ANSWER and result.citations.claims == []
        assert [d.id for d in result.documents] == ["tower"]
    assert output["answer"] == ANSWER and missing in caplog.text
