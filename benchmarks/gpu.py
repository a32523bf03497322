"""GPU speed of attribution against generating the answer, on random-weight models of real
shapes (Llama-3.1-8B as the answering model, Llama-3.2-1B as the proxy).

    python benchmarks/gpu.py                 # H100/H200: the 2k and 4k workloads, bf16
    python benchmarks/gpu.py --tiny          # CPU smoke run with tiny shapes

Speed does not depend on weight values, so random weights are honest for timing; they say
nothing about faithfulness. The workload: documents × 5 sentences × ~40 tokens (10 documents:
~2,100 prompt tokens; 20: ~4,100), an answer of 100 tokens. Prints every time and ratio in
one run and writes JSON to $OUT (or --out).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import time
from functools import partial
from pathlib import Path

import torch
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

from attribot_rag import Attributor, Document, LoadedModel
from attribot_rag.models import auto_dtype, embedded_model_dir
from attribot_rag.prompt import TokenizedText, render

SHAPES = {
    "llama-3.1-8b": dict(
        hidden_size=4096,
        intermediate_size=14336,
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=8,
        vocab_size=128256,
    ),
    "llama-3.2-1b": dict(
        hidden_size=2048,
        intermediate_size=8192,
        num_hidden_layers=16,
        num_attention_heads=32,
        num_key_value_heads=8,
        vocab_size=128256,
        tie_word_embeddings=True,
    ),
    "tiny-large": dict(
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=49152,
    ),
    "tiny-small": dict(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=49152,
    ),
}
WORDS = "river stone harbour lantern orchard meadow copper signal winter garden falcon mirror beacon valley thunder ember canyon willow compass".split()  # noqa: SIM905


def random_model(shape: str, device: str, dtype: torch.dtype) -> LlamaForCausalLM:
    """Random weights built directly in ``dtype`` on ``device`` (an 8B model never passes
    through float32 or host memory)."""
    config = LlamaConfig(max_position_embeddings=8192, rope_theta=500000.0, **SHAPES[shape])
    with torch.device(device):
        return LlamaForCausalLM._from_config(config, dtype=dtype).eval()


def workload(
    tokenizer, documents: int, sentences: int, sentence_tokens: int, answer_tokens: int, seed: int = 0
) -> tuple[str, list[Document], str]:
    """Documents of invented sentences of about ``sentence_tokens`` tokens each."""
    rng = random.Random(seed)

    def text(tokens: int) -> str:
        words = []
        while len(tokenizer(" ".join(words), add_special_tokens=False).input_ids) < tokens - 1:
            words.append(rng.choice(WORDS))
        return " ".join(words).capitalize() + "."

    docs = [
        Document(text=" ".join(text(sentence_tokens) for _ in range(sentences)), id=f"doc-{d}", title=f"Doc {d}")
        for d in range(documents)
    ]
    return "Which valley holds the copper beacon?", docs, text(answer_tokens)


def timed(fn, repeats: int, device: str):
    """Median seconds of ``fn`` over ``repeats`` runs after one warm-up, and its last result."""
    result = fn()
    times = []
    for _ in range(repeats):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        result = fn()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def scores(result) -> list[float]:
    return [s.score for s in result.documents] + [s.score for s in result.sentences] + [result.full_logprob]


def recomputed_tokens(attributor: Attributor, question: str, documents: list[Document], answer: str) -> int:
    """Tokens the exact method recomputes: for every ablation, all tokens after its span."""
    rendered = render(question, documents, attributor.tokenizer, attributor.prompt_template)
    prompt = TokenizedText.of(attributor.tokenizer, rendered.text)
    answer_tokens = len(TokenizedText.of(attributor.tokenizer, answer).ids)
    starts = [prompt.token_range(*span)[0] for span in rendered.document_spans + rendered.sentence_spans]
    return len(prompt.ids) + answer_tokens + sum(len(prompt.ids) - s + answer_tokens for s in starts)


def run(args: argparse.Namespace) -> dict:
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = getattr(torch, args.dtype) if args.dtype else auto_dtype(device)
    large, small = ("tiny-large", "tiny-small") if args.tiny else ("llama-3.1-8b", "llama-3.2-1b")
    sizes = [(2, 2, 10, 8)] if args.tiny else [(10, 5, 40, 100), (20, 5, 40, 100)]
    tokenizer = AutoTokenizer.from_pretrained(embedded_model_dir())
    report = {
        "device": torch.cuda.get_device_name(device) if device.startswith("cuda") else "cpu",
        "dtype": str(dtype),
        "workloads": [],
    }
    models = {name: random_model(name, device, dtype) for name in (large, small)}
    attributors = {
        name: Attributor(LoadedModel(m, tokenizer, name), batch_size=args.batch_size) for name, m in models.items()
    }
    for documents, sentences, sentence_tokens, answer_tokens in sizes:
        if device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats(device)
        question, docs, answer = workload(tokenizer, documents, sentences, sentence_tokens, answer_tokens)
        row: dict = {"documents": documents}
        big = attributors[large]
        prompt_ids = torch.tensor(
            [TokenizedText.of(tokenizer, render(question, docs, tokenizer).text).ids], device=device
        )
        row["prompt_tokens"] = prompt_ids.shape[1]
        row["answer_tokens"] = len(tokenizer(answer, add_special_tokens=False).input_ids)
        generate = partial(
            models[large].generate,
            prompt_ids,
            attention_mask=torch.ones_like(prompt_ids),
            max_new_tokens=answer_tokens,
            min_new_tokens=answer_tokens,
            do_sample=False,
            pad_token_id=0,
        )
        row[f"{large} generate {answer_tokens} tokens"], _ = timed(generate, args.repeats, device)
        results = {}
        for name, attributor in attributors.items():
            for method in args.methods:
                if method == "naive" and name == small:
                    continue
                options = {"keep_documents": 2}
                if method == "hierarchical-fast":
                    method, options["doc_method"] = "hierarchical", "fast"
                label = f"{name} {method}{' (fast documents)' if options.get('doc_method') else ''}"
                attribute = partial(attributor.attribute, question, docs, answer, method=method, **options)
                row[label], results[label] = timed(attribute, args.repeats, device)
        if f"{large} exact" in results and f"{large} naive" in results:
            # the prefix cache and batching change rounding only: say by how much, on this device
            exact, naive = scores(results[f"{large} exact"]), scores(results[f"{large} naive"])
            row[f"{large} exact vs naive max abs diff (nats)"] = max(
                abs(a - b) for a, b in zip(exact, naive, strict=True)
            )
            print(
                f"{large} exact vs naive on {device}: max |difference| {row[f'{large} exact vs naive max abs diff (nats)']:.4f} nats",
                flush=True,
            )
        params = sum(p.numel() for p in models[large].parameters())
        tokens = recomputed_tokens(big, question, docs, answer)
        row["exact recomputed tokens"] = tokens
        row[f"{large} exact FLOP-limit seconds"] = 2 * params * tokens / args.peak_flops
        generation = row[f"{large} generate {answer_tokens} tokens"]
        timings = {k: v for k, v in row.items() if isinstance(v, float) and k in results}
        row["ratios"] = {f"generation / {k}": generation / v for k, v in timings.items()}
        if f"{large} exact" in row:
            row["ratios"][f"{large} exact / FLOP limit"] = (
                row[f"{large} exact"] / row[f"{large} exact FLOP-limit seconds"]
            )
        if device.startswith("cuda"):
            row["peak memory GiB"] = torch.cuda.max_memory_allocated(device) / 2**30
        report["workloads"].append(row)
        print(json.dumps(row, indent=2), flush=True)
    return report


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="tiny shapes and workload (CPU smoke run)")
    parser.add_argument("--device")
    parser.add_argument("--dtype")
    parser.add_argument("--repeats", type=int, default=1, help="timed runs after the warm-up (median)")
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--methods", nargs="+", default=["naive", "exact", "hierarchical", "hierarchical-fast"])
    parser.add_argument(
        "--peak-flops", type=float, default=989e12, help="dense bf16 peak of the chip (H100/H200 SXM: 989e12)"
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path(os.environ["OUT"]) / "gpu.json"
        if os.environ.get("OUT")
        else Path(__file__).parent / "results" / "gpu.json",
    )
    args = parser.parse_args(argv)
    report = run(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(f"written to {args.out}")
    return report


if __name__ == "__main__":
    main()
