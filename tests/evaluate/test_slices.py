"""Cold / warm slices by target-item popularity in training, computed by hand, and written
into metrics.json beside the per-user ranks."""

from __future__ import annotations

import json

import numpy as np
import pytest

from shiftrec.data.splits import Seqs
from shiftrec.errors import ConfigError
from shiftrec.evaluate.ranking import UserRanks, read_user_ranks, write_metrics
from shiftrec.evaluate.slices import (
    PopularityBins,
    item_train_counts,
    popularity_metrics,
    popularity_slices,
    target_train_counts,
)
from tests.models.cyclic import cyclic_split


def test_counts_and_bins_by_hand() -> None:
    # training sequences: item 1 x7, item 2 x5, item 3 x6, item 4 x0, item 5 x1
    train = Seqs.from_lists([np.array([1, 1, 1, 2, 2, 3]), np.array([1, 1, 1, 1, 2, 2, 2]),
                             np.array([3, 3, 3, 3, 3, 5])])
    c = item_train_counts(train, n_items=5)
    assert c.tolist() == [0, 7, 5, 6, 0, 1]
    # targets of 6 users: items 1, 2, 3, 4, 5, 2 -> counts 7, 5, 6, 0, 1, 5
    tc = c[[1, 2, 3, 4, 5, 2]]
    m = popularity_slices(tc)  # default: cold = count <= 5
    assert m["cold"].tolist() == [False, True, False, True, True, True]
    assert m["warm"].tolist() == [True, False, True, False, False, False]
    # three bins: cold 0..1, pop_2_5, warm 6+
    m3 = popularity_slices(tc, PopularityBins((1, 5)))
    assert list(m3) == ["cold", "pop_2_5", "warm"]
    assert m3["cold"].tolist() == [False, False, False, True, True, False]
    assert m3["pop_2_5"].tolist() == [False, True, False, False, False, True]
    assert m3["warm"].tolist() == [True, False, True, False, False, False]
    assert PopularityBins((1, 5)).ranges() == {"cold": (0, 1), "pop_2_5": (2, 5), "warm": (6, None)}


def test_slice_metrics_by_hand() -> None:
    # ranks 1, 3, 2, 20, 1, 11 for the six users above; cold = users 1, 3, 4, 5 (ranks 3, 20, 1, 11)
    ranks = np.array([1, 3, 2, 20, 1, 11])
    tc = np.array([7, 5, 6, 0, 1, 5])
    out = popularity_metrics(ranks, tc, ks=(10,))
    # cold recall@10 = 2/4 (ranks 3, 1); NDCG@10 = (1/log2(4) + 1/log2(2)) / 4 = (0.5 + 1) / 4
    assert out["cold"]["recall@10"] == 0.5 and out["cold"]["n_users"] == 4
    assert out["cold"]["ndcg@10"] == pytest.approx(0.375)
    # warm = users 0, 2 (ranks 1, 2): recall@10 = 1; NDCG@10 = (1 + 1/log2(3)) / 2
    assert out["warm"]["recall@10"] == 1.0
    assert out["warm"]["ndcg@10"] == pytest.approx((1 + 1 / np.log2(3)) / 2)
    # an empty bin: no users, no NaN
    e = popularity_metrics(ranks, tc, PopularityBins((100,)), ks=(10,))
    assert e["warm"]["n_users"] == 0 and e["warm"]["ndcg@10"] is None


@pytest.mark.parametrize("edges", [(), (5, 5), (6, 2), (-1,), (2.5,)])
def test_bad_edges(edges: tuple) -> None:
    with pytest.raises(ConfigError):
        PopularityBins(edges)


def test_target_counts_follow_the_training_split() -> None:
    split = cyclic_split(n_users=30, n_items=8, seed=1)
    counts = item_train_counts(split.train, split.n_items)
    assert counts.sum() == sum(len(split.train[u]) for u in range(len(split.train)))
    tc = target_train_counts(split, split.test)
    for u in range(len(split.test)):
        t = split.test.target[u]
        assert tc[u] == sum(int((split.train[v] == t).sum()) for v in range(len(split.train)))


def test_metrics_json_has_cold_and_warm_slices(tmp_path) -> None:  # noqa: ANN001
    split = cyclic_split(n_users=40, n_items=60, seed=3)
    rng = np.random.default_rng(0)
    ranks = rng.integers(1, 61, size=len(split.test))
    ur = UserRanks.of(split, "test", ranks)
    tc = target_train_counts(split, split.test)
    assert (tc <= 5).any() and (tc > 5).any()  # both slices are populated
    from shiftrec.evaluate.metrics import all_metrics

    write_metrics(tmp_path / "metrics.json", all_metrics(ranks), None, None, per_user=ur)
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert set(m["slices"]) == {"cold", "warm"}
    assert m["slices"]["cold"]["n_users"] == int((tc <= 5).sum())
    assert m["slices"]["cold"]["ndcg@10"] == all_metrics(ranks[tc <= 5])["ndcg@10"]
    assert m["slices"]["warm"]["recall@50"] == all_metrics(ranks[tc > 5])["recall@50"]
    assert m["slice_definitions"]["popularity"]["edges"] == [5]
    assert m["slice_definitions"]["popularity"]["bins"]["warm"] == {"min": 6, "max": None}
    back, _ = read_user_ranks(tmp_path / "metrics.json")
    assert np.array_equal(back.rank, ranks)
    # other edges, written as given
    write_metrics(tmp_path / "m2.json", all_metrics(ranks), None, None, per_user=ur,
                  popularity_bins=PopularityBins((2, 8)))
    m2 = json.loads((tmp_path / "m2.json").read_text())
    assert list(m2["slices"]) == ["cold", "pop_3_8", "warm"]
    assert m2["slice_definitions"]["popularity"]["edges"] == [2, 8]
