"""Metric functions pinned to textbook values computed by hand; NaN scores; split names."""

from __future__ import annotations

import math

import numpy as np
import pytest

from shiftrec.errors import ConfigError, InputError
from shiftrec.evaluate.metrics import (
    all_metrics,
    mrr,
    ndcg_at_k,
    per_user_metric,
    ranks_from_scores,
    recall_at_k,
)
from shiftrec.evaluate.ranking import EvalSplit, UserRanks, evaluate
from tests.models.cyclic import cyclic_split

# Four users whose single held-out item ranks 1, 2, 4 and 11.
RANKS = np.array([1, 2, 4, 11])


def test_recall_by_hand() -> None:
    # recall@k = share of users with rank <= k
    assert recall_at_k(RANKS, 1) == 1 / 4  # only rank 1
    assert recall_at_k(RANKS, 2) == 2 / 4  # ranks 1, 2
    assert recall_at_k(RANKS, 5) == 3 / 4  # ranks 1, 2, 4
    assert recall_at_k(RANKS, 10) == 3 / 4  # rank 11 is still out
    assert recall_at_k(RANKS, 20) == 4 / 4


def test_ndcg_by_hand() -> None:
    # one relevant item: IDCG = 1/log2(1+1) = 1, DCG = 1/log2(rank+1) inside the top k, else 0
    # rank 1: 1/log2(2) = 1
    # rank 2: 1/log2(3) = 0.630929753571457
    # rank 4: 1/log2(5) = 0.430676558073393
    # rank 11: 1/log2(12) = 0.278942945651130 (only when k >= 11)
    # NDCG@5  = (1 + 0.630929753571457 + 0.430676558073393 + 0) / 4 = 0.515401577911213
    # NDCG@20 = (1 + 0.630929753571457 + 0.430676558073393 + 0.278942945651130) / 4 = 0.585137314323995
    # NDCG@1  = (1 + 0 + 0 + 0) / 4 = 0.25
    assert ndcg_at_k(RANKS, 5) == pytest.approx(0.515401577911213, abs=1e-12)
    assert ndcg_at_k(RANKS, 20) == pytest.approx(0.585137314323995, abs=1e-12)
    assert ndcg_at_k(RANKS, 1) == 0.25
    assert per_user_metric(RANKS, "ndcg@20").mean() == pytest.approx(0.585137314323995, abs=1e-12)


def test_mrr_by_hand() -> None:
    # MRR   = (1/1 + 1/2 + 1/4 + 1/11) / 4 = (1 + 0.5 + 0.25 + 0.0909090909) / 4 = 0.460227272727
    # MRR@5 = (1/1 + 1/2 + 1/4 + 0) / 4 = 1.75 / 4 = 0.4375
    assert mrr(RANKS) == pytest.approx(0.460227272727, abs=1e-11)
    assert mrr(RANKS, 5) == 0.4375
    m = all_metrics(RANKS, ks=(5,))
    assert (m["recall@5"], m["mrr@5"], m["n_users"]) == (0.75, 0.4375, 4)


def test_ranks_from_scores_ties_are_pessimistic() -> None:
    # column 0 is padding. Target item 2 scores 0.5; item 1 scores higher (0.9) and item 3 ties
    # (0.5): 1 better + 1 tie -> rank 1 + 1 + 1 = 3
    scores = np.array([[9.0, 0.9, 0.5, 0.5, 0.1]])
    assert ranks_from_scores(scores, np.array([2])).tolist() == [3]
    # a constant scorer ranks the target last among the 4 real items
    assert ranks_from_scores(np.zeros((1, 5)), np.array([1])).tolist() == [4]


def test_nan_score_counts_as_minus_inf() -> None:
    # target 1 scores NaN -> -inf: both real scores (0.3, 0.2) beat it: rank 3 (last of 3)
    scores = np.array([[0.0, np.nan, 0.3, 0.2],
                       # target 2 (0.3): the NaN item is -inf, not better: rank 1
                       [0.0, np.nan, 0.3, 0.2],
                       # every score NaN: all tie at -inf, pessimistic: rank 3
                       [np.nan, np.nan, np.nan, np.nan]])
    ranks = ranks_from_scores(scores, np.array([1, 2, 3]))
    assert ranks.tolist() == [3, 1, 3]
    m = all_metrics(ranks, ks=(10,))
    assert all(math.isfinite(v) for v in m.values())
    # NDCG@10 = (1/log2(4) + 1/log2(2) + 1/log2(4)) / 3 = (0.5 + 1 + 0.5) / 3
    assert m["ndcg@10"] == pytest.approx(2 / 3)


def test_invalid_ranks_refused() -> None:
    with pytest.raises(InputError, match=">= 1"):
        ndcg_at_k(np.array([0, 1]), 10)


class _Oracle:
    """Scores each user's history-following item highest: perfect on the cyclic split."""

    def __init__(self, n_items: int) -> None:
        self.n = n_items

    def score(self, hist: list, times: list) -> np.ndarray:
        out = np.zeros((len(hist), self.n + 1), dtype=np.float32)
        for r, h in enumerate(hist):
            out[r, (int(h[-1]) % self.n) + 1] = 1.0
        return out


def test_split_names_are_an_enum() -> None:
    split = cyclic_split(n_users=12, n_items=6)
    model = _Oracle(split.n_items)
    m_enum, r_enum = evaluate(model, split, EvalSplit.TEST)
    m_str, r_str = evaluate(model, split, "test")
    assert m_enum == m_str and np.array_equal(r_enum, r_str)
    assert m_str["recall@5"] == 1.0  # the oracle is perfect on the cyclic split
    with pytest.raises(ConfigError) as e:
        evaluate(model, split, which="tset")
    assert "tset" in str(e.value) and "valid, test" in str(e.value)
    with pytest.raises(ConfigError):
        UserRanks.of(split, "tset", r_str)
    assert UserRanks.of(split, EvalSplit.VALID, evaluate(model, split, "valid")[1]).which == "valid"
