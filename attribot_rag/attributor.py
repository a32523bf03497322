"""The public facade: ``Attributor(...).attribute(question, documents, answer)``."""

from __future__ import annotations

import bisect
import os
import threading
import time
from collections.abc import Sequence
from typing import Any, Literal

import torch

from ._version import __version__
from .methods import METHODS, Drops, Problem
from .models import LoadedModel, load_model
from .options import AttributionOptions, Budget, Method
from .prompt import DEFAULT_TEMPLATE, TokenizedText, check_template, render
from .results import AnswerSentence, AttributionResult, AttributionSettings, SpanScore
from .scorer import Scorer
from .spans import Document, split_sentences

ModelSpec = str | os.PathLike | LoadedModel | None


def as_documents(documents: Sequence[Document | str]) -> list[Document]:
    """Validate ``documents`` (``Document`` objects or plain strings)."""
    if isinstance(documents, (str, Document)) or not isinstance(documents, Sequence):
        raise TypeError("documents must be a list of Document objects or strings")
    if not documents:
        raise ValueError("no documents: attribution needs at least one")
    result = []
    for index, document in enumerate(documents):
        if isinstance(document, str):
            document = Document(text=document)
        elif not isinstance(document, Document):
            raise TypeError(f"document {index} is a {type(document).__name__}, not a Document or str")
        if not document.text.strip():
            raise ValueError(f"document {index} is empty")
        result.append(document)
    return result


def _check_text(name: str, value: object) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, not {type(value).__name__}")
    if not value.strip():
        raise ValueError(f"{name} is empty")
    return value


class Attributor:
    """Leave-one-out context attribution of RAG answers with a local (proxy) language model.

    ``model``: Hugging Face id or local path (default: the embedded SmolLM2-135M-Instruct).
    ``target``: an optional larger model that rescores the proxy's best sentences
    (``method="pruned"``). ``prompt_template``: the user message, with ``{context}`` and
    ``{question}``; the tokenizer's chat template wraps it. Calls are serialised by a lock, so
    one instance can be shared by threads.
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
    ):
        check_template(prompt_template)
        self._proxy = load_model(model, device, dtype)
        self._target = load_model(target, device, dtype) if target is not None else None
        self.prompt_template = prompt_template
        self._scorers = {id(m): Scorer(m.model, batch_size, progress) for m in (self._proxy, self._target) if m}
        self._lock = threading.Lock()

    @property
    def model(self):
        return self._proxy.model

    @property
    def tokenizer(self):
        return self._proxy.tokenizer

    def _problem(self, loaded: LoadedModel, question: str, documents: list[Document], answer: str, truncate: bool = False) -> Problem:
        """Render and tokenize for ``loaded``; with ``truncate``, drop last-retrieved documents
        until the prompt fits the context window."""
        rendered = render(question, documents, loaded.tokenizer, self.prompt_template)
        prompt = TokenizedText.of(loaded.tokenizer, rendered.text)
        answer_tokens = TokenizedText.of(loaded.tokenizer, answer)
        special = set(loaded.tokenizer.all_special_ids)
        if all(t in special for t in answer_tokens.ids):
            raise ValueError("the answer has no tokens other than special tokens")
        window = getattr(loaded.model.config.get_text_config(), "max_position_embeddings", None)
        total = len(prompt.ids) + len(answer_tokens.ids)
        if window and total > window:
            if truncate and len(documents) > 1:
                return self._problem(loaded, question, documents[:-1], answer, truncate)
            hint = "" if truncate else "; pass truncate='documents' to drop the last-retrieved documents"
            raise ValueError(f"prompt and answer are {total} tokens, {total - window} more than {loaded.name}'s context window of {window}{hint}")
        return Problem(self._scorers[id(loaded)], loaded.tokenizer, rendered, prompt, answer_tokens)

    def attribute(
        self,
        question: str,
        documents: Sequence[Document | str],
        answer: str,
        method: Method = "auto",
        keep_documents: int = 2,
        keep_sentences: int = 5,
        doc_method: Literal["exact", "fast"] = "exact",
        truncate: Literal["error", "documents"] = "error",
        budget: Budget = "balanced",
    ) -> AttributionResult:
        """Score every document and sentence by how much the answer's log-probability drops
        without it. ``method="auto"`` (the default) runs what ``budget`` maps to
        (``options.BUDGETS``); ``hierarchical`` scores sentences of the top ``keep_documents``
        only (its document pass exact, or frozen-context with ``doc_method="fast"``);
        ``pruned`` needs a ``target``; ``fast`` is the experimental frozen-context estimate. A
        prompt longer than the model's window is an error, or with ``truncate="documents"``
        loses its last-retrieved documents (listed in ``dropped_documents``)."""
        options = AttributionOptions(
            method=method, budget=budget, keep_documents=keep_documents, keep_sentences=keep_sentences, doc_method=doc_method, truncate=truncate
        )
        return self.attribute_with(question, documents, answer, options)

    def attribute_with(self, question: str, documents: Sequence[Document | str], answer: str, options: AttributionOptions) -> AttributionResult:
        """``attribute`` with its settings as one ``AttributionOptions`` (the form the CLI, the
        integrations, batch jobs and the service pass around)."""
        _check_text("question", question)
        _check_text("answer", answer)
        documents = as_documents(documents)
        resolved = options.resolved()
        spec = METHODS[resolved.method]
        if spec.needs_target and self._target is None:
            raise ValueError(f"method={resolved.method!r} needs a target model: Attributor(target=...)")
        with self._lock:
            timings = {}
            start = time.perf_counter()
            problem = self._problem(self._proxy, question, documents, answer, resolved.truncate == "documents")
            timings["prepare"] = time.perf_counter() - start
            start = time.perf_counter()
            extra: dict[str, Any] = {}
            if spec.needs_target:
                extra["target"] = self._problem(self._target, question, problem.rendered.documents, answer)
            drops = spec.run(problem, **options.method_options(), **extra)
            timings["score"] = time.perf_counter() - start
        dropped = list(range(len(problem.rendered.documents), len(documents)))
        return self._result(options, problem, drops, answer, timings, dropped)

    def settings(self, options: AttributionOptions) -> AttributionSettings:
        """The settings a result of ``options`` records (method resolved, model, device, dtype)."""
        resolved = options.resolved()
        return AttributionSettings(
            method=resolved.method,
            options=options.method_options(),
            budget=options.budget if options.method == "auto" else None,
            model=self._proxy.name,
            target=self._target.name if METHODS[resolved.method].needs_target else None,
            device=str(self.model.device),
            dtype=str(self.model.dtype).removeprefix("torch."),
            version=__version__,
        )

    def _result(self, options: AttributionOptions, problem: Problem, drops: Drops, answer: str, timings: dict[str, float], dropped: list[int]) -> AttributionResult:
        rendered = problem.rendered

        def spans(drop_of: dict[int, torch.Tensor], kind: str, tokens: slice) -> list[SpanScore]:
            prompt_spans = rendered.document_spans if kind == "document" else rendered.sentence_spans
            out = []
            for i, (prompt_start, prompt_end) in enumerate(prompt_spans):
                if kind == "document":
                    doc_index, start, end = i, 0, len(rendered.documents[i].text)
                else:
                    sentence = rendered.sentences[i]
                    doc_index, start, end = sentence.doc_index, sentence.start, sentence.end
                document = rendered.documents[doc_index]
                score = float(drop_of[i][tokens].sum()) if i in drop_of else None
                out.append(
                    SpanScore(
                        doc_index=doc_index,
                        doc_id=document.id or str(doc_index),
                        text=document.text[start:end],
                        start=start,
                        end=end,
                        prompt_start=prompt_start,
                        prompt_end=prompt_end,
                        score=score,
                    )
                )
            return out

        everything = slice(None)
        answer_sentences = []
        claims = split_sentences(answer) or [(0, len(answer))]
        token_claims = _token_claims(drops.answer_offsets, claims)
        for c, (start, end) in enumerate(claims):
            tokens = [t for t, owner in enumerate(token_claims) if owner == c]
            own = slice(tokens[0], tokens[-1] + 1) if tokens else slice(0, 0)
            answer_sentences.append(
                AnswerSentence(
                    text=answer[start:end],
                    start=start,
                    end=end,
                    documents=spans(drops.documents, "document", own),
                    sentences=spans(drops.sentences, "sentence", own),
                )
            )
        settings = self.settings(options)
        return AttributionResult(
            method=settings.method,
            model=settings.model,
            target=settings.target,
            prompt=rendered.text,
            answer=answer,
            full_logprob=float(drops.full.sum()),
            documents=spans(drops.documents, "document", everything),
            sentences=spans(drops.sentences, "sentence", everything),
            answer_sentences=answer_sentences,
            timings=timings,
            dropped_documents=dropped,
            settings=settings,
        )

    def generate(self, question: str, documents: Sequence[Document | str], max_new_tokens: int = 48) -> str:
        """Greedy answer of the (proxy) model to the same prompt that ``attribute`` scores."""
        _check_text("question", question)
        rendered = render(question, as_documents(documents), self.tokenizer, self.prompt_template)
        return self.complete(rendered.text, max_new_tokens)

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

    @torch.inference_mode()
    def complete(self, prompt: str, max_new_tokens: int = 48) -> str:
        """Greedy continuation of ``prompt`` (special tokens in it are parsed, none added)."""
        tokenizer, model = self.tokenizer, self.model
        ids = torch.tensor([TokenizedText.of(tokenizer, prompt).ids], device=model.device)
        with self._lock:
            out = model.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id,
            )
        return tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True).strip()


_shared: dict[tuple[str | None, str | None, str | None], Attributor] = {}
_shared_lock = threading.Lock()


def shared_attributor(model: str | None = None, device: str | None = None, dtype: str | None = None) -> Attributor:
    """One ``Attributor`` per (model, device, dtype) per process, loaded on first use: the
    default of both integrations, so a process that uses both loads the model once."""
    key = (model, device, dtype)
    with _shared_lock:
        if key not in _shared:
            _shared[key] = Attributor(model, device=device, dtype=dtype)
        return _shared[key]


def _token_claims(offsets: list[tuple[int, int]], claims: list[tuple[int, int]]) -> list[int]:
    """The answer sentence each answer token belongs to: the last one starting at or before
    the token's last character (a token's leading space belongs to the sentence after it)."""
    starts = [start for start, _ in claims]
    return [max(bisect.bisect_right(starts, max(s, e - 1)) - 1, 0) for s, e in offsets]
