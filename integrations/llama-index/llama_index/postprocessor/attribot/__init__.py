"""LlamaIndex integration of attribot-rag: leave-one-out citations for RAG answers."""

from llama_index.postprocessor.attribot.base import AttriBoTPostprocessor
from llama_index.postprocessor.attribot.citations import (
    AnswerSentenceCitations,
    NodeCitation,
    SentenceCitation,
)

__all__ = ["AnswerSentenceCitations", "AttriBoTPostprocessor", "NodeCitation", "SentenceCitation"]
