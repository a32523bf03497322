"""Faithfulness and speed of every attribution method against exact sentence LOO.

    .venv/bin/python -m benchmarks.faithfulness --dataset squad2 --n 20 --contextcite-n 10
    .venv/bin/python -m benchmarks.faithfulness --dataset hotpotqa --n 10 --contextcite-n 10

(needs the ``bench`` extra: ``pip install -e .[bench]``; ContextCite's own dependencies are
pulled by it.) For each question the embedded model answers greedily (at most
``--max-new-tokens`` tokens, cut to complete sentences); exact sentence LOO of that model on
that answer is the reference, and every method runs on the same question, prompt and
sentence partition (the dataset's own sentences), one after another, so that time ratios
compare like with like on a shared machine. Per method: Spearman and Pearson correlation
with exact LOO, top-1 agreement, recall of the exact top-3 in the method's top-3, recall of
the gold supporting sentences in its top-k (k = number of gold sentences; questions without
gold skipped), the same at document level where the method scores documents, and the
speed-up (exact time / method time, per question, then median). Results go to
``--out``/faithfulness_<dataset>.{json,md,png}; the JSON is rewritten after every question,
so an interrupted run keeps what it measured, and ``--resume`` goes on from it: questions
already measured under the same settings are kept, the rest are run (a larger ``--n`` or
``--reference-n`` extends a finished run the same way).

ContextCite runs through its own code, driven with our model, prompt and sentence spans
(``benchmarks.contextcite``).

With a second model (``--second-model``; ``benchmarks.second_model``: Gemma 3 270M) the same
answers are also scored by it: its exact LOO is the reference for the SmolLM2 proxy and for
``pruned`` (SmolLM2 proxy, Gemma target), and the reverse pairing is measured against the
SmolLM2 reference.

Modules: ``args`` (the command line and the run's metadata), ``run`` (one question), ``rows``
(the typed rows and the metrics of one method), ``report`` (summaries, Markdown, plot),
``resume`` (``--resume`` and ``--reevaluate``).
"""
