"""CPU time of every attribution setting beside its agreement with float32 exact LOO and its
gold-sentence precision, on HotpotQA (benchmarks/data); how the default grows with the prompt;
peak memory on many small documents.

    modeljob nice -n 10 .venv/bin/python -m benchmarks.speed agreement --documents 4 --n 40
    modeljob nice -n 10 .venv/bin/python -m benchmarks.speed agreement --documents 10 --n 30 --reference-n 10
    modeljob nice -n 10 .venv/bin/python -m benchmarks.speed growth
    modeljob nice -n 10 .venv/bin/python -m benchmarks.speed memory
    modeljob nice -n 10 .venv/bin/python -m benchmarks.speed small --count 100 --n 3
    modeljob nice -n 10 .venv/bin/python -m benchmarks.speed profile --documents 4 --n 3

``agreement``: each question (the gold answer scored; ``--documents 4``: the 2 gold paragraphs
and 2 distractors, as ``benchmarks.faithfulness --setting gold4``; 10: all of them) runs every setting
in turn, in one process, so that they share the machine's load. The reference is exact LOO in
float32 (the ``faithful`` budget); settings without a dtype run in the default one
(``dtype="auto"``). Expensive settings (exact, naive) run on the first ``--reference-n`` /
``--naive-n`` questions only; agreement is measured where the reference ran. Times are the
process's CPU time (one torch thread: the work done, whatever the neighbours' load); medians
over questions. Every setting's cost is also given in *floors*: per question, its CPU time over
the CPU time of one forward of the prompt and answer timed in the same process (the least any
LOO method costs), then the median; floors carry across machines, seconds do not. Results are
rewritten after every question: ``benchmarks/results/speed_<documents>docs.{json,md}``.

``small``: the settings and the floor on ``--count`` small documents (one sentence pair each),
``benchmarks/results/speed_<count>small.{json,md}``. ``profile``: where one setting's CPU time
goes, stage by stage (rendering, tokenization, the full pass, the frozen tails, each rescored
ablation, the context gain), in floors: ``benchmarks/results/speed_profile_<workload>.{json,md}``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from attribot_rag import BUDGETS, Attributor, Document
from attribot_rag.api import attributor as attributor_module
from attribot_rag.core.models import auto_dtype
from attribot_rag.core.prompt import TokenizedText, render
from attribot_rag.core.scorer import Scorer
from benchmarks import RESULTS, ROOT
from benchmarks import evaluation as ev
from benchmarks.data import HOTPOTQA, Item, documents_of, gold_answer, gold_sentences, load_questions, select_documents
from benchmarks.measure import cpu_and_wall
from benchmarks.reports import cell, command_line, machine

REFERENCE = "exact-float32"
# name -> (attribute() keyword arguments, dtype; None: the default)
SETTINGS: dict[str, tuple[dict[str, Any], str | None]] = {
    "exact-float32": ({"method": "exact"}, "float32"),
    "exact-bfloat16": ({"method": "exact"}, "bfloat16"),
    "exact": ({"method": "exact"}, None),
    "naive": ({"method": "naive"}, None),
    **{f"hierarchical-k{k}": ({"method": "hierarchical", "keep_documents": k}, None) for k in (1, 2, 3)},
    **{
        f"hierarchical-k{k}-fastdoc": ({"method": "hierarchical", "keep_documents": k, "doc_method": "fast"}, None)
        for k in (1, 2, 3)
    },
    "fast": ({"method": "fast"}, None),
    "fast-bfloat16": ({"method": "fast"}, "bfloat16"),
    **{f"fast-rescore{k}": ({"method": "fast", "rescore": k}, None) for k in (2, 3)},
    **{f"budget-{budget}": ({"method": "auto", "budget": budget}, None) for budget in BUDGETS},
}
EXPENSIVE = {"exact-float32", "exact-bfloat16", "exact", "hierarchical-k2", "hierarchical-k3"}
DEFAULT_SETTINGS = [
    "exact-float32",
    "exact-bfloat16",
    "exact",
    "naive",
    "hierarchical-k2",
    "hierarchical-k3",
    "hierarchical-k1-fastdoc",
    "hierarchical-k2-fastdoc",
    "hierarchical-k3-fastdoc",
    "fast",
]


class Attributors:
    """One Attributor per dtype, loaded on first use."""

    def __init__(self) -> None:
        self.default = str(auto_dtype("cpu")).removeprefix("torch.")
        self._loaded: dict[str, Attributor] = {}

    def dtype(self, name: str | None) -> str:
        return name or self.default

    def get(self, dtype: str | None) -> Attributor:
        dtype = self.dtype(dtype)
        if dtype not in self._loaded:
            self._loaded[dtype] = Attributor(dtype=dtype)
        return self._loaded[dtype]


@dataclass
class SettingRun:
    """One setting on one question: its times, what it resolved to, and its scores."""

    cpu: float
    wall: float
    dtype: str
    method: str
    options: dict[str, Any]
    sentences: list[float | None]
    documents: list[float | None]


@dataclass
class AgreementRow:
    """One question of ``agreement``: every setting run on it, and what the summary needs."""

    id: str
    documents: int
    gold: list[int]
    settings: dict[str, SettingRun]
    one_forward: dict[str, float]  # dtype -> CPU s of one forward of the full prompt and answer
    sentences: int
    sentence_documents: list[int]
    prompt_tokens: int


def run_setting(
    attributors: Attributors, name: str, question: str, documents: list[Document], answer: str
) -> SettingRun:
    kwargs, dtype = SETTINGS[name]
    attributor = attributors.get(dtype)
    run = cpu_and_wall(lambda: attributor.attribute(question, documents, answer, **kwargs))
    settings = run.result.settings
    return SettingRun(
        cpu=run.cpu,
        wall=run.wall,
        dtype=settings.dtype,
        method=settings.method,
        options=settings.options,
        sentences=[s.score for s in run.result.sentences],
        documents=[d.score for d in run.result.documents],
    )


def one_forward_cpu(attributor: Attributor, question: str, documents: list[Document], answer: str) -> float:
    """CPU time of one forward of the full prompt and answer (answer log-probs only): the floor
    of every LOO method, which reads the whole prompt at least once."""
    rendered = render(question, documents, attributor.tokenizer, attributor.prompt_template)
    prompt = TokenizedText.of(attributor.tokenizer, rendered.text, rendered.literal_spans).ids
    answer_ids = TokenizedText.of(attributor.tokenizer, answer, [(0, len(answer))]).ids
    scorer = Scorer(attributor.model)
    cpu = time.process_time()
    with torch.inference_mode():
        scorer.naive_logprobs(prompt, answer_ids)
    return time.process_time() - cpu


def agreement_question(
    item: Item, index: int, args: argparse.Namespace, attributors: Attributors
) -> AgreementRow | None:
    item = select_documents(item, "gold4" if args.documents == 4 else "full")
    answer = gold_answer(item)
    if not answer:
        return None
    documents = documents_of(item)
    default = attributors.get(None)
    settings: dict[str, SettingRun] = {}
    done: dict[tuple[str, str], SettingRun] = {}  # (arguments, dtype) already run for this question
    for name in args.settings:
        limit = args.naive_n if name == "naive" else args.reference_n if name in EXPENSIVE else args.n
        if index >= limit:
            continue
        kwargs, dtype = SETTINGS[name]
        key = (json.dumps(kwargs, sort_keys=True), attributors.dtype(dtype))
        if key not in done:
            done[key] = run_setting(attributors, name, item["question"], documents, answer)
        settings[name] = done[key]
    one_forward = {
        attributors.dtype(dtype): one_forward_cpu(attributors.get(dtype), item["question"], documents, answer)
        for dtype in args.forward_dtypes
    }
    rendered = render(item["question"], documents, default.tokenizer, default.prompt_template)
    return AgreementRow(
        id=item["id"],
        documents=len(documents),
        gold=gold_sentences(item),
        settings=settings,
        one_forward=one_forward,
        sentences=len(next(iter(settings.values())).sentences),
        sentence_documents=[s.doc_index for s in rendered.sentences],
        prompt_tokens=len(default.tokenizer(rendered.text, add_special_tokens=False).input_ids),
    )


def render_text(attributor: Attributor, question: str, documents: list[Document]) -> str:
    return render(question, documents, attributor.tokenizer, attributor.prompt_template).text


def _mean(values: list[float]) -> float | None:
    values = [v for v in values if v is not None and not math.isnan(v)]
    return float(np.mean(values)) if values else None


def _median(values: list[float]) -> float | None:
    values = [v for v in values if v is not None and not math.isnan(v)]
    return float(statistics.median(values)) if values else None


def median_floors(runs: list[tuple[Any, SettingRun]]) -> float | None:
    """Median over questions of a setting's CPU time over the floor of its question and dtype
    (``row.one_forward``), where that floor was timed."""
    return _median([run.cpu / row.one_forward[run.dtype] for row, run in runs if run.dtype in row.one_forward])


def summarize(rows: list[AgreementRow], settings: list[str]) -> dict[str, dict[str, Any]]:
    """Per setting: CPU time, its ratio to the reference's, agreement with the reference
    (where both ran) and gold-sentence precision."""
    summary = {}
    for name in settings:
        runs = [(row, row.settings[name]) for row in rows if name in row.settings]
        if not runs:
            continue
        with_reference = [(row, run, row.settings[REFERENCE]) for row, run in runs if REFERENCE in row.settings]
        agreement = [ev.compare(ref.sentences, run.sentences, k=3) for _, run, ref in with_reference]
        documents = [
            ev.top1_agreement(ref.documents, run.documents)
            for _, run, ref in with_reference
            if None not in run.documents
        ]
        gold = [
            ev.gold_metrics(
                run.sentences,
                row.gold,
                row.sentence_documents,
                {row.sentence_documents[g] for g in row.gold},
            )
            for row, run in runs
        ]
        differences = [
            max(
                (
                    abs(a - b)
                    for a, b in zip(ref.sentences + ref.documents, run.sentences + run.documents, strict=True)
                    if a is not None and b is not None
                ),
                default=0.0,
            )
            for _, run, ref in with_reference
        ]
        summary[name] = {
            "questions": len(runs),
            "dtype": runs[0][1].dtype,
            "method": runs[0][1].method,
            "options": runs[0][1].options,
            "median_cpu": _median([run.cpu for _, run in runs]),
            "median_floors": median_floors(runs),
            "median_wall": _median([run.wall for _, run in runs]),
            "with_reference": len(with_reference),
            "speedup_cpu": _median([ref.cpu / run.cpu for _, run, ref in with_reference]),
            "top1": _mean([a["top1"] for a in agreement]),
            "top3_recall": _mean([a["top3_recall"] for a in agreement]),
            "pearson": _median([a["pearson"] for a in agreement]),
            "max_abs_diff": max(differences, default=None),
            "document_top1": _mean(documents),
            "gold_questions": sum(g["gold_top1"] is not None for g in gold),
            "gold_top1": _mean([g["gold_top1"] for g in gold]),
            "gold_top1_with_reference": _mean(
                [
                    ev.gold_metrics(run.sentences, row.gold, row.sentence_documents, set())["gold_top1"]
                    for row, run, _ in with_reference
                ]
            ),
            "gold_recall": _mean([g["gold_recall"] for g in gold]),
        }
    same_dtype = [
        (row.settings["naive"].cpu, row.settings["exact"].cpu)
        for row in rows
        if {"naive", "exact"} <= set(row.settings)
    ]
    if same_dtype:
        summary["naive"]["naive_over_exact_cpu"] = _median([naive / exact for naive, exact in same_dtype])
    return summary


def markdown(report: dict) -> str:
    lines = [
        f"# Speed and agreement: HotpotQA, {report['documents']} documents",
        "",
        f"Command: `{report['command']}`  ",
        f"Machine: {report['machine']}; default dtype {report['default_dtype']}; {report['questions_done']} questions",
        "",
        f"Reference: {REFERENCE} (exact LOO in float32) on the questions where it ran (column `ref q`). CPU seconds: medians; "
        "top-1, top-3 recall, gold top-1: means; Pearson: median; max diff: largest |score - reference| (nats). "
        "gold top-1: the top sentence is a HotpotQA supporting fact (all questions; `gold top-1 (ref q)` on the reference's). "
        "floors: median over questions of CPU time / one forward of that question's prompt and answer in the setting's dtype.",
        "",
        "| setting | dtype | q | CPU s | floors | ref q | speed-up vs exact f32 | top-1 | top-3 recall | Pearson | max diff | doc top-1 | gold top-1 | gold top-1 (ref q) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, s in report["summary"].items():
        lines.append(
            f"| {name} | {s['dtype']} | {s['questions']} | {cell(s['median_cpu'], 1)} | {cell(s.get('median_floors'))} | {s['with_reference']} | {cell(s['speedup_cpu'])}× | {cell(s['top1'])} | "
            f"{cell(s['top3_recall'])} | {cell(s['pearson'], 3)} | {cell(s['max_abs_diff'], 3)} | {cell(s['document_top1'])} | {cell(s['gold_top1'])} | {cell(s['gold_top1_with_reference'])} |"
        )
    floors = {
        dtype: _median([row["one_forward"][dtype] for row in report["rows"] if dtype in row.get("one_forward", {})])
        for dtype in {d for row in report["rows"] for d in row.get("one_forward", {})}
    }
    if floors:
        lines += [
            "",
            "One forward of the full prompt and answer, the floor of every LOO method (median CPU s): "
            + ", ".join(f"{dtype} {cpu:.2f}" for dtype, cpu in sorted(floors.items()))
            + f"; prompt tokens (median): {_median([row['prompt_tokens'] for row in report['rows']]):.0f}",
        ]
    if "naive" in report["summary"] and "naive_over_exact_cpu" in report["summary"]["naive"]:
        lines += [
            "",
            f"naive / exact CPU time, same dtype, same questions (median): {report['summary']['naive']['naive_over_exact_cpu']:.2f}×",
        ]
    return "\n".join(lines) + "\n"


def agreement(args: argparse.Namespace) -> None:
    attributors = Attributors()
    out = args.out or RESULTS / f"speed_{args.documents}docs.json"
    report: dict[str, Any] = {
        "command": command_line("speed"),
        "documents": args.documents,
        "machine": machine(),
        "default_dtype": attributors.default,
        "model": "SmolLM2-135M-Instruct (embedded)",
        "rows": [],
    }
    rows: list[AgreementRow] = []
    for index, item in enumerate(load_questions(HOTPOTQA, args.n)):
        row = agreement_question(item, index, args, attributors)
        if row is None:
            continue
        rows.append(row)
        report["rows"] = [asdict(r) for r in rows]
        report["questions_done"] = len(rows)
        report["summary"] = summarize(rows, args.settings)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=1))
        out.with_suffix(".md").write_text(markdown(report))
        print(
            f"{row.id}: " + ", ".join(f"{name} {run.cpu:.1f}s" for name, run in row.settings.items()),
            flush=True,
        )
    print(markdown(report))


# -- growth: the default's time per doubling of the prompt --------------------------------
@dataclass
class GrowthRow:
    """One question's prompt grown to about ``target`` tokens, and the setting's CPU time."""

    question: str
    target: int
    tokens: int
    documents: int
    sentences: int
    cpu: float


def growth(args: argparse.Namespace) -> None:
    """The prompt of one question grown to about 2k, 4k and 8k tokens by appending the
    paragraphs of the following questions (the gold answer of the first scored)."""
    attributor = Attributor()
    kwargs = SETTINGS[args.setting][0]
    items = load_questions(HOTPOTQA, 300)
    rows = []
    for first in range(args.n):
        base = items[first]
        pool = [d for item in items[first:] for d in documents_of(item)]
        answer = gold_answer(base)
        for target in args.tokens:
            count = 1
            while (
                count < len(pool)
                and len(attributor.tokenizer(render_text(attributor, base["question"], pool[: count + 1])).input_ids)
                <= target
            ):
                count += 1
            documents = pool[:count]
            tokens = len(attributor.tokenizer(render_text(attributor, base["question"], documents)).input_ids)
            cpu = time.process_time()
            result = attributor.attribute(base["question"], documents, answer, **kwargs)
            rows.append(GrowthRow(base["id"], target, tokens, count, len(result.sentences), time.process_time() - cpu))
            print(json.dumps(asdict(rows[-1])), flush=True)
    table = []
    for target in args.tokens:
        at = [r for r in rows if r.target == target]
        table.append(
            {
                "target": target,
                "tokens": _median([r.tokens for r in at]),
                "documents": _median([r.documents for r in at]),
                "cpu": _median([r.cpu for r in at]),
            }
        )
    for previous, current in itertools.pairwise(table):
        current["growth"] = current["cpu"] / previous["cpu"]
    lines = ["| prompt tokens (median) | documents | CPU s (median) | × per doubling |", "|---|---|---|---|"]
    lines += [f"| {t['tokens']:.0f} | {t['documents']:.0f} | {t['cpu']:.1f} | {cell(t.get('growth'))} |" for t in table]
    print("\n".join(lines))
    report = {
        "command": command_line("speed"),
        "machine": machine(),
        "setting": args.setting,
        "dtype": str(attributor.model.dtype),
        "rows": [asdict(row) for row in rows],
        "table": table,
    }
    out = args.out or RESULTS / "speed_growth.json"
    out.write_text(json.dumps(report, indent=1))
    out.with_suffix(".md").write_text(
        "\n".join(
            [
                f"# Growth of `{args.setting}` with the prompt",
                "",
                f"Command: `{report['command']}`  ",
                f"Machine: {report['machine']}",
                "",
                *lines,
            ]
        )
        + "\n"
    )


# -- memory: peak resident memory on many small documents ---------------------------------
def small_documents(count: int) -> list[Document]:
    return [
        Document(text=f"Crate {i} holds {i * 7 % 50} brass lanterns. It sits in aisle {i % 12}.", id=f"crate-{i}")
        for i in range(count)
    ]


@dataclass
class MemoryRow:
    """One memory measurement (bytes), from a fresh process."""

    setting: str
    documents: int
    kept_documents: int
    prompt_tokens: int
    cpu: float
    timings: dict[str, Any]
    peak_rss_after_load: int
    peak_rss: int


def memory_child(args: argparse.Namespace) -> None:
    """One measurement in a fresh process: peak RSS after loading, then after attributing."""
    attributor = Attributor()
    loaded = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    documents = small_documents(args.count)
    question, answer = "Which crate holds 21 brass lanterns?", "Crate 3 holds 21 brass lanterns."
    cpu = time.process_time()
    result = attributor.attribute(question, documents, answer, **SETTINGS[args.setting][0], truncate="documents")
    row = MemoryRow(
        setting=args.setting,
        documents=args.count,
        kept_documents=len(result.documents) - len(result.dropped_documents),
        prompt_tokens=len(attributor.tokenizer(result.prompt).input_ids),
        cpu=time.process_time() - cpu,
        timings=result.timings,
        peak_rss_after_load=loaded,
        peak_rss=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
    )
    print(json.dumps(asdict(row)))


def memory(args: argparse.Namespace) -> None:
    rows = []
    for setting, count in [item.split(":") for item in args.runs]:
        command = [
            sys.executable,
            "-m",
            "benchmarks.speed",
            "memory-child",
            "--setting",
            setting,
            "--count",
            str(count),
        ]
        done = subprocess.run(command, capture_output=True, text=True, check=True, cwd=ROOT.parent)
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(json.dumps(rows[-1]), flush=True)
    report = {"command": command_line("speed"), "machine": machine(), "rows": rows}
    (args.out or RESULTS / "speed_memory.json").write_text(json.dumps(report, indent=1))


# -- small: the settings in floors on many small documents --------------------------------
def small_question(index: int, count: int) -> tuple[str, str]:
    """Question ``index`` about ``small_documents(count)`` and its answer (a different crate each)."""
    crate = (7 * index + 3) % count
    return (
        f"Which crate holds {crate * 7 % 50} brass lanterns?",
        f"Crate {crate} holds {crate * 7 % 50} brass lanterns.",
    )


@dataclass
class FloorRow:
    """One question of ``small``: each setting's run and the floor (``one_forward``)."""

    id: str
    settings: dict[str, SettingRun]
    one_forward: dict[str, float]
    prompt_tokens: int


def small(args: argparse.Namespace) -> None:
    """Every setting of ``--settings`` and the floor on ``--count`` small documents, one
    process, ``--n`` questions."""
    attributors = Attributors()
    documents = small_documents(args.count)
    out = args.out or RESULTS / f"speed_{args.count}small.json"
    rows: list[FloorRow] = []
    for index in range(args.n):
        question, answer = small_question(index, args.count)
        settings = {name: run_setting(attributors, name, question, documents, answer) for name in args.settings}
        dtypes = {run.dtype for run in settings.values()}
        one_forward = {dtype: one_forward_cpu(attributors.get(dtype), question, documents, answer) for dtype in dtypes}
        default = attributors.get(None)
        tokens = len(default.tokenizer(render_text(default, question, documents), add_special_tokens=False).input_ids)
        rows.append(FloorRow(f"crates-{index}", settings, one_forward, tokens))
        print(
            f"{rows[-1].id}: floor {one_forward}; "
            + ", ".join(f"{name} {run.cpu:.1f}s" for name, run in settings.items()),
            flush=True,
        )
    summary = {
        name: {
            "dtype": rows[0].settings[name].dtype,
            "median_cpu": _median([row.settings[name].cpu for row in rows]),
            "median_floors": median_floors([(row, row.settings[name]) for row in rows]),
        }
        for name in args.settings
    }
    floors = {dtype: _median([row.one_forward[dtype] for row in rows]) for dtype in rows[0].one_forward}
    report = {
        "command": command_line("speed"),
        "machine": machine(),
        "documents": args.count,
        "prompt_tokens": _median([row.prompt_tokens for row in rows]),
        "floor_cpu": floors,
        "summary": summary,
        "rows": [asdict(row) for row in rows],
    }
    lines = [
        f"# Cost in floors: {args.count} small documents",
        "",
        f"Command: `{report['command']}`  ",
        f"Machine: {report['machine']}; {len(rows)} questions; prompt tokens (median): {report['prompt_tokens']:.0f}; "
        "floor (one forward of prompt and answer, median CPU s): "
        + ", ".join(f"{d} {c:.2f}" for d, c in floors.items()),
        "",
        "| setting | dtype | CPU s (median) | floors (median) |",
        "|---|---|---|---|",
        *(
            f"| {name} | {row['dtype']} | {cell(row['median_cpu'], 1)} | {cell(row['median_floors'])} |"
            for name, row in summary.items()
        ),
    ]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1))
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


# -- profile: where a setting's CPU time goes ------------------------------------------------
# The stages a profile separates: (owner, attribute, stage). A stage's time is its own (self)
# time: a stage called inside another is subtracted from the outer one.
STAGES: list[tuple[Any, str, str]] = [
    (attributor_module, "render", "rendering"),
    (TokenizedText, "of", "tokenization"),
    (Scorer, "full_pass", "full pass"),
    (Scorer, "frozen_loo", "frozen tails"),
    (Scorer, "_score_batch", "rescored ablations"),
    (attributor_module, "context_gain", "context gain"),  # the name the attributor calls
]


class StageClock:
    """CPU time per stage of one call, recorded by wrapping the stages' functions in place
    (restored on exit); ``calls`` counts each stage's calls (a rescored ablation is one
    ``_score_batch`` call on a CPU, one ablation per forward)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.calls: dict[str, int] = {}
        self._stack: list[list[float]] = []  # per active stage: [start, time spent in inner stages]
        self._saved: list[tuple[Any, str, Any]] = []

    def _wrap(self, function: Any, stage: str) -> Any:
        def timed(*args: Any, **kwargs: Any) -> Any:
            self._stack.append([time.process_time(), 0.0])
            try:
                return function(*args, **kwargs)
            finally:
                start, inner = self._stack.pop()
                spent = time.process_time() - start
                self.seconds[stage] = self.seconds.get(stage, 0.0) + spent - inner
                self.calls[stage] = self.calls.get(stage, 0) + 1
                if self._stack:
                    self._stack[-1][1] += spent

        return timed

    def __enter__(self) -> StageClock:
        for owner, name, stage in STAGES:
            original = owner.__dict__[name]
            self._saved.append((owner, name, original))
            if isinstance(original, classmethod):
                setattr(owner, name, classmethod(self._wrap(original.__func__, stage)))
            else:
                setattr(owner, name, self._wrap(original, stage))
        return self

    def __exit__(self, *_: object) -> None:
        for owner, name, original in reversed(self._saved):
            setattr(owner, name, original)
        self._saved.clear()


def profile_workload(args: argparse.Namespace) -> list[tuple[str, str, str, list[Document]]]:
    """(id, question, answer, documents) of the profiled questions."""
    if args.documents == "100small":
        documents = small_documents(100)
        return [(f"crates-{i}", *small_question(i, 100), documents) for i in range(args.n)]
    questions: list[tuple[str, str, str, list[Document]]] = []
    for item in load_questions(HOTPOTQA, args.n * 2):
        item = select_documents(item, "gold4" if args.documents == "4" else "full")
        answer = gold_answer(item)
        if answer and len(questions) < args.n:
            questions.append((item["id"], item["question"], answer, documents_of(item)))
    return questions


def frozen_tokens(attributor: Attributor, question: str, documents: list[Document], answer: str) -> dict[str, int]:
    """What the frozen tails recompute: one tail (the prompt's last token and the answer) per
    span, against the prompt and answer's own tokens (what one forward reads)."""
    rendered = render(question, documents, attributor.tokenizer, attributor.prompt_template)
    prompt = TokenizedText.of(attributor.tokenizer, rendered.text, rendered.literal_spans)
    answer_ids = TokenizedText.of(attributor.tokenizer, answer, [(0, len(answer))]).ids
    spans = len(rendered.document_spans) + len(rendered.sentence_spans)
    return {"forward_tokens": len(prompt.ids) + len(answer_ids), "spans": spans, "tail_tokens": 1 + len(answer_ids)}


def profile(args: argparse.Namespace) -> None:
    """Per question: the floor, then the setting with its stages clocked; medians in floors."""
    attributors = Attributors()
    kwargs, dtype = SETTINGS[args.setting]
    attributor = attributors.get(dtype)
    rows: list[dict[str, Any]] = []
    for id_, question, answer, documents in profile_workload(args):
        floor = one_forward_cpu(attributor, question, documents, answer)
        with StageClock() as clock:
            run = cpu_and_wall(partial(attributor.attribute, question, documents, answer, **kwargs))
        stages = {stage: clock.seconds.get(stage, 0.0) for *_, stage in STAGES}
        stages["other"] = run.cpu - sum(stages.values())
        tokens = frozen_tokens(attributor, question, documents, answer)
        rows.append({"id": id_, "floor": floor, "cpu": run.cpu, "stages": stages, "calls": clock.calls, **tokens})
        print(json.dumps(rows[-1]), flush=True)
    table = {
        stage: {
            "cpu": _median([row["stages"][stage] for row in rows]),
            "floors": _median([row["stages"][stage] / row["floor"] for row in rows]),
            "calls": _median([row["calls"].get(stage, 0) for row in rows]),
        }
        for stage in rows[0]["stages"]
    }
    table["total"] = {
        "cpu": _median([row["cpu"] for row in rows]),
        "floors": _median([row["cpu"] / row["floor"] for row in rows]),
        "calls": None,
    }
    report = {
        "command": command_line("speed"),
        "machine": machine(),
        "setting": args.setting,
        "workload": args.documents,
        "floor_cpu": _median([row["floor"] for row in rows]),
        "tail_tokens_over_forward": _median(
            [row["spans"] * row["tail_tokens"] / row["forward_tokens"] for row in rows]
        ),
        "table": table,
        "rows": rows,
    }
    lines = [
        f"# Where `{args.setting}`'s time goes: {args.documents} documents",
        "",
        f"Command: `{report['command']}`  ",
        f"Machine: {report['machine']}; {len(rows)} questions; floor (median CPU s): {report['floor_cpu']:.2f}",
        "",
        f"The frozen tails recompute {report['tail_tokens_over_forward']:.2f}× the tokens of one forward "
        "(spans × (the prompt's last token + answer) / (prompt + answer), median).",
        "",
        "| stage | calls (median) | CPU s (median) | floors (median) |",
        "|---|---|---|---|",
        *(
            f"| {stage} | {cell(row['calls'], 0)} | {cell(row['cpu'])} | {cell(row['floors'])} |"
            for stage, row in table.items()
        ),
    ]
    out = args.out or RESULTS / f"speed_profile_{args.documents}docs.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1))
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.speed", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
    a = commands.add_parser("agreement", help="time, agreement with exact float32, gold precision")
    a.add_argument("--documents", type=int, choices=[4, 10], default=4)
    a.add_argument("--n", type=int, default=40, help="questions")
    a.add_argument("--reference-n", type=int, default=None, help="questions on which exact runs (default: all)")
    a.add_argument("--naive-n", type=int, default=5, help="questions on which naive runs")
    a.add_argument("--settings", nargs="+", default=DEFAULT_SETTINGS, choices=list(SETTINGS))
    a.add_argument(
        "--forward-dtypes", nargs="*", default=["float32", "bfloat16"], help="dtypes whose one-forward floor is timed"
    )
    a.add_argument("--out", type=Path)
    g = commands.add_parser("growth", help="the default's CPU time at 2k, 4k, 8k prompt tokens")
    g.add_argument("--setting", default="budget-balanced", choices=list(SETTINGS))
    g.add_argument("--tokens", type=int, nargs="+", default=[2000, 4000, 7900])
    g.add_argument("--n", type=int, default=3, help="questions")
    g.add_argument("--out", type=Path)
    m = commands.add_parser("memory", help="peak RSS on many small documents (one process each)")
    m.add_argument(
        "--runs",
        nargs="+",
        default=["fast:100", "budget-balanced:100", "fast:1900"],
        help="SETTING:DOCUMENTS (truncate='documents')",
    )
    m.add_argument("--out", type=Path)
    s = commands.add_parser("small", help="the settings in floors on many small documents")
    s.add_argument("--count", type=int, default=100, help="documents")
    s.add_argument("--n", type=int, default=3, help="questions")
    s.add_argument("--settings", nargs="+", default=["fast", "budget-balanced"], choices=list(SETTINGS))
    s.add_argument("--out", type=Path)
    p = commands.add_parser("profile", help="where a setting's CPU time goes, stage by stage, in floors")
    p.add_argument("--documents", choices=["4", "10", "100small"], default="4")
    p.add_argument("--setting", default="budget-balanced", choices=list(SETTINGS))
    p.add_argument("--n", type=int, default=3, help="questions")
    p.add_argument("--out", type=Path)
    c = commands.add_parser("memory-child")
    c.add_argument("--setting", required=True, choices=list(SETTINGS))
    c.add_argument("--count", type=int, required=True)
    return parser


def main() -> None:
    args = parser().parse_args()
    if args.command == "agreement" and args.reference_n is None:
        args.reference_n = args.n
    torch.set_num_threads(1)  # CPU time is the work done; one thread keeps it comparable
    commands = {
        "agreement": agreement,
        "growth": growth,
        "memory": memory,
        "memory-child": memory_child,
        "small": small,
        "profile": profile,
    }
    commands[args.command](args)


if __name__ == "__main__":
    main()
