"""The benchmarks of attribot-rag (not tests), a package run from the repository root:

    .venv/bin/python -m benchmarks.faithfulness --help   # agreement with exact LOO, gold, speed-up
    .venv/bin/python -m benchmarks.speed --help          # CPU time beside agreement; growth; memory
    .venv/bin/python -m benchmarks.groundedness --help   # does the answer rest on the documents
    .venv/bin/python -m benchmarks.titles --help         # what citable titles change
    .venv/bin/python -m benchmarks.batch --help          # local engine against Ray Data
    .venv/bin/python -m benchmarks.serve --help          # the citation service under load
    .venv/bin/python -m benchmarks.gpu --help            # GPU workloads

Shared modules: ``data`` (the datasets in ``benchmarks/data``), ``baselines`` and
``contextcite`` (the methods we compare against), ``measure`` (CPU and wall time, tokens
forwarded), ``evaluation`` (the metrics, tested in ``tests/test_evaluation.py``) and
``reports`` (table cells and run descriptions). Results go to ``benchmarks/results``.
"""

from pathlib import Path

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results"
