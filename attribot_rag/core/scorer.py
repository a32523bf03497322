"""Answer log-probabilities under ablated prompts: one cached forward of the full prompt,
then every ablated prompt recomputes only what follows its common prefix with the full one."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from functools import partial
from typing import TypeVar, cast

import torch
from tqdm.auto import tqdm
from transformers import DynamicCache

T = TypeVar("T")
# The answer log-probs given the whole prompt, and the keys/values of that forward.
FullPass = tuple[torch.Tensor, DynamicCache]


class AttributionOutOfMemory(RuntimeError):
    """Out of memory even with one ablation per forward."""


class NonFiniteLogprobs(RuntimeError):
    """The model gave a NaN or infinite log-probability: its weights are damaged, or its
    dtype overflows. A score computed from it would be NaN, serialised as null ("not
    scored"), and mean nothing."""


def finite(logprobs: torch.Tensor, what: str) -> torch.Tensor:
    """``logprobs`` (host tensors, read back already), once every value is finite."""
    bad = ~torch.isfinite(logprobs)
    if bad.any():
        raise NonFiniteLogprobs(
            f"the model gave non-finite log-probabilities ({logprobs[bad][0].item()}) for the answer "
            f"after {what}: its weights are damaged (NaN) or its dtype overflows; no score can be computed"
        )
    return logprobs


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """Length of the longest common prefix of two token sequences."""
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


def is_out_of_memory(error: BaseException) -> bool:
    """The device ran out of memory (cuBLAS reports it as a failed workspace allocation)."""
    text = str(error)
    return (
        isinstance(error, torch.OutOfMemoryError)
        or "out of memory" in text.lower()
        or "CUBLAS_STATUS_ALLOC_FAILED" in text
    )


# Extra tokens a batch may recompute, as a share of the tokens its rows need: rows of one batch
# share the cache up to their earliest start, so later-starting rows recompute the difference
# (and every row is padded to the longest).
MAX_BATCH_WASTE = 0.10
MAX_BATCH = 64
# Tokens per packed forward on CPU (frozen-context tails): 4 to 16 tails of ~50 tokens ran 20%
# faster than one per forward; 64 ran slower (the packed block's attention to itself grows).
CPU_PACKED_TOKENS = 512
# Share of the free device memory a batch may take: the rest absorbs fragmentation, attention
# workspaces and what the estimate leaves out.
MEMORY_SHARE = 0.6


def rows_that_fit(available: int, row_bytes: int, cap: int = MAX_BATCH) -> int:
    """Rows per forward when each takes ``row_bytes`` and ``available`` bytes are free: at
    least 1, at most ``cap``."""
    return max(1, min(cap, int(available * MEMORY_SHARE) // max(row_bytes, 1)))


def plan_batch(
    candidates: Sequence[int],
    prefixes: Sequence[int],
    lengths: Sequence[int],
    answer: int,
    max_waste: float = MAX_BATCH_WASTE,
) -> list[int]:
    """The longest head of ``candidates`` (sorted by shared prefix) whose batched forward
    recomputes at most ``max_waste`` more tokens than its rows need: rows recompute from the
    batch's earliest shared prefix, padded to the longest row. ``lengths``: each ablated
    prompt's length; ``prefixes``: its common prefix with the full prompt."""
    batch = [candidates[0]]
    for index in candidates[1:]:
        rows = [*batch, index]
        start = min(prefixes[i] for i in rows)
        computed = len(rows) * (max(lengths[i] for i in rows) - start + answer)
        needed = sum(lengths[i] - prefixes[i] + answer for i in rows)
        if computed > (1 + max_waste) * needed:
            break
        batch = rows
    return batch


class Scorer:
    """Per-token log-probabilities of an answer after a prompt, and after ablations of it.

    The output head, the softcapping and the log-softmax run in float32 whatever the weights'
    dtype (a float32 copy of the head is made once for bf16 models): in bf16 the logits' own
    rounding is tenths of a nat."""

    def __init__(self, model, batch_size: int | None = None, progress: bool = False):
        self.model = model
        self.batch_size = batch_size
        self.progress = progress
        self._decoder = model.get_decoder()
        head = model.get_output_embeddings()
        self._head_weight = head.weight.detach().float()
        bias = getattr(head, "bias", None)
        self._head_bias = bias.detach().float() if bias is not None else None
        self._softcap = getattr(model.config.get_text_config(), "final_logit_softcapping", None)
        params = inspect.signature(self._decoder.forward).parameters
        self._cache_kw = "cache" if "cache" in params else "past_key_values"
        # After an out-of-memory error, later calls start from the halved batch size.
        self._batch_cap: int | None = None

    @property
    def device(self) -> torch.device:
        return self.model.device

    # -- reference path: an uncached forward per prompt ----------------------------------
    @torch.inference_mode()
    def naive_logprobs(self, prompt: Sequence[int], answer: Sequence[int]) -> torch.Tensor:
        """Log-probs of the answer tokens after one uncached forward of prompt and answer (the
        reference: no cache, no batching; the same float32 head as every path)."""
        ids = self._to_device(torch.tensor([list(prompt) + list(answer)]))
        hidden = self._decoder(input_ids=ids, use_cache=False).last_hidden_state
        return finite(self._answer_logprobs(hidden, [len(prompt)], ids[0, len(prompt) :])[0].cpu(), "a prompt")

    @torch.inference_mode()
    def naive_loo(
        self, prompt: Sequence[int], answer: Sequence[int], ablations: Sequence[Sequence[int]]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``loo`` the slow way: one uncached forward per ablated prompt."""
        full = self._single(lambda: self.naive_logprobs(prompt, answer), "the full prompt")
        ablated = self._in_batches(
            range(len(ablations)), len(answer), 1, lambda batch: self.naive_logprobs(ablations[batch[0]], answer)[None]
        )
        return full, ablated

    # -- fast path: built on the host, copied without waiting, read back once ------------
    def _to_device(self, tensor: torch.Tensor) -> torch.Tensor:
        """A host tensor on the model's device (any device); on CUDA through pinned memory,
        asynchronously, so that the host never waits for the GPU between ablations."""
        if self.device.type == "cuda":
            return tensor.pin_memory().to(self.device, non_blocking=True)
        return tensor.to(self.device)

    def _answer_logprobs(self, hidden: torch.Tensor, starts: list[int], answer: torch.Tensor) -> torch.Tensor:
        """Log-probs of ``answer`` for each row whose answer begins at ``starts[row]``; the
        float32 vocabulary projection runs only at those positions."""
        positions = self._to_device(torch.tensor(starts)[:, None] - 1 + torch.arange(len(answer)))
        states = hidden.gather(1, positions[..., None].expand(-1, -1, hidden.shape[-1])).float()
        logits = torch.nn.functional.linear(states, self._head_weight, self._head_bias)
        if self._softcap:
            logits = torch.tanh(logits / self._softcap) * self._softcap
        return logits.log_softmax(-1).gather(-1, answer.expand(len(starts), -1)[..., None])[..., 0]

    def _forward(
        self, ids: torch.Tensor, cache: DynamicCache, attention_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        out = self._decoder(input_ids=ids, attention_mask=attention_mask, use_cache=True, **{self._cache_kw: cache})
        return out.last_hidden_state

    @staticmethod
    def _prefix_cache(cache: DynamicCache, length: int, rows: int) -> DynamicCache:
        """A cache holding the first ``length`` positions of ``cache``, as a view repeated for
        ``rows`` (the forward's concatenation then copies it once per row: the memory rule
        counts that)."""
        return DynamicCache(
            ddp_cache_data=[
                (
                    layer.keys[:, :, :length].expand(rows, -1, -1, -1),  # type: ignore[union-attr,index]
                    layer.values[:, :, :length].expand(rows, -1, -1, -1),  # type: ignore[union-attr,index]
                )
                for layer in cache.layers
            ]
        )

    # -- batch size and out-of-memory backoff ----------------------------------------------
    def _available_memory(self) -> int:
        """Bytes a batch may use on the device: free memory plus what the caching allocator
        holds but does not use."""
        free, _ = torch.cuda.mem_get_info(self.device)
        return free + torch.cuda.memory_reserved(self.device) - torch.cuda.memory_allocated(self.device)

    def row_bytes(self, cached: int, computed: int, answer: int) -> int:
        """Device memory one batch row takes: the keys/values of its ``cached`` + ``computed``
        tokens (the forward concatenates a per-row copy), the activations of the ``computed``
        tokens (hidden states, attention projections, the MLP's intermediate ones; scores
        too under eager attention) and the float32 logits at its ``answer`` positions
        (logits, log-softmax, softcapping)."""
        config = self.model.config.get_text_config()
        heads = config.num_attention_heads
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
        kv_heads = getattr(config, "num_key_value_heads", None) or heads
        itemsize = next(self.model.parameters()).element_size()
        kv = 2 * config.num_hidden_layers * kv_heads * head_dim * itemsize
        activations = (6 * config.hidden_size + 3 * config.intermediate_size) * itemsize
        if getattr(config, "_attn_implementation", None) == "eager":
            activations += 4 * heads * (cached + computed)
        return (cached + computed) * kv + computed * activations + 3 * answer * config.vocab_size * 4

    def _batch_size(self, cached: int, computed: int, answer: int, packed: bool = False) -> int:
        """Rows per forward: an explicit ``batch_size``; else on CPU one ablation per forward
        (compute-bound: padding costs more than batching saves), or for ``packed`` rows
        (equal-length tails in one sequence, no padding) as many as ``CPU_PACKED_TOKENS``
        holds; on accelerators as many rows as the available memory holds (``row_bytes``;
        packed rows share one copy of the cache but each adds a row block to the attention
        mask). Never above a size an out-of-memory error halved to."""
        if self.batch_size:
            size = self.batch_size
        elif self.device.type != "cuda":
            size = max(1, CPU_PACKED_TOKENS // computed) if packed else 1
        elif packed:
            mask = 2 * computed * cached * self.model.dtype.itemsize
            size = rows_that_fit(
                self._available_memory() - self.row_bytes(cached, 0, 0), self.row_bytes(0, computed, answer) + mask
            )
        else:
            size = rows_that_fit(self._available_memory(), self.row_bytes(cached, computed, answer))
        return min(size, self._batch_cap or size)

    def _attempt(self, compute: Callable[[], T]) -> tuple[T | None, str | None]:
        """``compute()`` and ``None``, or ``None`` and the out-of-memory error's first line
        (other errors propagate). The allocator's cache is emptied after the ``except`` block,
        where the error's traceback no longer pins the failed forward's tensors."""
        try:
            return compute(), None
        except RuntimeError as error:  # torch.OutOfMemoryError is one
            if not is_out_of_memory(error):
                raise
            failure = str(error).splitlines()[0] if str(error) else type(error).__name__
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        return None, failure

    def _single(self, compute: Callable[[], T], what: str) -> T:
        """``compute()``, one forward that cannot be split: out of memory is final."""
        result, failure = self._attempt(compute)
        if failure is not None:
            raise AttributionOutOfMemory(
                f"out of memory on {what} ({failure}); use a smaller model or a shorter context"
            )
        return cast(T, result)

    def _in_batches(
        self,
        order: Sequence[int],
        width: int,
        size: int,
        score: Callable[[list[int]], torch.Tensor],
        plan: Callable[[list[int]], list[int]] = list,
    ) -> torch.Tensor:
        """``score`` the items of ``order`` (a permutation of ``range(len(order))``) in batches
        of at most ``size`` (``plan`` may cut a batch shorter) into one float32
        ``[len(order), width]`` host tensor. Out of memory, the batch size halves (and later
        calls start from there); at one row it raises ``AttributionOutOfMemory``."""
        order = list(order)
        scored: list[tuple[list[int], torch.Tensor]] = []
        bar = tqdm(total=len(order), disable=not self.progress, desc="ablations", leave=False)
        done = 0
        while done < len(order):
            batch = plan(order[done : done + size])
            if len(batch) == 1:
                logprobs = self._single(partial(score, batch), "a single ablation")
            else:
                attempt, failure = self._attempt(partial(score, batch))
                if failure is not None:
                    size = self._batch_cap = len(batch) // 2
                    continue
                logprobs = cast(torch.Tensor, attempt)
            scored.append((batch, logprobs))
            done += len(batch)
            bar.update(len(batch))
        bar.close()
        ablated = torch.empty(len(order), width)
        for batch, logprobs in scored:
            ablated[batch] = logprobs.float().cpu()
        return finite(ablated, "an ablated prompt")

    # -- exact LOO -------------------------------------------------------------------------
    def _full(self, prompt: Sequence[int], answer: torch.Tensor) -> tuple[torch.Tensor, DynamicCache]:
        """Answer log-probs given the whole prompt, and the keys/values of that forward."""
        cache = DynamicCache()
        ids = torch.cat([self._to_device(torch.tensor(list(prompt))), answer])[None]
        return self._answer_logprobs(self._forward(ids, cache), [len(prompt)], answer)[0], cache

    @torch.inference_mode()
    def full_pass(self, prompt: Sequence[int], answer: Sequence[int]) -> FullPass:
        """The forward of the whole prompt: answer log-probs and keys/values, which ``loo`` and
        ``frozen_loo`` of the same prompt and answer can share (``known=``)."""
        answer_t = self._to_device(torch.tensor(list(answer)))
        return self._single(lambda: self._full(prompt, answer_t), "the full prompt")

    @torch.inference_mode()
    def loo(
        self,
        prompt: Sequence[int],
        answer: Sequence[int],
        ablations: Sequence[Sequence[int]],
        known: FullPass | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Answer token log-probs given ``prompt`` (shape ``[A]``) and given each ablated prompt
        (shape ``[N, A]``), float32 on the CPU. Each ablated prompt reuses the cached keys and
        values of its common prefix with ``prompt`` (``known``: its ``full_pass``, if done)."""
        answer_t = self._to_device(torch.tensor(list(answer)))
        full, cache = known or self.full_pass(prompt, answer)
        prefixes = [common_prefix(prompt, ablation) for ablation in ablations]
        lengths = [len(ablation) for ablation in ablations]
        # Sorted by shared prefix, the ablations of a batch share the longest prefixes.
        order = sorted(range(len(ablations)), key=prefixes.__getitem__)
        size = self._batch_size(len(prompt), len(prompt) - min(prefixes, default=0) + len(answer), len(answer))

        def score(batch: list[int]) -> torch.Tensor:
            return self._score_batch(
                [ablations[i] for i in batch], min(prefixes[i] for i in batch), answer, answer_t, cache
            )

        ablated = self._in_batches(
            order, len(answer), size, score, lambda batch: plan_batch(batch, prefixes, lengths, len(answer))
        )
        return finite(full.cpu(), "the full prompt"), ablated

    def _score_batch(
        self,
        ablations: Sequence[Sequence[int]],
        shared: int,
        answer: Sequence[int],
        answer_t: torch.Tensor,
        cache: DynamicCache,
    ) -> torch.Tensor:
        # ``answer`` builds the inputs on the host; ``answer_t`` is the same ids on the device.
        # Recompute from one token before the end of the shared prefix, so that every row has
        # the position that predicts its first answer token, even when an ablated prompt is
        # a prefix of the full one.
        prefix = max(shared - 1, 0)
        rows = [list(ablation[prefix:]) for ablation in ablations]
        width = max(len(r) for r in rows) + len(answer)
        ids = torch.zeros(len(rows), width, dtype=torch.long)
        mask = torch.zeros(len(rows), prefix + width, dtype=torch.long)
        mask[:, :prefix] = 1
        for i, row in enumerate(rows):
            ids[i, : len(row) + len(answer)] = torch.tensor(row + list(answer))
            mask[i, prefix : prefix + len(row) + len(answer)] = 1
        past = self._prefix_cache(cache, prefix, len(rows)) if prefix else DynamicCache()
        # A batch of one has no padding: no mask lets attention take its fastest path.
        hidden = self._forward(
            self._to_device(ids), past, attention_mask=self._to_device(mask) if len(rows) > 1 else None
        )
        return self._answer_logprobs(hidden, [len(r) for r in rows], answer_t)

    # -- frozen-context estimate -----------------------------------------------------------
    def _packed_mask(
        self, tail: int, length: int, spans: Sequence[tuple[int, int]]
    ) -> torch.Tensor | dict[str, torch.Tensor]:
        """The attention mask of ``len(spans)`` tails of ``length`` tokens packed in one
        sequence after the first ``tail`` cached positions: each tail sees the cache without its
        span, and itself causally, never another tail. Float (0 or the dtype's minimum), so
        that eager and SDPA attention read it alike; per layer type where some layers use a
        sliding window."""
        rows = len(spans)
        allowed = torch.zeros(rows * length, tail + rows * length, dtype=torch.bool)
        allowed[:, :tail] = True
        causal = torch.ones(length, length, dtype=torch.bool).tril()
        for row, (a, b) in enumerate(spans):
            queries = slice(row * length, (row + 1) * length)
            allowed[queries, a:b] = False
            allowed[queries, tail + row * length : tail + (row + 1) * length] = causal

        def additive(keep: torch.Tensor) -> torch.Tensor:
            dtype = self.model.dtype
            return self._to_device(
                torch.zeros(keep.shape, dtype=dtype).masked_fill_(~keep, torch.finfo(dtype).min)[None, None]
            )

        config = self.model.config.get_text_config()
        layer_types = set(getattr(config, "layer_types", None) or ["full_attention"])
        if layer_types == {"full_attention"}:
            return additive(allowed)
        if not layer_types <= {"full_attention", "sliding_attention"}:
            raise ValueError(
                f"the frozen-context estimate supports full and sliding-window attention, not {sorted(layer_types)}"
            )
        query_positions = (tail + torch.arange(length)).repeat(rows)
        key_positions = torch.cat([torch.arange(tail), query_positions])
        window = query_positions[:, None] - key_positions[None, :] < config.sliding_window
        return {"full_attention": additive(allowed), "sliding_attention": additive(allowed & window)}

    @torch.inference_mode()
    def frozen_loo(
        self,
        prompt: Sequence[int],
        answer: Sequence[int],
        tail: int,
        spans: Sequence[tuple[int, int]],
        known: FullPass | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The frozen-context estimate of ``loo`` for token ranges ``spans`` of the context: the
        full prompt's keys/values stay as they are and only the tail (``prompt[tail:]`` and the
        answer) is recomputed, with the span masked out of its attention. Not exact: the
        tokens between the span and the tail still saw the span.

        The tails of a batch are packed into one sequence that shares the cache once (a custom
        attention mask keeps them apart): no padding and no per-row copy of the cache."""
        answer_t = self._to_device(torch.tensor(list(answer)))
        full, cache = known or self.full_pass(prompt, answer)
        rest = list(prompt[tail:]) + list(answer)
        size = self._batch_size(tail, len(rest), len(answer), packed=True)

        def score(batch: list[int]) -> torch.Tensor:
            past = DynamicCache(
                # full-attention layers: keys and values are tensors
                ddp_cache_data=[(layer.keys[:, :, :tail], layer.values[:, :, :tail]) for layer in cache.layers]  # type: ignore[union-attr,index]
            )
            ids = self._to_device(torch.tensor(rest * len(batch))[None])
            positions = self._to_device((tail + torch.arange(len(rest))).repeat(len(batch))[None])
            mask = self._packed_mask(tail, len(rest), [spans[i] for i in batch])
            out = self._decoder(
                input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True, **{self._cache_kw: past}
            )
            hidden = out.last_hidden_state.view(len(batch), len(rest), -1)
            return self._answer_logprobs(hidden, [len(prompt) - tail] * len(batch), answer_t)

        return finite(full.cpu(), "the full prompt"), self._in_batches(range(len(spans)), len(answer), size, score)
