"""Fast full ranking (count, no sort; length-ordered batches; torch scores ranked where they
are) gives exactly the ranks, and so the metrics to the last digit, of the reference path it
replaced (kept below verbatim as the oracle)."""

from __future__ import annotations

import numpy as np
import pytest

from shiftrec.evaluate import ranking
from shiftrec.evaluate.metrics import all_metrics, ranks_from_scores
from shiftrec.evaluate.ranking import _rank_torch, evaluate, rank_targets, top_k
from tests.models.cyclic import cyclic_split


# ------------------------------------------------------------------ the previous implementation
def ref_ranks_from_scores(scores: np.ndarray, targets: np.ndarray) -> np.ndarray:
    s = np.asarray(scores)[:, 1:]
    if s.dtype.kind == "f" and np.isnan(s).any():
        s = np.where(np.isnan(s), -np.inf, s)
    t = s[np.arange(len(targets)), targets - 1][:, None]
    better = (s > t).sum(axis=1)
    ties = (s == t).sum(axis=1) - 1
    return (better + ties + 1).astype(np.int64)


def ref_rank_targets(model, evalset, batch_size=512, max_len=50, exclude_history=False):  # noqa: ANN001, ANN201
    ranks = np.empty(len(evalset), dtype=np.int64)
    for a in range(0, len(evalset), batch_size):
        b = min(a + batch_size, len(evalset))
        hist = [evalset.history[i][-max_len:] for i in range(a, b)]
        times = [evalset.history.times_of(i)[-max_len:] for i in range(a, b)]
        scores = np.asarray(model.score(hist, times), dtype=np.float32)
        if exclude_history:
            for r, h in enumerate(hist):
                keep = h[h != evalset.target[a + r]]
                scores[r, keep] = -np.inf
        ranks[a:b] = ref_ranks_from_scores(scores, evalset.target[a:b])
    return ranks


# --------------------------------------------------------------------------------- fixtures
def nasty_scores(rng: np.random.Generator, n: int, m: int) -> np.ndarray:
    """Few distinct values (many ties), NaN, +inf, -inf, and odd padding-column values."""
    s = rng.integers(-3, 4, size=(n, m)).astype(np.float32)
    s[rng.random((n, m)) < 0.05] = np.nan
    s[rng.random((n, m)) < 0.03] = np.inf
    s[rng.random((n, m)) < 0.03] = -np.inf
    s[:, 0] = rng.choice([np.nan, np.inf, -np.inf, 0.0, 5.0], size=n)
    s[0, :] = np.nan  # a row with every score NaN
    s[1, :] = -np.inf
    return s


class HashScorer:
    """Deterministic scores that depend only on the history (never on the batch it arrives in),
    with deliberate ties (values rounded to 3 levels) and, optionally, torch CPU tensors."""

    def __init__(self, n_items: int, as_torch: bool = False, levels: int = 3) -> None:
        self.n, self.as_torch, self.levels = n_items, as_torch, levels
        self.calls: list[int] = []

    def score(self, hist: list[np.ndarray], times: list[np.ndarray] | None = None):  # noqa: ANN201
        self.calls.append(len(hist))
        out = np.empty((len(hist), self.n + 1), dtype=np.float32)
        for r, h in enumerate(hist):
            rng = np.random.default_rng(int(h.sum()) * 31 + len(h))
            out[r] = np.floor(rng.random(self.n + 1) * self.levels)
            out[r, (int(h[-1]) % self.n) + 1] += 0.5  # the cyclic successor usually wins
        if self.as_torch:
            import torch

            return torch.from_numpy(out)
        return out


# ------------------------------------------------------------------------------------ tests
@pytest.mark.parametrize("seed", range(5))
def test_ranks_from_scores_equals_reference(seed: int) -> None:
    rng = np.random.default_rng(seed)
    s = nasty_scores(rng, 200, 37)
    tg = rng.integers(1, 37, size=200)
    assert np.array_equal(ranks_from_scores(s, tg), ref_ranks_from_scores(s, tg))
    s64 = s.astype(np.float64)
    assert np.array_equal(ranks_from_scores(s64, tg), ref_ranks_from_scores(s64, tg))
    ints = rng.integers(0, 3, size=(50, 9))
    t2 = rng.integers(1, 9, size=50)
    assert np.array_equal(ranks_from_scores(ints, t2), ref_ranks_from_scores(ints, t2))


def test_ranks_by_hand() -> None:
    # target 2 scores 0.5: item 1 (0.9) beats it, item 3 ties (counts against), item 4 loses;
    # the padding column 0 (9.0) is not an item -> rank 3
    assert ranks_from_scores(np.array([[9.0, 0.9, 0.5, 0.5, 0.1]]), np.array([2])).tolist() == [3]
    # -inf target among finite and NaN items: last of the 4 real items
    s = np.array([[0.0, -np.inf, 1.0, np.nan, -np.inf]])
    assert ranks_from_scores(s, np.array([1])).tolist() == [4]
    # +inf target ties another +inf item: rank 2; a NaN item never beats it
    s = np.array([[np.nan, np.inf, np.nan, np.inf, 3.0]])
    assert ranks_from_scores(s, np.array([1])).tolist() == [2]


@pytest.mark.parametrize("seed", range(3))
def test_torch_ranking_equals_reference(seed: int) -> None:
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(seed)
    s = nasty_scores(rng, 120, 23)
    tg = rng.integers(1, 23, size=120)
    hist = [rng.integers(1, 23, size=int(rng.integers(1, 6))) for _ in range(120)]
    assert np.array_equal(_rank_torch(torch.from_numpy(s), tg, None), ref_ranks_from_scores(s, tg))
    masked = s.copy()
    for r, h in enumerate(hist):
        masked[r, h[h != tg[r]]] = -np.inf
    assert np.array_equal(_rank_torch(torch.from_numpy(s), tg, hist), ref_ranks_from_scores(masked, tg))


@pytest.mark.parametrize("as_torch", [False, True])
@pytest.mark.parametrize("exclude", [False, True])
@pytest.mark.parametrize("batch", [1, 7, 512])
def test_rank_targets_equals_reference_path(as_torch: bool, exclude: bool, batch: int) -> None:
    if as_torch:
        pytest.importorskip("torch")
    split = cyclic_split(n_users=90, n_items=11, min_len=3, max_len=20, seed=4)
    for es in (split.valid, split.test):
        ref = ref_rank_targets(HashScorer(split.n_items), es, exclude_history=exclude)
        new = rank_targets(HashScorer(split.n_items, as_torch), es, batch_size=batch,
                           exclude_history=exclude)
        assert np.array_equal(new, ref)
        # the metrics, to the last digit
        assert all_metrics(new) == all_metrics(ref)
    # and the ranks are not trivially all equal (the test can fail)
    assert len(set(ref.tolist())) > 3


def test_batches_follow_history_length_and_score_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    split = cyclic_split(n_users=90, n_items=11, min_len=3, max_len=20, seed=4)
    seen: list[int] = []

    class LenScorer(HashScorer):
        def score(self, hist, times=None):  # noqa: ANN001, ANN201
            seen.extend(len(h) for h in hist)
            return super().score(hist, times)

    # at most 3 rows' scores (12 columns each) at once after the first, small call
    monkeypatch.setattr(ranking, "SCORE_BUDGET", 36)
    monkeypatch.setattr(ranking, "FIRST_BATCH", 5)
    m = LenScorer(split.n_items)
    new = rank_targets(m, split.test, batch_size=100)
    assert m.calls[0] == 5 and max(m.calls[1:]) == 3 and sum(m.calls) == 90
    assert seen == sorted(seen)  # shortest histories first
    assert np.array_equal(new, ref_rank_targets(HashScorer(split.n_items), split.test))


def test_evaluate_metrics_unchanged() -> None:
    split = cyclic_split(n_users=70, n_items=9, seed=2)
    met, ranks = evaluate(HashScorer(split.n_items), split, "test")
    ref = ref_rank_targets(HashScorer(split.n_items), split.test)
    assert np.array_equal(ranks, ref) and met == all_metrics(ref)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("k", [1, 3, 10, 36, 50])
def test_top_k_equals_full_stable_sort(seed: int, k: int) -> None:
    rng = np.random.default_rng(seed)
    s = nasty_scores(rng, 60, 37)  # many ties, NaN, +-inf
    s_ref = np.where(np.isnan(s[:, 1:]), -np.inf, s[:, 1:])
    ref = np.argsort(-s_ref, axis=1, kind="stable")[:, :min(k, 36)] + 1
    assert np.array_equal(top_k(s, k), ref)


def test_top_k_by_hand() -> None:
    # items 1..5 score 0.2, 0.9, 0.5, 0.9, 0.5 (column 0 = padding scores 9 and is never chosen):
    # best 2 (0.9, lower index) then 4 (0.9); third place ties 3 and 5 at 0.5 -> item 3
    s = np.array([[9.0, 0.2, 0.9, 0.5, 0.9, 0.5]])
    assert top_k(s, 3).tolist() == [[2, 4, 3]]
    assert top_k(s, 10).tolist() == [[2, 4, 3, 5, 1]]


def test_half_precision_torch_scores_are_ranked() -> None:
    torch = pytest.importorskip("torch")
    split = cyclic_split(n_users=30, n_items=9, seed=5)

    class Bf16(HashScorer):
        def score(self, hist, times=None):  # noqa: ANN001, ANN201
            return torch.from_numpy(super().score(hist, times)).to(torch.bfloat16)

    # the hash scores (integers + 0.5) are exact in bfloat16: same ranks as float32
    assert np.array_equal(rank_targets(Bf16(split.n_items), split.test),
                          ref_rank_targets(HashScorer(split.n_items), split.test))
