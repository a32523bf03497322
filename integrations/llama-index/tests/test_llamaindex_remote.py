"""AttriBoTPostprocessor with a ``RemoteAttributor``: the same citations from a real
``attribot-rag serve`` on loopback as from the local model; a server stopped mid-query is a
recorded error and the answer is left alone."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from llama_index.core import Document, SummaryIndex
from llama_index.core.bridge.pydantic import PrivateAttr
from llama_index.core.llms import CompletionResponse, CompletionResponseGen, MockLLM
from llama_index.core.llms.callbacks import llm_completion_callback
from llama_index.postprocessor.attribot import AttriBoTPostprocessor

from attribot_rag import RemoteAttributor
from attribot_rag.serving.service_process import ServiceProcess

pytestmark = pytest.mark.model  # the server loads the embedded model

QUESTION = "When was the Eiffel Tower completed?"
ANSWER = "The Eiffel Tower was completed in 1889."
DOCUMENTS = [
    Document(text="Paris is the capital of France. The Eiffel Tower was completed in 1889.", doc_id="eiffel"),
    Document(text="Cats are small carnivores. They sleep for most of the day.", doc_id="cats"),
]


class FixedLLM(MockLLM):
    """Answers ``ANSWER``; calls ``before_answer`` first (to stop the server mid-query)."""

    _before_answer: Callable[[], Any] | None = PrivateAttr(default=None)

    def __init__(self, before_answer: Callable[[], Any] | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._before_answer = before_answer

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        if self._before_answer is not None:
            self._before_answer()
        return CompletionResponse(text=ANSWER)

    @llm_completion_callback()
    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponseGen:
        yield self.complete(prompt)


def query(index: SummaryIndex, attributor: Any, llm: FixedLLM) -> Any:
    with AttriBoTPostprocessor(attributor=attributor, method="exact") as postprocessor:
        return index.as_query_engine(llm=llm, node_postprocessors=[postprocessor]).query(QUESTION)


def test_remote_citations_equal_local_and_a_stopped_server_is_recorded(attributor):
    index = SummaryIndex.from_documents(DOCUMENTS)
    local = query(index, attributor, FixedLLM()).metadata["citation_result"]
    assert local.citations.sources, local.error
    with ServiceProcess() as server, RemoteAttributor(server.url, timeout=120) as remote:
        served = query(index, remote, FixedLLM()).metadata["citation_result"]
        assert served.answer == local.answer == ANSWER
        assert served.citations == local.citations
        assert served.attribution.model_dump(exclude={"timings"}) == local.attribution.model_dump(exclude={"timings"})

        stopped = query(index, remote, FixedLLM(before_answer=server.stop))
    assert stopped.response == ANSWER  # the answer flows
    result = stopped.metadata["citation_result"]
    assert not result.ok and result.citations.sources == [] and result.cited_answer() == ANSWER
    assert "attribution service at http://127.0.0.1" in result.error
