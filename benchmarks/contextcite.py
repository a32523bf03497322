"""ContextCite (``context-cite`` on PyPI) as a baseline, run through its own code (its random
masks, its own uncached forwards, its LASSO surrogate) but driven with our model, our exact
prompt and our sentence spans: its partitioner is replaced by one whose sources are our
sentence spans in the rendered prompt, and ablated prompts are that prompt with the masked
spans cut. Its masks come from seeds 0..n-1, so the first 32 ablations of a 64-ablation run
are the 32-ablation run: they are computed once, and each setting's time is the time of its
own ablations plus its fit."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from benchmarks.measure import TokenCounter


@dataclass(frozen=True)
class ContextCiteRun:
    """One ablation count's sentence weights, the seconds it cost and the tokens forwarded."""

    weights: np.ndarray
    seconds: float
    tokens: int


def contextcite_scores(
    model: Any,
    tokenizer: Any,
    prompt: str,
    spans: list[tuple[int, int]],
    answer: str,
    ablations: list[int],
    counter: TokenCounter,
) -> dict[int, ContextCiteRun]:
    """ContextCite's sentence weights for each ablation count in ``ablations``, from one
    growing set of masks; ``counter`` must be attached to ``model``."""
    from context_cite import ContextCiter
    from context_cite.context_partitioner import BaseContextPartitioner
    from context_cite.utils import get_masks_and_logit_probs

    from attribot_rag.core.methods import cut

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

        def get_context(self, mask: Any = None) -> str:
            if mask is None:
                return self.context
            return cut(self.context, [span for span, keep in zip(self.spans, mask, strict=True) if not keep])

    answer_ids = tokenizer(answer, add_special_tokens=False).input_ids

    class PromptCiter(ContextCiter):
        """ContextCiter on our exact prompt (chat template already applied) and answer."""

        def _get_prompt_ids(self, mask: Any = None, return_prompt: bool = False) -> Any:
            text = self.partitioner.get_context(mask)
            ids = self.tokenizer(text, add_special_tokens=False).input_ids
            return (ids, text) if return_prompt else ids

        @property
        def _response_ids(self) -> list[int]:
            return answer_ids

    citer = PromptCiter(
        model, tokenizer, prompt, "", partitioner=SpanPartitioner(prompt, spans), num_ablations=max(ablations)
    )
    masks: list[np.ndarray] = []
    logit_probs: list[np.ndarray] = []
    elapsed, tokens_before, out = 0.0, counter.tokens, {}
    for count in sorted(ablations):
        start = time.perf_counter()
        done = sum(len(m) for m in masks)
        m, lp = get_masks_and_logit_probs(
            citer.model,
            citer.tokenizer,
            count - done,
            citer.num_sources,
            citer._get_prompt_ids,
            answer_ids,
            citer.ablation_keep_prob,
            citer.batch_size,
            base_seed=done,
        )
        masks.append(m)
        logit_probs.append(lp)
        elapsed += time.perf_counter() - start
        start = time.perf_counter()
        citer._cache["reg_masks"] = np.concatenate(masks)
        citer._cache["reg_logit_probs"] = np.concatenate(logit_probs)
        weights, _ = citer._get_attributions_for_ids_range(0, len(answer_ids))
        out[count] = ContextCiteRun(
            np.asarray(weights, dtype=np.float64), elapsed + time.perf_counter() - start, counter.tokens - tokens_before
        )
    return out
