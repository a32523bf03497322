"""Faithfulness and speed of every attribution method against exact sentence LOO.

    .venv/bin/python benchmarks/faithfulness.py --dataset squad2 --n 20 --contextcite-n 10
    .venv/bin/python benchmarks/faithfulness.py --dataset hotpotqa --n 10 --contextcite-n 10

(needs the ``bench`` extra: ``pip install -e .[bench]``; ContextCite's own dependencies are
pulled by it.) For each question the embedded model answers greedily (at most
``--max-new-tokens`` tokens, cut to complete sentences); exact sentence LOO of that model on
that answer is the reference, and every method runs on the same question, prompt and
sentence partition (the dataset's own sentences), one after another, so that time ratios
compare like with like on a shared machine. Per method: Spearman and Pearson correlation
with exact LOO, top-1 agreement, recall of the exact top-3 in the method's top-3, recall of
the gold supporting sentences in its top-k (k = number of gold sentences; questions without
gold skipped), the same at document level where the method scores documents, and the
speed-up (exact time / method time, per question, then median). Results go to
``--out``/faithfulness_<dataset>.{json,md,png}; the JSON is rewritten after every question,
so an interrupted run keeps what it measured, and ``--resume`` goes on from it: questions
already measured under the same settings are kept, the rest are run (a larger ``--n`` or
``--reference-n`` extends a finished run the same way).

ContextCite (``context-cite`` on PyPI) runs through its own code (its random masks, its own
uncached forwards, its LASSO surrogate), driven with our model, our exact prompt and our
sentence spans: its partitioner is replaced by one whose sources are our sentence spans in
the rendered prompt, and ablated prompts are that prompt with the masked spans cut. Its masks
come from seeds 0..n-1, so the first 32 ablations of a 64-ablation run are the 32-ablation
run: they are computed once, and each setting's time is the time of its own ablations plus
its fit.

With a second model (``--second-model``; see ``second_model.py`` for Gemma 3 270M) the same
answers are also scored by it: its exact LOO is the reference for the SmolLM2 proxy and for
``pruned`` (SmolLM2 proxy, Gemma target), and the reverse pairing is measured against the
SmolLM2 reference.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import sys
import time
from pathlib import Path

import numpy as np
import torch

from attribot_rag import BUDGETS, METHODS, Attributor, Document, load_model
from attribot_rag.spans import split_sentences

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))
import evaluation as ev  # noqa: E402  (benchmarks/evaluation.py: the metrics, tested in tests/)
from baselines import BASELINES  # noqa: E402

DATA_DIR = ROOT / "data"
FILES = {"squad2": "squad2_dev_sample.jsonl", "hotpotqa": "hotpotqa_dev_sample.jsonl"}
DEFAULT_N = {"squad2": 20, "hotpotqa": 10}
# setting name -> attribute() keyword arguments: every registered method that needs no target
# (naive has exact's scores), variants of hierarchical, and what each budget maps to.
OUR_METHODS = {
    **{
        name: dict(method=name)
        for name, spec in METHODS.items()
        if not spec.needs_target and name not in ("naive", "exact", "hierarchical")
    },
    **{f"hierarchical-k{k}": dict(method="hierarchical", keep_documents=k) for k in (1, 2, 3)},
    "hierarchical-k2-fastdoc": dict(method="hierarchical", keep_documents=2, doc_method="fast"),
    # LOO or similarity: BM25's top documents are kept too (scores stay LOO)
    "hierarchical-k2-fastdoc-similar2": dict(
        method="hierarchical", keep_documents=2, doc_method="fast", keep_similar=2
    ),
    "hierarchical-k1-fastdoc-similar2": dict(
        method="hierarchical", keep_documents=1, doc_method="fast", keep_similar=2
    ),
    "fast-rescore3": dict(method="fast", rescore=3),
    **{f"budget-{budget}": dict(method="auto", budget=budget) for budget in BUDGETS if budget != "faithful"},
}
ALL_METHODS = [*OUR_METHODS, *BASELINES, "contextcite", "pruned", "pruned-reverse"]
KEEP_SENTENCES = 5


# -- data ----------------------------------------------------------------------------------
def load_questions(path: Path, n: int) -> list[dict]:
    with path.open(encoding="utf-8") as handle:
        return [json.loads(line) for _, line in zip(range(n), handle, strict=False)]


def documents_of(item: dict) -> list[Document]:
    return [Document(title=d["title"], id=d["title"], sentences=d["sentences"]) for d in item["documents"]]


def select_documents(item: dict, setting: str) -> dict:
    """The question with the documents of ``setting``: ``full`` (all of them) or ``gold4``
    (HotpotQA: the gold paragraphs and 2 distractors picked by a generator seeded with the
    question id, in their original order)."""
    if setting == "full":
        return item
    gold_titles = {title for title, _ in item.get("supporting", [])}
    distractors = [d["title"] for d in item["documents"] if d["title"] not in gold_titles]
    keep = gold_titles | set(np.random.default_rng(abs(hash_id(item["id"]))).permutation(distractors)[:2].tolist())
    return dict(item, documents=[d for d in item["documents"] if d["title"] in keep])


def hash_id(text: str) -> int:
    """A stable integer of a question id (Python's ``hash`` of a str changes per process)."""
    return int.from_bytes(text.encode("utf-8")[-8:].rjust(8, b"\0"), "little")


def gold_answer(item: dict) -> str | None:
    """The dataset's answer (HotpotQA ``answer``, SQuAD's first human answer); ``None`` for an
    unanswerable SQuAD question."""
    if "answers" in item:
        return item["answers"][0]["text"] if item["answers"] else None
    return item.get("answer")


def _span_index(item: dict) -> dict[tuple[int, int | None], int]:
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


def sentence_documents(item: dict) -> list[int]:
    """The document of each span of the attribution's span list."""
    return [d for (d, _), _ in sorted(_span_index(item).items(), key=lambda entry: entry[1])]


def span_layout(item: dict) -> tuple[list[int], set[int]]:
    """What the gold metrics need of the span list: each span's document, and which spans
    are titles."""
    return sentence_documents(item), {i for (_, s), i in _span_index(item).items() if s is None}


def gold_sentences(item: dict) -> list[int]:
    """Indices of the gold supporting sentences in the attribution's span list
    (``_span_index``); out-of-range references (a HotpotQA quirk) dropped."""
    index = _span_index(item)
    titles = {document["title"]: d for d, document in enumerate(item["documents"])}
    gold = {index.get((titles.get(title), s)) for title, s in item.get("supporting", [])}
    return sorted(g for g in gold if g is not None)


def complete_sentences(text: str) -> str:
    """``text`` cut after its last complete sentence (all of it when none is complete)."""
    text = text.strip()
    ends = [end for _, end in split_sentences(text) if re.search(r"[.!?][\"')\]]*$", text[:end])]
    return text[: ends[-1]] if ends else text


# -- ContextCite ---------------------------------------------------------------------------
def contextcite_scores(
    model, tokenizer, prompt: str, spans: list[tuple[int, int]], answer: str, ablations: list[int]
) -> dict[int, tuple[np.ndarray, float]]:
    """ContextCite's sentence weights for each ablation count in ``ablations`` and the time
    that count costs (its own ablation forwards plus its fit) and the tokens it forwarded, from
    one growing set of masks."""
    from context_cite import ContextCiter
    from context_cite.context_partitioner import BaseContextPartitioner
    from context_cite.utils import get_masks_and_logit_probs

    from attribot_rag.methods import cut

    class SpanPartitioner(BaseContextPartitioner):
        """Sources are our sentence spans of the rendered prompt; ablating cuts them out."""

        def __init__(self, text: str, spans: list[tuple[int, int]]):
            super().__init__(text)
            self.spans = spans

        @property
        def num_sources(self) -> int:
            return len(self.spans)

        def split_context(self) -> None:
            pass

        def get_source(self, index: int) -> str:
            return self.context[slice(*self.spans[index])]

        def get_context(self, mask=None) -> str:
            if mask is None:
                return self.context
            return cut(self.context, [span for span, keep in zip(self.spans, mask, strict=True) if not keep])

    answer_ids = tokenizer(answer, add_special_tokens=False).input_ids

    class PromptCiter(ContextCiter):
        """ContextCiter on our exact prompt (chat template already applied) and answer."""

        def _get_prompt_ids(self, mask=None, return_prompt=False):
            text = self.partitioner.get_context(mask)
            ids = self.tokenizer(text, add_special_tokens=False).input_ids
            return (ids, text) if return_prompt else ids

        @property
        def _response_ids(self):
            return answer_ids

    citer = PromptCiter(
        model, tokenizer, prompt, "", partitioner=SpanPartitioner(prompt, spans), num_ablations=max(ablations)
    )
    masks, logit_probs, elapsed, out = [], [], 0.0, {}
    TokenCounter.tokens = 0
    for count in sorted(ablations):
        start = time.perf_counter()
        new = count - sum(len(m) for m in masks)
        m, lp = get_masks_and_logit_probs(
            citer.model,
            citer.tokenizer,
            new,
            citer.num_sources,
            citer._get_prompt_ids,
            answer_ids,
            citer.ablation_keep_prob,
            citer.batch_size,
            base_seed=sum(len(m) for m in masks),
        )
        masks.append(m)
        logit_probs.append(lp)
        elapsed += time.perf_counter() - start
        start = time.perf_counter()
        citer._cache["reg_masks"] = np.concatenate(masks)
        citer._cache["reg_logit_probs"] = np.concatenate(logit_probs)
        weights, _ = citer._get_attributions_for_ids_range(0, len(answer_ids))
        out[count] = (np.asarray(weights, dtype=np.float64), elapsed + time.perf_counter() - start, TokenCounter.tokens)
    return out


# -- measuring -----------------------------------------------------------------------------
class TokenCounter:
    """Tokens that went through a model's decoder (rows x new positions per forward, so
    padding counts too): a measure of compute that, unlike time, does not depend on what
    else runs on the machine. It leaves out attention's growth with context length and the
    vocabulary projection (ContextCite projects every position, our scorer the answer only)."""

    tokens = 0

    @classmethod
    def attach(cls, model) -> None:
        def count(module, args, kwargs):
            ids = kwargs.get("input_ids", args[0] if args else None)
            if ids is None:
                ids = kwargs["inputs_embeds"][..., 0]
            cls.tokens += ids.numel()

        model.get_decoder().register_forward_pre_hook(count, with_kwargs=True)


def timed(call):
    """``call()``, the CPU time it took (one torch thread: robust to a shared machine) and the
    tokens it forwarded."""
    TokenCounter.tokens = 0
    start = time.process_time()
    result = call()
    return result, time.process_time() - start, TokenCounter.tokens


def scores(spans) -> list[float | None]:
    return [s.score for s in spans]


def gold_documents(item: dict, gold: list[int], sentence_docs: list[int]) -> list[int]:
    return sorted({sentence_docs[g] for g in gold})


def evaluate(
    reference: dict | None,
    estimate: dict,
    gold: list[int],
    gold_docs: list[int],
    cost: tuple[float, int],
    reference_cost: tuple[float, int] | None,
    layout: tuple[list[int], set[int]],
) -> dict:
    """Metrics of one method on one question; without a ``reference`` (exact LOO not run on
    this question: ``--reference-n``) only the gold metrics and the cost."""
    (seconds, tokens), (reference_seconds, reference_tokens) = cost, reference_cost or (math.nan, 0)
    row = {
        "seconds": seconds,
        "speedup": reference_seconds / seconds if seconds > 0 else math.nan,
        "tokens": tokens,
        "token_speedup": reference_tokens / tokens if tokens > 0 and reference_tokens else math.nan,
    }
    row["sentences"] = ev.compare(reference["sentences"] if reference else None, estimate["sentences"], k=3, gold=gold)
    span_documents, titles = layout
    row["sentences"].update(ev.gold_metrics(estimate["sentences"], gold, span_documents, gold_docs, titles))
    if estimate.get("documents") is not None and reference is not None:
        row["documents"] = ev.compare(reference["documents"], estimate["documents"], k=2, gold=gold_docs)
    row["scores"] = estimate
    return row


def warm_up(att: Attributor, second: dict | None, with_cc: bool) -> None:
    """One small attribution per code path first, so that one-time costs (first kernels,
    allocator growth) do not land on the first question's timings."""
    docs = [
        Document(title="A", sentences=["Paris is the capital of France. ", "It is large."]),
        Document(title="B", text="Berlin is in Germany."),
    ]
    question, answer = "What is the capital of France?", "Paris is the capital."
    for method in ("exact", "hierarchical", "fast"):
        att.attribute(question, docs, answer, method=method)
    att.attribute(question, docs, answer, method="hierarchical", doc_method="fast", keep_similar=1)
    if with_cc:
        result = att.attribute(question, docs, answer, method="fast")
        spans = [(s.prompt_start, s.prompt_end) for s in result.sentences]
        contextcite_scores(att.model, att.tokenizer, result.prompt, spans, answer, [2])
    if second is not None:
        second["att"].attribute(question, docs, answer, method="exact")
        second["pruned"].attribute(question, docs, answer, method="pruned")
        second["reverse"].attribute(question, docs, answer, method="pruned")


def run_question(
    item: dict,
    att: Attributor,
    args,
    methods: list[str],
    with_reference: bool,
    with_cc: bool,
    second: dict | None,
    baselines: dict,
) -> dict:
    """One question: its answer, exact LOO (``with_reference``), every method and baseline."""
    item = select_documents(item, args.setting)
    documents = documents_of(item)
    if args.answer == "gold":
        answer, raw, gen_seconds = gold_answer(item) or "", None, 0.0
    else:
        raw, gen_seconds, _ = timed(
            lambda: att.generate(item["question"], documents, max_new_tokens=args.max_new_tokens)
        )
        answer = complete_sentences(raw)
    row = {
        "id": item["id"],
        "question": item["question"],
        "answer": answer,
        "raw_answer": raw,
        "generate_seconds": gen_seconds,
    }
    if not answer.strip():
        row["skipped"] = "no gold answer (unanswerable)" if args.answer == "gold" else "empty answer"
        return row
    results = {}  # setting -> (AttributionResult, (CPU seconds, tokens))
    for name in (["exact"] if with_reference else []) + [m for m in methods if m in OUR_METHODS]:
        options = OUR_METHODS.get(name, dict(method="exact"))
        result, *cost = timed(lambda options=options: att.attribute(item["question"], documents, answer, **options))
        results[name] = result, cost
    first = next(iter(results.values()))[0]
    reference, exact_cost = None, None
    if with_reference:
        exact, exact_cost = results["exact"]
        reference = {"sentences": scores(exact.sentences), "documents": scores(exact.documents)}
    layout = span_layout(item)
    sentence_docs = layout[0]
    if [s.doc_index for s in first.sentences] != sentence_docs:
        raise RuntimeError(f"the gold span mapping does not match the attribution's spans for {item['id']}")
    gold = gold_sentences(item)
    gold_docs = gold_documents(item, gold, sentence_docs)
    row.update(
        documents=len(documents),
        sentences=len(first.sentences),
        prompt_tokens=len(att.tokenizer(first.prompt, add_special_tokens=False).input_ids),
        answer_tokens=len(att.tokenizer(answer, add_special_tokens=False).input_ids),
        gold=gold,
        gold_documents=gold_docs,
        full_logprob=first.full_logprob,
        context_gain=first.context_gain,
        reference=with_reference,
    )
    settings = {
        name: evaluate(
            reference,
            {"sentences": scores(result.sentences), "documents": scores(result.documents)},
            gold,
            gold_docs,
            cost,
            exact_cost,
            layout,
        )
        for name, (result, cost) in results.items()
    }
    texts = [s.text for s in first.sentences]
    for name in methods:
        if name in baselines:
            values, *cost = timed(lambda name=name: baselines[name](item["question"], answer, texts))
            settings[name] = evaluate(
                reference, {"sentences": values, "documents": None}, gold, gold_docs, cost, exact_cost, layout
            )
    if with_cc and "contextcite" in methods:
        spans = [(s.prompt_start, s.prompt_end) for s in first.sentences]
        for count, (weights, seconds, tokens) in contextcite_scores(
            att.model, att.tokenizer, first.prompt, spans, answer, args.contextcite_ablations
        ).items():
            estimate = {"sentences": [float(w) for w in weights], "documents": None}
            settings[f"contextcite-{count}"] = evaluate(
                reference, estimate, gold, gold_docs, (seconds, tokens), exact_cost, layout
            )
    row["settings"] = settings
    print(
        "  " + ", ".join(f"{k} {v['seconds']:.1f}s gold@1={v['sentences']['gold_top1']}" for k, v in settings.items()),
        flush=True,
    )

    if second is not None and reference is not None:
        row["cross"] = cross_family(
            item, documents, answer, reference, exact_cost, gold, gold_docs, second, methods, layout
        )
    return row


def cross_family(item, documents, answer, smol_reference, smol_cost, gold, gold_docs, second, methods, layout) -> dict:
    """SmolLM2 <-> second model: each one's exact LOO as the other's proxy, and ``pruned``.
    Token counts add both models' tokens (their sizes are close: 135M and 270M parameters, of
    which 100M+ outside the embeddings each)."""
    target_exact, *target_cost = timed(
        lambda: second["att"].attribute(item["question"], documents, answer, method="exact")
    )
    target_reference = {"sentences": scores(target_exact.sentences), "documents": scores(target_exact.documents)}
    name = second["name"]
    out = {
        f"exact:{name}": {
            "seconds": target_cost[0],
            "tokens": target_cost[1],
            "full_logprob": target_exact.full_logprob,
            "scores": target_reference,
        },
        # the proxy's own exact LOO against the target's exact LOO (cost: the proxy's)
        f"proxy:SmolLM2->{name}": evaluate(
            target_reference, smol_reference, gold, gold_docs, smol_cost, target_cost, layout
        ),
        f"proxy:{name}->SmolLM2": evaluate(
            smol_reference, target_reference, gold, gold_docs, target_cost, smol_cost, layout
        ),
    }
    if "pruned" in methods:
        result, *cost = timed(
            lambda: second["pruned"].attribute(
                item["question"], documents, answer, method="pruned", keep_sentences=KEEP_SENTENCES
            )
        )
        out[f"pruned:SmolLM2->{name}"] = evaluate(
            target_reference, {"sentences": scores(result.sentences)}, gold, gold_docs, cost, target_cost, layout
        )
    if "pruned-reverse" in methods:
        result, *cost = timed(
            lambda: second["reverse"].attribute(
                item["question"], documents, answer, method="pruned", keep_sentences=KEEP_SENTENCES
            )
        )
        out[f"pruned:{name}->SmolLM2"] = evaluate(
            smol_reference, {"sentences": scores(result.sentences)}, gold, gold_docs, cost, smol_cost, layout
        )
    print(
        "  cross: "
        + ", ".join(
            f"{k} x{v['speedup']:.2f} r3={v['sentences']['top3_recall']:.2f}" for k, v in out.items() if "speedup" in v
        ),
        flush=True,
    )
    return out


# -- aggregation and reports ---------------------------------------------------------------
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
DOC_METRICS = ["spearman", "top1", "top2_recall", "gold_recall"]


def aggregate(rows: list[dict], key: str) -> dict:
    names = []
    for row in rows:
        for name in row.get(key, {}):
            if name not in names and "speedup" in row[key][name]:
                names.append(name)
    summary = {}
    for name in names:
        entries = [row[key][name] for row in rows if name in row.get(key, {})]
        s = {
            "questions": len(entries),
            "speedup": ev.summarize(e["speedup"] for e in entries),
            "token_speedup": ev.summarize(e["token_speedup"] for e in entries),
            "seconds": ev.summarize(e["seconds"] for e in entries),
            "tokens": ev.summarize(e["tokens"] for e in entries),
            "sentences": {m: ev.summarize(e["sentences"][m] for e in entries) for m in METRICS},
        }
        if all("documents" in e for e in entries):
            s["documents"] = {m: ev.summarize(e["documents"][m] for e in entries) for m in DOC_METRICS}
        summary[name] = s
    front = pareto([(n, s["speedup"]["median"], s["sentences"]["top3_recall"]["mean"]) for n, s in summary.items()])
    token_front = pareto(
        [(n, s["token_speedup"]["median"], s["sentences"]["top3_recall"]["mean"]) for n, s in summary.items()]
    )
    for name in summary:
        summary[name]["pareto"] = name in front
        summary[name]["pareto_tokens"] = name in token_front
    return summary


def pareto(points: list[tuple[str, float | None, float | None]]) -> set[str]:
    """Names of the points no other point beats on both speed-up and top-3 recall."""
    valid = [(n, x, y) for n, x, y in points if x is not None and y is not None]
    return {n for n, x, y in valid if not any(x2 >= x and y2 >= y and (x2 > x or y2 > y) for _, x2, y2 in valid)}


def _mean_ci(stat: dict) -> str:
    if stat["n"] == 0:
        return "–"
    ci = f" [{stat['ci'][0]:.2f}, {stat['ci'][1]:.2f}]" if stat.get("ci") else ""
    return f"{stat['mean']:.2f}{ci}"


def markdown_table(summary: dict, reference_label: str) -> str:
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
        "| setting | q | CPU s | speed-up (time) | speed-up (compute) | Pearson | top-1 | top-3 recall | significant | gold top-1 | gold recall@k | gold recall@3 | top in gold doc | gold docs scored | gold top-1, no titles | gold recall@k, no titles |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, s in summary.items():
        sent = s["sentences"]
        cells = [
            sent[m]
            for m in (
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
            )
        ]
        lines.append(
            "| "
            + " | ".join(
                [
                    ("★" if s["pareto"] else "") + ("☆" if s["pareto_tokens"] else "") + " " + name,
                    str(s["questions"]),
                    f"{s['seconds']['median']:.1f}",
                    *(
                        f"{s[key]['median']:.2f}×" if s[key]["median"] is not None else "– (no model)"
                        for key in ("speedup", "token_speedup")
                    ),
                    *(_mean_ci(c) for c in cells),
                ]
            )
            + " |"
        )
    return "\n".join(lines)


def plot(summary: dict, path: Path, title: str) -> None:
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


def write(rows: list[dict], meta: dict, out: Path, dataset: str, final: bool) -> None:
    done = [r for r in rows if "settings" in r]
    summary = aggregate(done, "settings")
    cross = aggregate(done, "cross")
    wall = time.perf_counter() - meta["_start"] if "_start" in meta else meta["wall_seconds"]
    meta = dict(meta, wall_seconds=wall, finished=final, questions_done=len(done))
    payload = {k: v for k, v in meta.items() if not k.startswith("_")}
    payload.update(summary=summary, cross_summary=cross, questions=rows)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"faithfulness_{dataset}.json").write_text(json.dumps(payload, indent=1, allow_nan=True) + "\n")
    md = [
        f"# Faithfulness vs exact LOO: {dataset}",
        "",
        f"Command: `{payload['command']}`  ",
        f"Machine: {payload['machine']}  ",
        f"Model: {payload['model']}; questions: {len(done)}; total wall time: {payload['wall_seconds'] / 60:.1f} min"
        + ("" if final else " (run still in progress or interrupted)"),
        "",
        *(
            [
                f"Exact LOO ran on the first {sum(r.get('reference', True) for r in done)} questions only "
                "(`--reference-n`): the speed-ups and the columns against exact come from those; the gold "
                "columns and CPU s from all.",
                "",
            ]
            if meta.get("reference_n") is not None
            else []
        ),
        markdown_table(
            summary,
            "exact sentence LOO of SmolLM2-135M-Instruct"
            + (" (the model that wrote the answer)" if meta["answer"] == "model" else " on the dataset's gold answer"),
        ),
    ]
    if cross:
        md += [
            "",
            "## Cross-family (proxy → target)",
            "",
            markdown_table(
                cross, "exact LOO of the target named after the arrow; speed-up relative to that target's exact LOO"
            ),
        ]
    (out / f"faithfulness_{dataset}.md").write_text("\n".join(md) + "\n")
    if summary:
        plot(
            summary,
            out / f"faithfulness_{dataset}.png",
            f"{dataset}: {len(done)} questions, SmolLM2-135M, 2 shared CPU cores",
        )


def reevaluated(row: dict, item: dict) -> dict:
    """``row`` with every metric recomputed by today's code from the scores it stored (after a
    metric was added or changed); costs and scores stay as measured."""
    if "settings" not in row:
        return row
    layout = span_layout(item)
    exact = row["settings"]["exact"] if row.get("reference", True) else None
    reference, reference_cost = (exact["scores"], (exact["seconds"], exact["tokens"])) if exact else (None, None)
    settings = {
        name: evaluate(
            reference,
            entry["scores"],
            row["gold"],
            row["gold_documents"],
            (entry["seconds"], entry["tokens"]),
            reference_cost,
            layout,
        )
        for name, entry in row["settings"].items()
    }
    return dict(row, settings=settings)


def reevaluate(path: Path) -> None:
    """Recompute every metric and report of a saved run from the scores it stored."""
    payload = json.loads(path.read_text())
    items = {
        item["id"]: select_documents(item, payload["setting"])
        for item in load_questions(ROOT.parent / payload["data"], payload["n"])
    }
    rows = [reevaluated(row, items[row["id"]]) for row in payload["questions"]]
    meta = {k: v for k, v in payload.items() if k not in ("summary", "cross_summary", "questions")}
    write(rows, meta, path.parent, path.stem.removeprefix("faithfulness_"), payload["finished"])


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


def saved_rows(path: Path, meta: dict) -> tuple[dict[str, dict], dict]:
    """The questions of an earlier run written to ``path``, by id, and its metadata; nothing
    if there is none. Refuses a run measured under other settings, whose rows would not
    compare with the new ones."""
    if not path.exists():
        return {}, {}
    payload = json.loads(path.read_text())
    differ = [key for key in RESUME_KEYS if payload.get(key) != meta[key]]
    if differ:
        sys.exit(f"--resume: {path} was run with other settings ({', '.join(differ)}); use another --out")
    return {row["id"]: row for row in payload["questions"]}, payload


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", choices=sorted(FILES), default="squad2")
    parser.add_argument("--data", type=Path, default=None, help=f"JSONL file (default: {DATA_DIR}/<dataset file>)")
    parser.add_argument("--n", type=int, default=None, help="questions (default: 20 for squad2, 10 for hotpotqa)")
    parser.add_argument(
        "--methods", nargs="+", choices=ALL_METHODS, default=ALL_METHODS, help="besides exact, which always runs"
    )
    parser.add_argument(
        "--reference-n",
        type=int,
        default=None,
        help="questions (the first ones) with exact LOO as reference (default: all); the rest get gold metrics only",
    )
    parser.add_argument("--contextcite-ablations", type=int, nargs="+", default=[32, 64])
    parser.add_argument("--contextcite-n", type=int, default=10, help="questions (the first ones) for ContextCite")
    parser.add_argument(
        "--second-model",
        default="auto",
        help="directory of a second model family for the cross-family block; 'auto': Gemma 3 270M if installed (see second_model.py); 'none': skip",
    )
    parser.add_argument(
        "--second-n",
        type=int,
        default=None,
        help="questions (the first ones) for the cross-family block (default: all)",
    )
    parser.add_argument(
        "--setting",
        choices=["full", "gold4"],
        default="full",
        help="HotpotQA: all 10 paragraphs, or the 2 gold + 2 distractors",
    )
    parser.add_argument(
        "--answer",
        choices=["model", "gold"],
        default="model",
        help="the proxy's own greedy answer, or the dataset's (a bigger LLM that answered right)",
    )
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (default 1: on a shared 2-core machine two threads made a forward 5x slower, 10.9 s vs 2.1 s, from OpenMP waits)",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "results")
    parser.add_argument(
        "--reevaluate", type=Path, metavar="JSON", help="recompute the metrics and reports of a saved run, and stop"
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="keep the questions an earlier run with the same settings wrote to --out, and run the rest",
    )
    args = parser.parse_args()
    if args.reevaluate:
        reevaluate(args.reevaluate)
        return
    n = args.n or DEFAULT_N[args.dataset]
    if args.reference_n is not None and args.reference_n < n and not set(args.methods) & set(OUR_METHODS):
        # the sentences, prompt and context gain of a question come from an attribution
        parser.error("questions without exact LOO (--reference-n < --n) need one of our methods in --methods")
    if args.threads:
        torch.set_num_threads(args.threads)

    start = time.perf_counter()
    path = args.data or DATA_DIR / FILES[args.dataset]
    items = load_questions(path, n)
    smol = load_model(None)
    TokenCounter.attach(smol.model)
    att = Attributor(smol)
    second = None
    if args.second_model != "none":
        second_dir = args.second_model
        if second_dir == "auto":
            try:
                sys.path.insert(0, str(ROOT))
                from second_model import gemma_dir

                second_dir = str(gemma_dir())
            except (FileNotFoundError, ImportError) as error:
                print(f"no second model: {error}", flush=True)
                second_dir = None
        if second_dir:
            loaded = load_model(second_dir)
            TokenCounter.attach(loaded.model)
            name = "Gemma3-270M" if "gemma" in second_dir.lower() else Path(second_dir).name
            second = {
                "name": name,
                "dir": second_dir,
                "att": Attributor(loaded),
                "pruned": Attributor(smol, target=loaded),
                "reverse": Attributor(loaded, target=smol),
            }
    name = "_".join([args.dataset, *([args.setting] if args.setting != "full" else []), f"{args.answer}-answer"])
    meta = {
        "_start": start,
        # a resumed run's results are those of the same command run without a break
        "command": " ".join(
            [".venv/bin/python", "benchmarks/faithfulness.py", *(a for a in sys.argv[1:] if a != "--resume")]
        ),
        "dataset": args.dataset,
        "setting": args.setting,
        "answer": args.answer,
        "data": str(path.relative_to(ROOT.parent) if path.is_relative_to(ROOT.parent) else path),
        "n": n,
        "methods": ["exact", *args.methods],
        "reference_n": args.reference_n,
        "contextcite_ablations": args.contextcite_ablations,
        "contextcite_n": args.contextcite_n,
        "second_model": second and second["dir"],
        "second_n": args.second_n,
        "max_new_tokens": args.max_new_tokens,
        "model": "SmolLM2-135M-Instruct (embedded, float32)",
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores (shared with other jobs), torch {torch.__version__}, {torch.get_num_threads()} threads",
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    saved, previous = saved_rows(args.out / f"faithfulness_{name}.json", meta) if args.resume else ({}, {})
    if previous:
        meta["_start"] = start - previous["wall_seconds"]  # wall time of all parts, without the breaks
        meta["resumed"] = [*previous.get("resumed", []), meta["started"]]
        meta["started"] = previous["started"]
    warm_up(att, second, "contextcite" in args.methods and args.contextcite_n > 0)
    meta["load_and_warm_up_seconds"] = time.perf_counter() - start
    # the earlier run's questions (their metrics recomputed by today's code) stay in the
    # results until measured again, so that stopping a resumed run never loses them
    rows: list[dict | None] = [
        reevaluated(saved[item["id"]], select_documents(item, args.setting)) if item["id"] in saved else None
        for item in items
    ]
    for i, item in enumerate(items):
        print(f"[{i + 1}/{len(items)}] {item['id']}: {item['question']}", flush=True)
        use_second = second if second is not None and (args.second_n is None or i < args.second_n) else None
        with_reference = args.reference_n is None or i < args.reference_n
        row = rows[i]
        if row is not None and ("skipped" in row or row.get("reference", True) or not with_reference):
            print("  kept from the earlier run", flush=True)
            continue
        rows[i] = run_question(
            item, att, args, args.methods, with_reference, i < args.contextcite_n, use_second, BASELINES
        )
        write([r for r in rows if r is not None], meta, args.out, name, final=False)
    write([r for r in rows if r is not None], meta, args.out, name, final=True)
    print((args.out / f"faithfulness_{name}.md").read_text())


if __name__ == "__main__":
    main()
