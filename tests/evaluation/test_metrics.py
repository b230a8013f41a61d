"""pytrec_eval through our wrapper, against metrics computed by hand (trec_eval's nDCG uses linear gains)."""

from __future__ import annotations

import math

import pytest

from nvrag.evaluation import mean_metrics, per_query_metrics

QRELS = {"q1": {"d1": 2, "d2": 1}, "q2": {"d3": 1}, "q3": {"d9": 1}}
RUN = {"q1": {"d2": 0.9, "d1": 0.8, "d4": 0.7}, "q2": {"d5": 0.9, "d3": 0.5}}  # q3 retrieves nothing


def test_per_query_values_by_hand() -> None:
    got = per_query_metrics(QRELS, RUN)
    # q1: DCG = 1/log2(2) + 2/log2(3); ideal = 2/log2(2) + 1/log2(3)
    ndcg_q1 = (1 + 2 / math.log2(3)) / (2 + 1 / math.log2(3))
    assert got["q1"]["nDCG@10"] == pytest.approx(ndcg_q1)
    assert (got["q1"]["MAP@100"], got["q1"]["Recall@100"], got["q1"]["MRR@10"]) == (1.0, 1.0, 1.0)
    # q2: the relevant document at rank 2
    assert got["q2"]["nDCG@10"] == pytest.approx(1 / math.log2(3))
    assert (got["q2"]["MAP@100"], got["q2"]["Recall@100"], got["q2"]["MRR@10"]) == (0.5, 1.0, 0.5)
    assert got["q2"]["Recall@1"] == 0.0 and got["q2"]["Recall@3"] == 1.0
    assert got["q3"] == {name: 0.0 for name in got["q3"]}


def test_means_over_judged_queries() -> None:
    means = mean_metrics(per_query_metrics(QRELS, RUN))
    ndcg_q1 = (1 + 2 / math.log2(3)) / (2 + 1 / math.log2(3))
    assert means["nDCG@10"] == pytest.approx((ndcg_q1 + 1 / math.log2(3)) / 3)
    assert means["MAP@100"] == pytest.approx(0.5)
    assert means["Recall@100"] == pytest.approx(2 / 3)
    assert means["MRR@10"] == pytest.approx(0.5)


def test_mrr_counts_only_the_top_ten() -> None:
    run = {"q": {f"x{i}": 1.0 - i / 100 for i in range(10)} | {"rel": 0.5}}
    got = per_query_metrics({"q": {"rel": 1}}, run)["q"]
    assert got["MRR@10"] == 0.0 and got["Recall@100"] == 1.0 and got["MAP@100"] == pytest.approx(1 / 11)
