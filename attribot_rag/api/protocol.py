"""What an attributor is: the interface the service, batch jobs, the Ray actor and both
integrations need, met by the local ``Attributor`` and the service's ``RemoteAttributor``."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from typing_extensions import Unpack

from .options import AttributionOptions, OptionKeywords

if TYPE_CHECKING:
    from ..core.messages import Messages
    from ..core.spans import Document
    from .results import AttributionResult


@runtime_checkable
class AttributorLike(Protocol):
    """Attributes answers to their documents: the question form and the messages form, each
    with one ``AttributionOptions`` or with its fields as keywords, and the answer the model
    gives when a request has none."""

    def attribute(
        self, question: str, documents: Sequence[Document | str], answer: str, **options: Unpack[OptionKeywords]
    ) -> AttributionResult: ...

    def attribute_messages(
        self, messages: Messages, answer: str, documents: Sequence[Document | str], **options: Unpack[OptionKeywords]
    ) -> AttributionResult: ...

    def attribute_with(
        self, question: str, documents: Sequence[Document | str], answer: str, options: AttributionOptions
    ) -> AttributionResult: ...

    def attribute_messages_with(
        self, messages: Messages, answer: str, documents: Sequence[Document | str], options: AttributionOptions
    ) -> AttributionResult: ...

    def generate_answer(self, question: str, documents: Sequence[Document | str], max_new_tokens: int = 48) -> str: ...


class KeywordForms(ABC):
    """``attribute`` and ``attribute_messages`` with keyword options, over the subclass's
    ``attribute_with`` and ``attribute_messages_with``: one signature for the local
    ``Attributor`` and the service's ``RemoteAttributor``."""

    @abstractmethod
    def attribute_with(
        self, question: str, documents: Sequence[Document | str], answer: str, options: AttributionOptions
    ) -> AttributionResult: ...

    @abstractmethod
    def attribute_messages_with(
        self, messages: Messages, answer: str, documents: Sequence[Document | str], options: AttributionOptions
    ) -> AttributionResult: ...

    def attribute(
        self, question: str, documents: Sequence[Document | str], answer: str, **options: Unpack[OptionKeywords]
    ) -> AttributionResult:
        """Score every document and sentence by how much the answer's log-probability drops
        without it. ``method="auto"`` (the default) runs what ``budget`` maps to (``BUDGETS``);
        ``hierarchical`` scores sentences of the top ``keep_documents`` only (its document pass
        exact, or frozen-context with ``doc_method="fast"``), and of the ``keep_similar``
        documents BM25 ranks highest; ``pruned`` needs a ``target``;
        ``fast`` is the frozen-context estimate, its top ``rescore`` sentences rescored with
        exact LOO. A prompt longer than the model's
        window is an error, or with ``truncate="documents"`` loses its last-retrieved documents
        (listed in ``dropped_documents``). An attribution that plans more than
        ``max_forwards`` forward passes is refused before it starts. The keywords and their
        defaults are ``AttributionOptions``'s."""
        return self.attribute_with(question, documents, answer, AttributionOptions(**options))

    def attribute_messages(
        self, messages: Messages, answer: str, documents: Sequence[Document | str], **options: Unpack[OptionKeywords]
    ) -> AttributionResult:
        """Attribute ``answer`` to the documents inside the prompt the LLM read: ``messages``,
        chat messages (``{"role", "content"}`` dicts) or a completion string. Each document is
        located verbatim in the message contents; located documents and their sentences are
        scored, everything else is context never ablated; documents not in the prompt are
        listed in ``result.unseen_documents``. Options as for ``attribute``."""
        return self.attribute_messages_with(messages, answer, documents, AttributionOptions(**options))
