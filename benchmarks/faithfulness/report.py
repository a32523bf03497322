"""A faithfulness run's summaries and reports: per setting, every metric over the questions
(means with bootstrap intervals), the Pareto fronts of agreement against speed-up, the JSON,
the Markdown table and the plot."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from benchmarks import evaluation as ev
from benchmarks.faithfulness.rows import QuestionRow, SettingRow
from benchmarks.reports import mean_ci

# the sentence metrics summarized, and those of them in the Markdown table, in its order
METRICS = [
    "spearman",
    "pearson",
    "top1",
    "top3_recall",
    "significant_recall",
    "gold_top1",
    "gold_recall",
    "gold_recall3",
    "top_in_gold_document",
    "gold_documents_scored",
    "gold_top1_sentences",
    "gold_recall_sentences",
]
TABLE_METRICS = METRICS[1:]
DOC_METRICS = ["spearman", "top1", "top2_recall", "gold_recall"]
COLUMNS = [
    "setting",
    "q",
    "CPU s",
    "speed-up (time)",
    "speed-up (compute)",
    "Pearson",
    "top-1",
    "top-3 recall",
    "significant",
    "gold top-1",
    "gold recall@k",
    "gold recall@3",
    "top in gold doc",
    "gold docs scored",
    "gold top-1, no titles",
    "gold recall@k, no titles",
]
Summary = dict[str, dict[str, Any]]


def aggregate(rows: list[QuestionRow], block: str) -> Summary:
    """Per setting of ``block`` (``settings`` or ``cross``), the summary over the questions."""
    entries: dict[str, list[SettingRow]] = {}
    for row in rows:
        for name, entry in (getattr(row, block) or {}).items():
            if isinstance(entry, SettingRow):
                entries.setdefault(name, []).append(entry)
    summary = {}
    for name, runs in entries.items():
        s: dict[str, Any] = {
            "questions": len(runs),
            "speedup": ev.summarize(e.speedup for e in runs),
            "token_speedup": ev.summarize(e.token_speedup for e in runs),
            "seconds": ev.summarize(e.seconds for e in runs),
            "tokens": ev.summarize(e.tokens for e in runs),
            "sentences": {m: ev.summarize(e.sentences[m] for e in runs) for m in METRICS},
        }
        if all(e.documents is not None for e in runs):
            s["documents"] = {m: ev.summarize(e.documents[m] for e in runs if e.documents) for m in DOC_METRICS}
        summary[name] = s
    for flag, key in (("pareto", "speedup"), ("pareto_tokens", "token_speedup")):
        front = pareto([(n, s[key]["median"], s["sentences"]["top3_recall"]["mean"]) for n, s in summary.items()])
        for name in summary:
            summary[name][flag] = name in front
    return summary


def pareto(points: list[tuple[str, float | None, float | None]]) -> set[str]:
    """Names of the points no other point beats on both speed-up and top-3 recall."""
    valid = [(n, x, y) for n, x, y in points if x is not None and y is not None]
    return {n for n, x, y in valid if not any(x2 >= x and y2 >= y and (x2 > x or y2 > y) for _, x2, y2 in valid)}


def markdown_table(summary: Summary, reference_label: str) -> str:
    lines = [
        f"Reference: {reference_label}. Means over questions with 95% bootstrap intervals; speed-up: median of "
        "per-question (reference CPU time / method CPU time, one thread), CPU s: median seconds per question, compute: the same in tokens forwarded through the decoder "
        "(load-independent). vs exact: Pearson, top-1 agreement, recall of exact's top 3 in the top 3, and the share "
        "of significant sentences (exact score >= max(0.5 nats, 25% of the top)) ranked within as many places. "
        "Gold (supporting facts): top-1 precision, recall in the top k (k = number of gold sentences), recall in the "
        "top 3, top sentence in a gold paragraph, gold paragraphs with any sentence scored, and top-1 and recall@k again "
        "with the titles left out (questions with gold only). ★ / ☆ = on the Pareto front of mean top-3 "
        "recall vs time / compute speed-up.",
        "",
        "| " + " | ".join(COLUMNS) + " |",
        "|" + "---|" * len(COLUMNS),
    ]
    for name, s in summary.items():
        speedups = (
            f"{s[key]['median']:.2f}×" if s[key]["median"] is not None else "– (no model)"
            for key in ("speedup", "token_speedup")
        )
        cells = [
            ("★" if s["pareto"] else "") + ("☆" if s["pareto_tokens"] else "") + " " + name,
            str(s["questions"]),
            f"{s['seconds']['median']:.1f}",
            *speedups,
            *(mean_ci(s["sentences"][m]) for m in TABLE_METRICS),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(summary: Summary, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(13, 5), sharey=True)
    for ax, key, flag, label in (
        (axes[0], "speedup", "pareto", "speed-up vs exact LOO, CPU time (median, log scale)"),
        (axes[1], "token_speedup", "pareto_tokens", "speed-up vs exact LOO, tokens forwarded (median, log scale)"),
    ):
        for name, s in summary.items():
            x, y = s[key]["median"], s["sentences"]["top3_recall"]["mean"]
            if x is None or y is None:
                continue
            ax.scatter([x], [y], color="tab:red" if s[flag] else "tab:blue", zorder=3)
            ax.annotate(name, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
        front = sorted((s[key]["median"], s["sentences"]["top3_recall"]["mean"]) for s in summary.values() if s[flag])
        if len(front) > 1:
            ax.step(*zip(*front, strict=True), where="post", color="tab:red", alpha=0.4, zorder=2)
        ax.set_xscale("log")
        ax.set_xlabel(label)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("recall of exact top-3 in top-3 (mean)")
    axes[0].set_ylim(-0.05, 1.05)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write(rows: list[QuestionRow], meta: dict[str, Any], out: Path, name: str, final: bool) -> None:
    """The run's JSON, Markdown and plot (``out``/faithfulness_<name>.{json,md,png}); ``meta``
    keys starting with ``_`` stay out of the JSON (``_start``: the run's start, for the wall time)."""
    done = [r for r in rows if r.settings is not None]
    summary = aggregate(done, "settings")
    cross = aggregate(done, "cross")
    wall = time.perf_counter() - meta["_start"] if "_start" in meta else meta["wall_seconds"]
    meta = dict(meta, wall_seconds=wall, finished=final, questions_done=len(done))
    payload = {k: v for k, v in meta.items() if not k.startswith("_")}
    payload.update(summary=summary, cross_summary=cross, questions=[row.to_json() for row in rows])
    out.mkdir(parents=True, exist_ok=True)
    (out / f"faithfulness_{name}.json").write_text(json.dumps(payload, indent=1, allow_nan=True) + "\n")
    md = [
        f"# Faithfulness vs exact LOO: {name}",
        "",
        f"Command: `{payload['command']}`  ",
        f"Machine: {payload['machine']}  ",
        f"Model: {payload['model']}; questions: {len(done)}; total wall time: {payload['wall_seconds'] / 60:.1f} min"
        + ("" if final else " (run still in progress or interrupted)"),
        "",
    ]
    if meta.get("reference_n") is not None:
        md += [
            f"Exact LOO ran on the first {sum(r.reference for r in done)} questions only "
            "(`--reference-n`): the speed-ups and the columns against exact come from those; the gold "
            "columns and CPU s from all.",
            "",
        ]
    md.append(
        markdown_table(
            summary,
            "exact sentence LOO of SmolLM2-135M-Instruct"
            + (" (the model that wrote the answer)" if meta["answer"] == "model" else " on the dataset's gold answer"),
        )
    )
    if cross:
        md += [
            "",
            "## Cross-family (proxy → target)",
            "",
            markdown_table(
                cross, "exact LOO of the target named after the arrow; speed-up relative to that target's exact LOO"
            ),
        ]
    (out / f"faithfulness_{name}.md").write_text("\n".join(md) + "\n")
    if summary:
        plot(
            summary,
            out / f"faithfulness_{name}.png",
            f"{name}: {len(done)} questions, SmolLM2-135M, 2 shared CPU cores",
        )
