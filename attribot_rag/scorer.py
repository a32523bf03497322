"""Answer log-probabilities under ablated prompts: one cached forward of the full prompt,
then every ablated prompt recomputes only what follows its common prefix with the full one."""

from __future__ import annotations

import inspect
from collections.abc import Sequence

import torch
from tqdm.auto import tqdm
from transformers import DynamicCache


class AttributionOutOfMemory(RuntimeError):
    """Out of memory even with one ablation per forward."""


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """Length of the longest common prefix of two token sequences."""
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


def _is_out_of_memory(error: BaseException) -> bool:
    return isinstance(error, torch.OutOfMemoryError) or "out of memory" in str(error).lower()


class Scorer:
    """Per-token log-probabilities of an answer after a prompt, and after ablations of it."""

    def __init__(self, model, batch_size: int | None = None, progress: bool = False):
        self.model = model
        self.batch_size = batch_size
        self.progress = progress
        self._decoder = model.get_decoder()
        self._head = model.get_output_embeddings()
        self._softcap = getattr(model.config.get_text_config(), "final_logit_softcapping", None)
        params = inspect.signature(self._decoder.forward).parameters
        self._cache_kw = "cache" if "cache" in params else "past_key_values"

    @property
    def device(self) -> torch.device:
        return self.model.device

    # -- reference path: the model's own forward, no cache -------------------------------
    @torch.inference_mode()
    def naive_logprobs(self, prompt: Sequence[int], answer: Sequence[int]) -> torch.Tensor:
        """Log-probs of the answer tokens by the model's own full forward (the reference)."""
        ids = torch.tensor([list(prompt) + list(answer)], device=self.device)
        logits = self.model(input_ids=ids, use_cache=False, logits_to_keep=len(answer) + 1).logits
        logprobs = logits[0, :-1].float().log_softmax(-1)
        return logprobs.gather(-1, ids[0, len(prompt):, None])[:, 0].cpu()

    def naive_loo(self, prompt: Sequence[int], answer: Sequence[int], ablations: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """``loo`` the slow way: one uncached forward per ablated prompt."""
        full = self.naive_logprobs(prompt, answer)
        return full, torch.stack([self.naive_logprobs(ids, answer) for ids in ablations])

    # -- fast path: built on the host, copied without waiting, read back once ------------
    def _to_device(self, tensor: torch.Tensor) -> torch.Tensor:
        """A host tensor on the model's device; on CUDA through pinned memory, asynchronously, so
        that the host never waits for the GPU between ablations."""
        if self.device.type != "cuda":
            return tensor
        return tensor.pin_memory().to(self.device, non_blocking=True)

    def _answer_logprobs(self, hidden: torch.Tensor, starts: list[int], answer: torch.Tensor) -> torch.Tensor:
        """Log-probs of ``answer`` for each row whose answer begins at ``starts[row]``; the
        vocabulary projection runs only at those positions."""
        positions = self._to_device(torch.tensor(starts)[:, None] - 1 + torch.arange(len(answer)))
        states = hidden.gather(1, positions[..., None].expand(-1, -1, hidden.shape[-1]))
        logits = self._head(states).float()
        if self._softcap:
            logits = torch.tanh(logits / self._softcap) * self._softcap
        return logits.log_softmax(-1).gather(-1, answer.expand(len(starts), -1)[..., None])[..., 0]

    def _forward(self, ids: torch.Tensor, cache: DynamicCache, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        out = self._decoder(input_ids=ids, attention_mask=attention_mask, use_cache=True, **{self._cache_kw: cache})
        return out.last_hidden_state

    @staticmethod
    def _prefix_cache(cache: DynamicCache, length: int, rows: int) -> DynamicCache:
        """A cache holding the first ``length`` positions of ``cache``, repeated for ``rows``."""
        return DynamicCache(
            ddp_cache_data=[
                (layer.keys[:, :, :length].expand(rows, -1, -1, -1), layer.values[:, :, :length].expand(rows, -1, -1, -1))
                for layer in cache.layers
            ]
        )

    def _auto_batch_size(self, prompt_length: int) -> int:
        """One ablation per forward on CPU (compute-bound: padding costs more than it saves);
        on GPUs as many as a third of free memory holds."""
        if self.batch_size:
            return self.batch_size
        if self.device.type != "cuda":
            return 1
        config = self.model.config.get_text_config()
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        kv_heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
        itemsize = next(self.model.parameters()).element_size()
        per_token = 2 * config.num_hidden_layers * kv_heads * head_dim * itemsize + 8 * config.hidden_size * itemsize
        free, _ = torch.cuda.mem_get_info(self.device)
        return max(1, min(64, int(free / 3 / (per_token * prompt_length))))

    def _full(self, prompt: Sequence[int], answer: torch.Tensor) -> tuple[torch.Tensor, DynamicCache]:
        """Answer log-probs given the whole prompt, and the keys/values of that forward."""
        cache = DynamicCache()
        ids = torch.cat([self._to_device(torch.tensor(list(prompt))), answer])[None]
        return self._answer_logprobs(self._forward(ids, cache), [len(prompt)], answer)[0], cache

    @torch.inference_mode()
    def loo(self, prompt: Sequence[int], answer: Sequence[int], ablations: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Answer token log-probs given ``prompt`` (shape ``[A]``) and given each ablated prompt
        (shape ``[N, A]``), float32 on the CPU. Each ablated prompt reuses the cached keys and
        values of its common prefix with ``prompt``."""
        answer_t = self._to_device(torch.tensor(list(answer)))
        full, cache = self._full(prompt, answer_t)
        scored: list[tuple[list[int], torch.Tensor]] = []
        prefixes = [common_prefix(prompt, ablation) for ablation in ablations]
        # Sorted by shared prefix, the ablations of a batch share the longest prefixes.
        order = sorted(range(len(ablations)), key=prefixes.__getitem__)
        batch_size = self._auto_batch_size(len(prompt))
        bar = tqdm(total=len(order), disable=not self.progress, desc="ablations", leave=False)
        done = 0
        while done < len(order):
            batch = order[done : done + batch_size]
            try:
                prefix = min(prefixes[i] for i in batch)
                scored.append((batch, self._score_batch([ablations[i] for i in batch], prefix, answer, answer_t, cache)))
            except (torch.OutOfMemoryError, RuntimeError) as error:
                if not _is_out_of_memory(error):
                    raise
                if batch_size == 1:
                    raise AttributionOutOfMemory("out of memory scoring a single ablation; use a smaller model or a shorter context") from error
                batch_size //= 2
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
                continue
            done += len(batch)
            bar.update(len(batch))
        bar.close()
        ablated = torch.empty(len(ablations), len(answer))
        for batch, logprobs in scored:
            ablated[batch] = logprobs.cpu()
        return full.cpu(), ablated

    @torch.inference_mode()
    def frozen_loo(self, prompt: Sequence[int], answer: Sequence[int], tail: int, spans: Sequence[tuple[int, int]], batch_size: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
        """The frozen-context estimate of ``loo`` for token ranges ``spans`` of the context: the
        full prompt's keys/values stay as they are and only the tail (``prompt[tail:]`` and the
        answer) is recomputed, with the span masked out of its attention. Not exact: tokens
        between the span and the tail still saw the span."""
        answer_t = self._to_device(torch.tensor(list(answer)))
        full, cache = self._full(prompt, answer_t)
        rest = self._to_device(torch.tensor(list(prompt[tail:]) + list(answer)))
        ablated = torch.empty(len(spans), len(answer), device=self.device)
        size = self.batch_size or batch_size
        for first in range(0, len(spans), size):
            batch = spans[first : first + size]
            mask = torch.ones(len(batch), tail + len(rest), dtype=torch.long)
            for row, (a, b) in enumerate(batch):
                mask[row, a:b] = 0
            hidden = self._forward(rest.expand(len(batch), -1), self._prefix_cache(cache, tail, len(batch)), attention_mask=self._to_device(mask))
            ablated[first : first + len(batch)] = self._answer_logprobs(hidden, [len(prompt) - tail] * len(batch), answer_t)
        return full.cpu(), ablated.cpu()

    def _score_batch(self, ablations: Sequence[Sequence[int]], shared: int, answer: Sequence[int], answer_t: torch.Tensor, cache: DynamicCache) -> torch.Tensor:
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
        hidden = self._forward(self._to_device(ids), past, attention_mask=self._to_device(mask) if len(rows) > 1 else None)
        return self._answer_logprobs(hidden, [len(r) for r in rows], answer_t)
