"""One attribution request as JSON: the CLI's input file, a batch job's record and the
service's request body share this pydantic model, so all three validate input alike and
name the field that is wrong."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic.config import JsonDict

from ..core.spans import Document
from .options import AttributionOptions
from .validation import as_documents, check_text, check_unicode

if TYPE_CHECKING:
    from .attributor import Attributor
    from .results import AttributionResult

NON_BLANK: JsonDict = {"pattern": r"\S"}  # in the JSON schema: a string with a non-space character


class DocumentRecord(BaseModel):
    """A document given as an object; a plain string is a document too."""

    model_config = ConfigDict(extra="forbid")

    text: str = Field(min_length=1, json_schema_extra=NON_BLANK)
    id: str | None = None
    title: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    sentences: list[str] | None = Field(
        None, description="your own sentence split of text (each must occur in it, in order)"
    )


class ChatMessage(BaseModel):
    """One chat message, in the format of ``tokenizer.apply_chat_template``."""

    model_config = ConfigDict(extra="forbid")

    role: Literal["system", "user", "assistant", "tool"]
    content: str


class AttributionRequest(BaseModel):
    """``question`` and ``documents`` (we render the prompt), or ``messages`` and ``documents``
    (the prompt the LLM read); ``answer`` (without it the proxy answers, question form only);
    ``options`` (method and its settings); ``id`` (batch jobs key their output by it)."""

    # The JSON schema states the validators' rules too (the service publishes it): exactly one
    # of question and messages, and messages with an answer.
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "oneOf": [
                {
                    "required": ["question"],
                    "properties": {"question": {"type": "string"}, "messages": {"type": "null"}},
                },
                {
                    "required": ["messages", "answer"],
                    "properties": {
                        "question": {"type": "null"},
                        "messages": {"not": {"type": "null"}},
                        "answer": {"type": "string"},
                    },
                },
            ]
        },
    )

    id: str | int | None = None
    question: str | None = Field(None, json_schema_extra=NON_BLANK)
    messages: list[ChatMessage] | str | None = None
    documents: list[DocumentRecord] = Field(
        min_length=1,
        description='each a string, or an object {"text", "id", "title", "metadata"}',
        json_schema_extra=lambda schema: schema.update(
            items={"anyOf": [{"type": "string", **NON_BLANK}, schema["items"]]}
        ),
    )
    answer: str | None = Field(None, json_schema_extra=NON_BLANK)
    options: AttributionOptions | None = None

    @field_validator("documents", mode="before")
    @classmethod
    def _strings_are_documents(cls, value: Any) -> Any:
        """A string is a document's text; anything but a string or an object is named here
        (a union would report one error per member)."""
        if not isinstance(value, list):
            return value
        for index, document in enumerate(value):
            if not isinstance(document, (str, dict)):
                raise ValueError(f'document {index} is {json_type(document)}: give a string or an object with "text"')
        return [{"text": d} if isinstance(d, str) else d for d in value]

    @field_validator("question", "answer")
    @classmethod
    def _not_blank(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("must not be empty (leave it out instead)")
        return value

    @model_validator(mode="after")
    def _question_or_messages(self) -> AttributionRequest:
        """The core's own checks too (empty documents, lone surrogates), so that bad input is
        refused before a model loads."""
        if (self.question is None) == (self.messages is None):
            raise ValueError("give either 'question' or 'messages'")
        if self.messages is not None and self.answer is None:
            raise ValueError("'messages' needs the 'answer' the LLM gave")
        for name in ("question", "answer"):
            if getattr(self, name) is not None:
                check_text(name, getattr(self, name))
        contents = [self.messages] if isinstance(self.messages, str) else [m.content for m in self.messages or []]
        for index, content in enumerate(contents):
            check_unicode(f"message {index}", content)
        as_documents(self.core_documents())
        return self

    def core_documents(self) -> list[Document]:
        return [Document(**d.model_dump()) for d in self.documents]

    def attribute(self, attributor: Attributor, default: AttributionOptions | None = None) -> AttributionResult:
        """Run this request on ``attributor`` with its own options, else ``default``; without
        an answer the proxy answers first (complete sentences only)."""
        options = self.options or default or AttributionOptions()
        documents = self.core_documents()
        if self.messages is not None:
            assert self.answer is not None  # the validator asks for it with messages
            messages = self.messages if isinstance(self.messages, str) else [m.model_dump() for m in self.messages]
            return attributor.attribute_messages_with(messages, self.answer, documents, options)
        assert self.question is not None  # the validator asks for a question without messages
        answer = self.answer or attributor.generate_answer(self.question, documents)
        return attributor.attribute_with(self.question, documents, answer, options)


def describe_errors(error: ValidationError, where: Callable[[tuple[int | str, ...]], str] | None = None) -> str:
    """A validation error as one line: each wrong field's path (or what ``where`` names it, e.g.
    the command-line flag that set it) and what is wrong with it. The one formatter of the
    command line, batch jobs and ``serve``'s settings."""
    parts = []
    for item in error.errors():
        location = tuple(item["loc"])
        name = where(location) if where else ".".join(map(str, location))
        message = item["msg"].removeprefix("Value error, ")
        parts.append(f"{name}: {message}" if name else message)
    return "; ".join(parts)


def json_type(value: Any) -> str:
    """The JSON name of a parsed value's type, as the person who wrote the file sees it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    return "an array" if isinstance(value, list) else f"a {type(value).__name__}"
