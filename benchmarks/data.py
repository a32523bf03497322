"""The benchmarks' datasets (samples of SQuAD 2.0 and HotpotQA in ``benchmarks/data``): loading,
the document settings, gold answers and the gold supporting sentences as indices into an
attribution's span list."""

from __future__ import annotations

import json
import re
import zlib
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np

from attribot_rag import Document
from attribot_rag.core.spans import split_sentences
from benchmarks import ROOT

DATA_DIR = ROOT / "data"
FILES = {"squad2": "squad2_dev_sample.jsonl", "hotpotqa": "hotpotqa_dev_sample.jsonl"}
HOTPOTQA = DATA_DIR / FILES["hotpotqa"]
SQUAD2 = DATA_DIR / FILES["squad2"]

# A question of either dataset as stored: id, question, documents (title, sentences), and
# HotpotQA's answer and supporting facts or SQuAD's answers.
Item = dict[str, Any]


def load_questions(path: Path, n: int) -> list[Item]:
    """The first ``n`` questions of a JSONL file."""
    with path.open(encoding="utf-8") as handle:
        return [json.loads(line) for line in islice(handle, n)]


def documents_of(item: Item) -> list[Document]:
    return [Document(title=d["title"], id=d["title"], sentences=d["sentences"]) for d in item["documents"]]


def select_documents(item: Item, setting: str) -> Item:
    """The question with the documents of ``setting``: ``full`` (all of them) or ``gold4``
    (HotpotQA: the gold paragraphs and 2 distractors picked by a generator seeded with the
    question id, in their original order)."""
    if setting == "full":
        return item
    gold_titles = {title for title, _ in item.get("supporting", [])}
    distractors = [d["title"] for d in item["documents"] if d["title"] not in gold_titles]
    keep = gold_titles | set(np.random.default_rng(abs(hash_id(item["id"]))).permutation(distractors)[:2].tolist())
    return dict(item, documents=[d for d in item["documents"] if d["title"] in keep])


def distractors_only(item: Item, count: int = 4) -> Item:
    """The question with ``count`` of its non-gold paragraphs (seeded by the question id; a
    SQuAD 2.0 question has 4: the other paragraphs of its article)."""
    gold = {title for title, _ in item.get("supporting", [])}
    others = [d for d in item["documents"] if d["title"] not in gold]
    picked = set(np.random.default_rng(zlib.crc32(item["id"].encode())).permutation(len(others))[:count].tolist())
    return dict(item, documents=[d for i, d in enumerate(others) if i in picked])


def hash_id(text: str) -> int:
    """A stable integer of a question id (Python's ``hash`` of a str changes per process)."""
    return int.from_bytes(text.encode("utf-8")[-8:].rjust(8, b"\0"), "little")


def gold_answer(item: Item) -> str | None:
    """The dataset's answer (HotpotQA ``answer``, SQuAD's first human answer); ``None`` for an
    unanswerable SQuAD question."""
    if "answers" in item:
        return item["answers"][0]["text"] if item["answers"] else None
    return item.get("answer")


def _span_index(item: Item) -> dict[tuple[int, int | None], int]:
    """(document, sentence) -> index in the attribution's span list: each document's title
    first (sentence ``None``), then its sentences, skipping whitespace-only ones."""
    index, position = {}, 0
    for d, document in enumerate(item["documents"]):
        if document["title"].strip():
            index[(d, None)] = position
            position += 1
        for s, sentence in enumerate(document["sentences"]):
            if sentence.strip():
                index[(d, s)] = position
                position += 1
    return index


def span_layout(item: Item) -> tuple[list[int], set[int]]:
    """What the gold metrics need of the span list: each span's document, and which spans
    are titles."""
    index = _span_index(item)
    documents = [d for (d, _), _ in sorted(index.items(), key=lambda entry: entry[1])]
    return documents, {i for (_, s), i in index.items() if s is None}


def gold_sentences(item: Item) -> list[int]:
    """Indices of the gold supporting sentences in the attribution's span list
    (``_span_index``); out-of-range references (a HotpotQA quirk) dropped."""
    index = _span_index(item)
    titles = {document["title"]: d for d, document in enumerate(item["documents"])}
    gold = {index.get((titles.get(title), s)) for title, s in item.get("supporting", [])}
    return sorted(g for g in gold if g is not None)


def gold_documents(gold: list[int], span_documents: list[int]) -> list[int]:
    """The documents that hold a gold sentence."""
    return sorted({span_documents[g] for g in gold})


def complete_sentences(text: str) -> str:
    """``text`` cut after its last complete sentence (all of it when none is complete)."""
    text = text.strip()
    ends = [end for _, end in split_sentences(text) if re.search(r"[.!?][\"')\]]*$", text[:end])]
    return text[: ends[-1]] if ends else text


def batch_records(path: Path, n: int) -> list[dict[str, Any]]:
    """The first ``n`` HotpotQA questions as batch records (documents as whole paragraphs,
    the answer "The answer is <gold>.")."""
    return [
        {
            "id": item["id"],
            "question": item["question"],
            "documents": [
                {"text": "".join(d["sentences"]), "title": d["title"], "id": d["title"]} for d in item["documents"]
            ],
            "answer": f"The answer is {item['answer']}.",
        }
        for item in load_questions(path, n)
    ]


def service_requests(path: Path, n: int, documents: int) -> list[tuple[str, list[Document], str]]:
    """``n`` (question, documents, answer) triples from SQuAD's answerable questions (the first
    ``documents`` paragraphs, the answer "The answer is X."), cycling if needed."""
    rows = []
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            item = json.loads(line)
            if item.get("answers"):
                docs = [
                    Document(text=d["text"], title=d["title"], id=d["title"]) for d in item["documents"][:documents]
                ]
                rows.append((item["question"], docs, f"The answer is {item['answers'][0]['text']}."))
    return [rows[i % len(rows)] for i in range(n)]
