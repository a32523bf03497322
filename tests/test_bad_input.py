"""Bad input gets a clear error before any model work."""

import re

import pytest

from attribot_rag import Attributor, Document

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
        (["Ann wrote it."], "<|im_end|>", ValueError, "special tokens"),
    ],
)
def test_bad_input_is_refused_clearly(attributor: Attributor, documents, answer, error, message) -> None:
    with pytest.raises(error, match=re.escape(message)):
        attributor.attribute(Q, documents, answer)


def test_unknown_method_and_settings(attributor: Attributor) -> None:
    with pytest.raises(ValueError, match="unknown method"):
        attributor.attribute(Q, ["Ann wrote it."], A, method="fastest")
    with pytest.raises(ValueError, match="at least 1"):
        attributor.attribute(Q, ["Ann wrote it."], A, keep_documents=0)


def test_prompt_longer_than_the_context_window_says_by_how_much(attributor: Attributor) -> None:
    window = attributor.model.config.max_position_embeddings
    long_document = "The cat sat on the mat. " * (window // 7)
    with pytest.raises(ValueError, match=r"more than .*context window of 8192") as info:
        attributor.attribute(Q, [long_document], A)
    over = int(re.search(r"(\d+) more than", str(info.value)).group(1))
    assert over > 0


def test_bad_template_and_model_arguments() -> None:
    with pytest.raises(ValueError, match="question"):
        Attributor(prompt_template="{context} only")
    with pytest.raises(TypeError, match="model must be"):
        Attributor(model=3)
    with pytest.raises(ValueError, match="unknown dtype"):
        Attributor(dtype="float33")


def test_result_serialises_and_ranks(attributor: Attributor) -> None:
    result = attributor.attribute(Q, [Document(text="Ann wrote it. Bob read it.", id="d1", metadata={"f": object()})], A, method="exact")
    assert result.top(1)[0].text == "Ann wrote it."
    assert '"method":"exact"' in result.model_dump_json()
    assert result.cited_answer().startswith("Ann wrote it.[1]")


def test_auto_method_follows_the_budget(attributor: Attributor) -> None:
    from attribot_rag import BUDGETS

    documents = ["Ann wrote it. Bob read it.", "Cats purr."]
    for budget, settings in BUDGETS.items():
        result = attributor.attribute(Q, documents, A, method="auto", budget=budget)
        assert result.method == settings["method"]
    with pytest.raises(ValueError, match="unknown budget"):
        attributor.attribute(Q, documents, A, method="auto", budget="cheap")
