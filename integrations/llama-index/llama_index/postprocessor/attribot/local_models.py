"""A local, offline LlamaIndex LLM for examples, demos and tests: the ``Attributor``'s own
(proxy) model answering greedily through its chat template. Any LlamaIndex LLM works with the
postprocessor; this one needs no network."""

from __future__ import annotations

import re
from typing import Any

from llama_index.core.bridge.pydantic import PrivateAttr
from llama_index.core.llms import (
    CompletionResponse,
    CompletionResponseGen,
    CustomLLM,
    LLMMetadata,
)
from llama_index.core.llms.callbacks import llm_completion_callback

from attribot_rag import Attributor


class AttributorLLM(CustomLLM):
    """Greedy completions of at most ``max_new_tokens`` by ``attributor.model`` (``Attributor.chat``)."""

    max_new_tokens: int = 32
    _attributor: Attributor = PrivateAttr()

    def __init__(self, attributor: Attributor, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._attributor = attributor

    @property
    def metadata(self) -> LLMMetadata:
        window = self._attributor.model.config.max_position_embeddings
        return LLMMetadata(context_window=window, num_output=self.max_new_tokens, model_name=self._attributor.model.name_or_path)

    def _answer(self, prompt: str) -> str:
        return self._attributor.chat([{"role": "user", "content": prompt}], max_new_tokens=self.max_new_tokens)

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        return CompletionResponse(text=self._answer(prompt))

    @llm_completion_callback()
    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponseGen:
        answer = self._answer(prompt)

        def words() -> CompletionResponseGen:
            text = ""
            for piece in re.findall(r"\s*\S+", answer):
                text += piece
                yield CompletionResponse(text=text, delta=piece)

        return words()
