"""The benchmarks' faithfulness metrics (benchmarks/evaluation.py) on small cases computed by
hand (no model)."""

import json
import math

import pytest

from benchmarks import evaluation as ev


def test_ranking_puts_none_last_and_breaks_ties_by_index():
    assert ev.ranking([1.0, 3.0, None, 3.0, 2.0]) == [1, 3, 4, 0, 2]
    assert ev.top_k([None, 1.0, None], 2) == [1, 0]
    assert ev.top_k([0.5, 0.1], 5) == [0, 1]


def test_spearman_by_hand():
    assert ev.spearman([3, 1, 2], [30, 10, 20]) == pytest.approx(1.0)
    # ranks (3, 1, 2) vs (1, 2, 3): 1 - 6 * (4 + 1 + 1) / (3 * 8) = -0.5
    assert ev.spearman([3, 1, 2], [1, 2, 3]) == pytest.approx(-0.5)
    # None ranks last, tied: est ranks (1.5, 1.5, 3, 4) vs (1, 2, 3, 4) -> 3 / sqrt(10)
    assert ev.spearman([1, 2, 3, 4], [None, None, 3, 4]) == pytest.approx(3 / math.sqrt(10))


def test_pearson_uses_pairs_scored_by_both():
    # pairs (1, 2), (3, 6), (10, 4): covariance 4, variances 402/9 and 8 (sums of squares)
    assert ev.pearson([1, 2, 3, 10], [2, None, 6, 4]) == pytest.approx(12 / math.sqrt(3216))
    assert ev.pearson([1, 2, 3], [2, 4, 6]) == pytest.approx(1.0)


def test_correlations_undefined_are_nan():
    assert math.isnan(ev.spearman([1, 2, 3], [5, 5, 5]))
    assert math.isnan(ev.pearson([1, 2, 3], [None, None, 1.0]))
    assert math.isnan(ev.spearman([1], [1]))


def test_top1_and_topk_recall():
    # ties: the lower index wins
    assert ev.top1_agreement([1, 5, 5], [5, 5, 1]) == 0.0
    assert ev.top1_agreement([1, 5, 5], [0, 9, None]) == 1.0
    # reference top 3 {0, 1, 2}; estimate top 3 {3, 1, 2}
    assert ev.topk_recall([5, 4, 3, 2, 1], [1, 4, 3, 5, 2], 3) == pytest.approx(2 / 3)
    # k capped at the number of spans
    assert ev.topk_recall([1, 2], [2, 1], 3) == 1.0
    assert ev.topk_recall([1, 2, 3, 4], [None, None, None, 0.0], 1) == 1.0


def test_gold_recall():
    estimate = [0.1, None, 0.5, 0.2]
    assert ev.gold_recall(estimate, [0, 1]) == 0.0  # top 2 is {2, 3}
    assert ev.gold_recall(estimate, [2]) == 1.0
    assert ev.gold_recall(estimate, [2, 0]) == 0.5
    assert ev.gold_recall(estimate, []) is None
    with pytest.raises(ValueError, match="out of range"):
        ev.gold_recall(estimate, [4])


def test_compare_and_summarize():
    result = ev.compare([3, 2, 1], [3, 2, 1], k=3, gold=[0])
    assert result == {
        "spearman": 1.0,
        "pearson": 1.0,
        "top1": 1.0,
        "top3_recall": 1.0,
        "significant_recall": 1.0,
        "gold_recall": 1.0,
    }
    # a question without exact LOO: the metrics against it are None, the gold one is measured
    without = ev.compare(None, [3, 2, 1], k=3, gold=[0])
    assert without == dict.fromkeys(result, None) | {"gold_recall": 1.0}
    summary = ev.summarize([1.0, None, float("nan"), 3.0, 2.0])
    assert {k: summary[k] for k in ("median", "mean", "n")} == {"median": 2.0, "mean": 2.0, "n": 3}
    low, high = summary["ci"]
    assert 1.0 <= low < 2.0 < high <= 3.0
    assert ev.summarize([None]) == {"median": None, "mean": None, "n": 0, "ci": None}


def test_significant_recall_counts_spans_above_the_threshold():
    # threshold max(0.5, 0.25 * 4.0) = 1.0: spans 0 and 2 are significant
    reference = [4.0, 0.2, 1.5, 0.9]
    assert ev.significant_recall(reference, [9, 0, 8, 0]) == 1.0
    assert ev.significant_recall(reference, [9, 8, 0, 0]) == 0.5
    assert ev.significant_recall([0.1, 0.3], [1, 2]) is None  # nothing reaches 0.5 nats


def test_gold_metrics_and_auroc():
    # spans 0-1 in document 0, span 2 in document 1; gold: span 1 (document 0)
    metrics = ev.gold_metrics([0.5, 0.2, 0.9], gold=[1], span_documents=[0, 0, 1], gold_documents=[0])
    assert metrics == {
        "gold_top1": 0.0,
        "gold_recall": 0.0,
        "gold_recall3": 1.0,
        "top_in_gold_document": 0.0,
        "gold_documents_scored": 1.0,
        "gold_top1_sentences": 0.0,
        "gold_recall_sentences": 0.0,
    }
    # span 0 a title ranked first: over the sentences alone the gold span 1 comes first
    titled = ev.gold_metrics([0.9, 0.5, 0.2], gold=[1], span_documents=[0, 0, 1], gold_documents=[0], titles=[0])
    assert titled["gold_top1"] == 0.0 and titled["gold_top1_sentences"] == 1.0
    assert titled["gold_recall"] == 0.0 and titled["gold_recall_sentences"] == 1.0
    # a method that scored titles only has no sentence to cite
    only_titles = ev.gold_metrics([0.9, None, None], gold=[1], span_documents=[0, 0, 1], gold_documents=[0], titles=[0])
    assert only_titles["gold_top1_sentences"] == 0.0
    # a document pass that dropped the gold document 0: none of its spans scored
    dropped = ev.gold_metrics([None, None, 0.9], gold=[1], span_documents=[0, 0, 1], gold_documents=[0, 1])
    assert dropped["gold_documents_scored"] == 0.5 and dropped["gold_top1"] == 0.0
    assert ev.gold_metrics([0.5, 0.2, 0.9], gold=[], span_documents=[0, 0, 1], gold_documents=[])["gold_top1"] is None
    assert ev.auroc([3.0, 2.0], [1.0, 0.0]) == 1.0
    assert ev.auroc([1.0], [1.0]) == 0.5
    assert ev.auroc([0.0, 2.0], [1.0, 3.0]) == 0.25


def test_bad_input():
    with pytest.raises(ValueError, match="differ in length"):
        ev.spearman([1, 2], [1])
    with pytest.raises(ValueError, match="NaN"):
        ev.top1_agreement([float("nan"), 1.0], [1.0, 2.0])


def test_faithfulness_rows_read_back_as_written():
    """A saved run's rows (``--resume``, ``--reevaluate``) are written out as they were read: keys
    that older runs lacked stay absent, and ``None`` stays apart from absent."""
    from benchmarks.faithfulness.rows import QuestionRow, SettingRow, TargetExact

    metrics = {"top1": 1.0, "gold_recall": None}
    setting = {"seconds": 1.5, "speedup": float("nan"), "tokens": 12, "token_speedup": 2.0, "sentences": metrics}
    row = {
        "id": "q1",
        "question": "Who?",
        "answer": "Ada.",
        "raw_answer": None,
        "generate_seconds": 0.0,
        "documents": 2,
        "sentences": 3,
        "prompt_tokens": 40,
        "answer_tokens": 3,
        "gold": [1],
        "gold_documents": [0],
        "full_logprob": -1.25,
        # no context_gain nor reference: a row measured before they were recorded
        "settings": {
            "exact": {**setting, "documents": metrics, "scores": {"sentences": [0.5, None, 0.1], "documents": [1.0]}},
            "bm25": {**setting, "scores": {"sentences": [0.2, 0.3, 0.1], "documents": None}},
        },
        "cross": {
            "exact:Gemma": {
                "seconds": 2.0,
                "tokens": 30,
                "full_logprob": -2.0,
                "scores": {"sentences": [1.0, 0.0, 0.0]},
            },
            "pruned:SmolLM2->Gemma": {**setting, "scores": {"sentences": [0.4, None, None]}},
        },
    }
    parsed = QuestionRow.model_validate(row)
    assert parsed.reference is True and parsed.context_gain is None
    assert isinstance(parsed.cross["exact:Gemma"], TargetExact)
    assert isinstance(parsed.cross["pruned:SmolLM2->Gemma"], SettingRow)
    written = parsed.to_json()
    assert list(written) == list(row)
    assert "documents" not in written["cross"]["pruned:SmolLM2->Gemma"]["scores"]
    assert written["settings"]["bm25"]["scores"]["documents"] is None
    assert json.dumps(written, allow_nan=True) == json.dumps(row, allow_nan=True)


def test_token_counters_count_their_own_models():
    """Each run's counter counts the tokens its models forwarded (no state shared between counters)."""
    import torch

    from benchmarks.measure import TokenCounter, timed

    class Decoder(torch.nn.Module):
        def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
            return input_ids

    class Model(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.decoder = Decoder()

        def get_decoder(self) -> torch.nn.Module:
            return self.decoder

    first, second = Model(), Model()
    one, two = TokenCounter(), TokenCounter()
    one.attach(first)
    two.attach(second)
    measured = timed(lambda: first.decoder(torch.zeros(2, 5, dtype=torch.long)), one)
    assert measured.tokens == 10 and one.tokens == 10 and two.tokens == 0
    second.decoder(input_ids=torch.zeros(1, 3, dtype=torch.long))
    assert two.tokens == 3 and timed(lambda: None, one).tokens == 0
