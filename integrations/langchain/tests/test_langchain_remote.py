"""AttriBoTCallbackHandler with a ``RemoteAttributor``: the same citations from a real
``attribot-rag serve`` on loopback as from the local model; a server stopped mid-run is a
recorded error and the chain's output is unchanged."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from langchain_attribot import AttriBoTCallbackHandler, format_documents
from langchain_core.callbacks import CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.output_parsers import StrOutputParser
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.retrievers import BaseRetriever
from langchain_core.runnables import RunnablePassthrough

from attribot_rag import RemoteAttributor
from attribot_rag.serving.service_process import ServiceProcess

pytestmark = pytest.mark.model  # the server loads the embedded model

QUESTION = "When was the tower built?"
ANSWER = "It was built in 1889."
DOCUMENTS = [
    Document(page_content="The tower was built in 1889. It is painted red.", metadata={"source": "tower.txt"}),
    Document(id="cats", page_content="Cats purr when they are happy. Cats sleep a lot."),
]
PROMPT = ChatPromptTemplate.from_messages(
    [("human", "Answer the question using the documents below. Be brief.\n\n{context}Question: {question}")]
)


class FixedRetriever(BaseRetriever):
    def _get_relevant_documents(self, query: str, *, run_manager: CallbackManagerForRetrieverRun) -> list[Document]:
        return DOCUMENTS


class FixedChatModel(BaseChatModel):
    """Answers ``ANSWER``; calls ``before_answer`` first (to stop the server mid-run)."""

    before_answer: Callable[[], Any] | None = None

    @property
    def _llm_type(self) -> str:
        return "fixed"

    def _generate(
        self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kwargs: Any
    ) -> ChatResult:
        if self.before_answer is not None:
            self.before_answer()
        return ChatResult(generations=[ChatGeneration(message=AIMessage(content=ANSWER))])


def run(attributor: Any, model: FixedChatModel) -> tuple[str, Any]:
    handler = AttriBoTCallbackHandler(attributor, method="exact")
    chain = (
        {"context": FixedRetriever() | format_documents, "question": RunnablePassthrough()}
        | PROMPT
        | model
        | StrOutputParser()
    )
    output = chain.invoke(QUESTION, config={"callbacks": [handler]})
    return output, handler.last_result


def test_remote_citations_equal_local_and_a_stopped_server_is_recorded(attributor):
    _, local = run(attributor, FixedChatModel())
    assert local.error is None and local.citations.sources
    with ServiceProcess() as server, RemoteAttributor(server.url, timeout=120) as remote:
        output, served = run(remote, FixedChatModel())
        assert output == ANSWER
        assert served.error is None, served.error
        assert served.citations == local.citations
        assert served.attribution.model_dump(exclude={"timings"}) == local.attribution.model_dump(exclude={"timings"})

        output, stopped = run(remote, FixedChatModel(before_answer=server.stop))
    assert output == ANSWER  # the answer flows
    assert "attribution service at http://127.0.0.1" in stopped.error
    assert stopped.attribution is None and not stopped.citations.sources and stopped.answer == ANSWER
