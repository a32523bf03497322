"""Lexical similarity (BM25 from ``bm25s``, the ``similarity`` extra), the one place it is
computed: ``hierarchical``'s ``keep_similar`` and the benchmarks' BM25 baseline."""

from __future__ import annotations


def bm25_scores(query: str, corpus: list[str]) -> list[float]:
    """BM25 of ``query`` against each text of ``corpus``, the texts a corpus of their own
    (English stop words removed); all zeros for a query of stop words only. Raises
    ``ImportError`` without ``bm25s``."""
    import bm25s

    retriever = bm25s.BM25()
    retriever.index(bm25s.tokenize(corpus, stopwords="en", show_progress=False), show_progress=False)
    tokens = bm25s.tokenize([query], stopwords="en", return_ids=False, show_progress=False)[0]
    return [float(v) for v in retriever.get_scores(tokens)] if tokens else [0.0] * len(corpus)
