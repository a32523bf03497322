"""Measuring one question: the answer, exact LOO, every method, baseline and ContextCite on the
same prompt and spans, one after another (so that time ratios compare like with like on a
shared machine), and the cross-family block."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from attribot_rag import Attributor, Document, load_model
from benchmarks.baselines import Baseline
from benchmarks.contextcite import contextcite_scores
from benchmarks.data import (
    Item,
    complete_sentences,
    documents_of,
    gold_answer,
    gold_documents,
    gold_sentences,
    select_documents,
    span_layout,
)
from benchmarks.faithfulness.rows import Estimate, QuestionRow, SettingRow, TargetExact, evaluate
from benchmarks.measure import Measured, TokenCounter, timed

KEEP_SENTENCES = 5


@dataclass(frozen=True)
class Config:
    """What every question of a run shares."""

    setting: str  # full or gold4
    answer: str  # model or gold
    max_new_tokens: int
    methods: list[str]  # besides exact
    our_methods: dict[str, dict[str, Any]]  # setting name -> attribute() keyword arguments
    baselines: dict[str, Baseline]
    contextcite_ablations: list[int]


@dataclass(frozen=True)
class SecondModel:
    """A second model family: its exact LOO, and ``pruned`` both ways with SmolLM2."""

    name: str
    dir: str
    att: Attributor
    pruned: Attributor  # SmolLM2 proxy, this target
    reverse: Attributor  # this proxy, SmolLM2 target


@dataclass(frozen=True)
class Models:
    """The embedded SmolLM2, the optional second family, one token counter on all of them."""

    att: Attributor
    counter: TokenCounter
    second: SecondModel | None

    @classmethod
    def load(cls, second_dir: str | None) -> Models:
        counter = TokenCounter()
        smol = load_model(None)
        counter.attach(smol.model)
        second = None
        if second_dir:
            loaded = load_model(second_dir)
            counter.attach(loaded.model)
            second = SecondModel(
                name="Gemma3-270M" if "gemma" in second_dir.lower() else Path(second_dir).name,
                dir=second_dir,
                att=Attributor(loaded),
                pruned=Attributor(smol, target=loaded),
                reverse=Attributor(loaded, target=smol),
            )
        return cls(Attributor(smol), counter, second)


def scores(spans: list[Any]) -> list[float | None]:
    return [s.score for s in spans]


def estimate_of(result: Any) -> Estimate:
    """An attribution's sentence and document scores."""
    return Estimate(sentences=scores(result.sentences), documents=scores(result.documents))


def warm_up(models: Models, with_cc: bool) -> None:
    """One small attribution per code path first, so that one-time costs (first kernels,
    allocator growth) do not land on the first question's timings."""
    att, second = models.att, models.second
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
        contextcite_scores(att.model, att.tokenizer, result.prompt, spans, answer, [2], models.counter)
    if second is not None:
        second.att.attribute(question, docs, answer, method="exact")
        second.pruned.attribute(question, docs, answer, method="pruned")
        second.reverse.attribute(question, docs, answer, method="pruned")


@dataclass(frozen=True)
class Truth:
    """What a question's scores are judged by besides a reference: its gold sentences and
    documents, and the span layout."""

    gold: list[int]
    documents: list[int]
    layout: tuple[list[int], set[int]]

    def judge(
        self, reference: Estimate | None, estimate: Estimate, cost: Measured[Any], reference_cost: Measured[Any] | None
    ) -> SettingRow:
        return evaluate(reference, estimate, self.gold, self.documents, cost, reference_cost, self.layout)


def run_question(
    item: Item, models: Models, config: Config, with_reference: bool, with_cc: bool, with_second: bool
) -> QuestionRow:
    """One question: its answer, exact LOO (``with_reference``), every method and baseline,
    ContextCite (``with_cc``) and the cross-family block (``with_second``)."""
    att, counter = models.att, models.counter
    item = select_documents(item, config.setting)
    documents = documents_of(item)
    if config.answer == "gold":
        answer, raw, gen_seconds = gold_answer(item) or "", None, 0.0
    else:
        generated = timed(
            lambda: att.generate(item["question"], documents, max_new_tokens=config.max_new_tokens), counter
        )
        raw, gen_seconds = generated.result, generated.seconds
        answer = complete_sentences(raw)
    base = dict(id=item["id"], question=item["question"], answer=answer, raw_answer=raw, generate_seconds=gen_seconds)
    if not answer.strip():
        skipped = "no gold answer (unanswerable)" if config.answer == "gold" else "empty answer"
        return QuestionRow(**base, skipped=skipped)

    def attribute(options: dict[str, Any]) -> Measured[Any]:
        return timed(lambda: att.attribute(item["question"], documents, answer, **options), counter)

    results = {
        name: attribute(config.our_methods.get(name, {"method": "exact"}))
        for name in (["exact"] if with_reference else []) + [m for m in config.methods if m in config.our_methods]
    }
    first = next(iter(results.values())).result
    exact = results["exact"] if with_reference else None
    reference = estimate_of(exact.result) if exact else None
    layout = span_layout(item)
    if [s.doc_index for s in first.sentences] != layout[0]:
        raise RuntimeError(f"the gold span mapping does not match the attribution's spans for {item['id']}")
    gold = gold_sentences(item)
    truth = Truth(gold, gold_documents(gold, layout[0]), layout)
    settings = {name: truth.judge(reference, estimate_of(run.result), run, exact) for name, run in results.items()}
    texts = [s.text for s in first.sentences]
    for name in config.methods:
        if name in config.baselines:
            run = timed(lambda name=name: config.baselines[name](item["question"], answer, texts), counter)
            settings[name] = truth.judge(reference, Estimate(sentences=run.result, documents=None), run, exact)
    if with_cc and "contextcite" in config.methods:
        spans = [(s.prompt_start, s.prompt_end) for s in first.sentences]
        ablations = contextcite_scores(
            att.model, att.tokenizer, first.prompt, spans, answer, config.contextcite_ablations, counter
        )
        for count, cc in ablations.items():
            estimate = Estimate(sentences=[float(w) for w in cc.weights], documents=None)
            settings[f"contextcite-{count}"] = truth.judge(
                reference, estimate, Measured(None, cc.seconds, cc.tokens), exact
            )
    print(
        "  " + ", ".join(f"{k} {v.seconds:.1f}s gold@1={v.sentences['gold_top1']}" for k, v in settings.items()),
        flush=True,
    )
    row = QuestionRow(
        **base,
        documents=len(documents),
        sentences=len(first.sentences),
        prompt_tokens=len(att.tokenizer(first.prompt, add_special_tokens=False).input_ids),
        answer_tokens=len(att.tokenizer(answer, add_special_tokens=False).input_ids),
        gold=gold,
        gold_documents=truth.documents,
        full_logprob=first.full_logprob,
        context_gain=first.context_gain,
        reference=with_reference,
        settings=settings,
    )
    if with_second and models.second is not None and reference is not None and exact is not None:
        row.cross = cross_family(item, documents, answer, reference, exact, models, config.methods, truth)
    return row


def cross_family(
    item: Item,
    documents: list[Document],
    answer: str,
    smol_reference: Estimate,
    smol_cost: Measured[Any],
    models: Models,
    methods: list[str],
    truth: Truth,
) -> dict[str, SettingRow | TargetExact]:
    """SmolLM2 <-> second model: each one's exact LOO as the other's proxy, and ``pruned``.
    Token counts add both models' tokens (their sizes are close: 135M and 270M parameters, of
    which 100M+ outside the embeddings each)."""
    second, counter = models.second, models.counter
    assert second is not None
    target = timed(lambda: second.att.attribute(item["question"], documents, answer, method="exact"), counter)
    target_reference = estimate_of(target.result)
    name = second.name
    out: dict[str, SettingRow | TargetExact] = {
        f"exact:{name}": TargetExact(
            seconds=target.seconds,
            tokens=target.tokens,
            full_logprob=target.result.full_logprob,
            scores=target_reference,
        ),
        # the proxy's own exact LOO against the target's exact LOO (cost: the proxy's)
        f"proxy:SmolLM2->{name}": truth.judge(target_reference, smol_reference, smol_cost, target),
        f"proxy:{name}->SmolLM2": truth.judge(smol_reference, target_reference, target, smol_cost),
    }
    for method, label, attributor, reference, reference_cost in (
        ("pruned", f"pruned:SmolLM2->{name}", second.pruned, target_reference, target),
        ("pruned-reverse", f"pruned:{name}->SmolLM2", second.reverse, smol_reference, smol_cost),
    ):
        if method in methods:
            run = timed(
                lambda attributor=attributor: attributor.attribute(
                    item["question"], documents, answer, method="pruned", keep_sentences=KEEP_SENTENCES
                ),
                counter,
            )
            out[label] = truth.judge(reference, Estimate(sentences=scores(run.result.sentences)), run, reference_cost)
    print(
        "  cross: "
        + ", ".join(
            f"{k} x{v.speedup:.2f} r3={v.sentences['top3_recall']:.2f}"
            for k, v in out.items()
            if isinstance(v, SettingRow)
        ),
        flush=True,
    )
    return out
