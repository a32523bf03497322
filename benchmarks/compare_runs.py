"""Two faithfulness runs of the same questions side by side (e.g. before and after a change of
the ablation rule): each method's mean metrics over the questions both measured, and how exact LOO's sentence scores
moved question by question (median and largest |change|, Pearson between the two, questions
whose top sentence changed).

    python -m benchmarks.compare_runs BEFORE.json AFTER.json --out benchmarks/results/NAME.md
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

METRICS = [
    ("sentences", "top1", "top-1 = exact's"),
    ("sentences", "top3_recall", "top-3 recall"),
    ("sentences", "pearson", "Pearson"),
    ("sentences", "gold_top1", "gold top-1"),
    ("sentences", "gold_recall", "gold recall@k"),
]


def _mean(run: dict, shared: list[str], method: str, part: str, metric: str) -> str:
    """The method's mean of ``metric`` over the questions ``shared`` by both runs."""
    values = [
        q["settings"][method].get(part, {}).get(metric)
        for q in run["questions"]
        if q["id"] in shared and method in q.get("settings", {})
    ]
    kept = [v for v in values if v is not None]
    return f"{np.mean(kept):.2f}" if kept else "–"


def _exact_scores(run: dict) -> dict[str, list[float | None]]:
    return {
        q["id"]: q["settings"]["exact"]["scores"]["sentences"]
        for q in run["questions"]
        if "exact" in q.get("settings", {}) and q["settings"]["exact"].get("scores")
    }


def compare(before: dict, after: dict) -> str:
    shared = [q["id"] for q in after["questions"] if q["id"] in {b["id"] for b in before["questions"]}]
    lines = [
        "# Before and after",
        "",
        f"Before: `{before['command']}`  ",
        f"After: `{after['command']}`  ",
        f"Questions in both: {len(shared)}",
        "",
        "| method | " + " | ".join(f"{label} before | after" for _, _, label in METRICS) + " |",
        "|---|" + "---|---|" * len(METRICS),
    ]
    for method in after["summary"]:
        if method not in before["summary"]:
            continue
        cells = [
            f"{_mean(before, shared, method, part, metric)} | {_mean(after, shared, method, part, metric)}"
            for part, metric, _ in METRICS
        ]
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    old, new = _exact_scores(before), _exact_scores(after)
    deltas, correlations, moved_top = [], [], 0
    for question in shared:
        if question not in old or question not in new or len(old[question]) != len(new[question]):
            continue
        pairs = [(a, b) for a, b in zip(old[question], new[question], strict=True) if a is not None and b is not None]
        a, b = np.array(pairs).T
        deltas.extend(np.abs(b - a).tolist())
        correlations.append(float(np.corrcoef(a, b)[0, 1]))
        moved_top += int(np.argmax(a) != np.argmax(b))
    if deltas:
        lines += [
            "",
            f"Exact LOO's sentence scores, {len(correlations)} questions, {len(deltas)} sentences: "
            f"median |change| {np.median(deltas):.3f} nats, largest {max(deltas):.2f} nats; "
            f"Pearson before vs after per question: median {np.median(correlations):.3f}, lowest {min(correlations):.3f}; "
            f"exact's top sentence changed on {moved_top} of {len(correlations)} questions.",
        ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    parser.add_argument("--out", type=Path, help="also write the report here")
    args = parser.parse_args(argv)
    report = compare(json.loads(args.before.read_text()), json.loads(args.after.read_text()))
    if args.out:
        args.out.write_text(report)
    print(report)


if __name__ == "__main__":
    main()
