"""One Attributor shared by threads: calls never overlap on the model, and every thread gets
the scores it would get alone."""

from __future__ import annotations

import threading
from itertools import groupby

from attribot_rag import Attributor

DOCUMENTS = [
    "The Veltrana Bridge spans the river Osk. It was completed in 1742.",
    "Bananas are yellow fruits. They grow in tropical climates.",
]
CALLS = [
    ("When was the Veltrana Bridge completed?", "It was completed in 1742."),
    ("What colour are bananas?", "Bananas are yellow."),
]
THREADS = 8


def _scores(result) -> list[float | None]:
    return [s.score for s in result.documents + result.sentences]


def test_threads_sharing_one_attributor_never_overlap_on_the_model(attributor: Attributor) -> None:
    """Every forward of the decoder is recorded with its thread: with calls serialised, each
    thread's forwards form one unbroken run. All threads start together (a barrier), so
    without serialisation their forwards interleave."""
    alone = [_scores(attributor.attribute(q, DOCUMENTS, a, method="exact")) for q, a in CALLS]
    generated = attributor.generate(CALLS[(THREADS - 1) % 2][0], DOCUMENTS, max_new_tokens=4)
    forwards: list[int] = []
    hook = attributor.model.get_decoder().register_forward_pre_hook(lambda *_: forwards.append(threading.get_ident()))
    barrier = threading.Barrier(THREADS)
    results: dict[int, object] = {}

    def work(i: int) -> None:
        question, answer = CALLS[i % 2]
        barrier.wait(timeout=60)
        if i == THREADS - 1:  # generation shares the lock too
            results[i] = attributor.generate(question, DOCUMENTS, max_new_tokens=4)
        else:
            results[i] = _scores(attributor.attribute(question, DOCUMENTS, answer, method="exact"))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(THREADS)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=300)
    finally:
        hook.remove()
    assert sorted(results) == list(range(THREADS))
    runs = [ident for ident, _ in groupby(forwards)]
    assert len(set(runs)) == THREADS, "every thread ran the model"
    assert len(runs) == THREADS, f"calls overlapped: {len(runs)} runs of forwards for {THREADS} calls"
    for i, result in results.items():
        assert result == (generated if i == THREADS - 1 else alone[i % 2])  # bit-identical: same machine, same input
