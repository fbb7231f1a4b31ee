"""The seed-averaged paired test, pinned to hand-computed values."""

import math

import numpy as np
import pytest

from shiftrec.evaluate.significance import seed_averaged_test, seed_mean_metric


def test_seed_mean_metric_averages_each_users_ndcg_over_runs():
    # NDCG@10 of rank 1 is 1, of rank 3 is 1/log2(4) = 0.5, of rank 11 is 0
    runs = [np.array([1, 11]), np.array([3, 1])]
    np.testing.assert_allclose(seed_mean_metric(runs), [0.75, 0.5])
    np.testing.assert_allclose(seed_mean_metric(runs, "recall@10"), [1.0, 0.5])


def test_seed_averaged_test_hand_computed():
    a = [np.array([1, 11]), np.array([3, 1])]  # per user averaged: 0.75, 0.5
    b = [np.array([1, 1])]  # a seed-free system: one run, 1.0 and 1.0
    t = seed_averaged_test(a, b)
    assert t["mean_a"] == pytest.approx(0.625)
    assert t["mean_b"] == pytest.approx(1.0)
    assert t["diff"] == pytest.approx(0.375)
    assert t["relative_change"] == pytest.approx(0.6)
    # differences 0.25 and 0.5: t = 0.375 / (0.17678 / sqrt 2) = 3 with 1 degree of freedom,
    # whose two-sided p is 1 - 2 atan(3) / pi
    assert t["t_test_p"] == pytest.approx(1 - 2 * math.atan(3) / math.pi)
    assert (t["runs_a"], t["runs_b"], t["n_users"]) == (2, 1, 2)


def test_seed_averaged_test_mask_and_zero_baseline():
    a = [np.array([1, 11, 1]), np.array([3, 1, 1])]  # averaged: 0.75, 0.5, 1.0
    b = [np.array([1, 1, 3])]  # 1.0, 1.0, 0.5
    t = seed_averaged_test(a, b, mask=np.array([False, True, True]))  # users 2 and 3 only
    assert (t["mean_a"], t["mean_b"], t["n_users"]) == (pytest.approx(0.75), pytest.approx(0.75), 2)
    assert t["diff"] == pytest.approx(0.0) and t["t_test_p"] == pytest.approx(1.0)
    zero = seed_averaged_test([np.array([20, 30])], [np.array([1, 20])])
    assert zero["mean_a"] == 0 and zero["relative_change"] is None


def test_runs_must_rank_the_same_users():
    with pytest.raises(ValueError):
        seed_mean_metric([np.array([1, 2]), np.array([1, 2, 3])])
    with pytest.raises(ValueError):
        seed_mean_metric([])
