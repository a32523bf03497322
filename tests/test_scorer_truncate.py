"""truncate="documents" keeps the most first-retrieved documents that fit the context window,
with a logarithmic number of renders (no recursion, no render per dropped document)."""

from __future__ import annotations

import pytest

from attribot_rag import Attributor, Document
from attribot_rag.api import attributor as attributor_module


def _documents(count: int) -> list[Document]:
    return [Document(text=f"Crate {i} holds {i * 7 % 50} brass lanterns.", id=f"crate-{i}") for i in range(count)]


def test_truncation_keeps_the_longest_fitting_prefix_in_few_renders(
    attributor: Attributor, monkeypatch: pytest.MonkeyPatch
) -> None:
    renders = []
    real = attributor_module.render
    monkeypatch.setattr(
        attributor_module, "render", lambda *args, **kwargs: renders.append(len(args[1])) or real(*args, **kwargs)
    )
    documents = _documents(1900)
    window = attributor.model.config.max_position_embeddings
    question, answer = "Which crate holds 21 lanterns?", "Crate 3."
    render_for = lambda tokenizer, docs: attributor_module.render(question, docs, tokenizer, attributor.prompt_template)  # noqa: E731
    problem = attributor._problem(attributor._proxy, render_for, documents, answer, True)
    kept = len(problem.rendered.documents)
    assert 1 < kept < len(documents)
    assert len(renders) <= 2 + len(documents).bit_length()  # bisection, not one render per drop
    assert len(problem.prompt.ids) + len(problem.answer.ids) <= window
    # one more document would not fit
    with pytest.raises(ValueError, match="context window"):
        attributor._problem(attributor._proxy, render_for, documents[: kept + 1], answer, False)


def test_without_truncation_too_long_is_an_error_that_names_the_option(attributor: Attributor) -> None:
    documents = _documents(1900)
    with pytest.raises(ValueError, match="truncate='documents'"):
        attributor.attribute("Which crate?", documents, "Crate 3.", method="fast")
