"""One attribution request as JSON: the CLI's input file, a batch job's record and the
service's request body share this pydantic model, so all three validate input alike and
name the field that is wrong."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from .options import AttributionOptions
from .spans import Document

if TYPE_CHECKING:
    from .attributor import Attributor
    from .results import AttributionResult


class DocumentRecord(BaseModel):
    """A document given as an object; a plain string is a document too."""

    model_config = ConfigDict(extra="forbid")

    text: str = Field(min_length=1)
    id: str | None = None
    title: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)


class ChatMessage(BaseModel):
    """One chat message, in the format of ``tokenizer.apply_chat_template``."""

    model_config = ConfigDict(extra="forbid")

    role: Literal["system", "user", "assistant", "tool"]
    content: str


class AttributionRequest(BaseModel):
    """``question`` and ``documents`` (we render the prompt), or ``messages`` and ``documents``
    (the prompt the LLM read); ``answer`` (without it the proxy answers, question form only);
    ``options`` (method and its settings); ``id`` (batch jobs key their output by it)."""

    model_config = ConfigDict(extra="forbid")

    id: str | int | None = None
    question: str | None = None
    messages: list[ChatMessage] | str | None = None
    documents: list[str | DocumentRecord] = Field(min_length=1)
    answer: str | None = None
    options: AttributionOptions | None = None

    @field_validator("question", "answer")
    @classmethod
    def _not_blank(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("must not be empty (leave it out instead)")
        return value

    @model_validator(mode="after")
    def _question_or_messages(self) -> AttributionRequest:
        if (self.question is None) == (self.messages is None):
            raise ValueError("give either 'question' or 'messages'")
        if self.messages is not None and self.answer is None:
            raise ValueError("'messages' needs the 'answer' the LLM gave")
        return self

    def core_documents(self) -> list[Document]:
        return [Document(text=d) if isinstance(d, str) else Document(**d.model_dump()) for d in self.documents]

    def attribute(self, attributor: Attributor, default: AttributionOptions | None = None) -> AttributionResult:
        """Run this request on ``attributor`` with its own options, else ``default``; without
        an answer the proxy answers first (complete sentences only)."""
        options = self.options or default or AttributionOptions()
        documents = self.core_documents()
        if self.messages is not None:
            messages = self.messages if isinstance(self.messages, str) else [m.model_dump() for m in self.messages]
            return attributor.attribute_messages_with(messages, self.answer, documents, options)
        answer = self.answer or attributor.generate_answer(self.question, documents)
        return attributor.attribute_with(self.question, documents, answer, options)
