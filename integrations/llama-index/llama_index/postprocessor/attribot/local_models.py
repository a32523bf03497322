"""A local, offline LlamaIndex LLM for examples, demos and tests: the ``Attributor``'s own
(proxy) model answering greedily through its chat template. Any LlamaIndex LLM works with the
postprocessor; this one needs no network."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

from llama_index.core.base.llms.types import (
    ChatMessage,
    ChatResponse,
    ChatResponseAsyncGen,
    ChatResponseGen,
    CompletionResponseAsyncGen,
    MessageRole,
)
from llama_index.core.bridge.pydantic import PrivateAttr
from llama_index.core.llms import (
    CompletionResponse,
    CompletionResponseGen,
    CustomLLM,
    LLMMetadata,
)
from llama_index.core.llms.callbacks import llm_chat_callback, llm_completion_callback

from attribot_rag import Attributor, shared_attributor
from attribot_rag.api.streaming import stream_chat


def _so_far(pieces: Iterator[str]) -> Iterator[tuple[str, str]]:
    """(text so far, delta) for each piece of a streamed reply."""
    text = ""
    for piece in pieces:
        text += piece
        yield text, piece


async def _in_a_thread(pieces: Iterator[str]) -> AsyncIterator[str]:
    """``pieces`` for an event loop: each one is awaited in a worker thread, never on the loop;
    leaving early closes the stream (ending its generation)."""
    try:
        while (piece := await asyncio.to_thread(next, pieces, None)) is not None:
            yield piece
    finally:
        await asyncio.to_thread(pieces.close)


class AttributorLLM(CustomLLM):
    """A chat model: greedy replies of at most ``max_new_tokens`` by ``attributor.model``
    through its chat template (``Attributor.chat``); completions are one user message. The
    ``stream_*`` methods yield the reply as its tokens are generated.

    ``attributor``: default the process-wide ``attribot_rag.shared_attributor()`` (the
    embedded SmolLM2-135M-Instruct). The async methods generate in a worker thread, never on
    the event loop.
    """

    max_new_tokens: int = 32
    _attributor: Attributor = PrivateAttr()

    def __init__(self, attributor: Attributor | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._attributor = attributor if attributor is not None else shared_attributor()

    @classmethod
    def class_name(cls) -> str:
        return "AttributorLLM"

    @property
    def metadata(self) -> LLMMetadata:
        model = self._attributor.model
        return LLMMetadata(
            context_window=model.config.max_position_embeddings,
            num_output=self.max_new_tokens,
            is_chat_model=True,
            model_name=model.name_or_path,
        )

    @staticmethod
    def _chat(messages: Sequence[ChatMessage]) -> list[dict[str, str]]:
        return [{"role": m.role.value, "content": m.content or ""} for m in messages]

    def _reply(self, messages: Sequence[ChatMessage]) -> str:
        return self._attributor.chat(self._chat(messages), max_new_tokens=self.max_new_tokens)

    def _pieces(self, messages: Sequence[ChatMessage]) -> Iterator[str]:
        """The reply, streamed as it is generated."""
        return stream_chat(self._attributor, self._chat(messages), max_new_tokens=self.max_new_tokens)

    @staticmethod
    def _user(prompt: str) -> list[ChatMessage]:
        return [ChatMessage(role=MessageRole.USER, content=prompt)]

    @llm_chat_callback()
    def chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        return ChatResponse(message=ChatMessage(role=MessageRole.ASSISTANT, content=self._reply(messages)))

    @llm_chat_callback()
    def stream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseGen:
        return (
            ChatResponse(message=ChatMessage(role=MessageRole.ASSISTANT, content=text), delta=delta)
            for text, delta in _so_far(self._pieces(messages))
        )

    @llm_chat_callback()
    async def achat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        reply = await asyncio.to_thread(self._reply, messages)
        return ChatResponse(message=ChatMessage(role=MessageRole.ASSISTANT, content=reply))

    @llm_chat_callback()
    async def astream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseAsyncGen:
        async def gen() -> ChatResponseAsyncGen:
            text = ""
            async for delta in _in_a_thread(self._pieces(messages)):
                text += delta
                yield ChatResponse(message=ChatMessage(role=MessageRole.ASSISTANT, content=text), delta=delta)

        return gen()

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        return CompletionResponse(text=self._reply(self._user(prompt)))

    @llm_completion_callback()
    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponseGen:
        return (CompletionResponse(text=text, delta=delta) for text, delta in _so_far(self._pieces(self._user(prompt))))

    @llm_completion_callback()
    async def acomplete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        return CompletionResponse(text=await asyncio.to_thread(self._reply, self._user(prompt)))

    @llm_completion_callback()
    async def astream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponseAsyncGen:
        async def gen() -> CompletionResponseAsyncGen:
            text = ""
            async for delta in _in_a_thread(self._pieces(self._user(prompt))):
                text += delta
                yield CompletionResponse(text=text, delta=delta)

        return gen()
