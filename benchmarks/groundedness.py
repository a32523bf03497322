"""Does the answer rest on the documents? Each signal's AUROC for telling supported answers
from unsupported ones, on pairs anyone can rerun:

    .venv/bin/python -m benchmarks.groundedness --dataset hotpotqa --n 40 --answer gold
    .venv/bin/python -m benchmarks.groundedness --dataset hotpotqa --n 40 --answer paraphrase
    .venv/bin/python -m benchmarks.groundedness --dataset hotpotqa --n 40 --answer model --max-new-tokens 80
    .venv/bin/python -m benchmarks.groundedness --dataset squad2 --n 80 --answer model --max-new-tokens 80
    .venv/bin/python -m benchmarks.groundedness --dataset squad2 --n 40 --answer unanswerable

The same question and answer with its evidence (supported) and without (unsupported):
HotpotQA with the 2 gold paragraphs + 2 distractors against 4 distractors only; SQuAD 2.0
(answerable questions) with all 5 paragraphs of the article against the 4 without the answer's
paragraph. ``--answer gold``: the dataset's answer; ``model``: the embedded model's greedy
answer given the evidence; ``paraphrase``: the gold answer restated as a sentence in other
words by the embedded model (an abstractive answer whose words differ from its evidence; the
restatements are stored in the JSON to be checked by hand). ``unanswerable`` (SQuAD 2.0, its
default): answerable questions with their gold answer (supported) against unanswerable
questions answered anyway by the model (unsupported), answers of unlike form.

Signals: the context gain (log p(answer | documents) - log p(answer | no documents), one
extra forward, ``AttributionResult.context_gain``), the top document and top sentence score
of each method, MiniLM cosine and BM25 of the answer against each sentence (maximum), and
whether the answer string occurs verbatim in the context. Answers of several sentences
(``--answer model``) are also judged claim by claim: each sentence of the answer keeps the
answer's label, with its own top LOO score (on its own tokens) and its own similarity
signals. AUROCs come with 95% bootstrap
intervals over questions; results go to ``--out``/groundedness_<dataset>_<answer>.{json,md}
after every question.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from attribot_rag import Attributor, Document
from benchmarks import RESULTS
from benchmarks import evaluation as ev
from benchmarks.baselines import bm25, minilm
from benchmarks.data import (
    DATA_DIR,
    FILES,
    Item,
    complete_sentences,
    distractors_only,
    documents_of,
    gold_answer,
    load_questions,
    select_documents,
)
from benchmarks.reports import command_line

PARAPHRASE = (
    "Question: {question}\nShort answer: {answer}\n"
    "Restate the short answer as one complete sentence that answers the question, in different words."
)


@dataclass(frozen=True)
class Case:
    """A question and answer with documents that support it or not."""

    question: str
    documents: list[Document]
    answer: str
    supported: bool
    id: str
    gold_answer: str | None = None  # the dataset's answer, where the answer is another
    answered_anyway: str | None = None  # the model's answer to an unanswerable question


@dataclass
class CaseRow:
    """A case's signals as written to the results (the notes of its ``Case`` where it has them)."""

    question: str
    answer: str
    supported: bool
    id: str
    gold_answer: str | None
    answered_anyway: str | None
    signals: dict[str, float]
    claims: list[dict[str, float]]

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None or k not in ("gold_answer", "answered_anyway")}


def pairs(items: list[Item], dataset: str, answer_mode: str, att: Attributor, max_new_tokens: int = 32) -> list[Case]:
    """The cases; the model's answers are cut to complete sentences of at most
    ``max_new_tokens`` tokens."""
    cases = []
    for item in items:
        if answer_mode == "unanswerable":
            documents = documents_of(item)
            gold = gold_answer(item)
            if gold:
                cases.append(Case(item["question"], documents, gold, True, item["id"]))
            else:
                answer = complete_sentences(att.generate(item["question"], documents, max_new_tokens=max_new_tokens))
                if answer:
                    cases.append(Case(item["question"], documents, answer, False, item["id"], answered_anyway=answer))
            continue
        gold = gold_answer(item)
        if not gold:  # an unanswerable SQuAD question has no gold paragraph to remove
            continue
        supported = documents_of(select_documents(item, "gold4" if dataset == "hotpotqa" else "full"))
        if answer_mode == "gold":
            answer = gold
        elif answer_mode == "model":
            answer = complete_sentences(att.generate(item["question"], supported, max_new_tokens=max_new_tokens))
        else:
            answer = complete_sentences(
                att.chat(
                    [{"role": "user", "content": PARAPHRASE.format(question=item["question"], answer=gold)}],
                    max_new_tokens=40,
                )
            )
        if not answer.strip():
            continue
        unsupported = documents_of(distractors_only(item))
        cases.append(Case(item["question"], supported, answer, True, item["id"], gold_answer=gold))
        cases.append(Case(item["question"], unsupported, answer, False, item["id"], gold_answer=gold))
    return cases


def similarity(text: str, sentences: list[str], context: str) -> dict[str, float]:
    """The signals that need no attribution: how close ``text`` comes to any sentence."""
    return {
        "MiniLM (answer vs sentence, max)": max(minilm("", text, sentences)),
        "BM25 (answer vs sentence, max)": max(bm25("", text, sentences)),
        "verbatim answer in context": float(text.strip().rstrip(".").lower() in context),
    }


def top(spans: list) -> float:
    """The best score among ``spans`` (nan when none was scored)."""
    return max((s.score for s in spans if s.score is not None), default=float("nan"))


def signals(
    att: Attributor, question: str, documents: list[Document], answer: str, methods: list[str]
) -> tuple[dict[str, float], list[dict[str, float]]]:
    """The answer's signals, and those of each of its sentences (claims) when it has several:
    a claim's top sentence is the best LOO score on that claim's own tokens."""
    out: dict[str, float] = {}
    results = {}
    for method in methods:
        result = results[method] = att.attribute(
            question,
            documents,
            answer,
            method="auto" if method.startswith("budget-") else method,
            budget=method.removeprefix("budget-") if method.startswith("budget-") else "balanced",
        )
        out["context gain"] = result.context_gain
        out[f"{method} top document"] = top(result.documents)
        out[f"{method} top sentence"] = top(result.sentences)
        out[f"{method} seconds"] = result.timings["score"]
    sentences = [s.text for s in result.sentences]
    context = " ".join(d.text for d in documents).lower()
    out.update(similarity(answer, sentences, context))
    claims = [
        {
            **{f"{method} top sentence": top(r.answer_sentences[c].sentences) for method, r in results.items()},
            **similarity(claim.text, sentences, context),
        }
        for c, claim in enumerate(result.answer_sentences)
    ]
    return out, claims if len(claims) > 1 else []


def summarize(labelled: list[tuple[bool, dict[str, float]]]) -> dict[str, dict]:
    """AUROC of each signal over cases or claims, each given as (supported, signals)."""
    names = [k for k in labelled[0][1] if not k.endswith("seconds")] if labelled else []
    summary = {}
    for name in names:
        positive = [signals[name] for supported, signals in labelled if supported]
        negative = [signals[name] for supported, signals in labelled if not supported]
        # bootstrap over cases: resample supported and unsupported cases independently
        rng = np.random.default_rng(0)
        boots = (
            [
                ev.auroc(list(rng.choice(positive, len(positive))), list(rng.choice(negative, len(negative))))
                for _ in range(1000)
            ]
            if positive and negative
            else []
        )
        summary[name] = {
            "auroc": ev.auroc(positive, negative),
            "ci": [float(np.percentile(boots, 2.5)), float(np.percentile(boots, 97.5))] if boots else None,
            "supported": len(positive),
            "unsupported": len(negative),
        }
    return dict(sorted(summary.items(), key=lambda kv: -kv[1]["auroc"]))


def table(summary: dict[str, dict]) -> list[str]:
    lines = ["| signal | AUROC [95% CI] | supported / unsupported |", "|---|---|---|"]
    for signal, s in summary.items():
        ci = f" [{s['ci'][0]:.3f}, {s['ci'][1]:.3f}]" if s["ci"] else ""
        lines.append(f"| {signal} | {s['auroc']:.3f}{ci} | {s['supported']} / {s['unsupported']} |")
    return lines


def write(rows: list[CaseRow], meta: dict[str, Any], out: Path, name: str) -> None:
    summary = summarize([(r.supported, r.signals) for r in rows])
    claims = [(r.supported, c) for r in rows for c in r.claims]
    claim_summary = summarize(claims)
    out.mkdir(parents=True, exist_ok=True)
    payload = {k: v for k, v in meta.items() if not k.startswith("_")}
    cases = [row.to_json() for row in rows]
    (out / f"groundedness_{name}.json").write_text(
        json.dumps(dict(payload, summary=summary, claim_summary=claim_summary, cases=cases), indent=1) + "\n"
    )
    lines = [
        f"# Groundedness: {name}",
        "",
        f"Command: `{meta['command']}`  ",
        f"Cases: {len(rows)}; wall time {(time.perf_counter() - meta['_start']) / 60:.1f} min; embedded SmolLM2-135M-Instruct, 1 thread",
        "",
        *table(summary),
    ]
    if claim_summary:
        lines += [
            "",
            f"## Per claim: the {len(claims)} sentences of answers with more than one",
            "",
            "Each claim keeps its answer's label; LOO scores are those on the claim's own tokens.",
            "",
            *table(claim_summary),
        ]
    (out / f"groundedness_{name}.md").write_text("\n".join(lines) + "\n")


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.groundedness",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--dataset", choices=sorted(FILES), default="hotpotqa")
    parser.add_argument("--n", type=int, default=40, help="questions (HotpotQA: 2 cases each)")
    parser.add_argument(
        "--answer",
        choices=["gold", "model", "paraphrase", "unanswerable"],
        default=None,
        help="default: gold for HotpotQA, unanswerable for SQuAD 2.0 (unanswerable: SQuAD 2.0 only)",
    )
    parser.add_argument("--methods", nargs="+", default=["fast", "budget-balanced", "exact"])
    parser.add_argument(
        "--max-new-tokens", type=int, default=32, help="the model's answers (more: answers of several sentences)"
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    return parser


def measure(args: argparse.Namespace, meta: dict[str, Any], name: str) -> None:
    """Every case's signals, the results rewritten after each."""
    att = Attributor()
    items = load_questions(DATA_DIR / FILES[args.dataset], args.n)
    rows: list[CaseRow] = []
    for i, case in enumerate(pairs(items, args.dataset, args.answer, att, args.max_new_tokens)):
        answer_signals, claims = signals(att, case.question, case.documents, case.answer, args.methods)
        rows.append(
            CaseRow(
                question=case.question,
                answer=case.answer,
                supported=case.supported,
                id=case.id,
                gold_answer=case.gold_answer,
                answered_anyway=case.answered_anyway,
                signals=answer_signals,
                claims=claims,
            )
        )
        label = "supported  " if case.supported else "unsupported"
        print(f"[{i + 1}] {label} gain {answer_signals['context gain']:.2f}: {case.answer[:60]}", flush=True)
        write(rows, meta, args.out, name)


def main() -> None:
    arguments = parser()
    args = arguments.parse_args()
    args.answer = args.answer or ("unanswerable" if args.dataset == "squad2" else "gold")
    if args.answer == "unanswerable" and args.dataset != "squad2":
        arguments.error("--answer unanswerable needs --dataset squad2")
    torch.set_num_threads(1)
    meta = {
        "_start": time.perf_counter(),
        "command": command_line("groundedness"),
        "dataset": args.dataset,
        "answer": args.answer,
    }
    name = args.dataset if args.answer == "unanswerable" else f"{args.dataset}_{args.answer}"
    measure(args, meta, name)
    print((args.out / f"groundedness_{name}.md").read_text())


if __name__ == "__main__":
    main()
