"""Going on from a saved run: its rows read back, their metrics recomputed by today's code
from the scores they stored (after a metric was added or changed), and whether its settings
allow new questions beside its own."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from benchmarks import ROOT
from benchmarks.data import Item, load_questions, select_documents, span_layout
from benchmarks.faithfulness.report import write
from benchmarks.faithfulness.rows import QuestionRow, evaluate
from benchmarks.measure import Measured

# what must match for a saved run's questions to stand beside new ones (``--n`` and
# ``--reference-n`` may grow: a question is kept if it has the reference it needs now)
RESUME_KEYS = (
    "dataset",
    "setting",
    "answer",
    "data",
    "methods",
    "contextcite_ablations",
    "contextcite_n",
    "second_model",
    "second_n",
    "max_new_tokens",
    "model",
)


def reevaluated(row: QuestionRow, item: Item) -> QuestionRow:
    """``row`` with every metric recomputed from the scores it stored; costs and scores stay
    as measured."""
    if row.settings is None:
        return row
    layout = span_layout(item)
    exact = row.settings["exact"] if row.reference else None
    reference, reference_cost = (exact.scores, Measured(None, exact.seconds, exact.tokens)) if exact else (None, None)
    settings = {
        name: evaluate(
            reference,
            entry.scores,
            row.gold,
            row.gold_documents,
            Measured(None, entry.seconds, entry.tokens),
            reference_cost,
            layout,
        )
        for name, entry in row.settings.items()
    }
    return row.model_copy(update={"settings": settings})


def reevaluate(path: Path) -> None:
    """Recompute every metric and report of a saved run from the scores it stored."""
    payload = json.loads(path.read_text())
    items = {
        item["id"]: select_documents(item, payload["setting"])
        for item in load_questions(ROOT.parent / payload["data"], payload["n"])
    }
    rows = [reevaluated(QuestionRow.model_validate(row), items[row["id"]]) for row in payload["questions"]]
    meta = {k: v for k, v in payload.items() if k not in ("summary", "cross_summary", "questions")}
    write(rows, meta, path.parent, path.stem.removeprefix("faithfulness_"), payload["finished"])


def saved_rows(path: Path, meta: dict[str, Any]) -> tuple[dict[str, QuestionRow], dict[str, Any]]:
    """The questions of an earlier run written to ``path``, by id, and its metadata; nothing
    if there is none. Refuses (``ValueError``) a run measured under other settings, whose rows
    would not compare with the new ones."""
    if not path.exists():
        return {}, {}
    payload = json.loads(path.read_text())
    differ = [key for key in RESUME_KEYS if payload.get(key) != meta[key]]
    if differ:
        raise ValueError(f"--resume: {path} was run with other settings ({', '.join(differ)}); use another --out")
    return {row["id"]: QuestionRow.model_validate(row) for row in payload["questions"]}, payload
