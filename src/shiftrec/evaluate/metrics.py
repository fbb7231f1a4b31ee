"""Ranking metrics as pure functions of the 1-based rank of each user's single target item.

Ranks come from `ranks_from_scores`, where a NaN score counts as -inf (the worst score): a model
that emits NaN for the target ranks it last, never first, and no metric can become NaN or inf.
"""

from __future__ import annotations

from typing import Any

import numpy as np

KS = (5, 10, 20, 50)


def _check_ranks(ranks: np.ndarray) -> np.ndarray:
    ranks = np.asarray(ranks)
    if ranks.size and (ranks.dtype.kind == "f" and not np.all(np.isfinite(ranks)) or ranks.min() < 1):
        from shiftrec.errors import InputError

        raise InputError("ranks must be finite and >= 1 (1-based); got "
                         f"min {ranks.min()}")
    return ranks


def recall_at_k(ranks: np.ndarray, k: int) -> float:
    """Share of users whose target is in the top k (equals HR@k with one target per user)."""
    ranks = _check_ranks(ranks)
    return float(np.mean(ranks <= k)) if len(ranks) else float("nan")


def ndcg_at_k(ranks: np.ndarray, k: int) -> float:
    """With one relevant item, IDCG = 1 and DCG = 1/log2(rank + 1) when rank <= k."""
    ranks = _check_ranks(ranks)
    if not len(ranks):
        return float("nan")
    return float(np.mean(np.where(ranks <= k, 1.0 / np.log2(ranks + 1.0), 0.0)))


def mrr(ranks: np.ndarray, k: int | None = None) -> float:
    """Mean of 1/rank (0 beyond rank k when k is given)."""
    ranks = _check_ranks(ranks)
    if not len(ranks):
        return float("nan")
    rr = 1.0 / ranks
    if k is not None:
        rr = np.where(ranks <= k, rr, 0.0)
    return float(np.mean(rr))


def per_user_ndcg(ranks: np.ndarray, k: int) -> np.ndarray:
    return np.where(ranks <= k, 1.0 / np.log2(ranks + 1.0), 0.0)


METRIC_FORMS = ("recall@K", "hr@K", "ndcg@K", "mrr@K", "mrr")


def per_user_metric(ranks: np.ndarray, metric: str) -> np.ndarray:
    """Each user's value of `metric` (recall@K = hr@K, ndcg@K, mrr@K or mrr) from 1-based ranks;
    their mean is the metric all_metrics reports."""
    from shiftrec.errors import ConfigError

    ranks = np.asarray(ranks)
    name, _, k_text = metric.strip().lower().partition("@")
    if name == "mrr" and not k_text:
        return 1.0 / ranks
    if not k_text.isdigit() or int(k_text) < 1 or name not in ("recall", "hr", "ndcg", "mrr"):
        raise ConfigError(f"unknown metric '{metric}'; valid metrics: {', '.join(METRIC_FORMS)} "
                          "(K a positive integer)")
    k = int(k_text)
    if name in ("recall", "hr"):
        return (ranks <= k).astype(np.float64)
    if name == "ndcg":
        return per_user_ndcg(ranks, k)
    return np.where(ranks <= k, 1.0 / ranks, 0.0)


def mixed_metric(base: np.ndarray, extra: np.ndarray, weights: Any, targets: np.ndarray,
                 metric: str, post: Any = None) -> np.ndarray:
    """(users, len(weights)): each user's `metric` when all items are ranked by
    base + w * extra, for each weight w (the grid both mixing choices search on validation:
    ShiftFusion's flow weight and the transfer model's text path); `post` maps each mixed score
    array before ranking (the transfer model's repeat gate)."""
    out = np.empty((len(targets), len(weights)))
    for wi, w in enumerate(weights):
        s = base + np.float32(w) * extra
        out[:, wi] = per_user_metric(ranks_from_scores(s if post is None else post(s), targets), metric)
    return out


def all_metrics(ranks: np.ndarray, ks: tuple[int, ...] = KS) -> dict[str, float]:
    out: dict[str, float] = {}
    for k in ks:
        out[f"recall@{k}"] = recall_at_k(ranks, k)
        out[f"ndcg@{k}"] = ndcg_at_k(ranks, k)
        out[f"mrr@{k}"] = mrr(ranks, k)
    out["mrr"] = mrr(ranks)
    out["n_users"] = int(len(ranks))
    return out


def ranks_from_scores(scores: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """1-based rank of each target among all real items (column 0 = padding is excluded).

    Ties are broken against the target (pessimistic), so a constant scorer cannot look good.
    NaN scores count as -inf: a NaN target ranks after every item with a real score (and ties
    with the other NaN / -inf items, pessimistically), so a NaN never yields rank 0 or an
    infinite NDCG.

    The rank is a count, never a sort: rank = #{real items j : s_j >= s_target} (the target
    counts itself; ties count against it). One comparison pass per row. A NaN s_j is never
    >= a finite or +inf target, exactly as -inf would not be; a target that is NaN or -inf ties
    with (or is beaten by) every real item, so its rank is the number of real items.
    """
    s = np.asarray(scores)
    targets = np.asarray(targets)
    n_real = s.shape[1] - 1
    rows = np.arange(len(targets))
    t = s[rows, targets][:, None]
    # column 0 (padding) is counted by the full-width pass and taken off again: a contiguous
    # pass is several times faster than one over the s[:, 1:] view
    ranks = np.count_nonzero(s >= t, axis=1) - (s[:, 0] >= t[:, 0])
    low = ~(t[:, 0] > -np.inf)  # NaN or -inf target
    if low.any():
        ranks[low] = n_real
    return ranks.astype(np.int64)
