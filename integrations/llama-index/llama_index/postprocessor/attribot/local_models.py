"""A local, offline LlamaIndex LLM for examples, demos and tests: the ``Attributor``'s own
(proxy) model answering greedily through its chat template. Any LlamaIndex LLM works with the
postprocessor; this one needs no network."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator, Sequence
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


def _words(text: str) -> Iterator[tuple[str, str]]:
    """(text so far, delta) word by word: how the streaming methods hand out an answer."""
    so_far = ""
    for piece in re.findall(r"\s*\S+", text):
        so_far += piece
        yield so_far, piece


class AttributorLLM(CustomLLM):
    """A chat model: greedy replies of at most ``max_new_tokens`` by ``attributor.model``
    through its chat template (``Attributor.chat``); completions are one user message.

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

    def _reply(self, messages: Sequence[ChatMessage]) -> str:
        chat = [{"role": m.role.value, "content": m.content or ""} for m in messages]
        return self._attributor.chat(chat, max_new_tokens=self.max_new_tokens)

    def _answer(self, prompt: str) -> str:
        return self._reply([ChatMessage(role=MessageRole.USER, content=prompt)])

    @llm_chat_callback()
    def chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        return ChatResponse(message=ChatMessage(role=MessageRole.ASSISTANT, content=self._reply(messages)))

    @llm_chat_callback()
    def stream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseGen:
        reply = self._reply(messages)
        return (
            ChatResponse(message=ChatMessage(role=MessageRole.ASSISTANT, content=text), delta=delta)
            for text, delta in _words(reply)
        )

    @llm_chat_callback()
    async def achat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        reply = await asyncio.to_thread(self._reply, messages)
        return ChatResponse(message=ChatMessage(role=MessageRole.ASSISTANT, content=reply))

    @llm_chat_callback()
    async def astream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseAsyncGen:
        reply = await asyncio.to_thread(self._reply, messages)

        async def gen() -> ChatResponseAsyncGen:
            for text, delta in _words(reply):
                yield ChatResponse(message=ChatMessage(role=MessageRole.ASSISTANT, content=text), delta=delta)

        return gen()

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        return CompletionResponse(text=self._answer(prompt))

    @llm_completion_callback()
    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponseGen:
        answer = self._answer(prompt)
        return (CompletionResponse(text=text, delta=delta) for text, delta in _words(answer))

    @llm_completion_callback()
    async def acomplete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        return CompletionResponse(text=await asyncio.to_thread(self._answer, prompt))

    @llm_completion_callback()
    async def astream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponseAsyncGen:
        answer = await asyncio.to_thread(self._answer, prompt)

        async def gen() -> CompletionResponseAsyncGen:
            for text, delta in _words(answer):
                yield CompletionResponse(text=text, delta=delta)

        return gen()
