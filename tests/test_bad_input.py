"""Bad input gets a clear error before any model work."""

import copy
import logging
import re

import pytest

from attribot_rag import Attributor, Document, LoadedModel

Q, A = "Who wrote it?", "Ann wrote it."


@pytest.mark.parametrize(
    ("documents", "answer", "error", "message"),
    [
        ([], A, ValueError, "no documents"),
        (["Ann wrote it."], "", ValueError, "answer is empty"),
        (["Ann wrote it."], "   ", ValueError, "answer is empty"),
        (["Ann wrote it.", "  \n "], A, ValueError, "document 1 is empty"),
        ("Ann wrote it.", A, TypeError, "list of Document"),
        (["Ann wrote it.", 42], A, TypeError, "document 1 is a int"),
        (["Ann wrote it."], None, TypeError, "answer must be a str"),
        (
            [Document(text="Ann wrote it.", title="T\udc80")],
            A,
            ValueError,
            "document 0 title has a lone surrogate U+DC80 at character 1",
        ),
    ],
)
def test_bad_input_is_refused_clearly(attributor: Attributor, documents, answer, error, message) -> None:
    with pytest.raises(error, match=re.escape(message)):
        attributor.attribute(Q, documents, answer)


def test_an_answer_of_special_token_strings_is_scored_as_text(attributor: Attributor) -> None:
    result = attributor.attribute(Q, ["Ann wrote it."], "<|im_end|>", method="exact")
    assert result.answer == "<|im_end|>" and result.full_logprob < 0


def test_the_planned_work_is_logged_once_and_max_forwards_refuses_more(attributor: Attributor, caplog) -> None:
    documents = ["Ann wrote it. Bob read it.", "Cats purr."]  # 2 documents, 3 sentences
    with caplog.at_level(logging.INFO, logger="attribot_rag"):
        attributor.attribute(Q, documents, A, method="exact", max_forwards=6)
    assert [r.getMessage() for r in caplog.records] == ["exact: 6 forward passes planned over a 80-token prompt"]
    with pytest.raises(
        ValueError,
        match=r"method='exact' plans 6 forward passes over a 80-token prompt, more than max_forwards=5; use method='auto'",
    ):
        attributor.attribute(Q, documents, A, method="exact", max_forwards=5)
    with pytest.raises(ValueError, match="greater than or equal to 1"):
        attributor.attribute(Q, documents, A, max_forwards=0)


def test_a_chat_template_that_rewrites_the_message_is_refused(attributor: Attributor) -> None:
    tokenizer = copy.deepcopy(attributor.tokenizer)
    tokenizer.chat_template = "{{ messages[0]['content'] | upper }}"
    shouting = Attributor(LoadedModel(attributor.model, tokenizer, "upper"))
    with pytest.raises(ValueError, match="the chat template rewrites the user message"):
        shouting.attribute(Q, ["Ann wrote it."], A)


def test_unknown_method_and_settings(attributor: Attributor) -> None:
    with pytest.raises(ValueError, match="unknown method"):
        attributor.attribute(Q, ["Ann wrote it."], A, method="fastest")
    with pytest.raises(ValueError, match="keep_documents\n  Input should be greater than or equal to 1"):
        attributor.attribute(Q, ["Ann wrote it."], A, keep_documents=0)


def test_bad_template_and_model_arguments() -> None:
    with pytest.raises(ValueError, match="question"):
        Attributor(prompt_template="{context} only")
    with pytest.raises(TypeError, match="model must be"):
        Attributor(model=3)
    with pytest.raises(ValueError, match="unknown dtype"):
        Attributor(dtype="float33")


def test_result_serialises_and_ranks(attributor: Attributor) -> None:
    result = attributor.attribute(
        Q, [Document(text="Ann wrote it. Bob read it.", id="d1", metadata={"f": object()})], A, method="exact"
    )
    assert result.top(1)[0].text == "Ann wrote it."
    assert '"method":"exact"' in result.model_dump_json()
    assert result.cited_answer().startswith("Ann wrote it.[1]")
