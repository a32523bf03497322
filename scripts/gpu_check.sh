#!/usr/bin/env bash
# The GPU check in one call (docs/gpu.md): on a lent GPU machine, within 8 minutes on one H100,
#   1. the tests marked cuda (tests/test_cuda.py) on the device,
#   2. python -m benchmarks.gpu: random-weight Llama-3.1-8B and Llama-3.2-1B shapes, 2k and 4k tokens,
#   3. the serving path: attribot-rag serve --device cuda, 16 concurrent requests,
# each under its own time limit, writing its results under ${OUT:-gpu_results} and after each
# step gpu_check.json (every step, test and figure in one file) with the log gpu_check.log.
#
#   bash scripts/gpu_wheels.sh            # here, once: the wheels and tokenizer the device lacks
#   bash scripts/gpu_check.sh             # there: installs them (no registry), runs the steps
#   bash scripts/gpu_check.sh --dry-run   # on the CPU: tiny shapes, the same steps and JSON
#
# The device has torch, transformers, accelerate, pytest and httpx but no registry: the
# wheels carried in gpu_wheels/ are installed with --no-index, then this project --no-deps.
# PYTHON picks the interpreter (default python3, the device's torch one). Exit status: 0 when
# every step passed, else 1 (the JSON says which failed).
set -uo pipefail
cd "$(dirname "$0")/.."
dry_run=0
case "${1:-}" in
  "") ;;
  --dry-run) dry_run=1 ;;
  *) echo "usage: bash scripts/gpu_check.sh [--dry-run]" >&2; exit 2 ;;
esac
py=${PYTHON:-python3}
wheels=gpu_wheels
out=${OUT:-gpu_results}
mkdir -p "$out" && out=$(cd "$out" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
# The device has no embedded model: the random-weight models take the carried tokenizer.
[ -d "$wheels/tokenizer" ] && export ATTRIBOT_GPU_TOKENIZER="$PWD/$wheels/tokenizer"
exec > >(tee -a "$out/gpu_check.log") 2>&1

if ((dry_run)); then
  device="cpu (dry run)" target=cpu tiny=(--tiny) tests=()
else
  device=$(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null | head -1)
  device=${device:-unknown} target=cuda tiny=() tests=(-m cuda)
fi
commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
summary=("$py" -m benchmarks.gpu_check summary --out "$out" --steps "$work/steps.tsv" --device "$device" --commit "$commit")
((dry_run)) && summary+=(--dry-run)
failed=0

# step NAME LIMIT_S COMMAND...: run it under its time limit, record its status, rewrite the summary.
step() {
  local name=$1 limit=$2 start=$SECONDS rc
  shift 2
  echo "== $name (limit ${limit} s; ${SECONDS} s so far): $*"
  timeout --kill-after=15 "$limit" "$@"
  rc=$?
  printf '%s\t%s\t%s\t%s\n' "$name" "$rc" "$((SECONDS - start))" "$limit" >>"$work/steps.tsv"
  "${summary[@]}" >/dev/null || echo "gpu_check: the summary failed" >&2
  echo "== $name: exit $rc after $((SECONDS - start)) s"
  ((rc == 0)) || failed=1
  return "$rc"
}

echo "gpu_check: $device; commit $commit; results in $out"
if ((!dry_run)); then
  [ -f "$wheels/requirements.txt" ] || { echo "gpu_check: no $wheels/: run bash scripts/gpu_wheels.sh first and carry $wheels" >&2; exit 2; }
  # Already-installed packages that satisfy a requirement stay; the rest come from the wheels.
  step "install wheels" 40 "$py" -m pip install -q --no-index --find-links "$wheels" -r "$wheels/requirements.txt" || exit 1
  # The build backend (setuptools) comes from the wheels too, into pip's isolated build.
  step "install project" 40 "$py" -m pip install -q --no-index --find-links "$wheels" --no-deps . || exit 1
fi
step "cuda tests" 120 "$py" -m pytest -p no:cacheprovider -q -rs -o junit_family=xunit1 \
  --junitxml="$out/cuda_tests.xml" "${tests[@]}" tests/test_cuda.py
step "benchmark" 200 "$py" -m benchmarks.gpu "${tiny[@]}" --device "$target" --repeats 1 --out "$out/gpu.json"
step "serve" 80 "$py" -m benchmarks.gpu_check serve "${tiny[@]}" --device "$target" --n 16 --concurrency 16 \
  --out "$out/serve.json"
echo "gpu_check: done in $SECONDS s; summary in $out/gpu_check.json"
exit "$failed"
