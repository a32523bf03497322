#!/usr/bin/env bash
# Prepare what the GPU check (scripts/gpu_check.sh, docs/gpu.md) needs on a device machine that
# reaches no registry: manylinux wheels for CPython 3.12 of the dependencies it lacks (the
# project's pydantic and blingfire, the serve extra's FastAPI and uvicorn, with everything they
# need), setuptools to build this project there, and the tokenizer of the random-weight models
# (the device has no embedded model). All in gpu_wheels/ (git-ignored), which a device call
# carries (carry=["gpu_wheels"]); checks that it and the working tree stay under the 64 MiB a
# call may carry.
#
#   bash scripts/gpu_wheels.sh      (after scripts/setup.sh: .venv downloads and saves)
set -euo pipefail
cd "$(dirname "$0")/.."
py=.venv/bin/python
wheels=gpu_wheels
limit=$((64 * 1024 * 1024))
# The device has torch, transformers, accelerate, safetensors, jinja2, tqdm, pytest and httpx.
# Specifiers as in pyproject.toml.
requirements=("pydantic>=2.7,<3" "blingfire>=0.1.8,<0.2" "fastapi>=0.110,<1" "uvicorn>=0.29,<1")
rm -rf "$wheels" && mkdir -p "$wheels"
printf '%s\n' "${requirements[@]}" >"$wheels/requirements.txt"
"$py" -m pip download -q --disable-pip-version-check --only-binary=:all: --python-version 3.12 \
  --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 -d "$wheels" "${requirements[@]}" "setuptools>=77"
"$py" - "$wheels/tokenizer" <<'PY'
import sys

from transformers import AutoTokenizer

from attribot_rag.core.models import embedded_model_dir

AutoTokenizer.from_pretrained(embedded_model_dir()).save_pretrained(sys.argv[1])
PY
# What a device call carries: tracked and untracked-not-ignored files, and the wheels.
tree=$(git ls-files -z --cached --others --exclude-standard | xargs -0 stat -c %s 2>/dev/null | awk '{s += $1} END {print s + 0}')
carried=$(find "$wheels" -type f -printf '%s\n' | awk '{s += $1} END {print s + 0}')
ls -l "$wheels" "$wheels/tokenizer"
printf 'working tree %.1f MiB + %s %.1f MiB = %.1f MiB of %d MiB\n' "$(bc -l <<<"$tree/1048576")" "$wheels" \
  "$(bc -l <<<"$carried/1048576")" "$(bc -l <<<"($tree+$carried)/1048576")" $((limit / 1048576))
if ((tree + carried > limit)); then
  echo "gpu_wheels: over the 64 MiB a device call carries" >&2
  exit 1
fi
