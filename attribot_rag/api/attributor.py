"""The public facade: ``Attributor(...).attribute(question, documents, answer)``."""

from __future__ import annotations

import bisect
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch

from .._version import __version__
from ..core.messages import Messages, as_messages, render_messages
from ..core.methods import METHODS, Drops, Problem, context_gain
from ..core.models import LoadedModel, default_device, load_model, resolve_dtype
from ..core.prompt import DEFAULT_TEMPLATE, RenderedPrompt, TokenizedText, check_template, render
from ..core.scorer import Scorer
from ..core.spans import Document, Sentence, document_name, split_claims, split_sentences
from .locking import FifoLock
from .options import AttributionOptions, AttributionPlan
from .protocol import KeywordForms
from .results import AttributionResult, AttributionSettings, Timing
from .scores import AnswerSentence, SpanScore
from .validation import as_documents, check_text

logger = logging.getLogger(__name__)
ModelSpec = str | os.PathLike | LoadedModel | None
# Renders the prompt of some documents for a tokenizer: the question form or given messages.
RenderFor = Callable[[Any, list[Document]], RenderedPrompt]


class Attributor(KeywordForms):
    """Leave-one-out context attribution of RAG answers with a local (proxy) language model.

    ``model``: Hugging Face id or local path (default: the embedded SmolLM2-135M-Instruct).
    ``target``: an optional larger model that rescores the proxy's best sentences
    (``method="pruned"``). ``prompt_template``: the user message, with ``{context}`` and
    ``{question}``; the tokenizer's chat template wraps it. Calls are serialised by a
    first-come, first-served lock, so one instance can be shared by threads. ``progress``:
    show the ablations' progress bars (off by default: a library stays quiet). Loading shows
    transformers' own bar unless the application turned transformers' process-wide switch off
    (``transformers.utils.logging.disable_progress_bar()``, as the CLI does off a terminal):
    this library never changes another library's settings.
    ``threads``: CPU threads for torch, set with ``torch.set_num_threads``; that is torch's
    process-wide setting, so it applies to every model in the process, not to this instance
    alone. On a shared or busy machine, 1 or 2 threads cost far less CPU per answer than the
    default (one per core), whose waiting OpenMP threads spin.
    """

    def __init__(
        self,
        model: ModelSpec = None,
        *,
        device: str | None = None,
        dtype: str | torch.dtype | None = None,
        target: ModelSpec = None,
        prompt_template: str = DEFAULT_TEMPLATE,
        batch_size: int | None = None,
        progress: bool = False,
        threads: int | None = None,
    ):
        if threads is not None:
            if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
                raise ValueError(f"threads must be a positive integer, not {threads!r}")
            torch.set_num_threads(threads)
        check_template(prompt_template)
        check_text("prompt_template", prompt_template)
        self._proxy = load_model(model, device, dtype)
        self._target = load_model(target, device, dtype) if target is not None else None
        self.prompt_template = prompt_template
        self._scorers = {id(m): Scorer(m.model, batch_size, progress) for m in (self._proxy, self._target) if m}
        self._lock = FifoLock()
        # budget="faithful" scores in float32: a float32 copy of a proxy loaded in another
        # dtype, reloaded from its source on first use (``_proxy_for``).
        self._source, self._batch_size, self._progress = model, batch_size, progress
        self._float32: LoadedModel | None = None

    @property
    def model(self):
        return self._proxy.model

    def _needs_float32(self, plan: AttributionPlan) -> bool:
        """``budget="faithful"`` always scores in float32, whatever the proxy's dtype."""
        return plan.float32 and self.model.dtype != torch.float32

    def _proxy_for(self, plan: AttributionPlan) -> LoadedModel:
        """The proxy that scores ``plan``: the loaded one, or for ``budget="faithful"`` on
        a proxy in another dtype its float32 copy (loaded once, from the same source)."""
        if not self._needs_float32(plan):
            return self._proxy
        if self._float32 is None:
            if isinstance(self._source, LoadedModel):
                raise ValueError(
                    f"budget='faithful' scores in float32 and this Attributor was given a {str(self.model.dtype).removeprefix('torch.')} "
                    "model object it cannot reload; pass a model id or path, or a float32 model"
                )
            self._float32 = load_model(self._source, str(self.model.device), torch.float32)
            self._scorers[id(self._float32)] = Scorer(self._float32.model, self._batch_size, self._progress)
        return self._float32

    @property
    def tokenizer(self):
        return self._proxy.tokenizer

    def _problem(
        self,
        loaded: LoadedModel,
        render_for: RenderFor,
        documents: list[Document],
        answer: str,
        truncate: bool = False,
        hint: bool = True,
    ) -> Problem:
        """Render (``render_for(tokenizer, documents)``) and tokenize for ``loaded``; with
        ``truncate``, keep the most first-retrieved documents that fit the context window,
        found by bisection (a logarithmic number of renders; the prompt grows with every
        document). ``hint``: an overflow error suggests ``truncate='documents'``."""
        answer_tokens = TokenizedText.of(loaded.tokenizer, answer, [(0, len(answer))])
        window = getattr(loaded.model.config.get_text_config(), "max_position_embeddings", None)

        def tokenized(count: int) -> tuple[RenderedPrompt, TokenizedText, int]:
            rendered = render_for(loaded.tokenizer, documents[:count])
            prompt = TokenizedText.of(loaded.tokenizer, rendered.text, rendered.literal_spans)
            return rendered, prompt, len(prompt.ids) + len(answer_tokens.ids)

        rendered, prompt, total = tokenized(len(documents))
        if window and total > window:
            fits, too_long = 0, len(documents)
            if truncate:
                while too_long - fits > 1:  # documents[:fits] fit (or fits == 0), documents[:too_long] do not
                    middle = (fits + too_long) // 2
                    candidate = tokenized(middle)
                    if candidate[2] <= window:
                        fits, (rendered, prompt, _) = middle, candidate
                    else:
                        too_long, total = middle, candidate[2]
            if not fits:
                advice = (
                    "; pass truncate='documents' to drop the last-retrieved documents" if hint and not truncate else ""
                )
                raise ValueError(
                    f"prompt and answer are {total} tokens, {total - window} more than {loaded.name}'s context window of {window}{advice}"
                )
        return Problem(self._scorers[id(loaded)], loaded.tokenizer, rendered, prompt, answer_tokens)

    def attribute_with(
        self, question: str, documents: Sequence[Document | str], answer: str, options: AttributionOptions
    ) -> AttributionResult:
        """``attribute`` with its settings as one ``AttributionOptions`` (the form the CLI, the
        integrations, batch jobs and the service pass around)."""
        check_text("question", question)
        check_text("answer", answer)
        documents = as_documents(documents)

        def render_for(tokenizer: Any, docs: list[Document]) -> RenderedPrompt:
            return render(question, docs, tokenizer, self.prompt_template)

        return self._attribute(render_for, documents, answer, options.plan())

    def attribute_messages_with(
        self, messages: Messages, answer: str, documents: Sequence[Document | str], options: AttributionOptions
    ) -> AttributionResult:
        """``attribute_messages`` with its settings as one ``AttributionOptions``."""
        messages = as_messages(messages)
        check_text("answer", answer)
        documents = as_documents(documents)
        if options.truncate == "documents":
            raise ValueError(
                "truncate='documents' does not apply to messages: the prompt the LLM read is attributed as it is"
            )
        _, located = render_messages(messages, documents, self.tokenizer)
        if not located:
            raise ValueError(
                f"none of the {len(documents)} documents occurs verbatim in the messages: nothing to attribute"
            )

        def render_for(tokenizer: Any, docs: list[Document]) -> RenderedPrompt:
            rendered, found = render_messages(messages, docs, tokenizer)
            if found != list(range(len(docs))):  # a target whose template renders contents otherwise
                raise ValueError(
                    "the documents are not found in the same order in every model's rendering of the messages"
                )
            return rendered

        unseen = sorted(set(range(len(documents))) - set(located))
        return self._attribute(render_for, [documents[i] for i in located], answer, options.plan(), located, unseen)

    def _attribute(
        self,
        render_for: RenderFor,
        documents: list[Document],
        answer: str,
        plan: AttributionPlan,
        indices: list[int] | None = None,
        unseen: list[int] | None = None,
    ) -> AttributionResult:
        """The body shared by both forms: render for the proxy (and target), run the method,
        build the result. ``indices``: the caller's index of each document (default: its
        position); given, the prompt is the caller's and cannot be truncated."""
        spec = METHODS[plan.method]
        if spec.needs_target and self._target is None:
            raise ValueError(f"method={plan.method!r} needs a target model: Attributor(target=...)")
        timings: dict[str, Timing] = {}
        with self._lock:
            with _timed(timings, "prepare"):
                problem = self._problem(
                    self._proxy_for(plan), render_for, documents, answer, plan.truncate, hint=indices is None
                )
                target = {}
                if spec.needs_target and self._target is not None:  # None raised above
                    target["target"] = self._problem(self._target, render_for, problem.rendered.documents, answer)
                _check_cost(
                    plan.method,
                    spec.forwards(problem, **plan.options, **target),
                    len(problem.prompt.ids),
                    plan.max_forwards,
                )
            with _timed(timings, "score"):
                drops = spec.run(problem, **plan.options, **target)
            gain = None
            if plan.context_gain:
                with _timed(timings, "context_gain"):
                    gain = context_gain(problem, drops.full)
        rendered = problem.rendered
        indices = indices if indices is not None else list(range(len(documents)))
        return AttributionResult(
            settings=self._settings(plan),
            prompt=rendered.text,
            answer=answer,
            full_logprob=float(drops.full.sum()),
            context_gain=gain,
            documents=_span_scores(rendered, drops.documents, "document", indices, slice(None)),
            sentences=_span_scores(rendered, drops.sentences, "sentence", indices, slice(None)),
            answer_sentences=_answer_sentences(rendered, drops, answer, indices),
            timings=timings,
            dropped_documents=list(range(len(rendered.documents), len(documents))),
            unseen_documents=unseen or [],
        )

    def settings(self, options: AttributionOptions) -> AttributionSettings:
        """The settings a result of ``options`` records (method resolved, model, device, dtype)."""
        return self._settings(options.plan())

    def _settings(self, plan: AttributionPlan) -> AttributionSettings:
        return AttributionSettings(
            method=plan.method,
            options=plan.options,
            budget=plan.budget,
            model=self._proxy.name,
            target=self._target.name if METHODS[plan.method].needs_target and self._target is not None else None,
            device=str(self.model.device),
            dtype="float32" if self._needs_float32(plan) else str(self.model.dtype).removeprefix("torch."),
            version=__version__,
        )

    def generate(self, question: str, documents: Sequence[Document | str], max_new_tokens: int = 48) -> str:
        """Greedy answer of the (proxy) model to the same prompt that ``attribute`` scores."""
        check_text("question", question)
        rendered = render(question, as_documents(documents), self.tokenizer, self.prompt_template)
        return self._continue(TokenizedText.of(self.tokenizer, rendered.text, rendered.literal_spans), max_new_tokens)

    def generate_answer(self, question: str, documents: Sequence[Document | str], max_new_tokens: int = 48) -> str:
        """``generate``, cut after its last complete sentence (a short answer stays whole): the
        answer the CLI, the demo and batch jobs attribute when none is given."""
        text = self.generate(question, documents, max_new_tokens)
        complete = [end for _, end in split_sentences(text) if text[end - 1] in ".!?。"]
        return text[: complete[-1]] if complete else text

    def chat(self, messages: list[dict[str, str]], max_new_tokens: int = 48) -> str:
        """Greedy reply of the (proxy) model to chat ``messages`` (``{"role", "content"}``),
        through its chat template: a local answering model for examples and tests."""
        prompt = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return self.complete(prompt, max_new_tokens)

    def complete(self, prompt: str, max_new_tokens: int = 48) -> str:
        """Greedy continuation of ``prompt`` (special tokens in it are parsed, none added)."""
        return self._continue(TokenizedText.of(self.tokenizer, prompt), max_new_tokens)

    def _continue(self, prompt: TokenizedText, max_new_tokens: int) -> str:
        ids = torch.tensor([prompt.ids], device=self.model.device)
        out = self.greedy(ids, max_new_tokens)
        return self.tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True).strip()

    @torch.inference_mode()
    def greedy(self, ids: torch.Tensor, max_new_tokens: int, **generate: Any) -> torch.Tensor:
        """The model's greedy continuation of the token ids ``ids`` (``[1, n]``), under this
        instance's lock like every call; ``generate``: further ``model.generate`` arguments
        (a streamer, stopping criteria)."""
        with self._lock:
            return self.model.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=self.tokenizer.pad_token_id or self.tokenizer.eos_token_id,
                **generate,
            )


_shared: dict[tuple[str | None, str, str], Attributor] = {}
_shared_lock = threading.Lock()


def shared_attributor(model: str | None = None, device: str | None = None, dtype: str | None = None) -> Attributor:
    """One ``Attributor`` per (model, device, dtype) per process, loaded on first use: the
    default of both integrations, so a process that uses both loads the model once. The key
    is what loads, so ``(None, None, None)`` and its explicit equivalent share one model."""
    resolved_device = device or default_device()
    key = (model, resolved_device, str(resolve_dtype(dtype, resolved_device)))
    with _shared_lock:
        if key not in _shared:
            _shared[key] = Attributor(model, device=resolved_device, dtype=dtype)
        return _shared[key]


def _check_cost(method: str, forwards: int, prompt_tokens: int, max_forwards: int | None) -> None:
    """Log the planned forward passes once; refuse more than ``max_forwards`` of them before
    any runs (``exact`` over thousands of sentences is an hour of silence on a CPU)."""
    logger.info("%s: %d forward passes planned over a %d-token prompt", method, forwards, prompt_tokens)
    if max_forwards is not None and forwards > max_forwards:
        raise ValueError(
            f"method={method!r} plans {forwards} forward passes over a {prompt_tokens}-token prompt, more than max_forwards={max_forwards}; "
            "use method='auto' with budget='fast' or 'balanced', fewer documents, or a larger max_forwards"
        )


@contextmanager
def _timed(timings: dict[str, Timing], stage: str) -> Iterator[None]:
    """Record the wall and CPU time of ``stage`` in ``timings``."""
    wall, cpu = time.perf_counter(), time.process_time()
    yield
    timings[stage] = Timing(wall_seconds=time.perf_counter() - wall, cpu_seconds=time.process_time() - cpu)


def _span_scores(
    rendered: RenderedPrompt, drop_of: dict[int, torch.Tensor], kind: str, indices: list[int], tokens: slice
) -> list[SpanScore]:
    """Every document (``kind="document"``) or sentence of ``rendered`` with its score on the
    answer tokens ``tokens`` (``None`` where ``drop_of`` has none)."""
    prompt_spans = rendered.document_spans if kind == "document" else rendered.sentence_spans
    out = []
    for i, (prompt_start, prompt_end) in enumerate(prompt_spans):
        span = Sentence(i, 0, len(rendered.documents[i].text)) if kind == "document" else rendered.sentences[i]
        document = rendered.documents[span.doc_index]
        out.append(
            SpanScore(
                doc_index=indices[span.doc_index],
                doc_id=document.id or document_name(indices[span.doc_index], document),
                text=(document.title or "" if span.part == "title" else document.text)[span.start : span.end],
                start=span.start,
                end=span.end,
                prompt_start=prompt_start,
                prompt_end=prompt_end,
                score=float(drop_of[i][tokens].sum()) if i in drop_of else None,
                part=span.part,
            )
        )
    return out


def _answer_sentences(rendered: RenderedPrompt, drops: Drops, answer: str, indices: list[int]) -> list[AnswerSentence]:
    """The answer's claims, each with every span's score on its own tokens."""
    claims = split_claims(answer)
    owners = _token_claims(drops.answer_offsets, claims)
    out = []
    for c, (start, end) in enumerate(claims):
        tokens = [t for t, owner in enumerate(owners) if owner == c]
        own = slice(tokens[0], tokens[-1] + 1) if tokens else slice(0, 0)
        out.append(
            AnswerSentence(
                text=answer[start:end],
                start=start,
                end=end,
                documents=_span_scores(rendered, drops.documents, "document", indices, own),
                sentences=_span_scores(rendered, drops.sentences, "sentence", indices, own),
            )
        )
    return out


def _token_claims(offsets: list[tuple[int, int]], claims: list[tuple[int, int]]) -> list[int]:
    """The answer sentence each answer token belongs to: the last one starting at or before
    the token's last character (a token's leading space belongs to the sentence after it)."""
    starts = [start for start, _ in claims]
    return [max(bisect.bisect_right(starts, max(s, e - 1)) - 1, 0) for s, e in offsets]
