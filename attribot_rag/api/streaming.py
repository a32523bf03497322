"""Greedy chat replies streamed while the model generates them: the streaming path of the
integrations' local chat models (LangChain ``AttributorChatModel``, LlamaIndex
``AttributorLLM``). The pieces concatenate to exactly ``Attributor.chat``'s reply."""

from __future__ import annotations

import threading
from collections.abc import Generator, Iterable, Iterator
from typing import TYPE_CHECKING, Any

import torch
from transformers import StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer

from ..core.prompt import TokenizedText

if TYPE_CHECKING:
    from .attributor import Attributor

STREAM_THREAD = "attribot-stream"
"""The name of the thread that generates a streamed answer (tests wait for it to end)."""


class _Stopped(StoppingCriteria):
    """Ends generation once the reader is gone, so that the model is not held for nobody."""

    def __init__(self, event: threading.Event) -> None:
        self.event = event

    def __call__(self, input_ids: torch.LongTensor, scores: Any, **kwargs: Any) -> torch.Tensor:
        return torch.full((input_ids.shape[0],), self.event.is_set(), dtype=torch.bool, device=input_ids.device)


def _stripped(pieces: Iterable[str]) -> Iterator[str]:
    """``pieces`` as the stripped whole: no leading whitespace, and whitespace held back until
    text follows it (so trailing whitespace is never sent), as ``Attributor.chat`` strips."""
    pending, started = "", False
    for piece in pieces:
        if not started:
            piece = piece.lstrip()
            started = bool(piece)
        text = pending + piece
        body = text.rstrip()
        pending = text[len(body) :]
        if body:
            yield body


def stream_chat(
    attributor: Attributor, messages: list[dict[str, str]], max_new_tokens: int = 48
) -> Generator[str, None, None]:
    """``attributor.chat(messages, max_new_tokens)``, yielded in pieces as the tokens are
    generated (transformers' ``TextIteratorStreamer``; generation runs in a thread that holds
    the attributor's lock, like every call). Closing the iterator early stops the generation."""
    tokenizer = attributor.tokenizer
    prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    ids = torch.tensor([TokenizedText.of(tokenizer, prompt).ids], device=attributor.model.device)
    streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
    stop = threading.Event()
    failure: list[Exception] = []

    def generate() -> None:
        try:
            if not stop.is_set():
                attributor.greedy(
                    ids, max_new_tokens, streamer=streamer, stopping_criteria=StoppingCriteriaList([_Stopped(stop)])
                )
                return
        except Exception as error:  # noqa: BLE001 - re-raised in the reader's thread, below
            failure.append(error)
        streamer.end()  # wake the reader: generation failed or was never started

    worker = threading.Thread(target=generate, name=STREAM_THREAD, daemon=True)
    worker.start()
    try:
        yield from _stripped(streamer)
    finally:
        stop.set()
    worker.join()
    if failure:
        raise failure[0]
