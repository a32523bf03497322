#!/usr/bin/env bash
# CI, before the tests: lint, format check and type check, as configured in pyproject.toml
# ([tool.ruff], [tool.mypy]; tool versions pinned in the `dev` extra), and the documentation
# site built strictly (mkdocs.yml; the `docs` extra). After scripts/setup.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
py=.venv/bin/python
"$py" -m pip install -q --disable-pip-version-check -e ".[dev,docs]"
"$py" -m ruff check .
"$py" -m ruff format --check .
"$py" -m mypy
NO_MKDOCS_2_WARNING=1 "$py" -m mkdocs build --strict --site-dir "$(mktemp -d)"
