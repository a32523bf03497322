"""``AttributorLLM``'s ``stream_*`` methods: the reply arrives in pieces while the embedded
model is still generating (it used to generate the whole reply first, then hand out words),
and the pieces add up to exactly the non-streamed reply."""

from __future__ import annotations

import asyncio
from typing import Any

from llama_index.core.base.llms.types import ChatMessage, MessageRole
from llama_index.postprocessor.attribot.local_models import AttributorLLM

from attribot_rag.testing import generating, generation_ends

PROMPT = "Name the colours of the rainbow, in order, separated by commas."


def _check(responses: list[tuple[str, str, bool]], expected: str) -> None:
    """(text so far, delta, generating when it arrived) of each streamed response."""
    assert responses[0][2], "the first piece came only after the whole generation"
    assert len(responses) > 1 and all(delta for _, delta, _ in responses)
    assert "".join(delta for _, delta, _ in responses) == responses[-1][0] == expected
    assert generation_ends()


def test_stream_complete_and_stream_chat_yield_pieces_while_the_model_generates(attributor: Any) -> None:
    llm = AttributorLLM(attributor, max_new_tokens=32)
    expected = llm.complete(PROMPT).text
    _check([(r.text, r.delta, generating()) for r in llm.stream_complete(PROMPT)], expected)
    messages = [ChatMessage(role=MessageRole.USER, content=PROMPT)]
    assert llm.chat(messages).message.content == expected
    _check([(r.message.content, r.delta, generating()) for r in llm.stream_chat(messages)], expected)


def test_async_streams_yield_pieces_while_the_model_generates(attributor: Any) -> None:
    llm = AttributorLLM(attributor, max_new_tokens=32)
    expected = llm.complete(PROMPT).text
    messages = [ChatMessage(role=MessageRole.USER, content=PROMPT)]

    async def run() -> tuple[list, list]:
        completions = [(r.text, r.delta, generating()) async for r in await llm.astream_complete(PROMPT)]
        chats = [(r.message.content, r.delta, generating()) async for r in await llm.astream_chat(messages)]
        return completions, chats

    completions, chats = asyncio.run(run())
    _check(completions, expected)
    _check(chats, expected)
