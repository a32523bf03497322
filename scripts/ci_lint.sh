#!/usr/bin/env bash
# CI, before the tests: lint, format check and type check, as configured in pyproject.toml
# ([tool.ruff], [tool.mypy]; tool versions pinned in the `dev` extra). After scripts/setup.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
py=.venv/bin/python
"$py" -m pip install -q --disable-pip-version-check -e ".[dev]"
"$py" -m ruff check .
"$py" -m ruff format --check .
"$py" -m mypy
