"""Paired significance tests between two runs on the same users."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from shiftrec.errors import ArtifactError
from shiftrec.evaluate.metrics import per_user_metric


def paired_test(ranks_a: np.ndarray, ranks_b: np.ndarray, k: int = 10, n_boot: int = 2000,
                seed: int = 0, metric: str | None = None) -> dict[str, Any]:
    """Compare a per-user metric of run A and run B (same users, same order); the metric is
    `metric` (e.g. "recall@10", "mrr") or NDCG@k when None.

    Returns the two means, the mean difference (B - A), a paired t-test p-value, a Wilcoxon
    signed-rank p-value (NaN when 10 or fewer users differ) and a paired-bootstrap 95% interval
    of the difference. When no user differs the t-test p-value is 1.
    """
    metric = (metric or f"ndcg@{k}").strip().lower()
    out = paired_values_test(per_user_metric(ranks_a, metric), per_user_metric(ranks_b, metric),
                             n_boot, seed)
    return {"metric": metric, **out}


def paired_values_test(a: np.ndarray, b: np.ndarray, n_boot: int = 2000, seed: int = 0
                       ) -> dict[str, Any]:
    """paired_test on per-user values already computed (e.g. a metric averaged over training
    seeds): means, B - A, t-test and Wilcoxon p-values, paired-bootstrap 95% interval."""
    from scipy import stats

    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError("paired test needs the same users in both runs")
    d = b - a
    t_p = float(stats.ttest_rel(b, a).pvalue) if np.any(d) else 1.0
    w_p = float(stats.wilcoxon(d[d != 0]).pvalue) if np.count_nonzero(d) > 10 else float("nan")
    rng = np.random.default_rng(seed)
    boots = np.empty(n_boot)
    step = max(1, 4_000_000 // max(len(d), 1))  # bounded memory; same draws as one big block
    for s in range(0, n_boot, step):
        boots[s:s + step] = d[rng.integers(0, len(d), size=(min(step, n_boot - s), len(d)))].mean(axis=1)
    return {"mean_a": float(a.mean()), "mean_b": float(b.mean()),
            "diff": float(d.mean()), "t_test_p": t_p, "wilcoxon_p": w_p,
            "ci95_low": float(np.quantile(boots, 0.025)), "ci95_high": float(np.quantile(boots, 0.975)),
            "n_users": int(len(d)), "n_differ": int(np.count_nonzero(d))}


def seed_mean_metric(runs: Sequence[np.ndarray], metric: str = "ndcg@10") -> np.ndarray:
    """Each user's metric averaged over several runs (training seeds) of one system: `runs` are
    per-user ranks of the same users in the same order."""
    if len(runs) == 0:
        raise ValueError("seed_mean_metric needs at least one run")
    per = [per_user_metric(np.asarray(r), metric) for r in runs]
    if len({len(v) for v in per}) != 1:
        raise ValueError("every run must rank the same users")
    return np.mean(per, axis=0)


def seed_averaged_test(runs_a: Sequence[np.ndarray], runs_b: Sequence[np.ndarray],
                       metric: str = "ndcg@10", mask: np.ndarray | None = None,
                       n_boot: int = 2000, seed: int = 0) -> dict[str, Any]:
    """Paired test of system B against system A on each user's metric averaged over training
    seeds (one run each for a system without a seed), on the users of `mask` (all when None).

    paired_values_test's result plus relative_change (B / A - 1; None when A's mean is 0) and
    the number of runs averaged on each side."""
    a, b = seed_mean_metric(runs_a, metric), seed_mean_metric(runs_b, metric)
    if mask is not None:
        a, b = a[mask], b[mask]
    t = paired_values_test(a, b, n_boot=n_boot, seed=seed)
    return {**t, "relative_change": t["diff"] / t["mean_a"] if t["mean_a"] > 0 else None,
            "metric": metric, "runs_a": len(runs_a), "runs_b": len(runs_b)}


def compare_runs(run_a: str | Path, run_b: str | Path, metric: str = "ndcg@10", n_boot: int = 2000,
                 seed: int = 0) -> dict[str, Any]:
    """Paired test of two saved evaluations (run folders with metrics.json, or the metrics files).

    Both must hold per-user ranks of the same evaluated set (test/valid), split kind, data
    fingerprint and protocol for the users' own history items (ranked, or excluded), for the
    same users with the same targets (users are matched by id); otherwise ArtifactError names
    both files. Returns paired_test's result (B - A) plus what was compared.
    """
    from shiftrec.evaluate.ranking import metrics_file, read_user_ranks, seen_items

    per_user_metric(np.ones(1), metric)  # an unknown metric fails before any file is read
    (ua, ma), (ub, mb) = read_user_ranks(run_a), read_user_ranks(run_b)
    fa, fb = metrics_file(run_a), metrics_file(run_b)

    def differ(what: str, va: Any, vb: Any) -> ArtifactError:
        return ArtifactError(f"runs are not comparable: {what} differ ({fa}: {va}; {fb}: {vb})")

    for what, va, vb in (("seen items (ranked or excluded)", ma.get("seen_items", seen_items(False)),
                          mb.get("seen_items", seen_items(False))),
                         ("evaluated sets", ua.which, ub.which),
                         ("split kinds", ua.split_kind, ub.split_kind),
                         ("data fingerprints", ua.fingerprint, ub.fingerprint)):
        if va != vb:
            raise differ(what, va, vb)
    if len(set(ua.user_id.tolist())) != len(ua.user_id) or \
            len(set(ub.user_id.tolist())) != len(ub.user_id):
        raise ArtifactError(f"runs are not comparable: a user is evaluated twice ({fa}, {fb})")
    order = np.arange(len(ub.user_id))
    if not np.array_equal(ua.user_id, ub.user_id):
        pos = {u: i for i, u in enumerate(ub.user_id.tolist())}
        common = sum(u in pos for u in ua.user_id.tolist())
        if common != len(ua.user_id) or len(ua.user_id) != len(ub.user_id):
            raise differ("evaluated users", f"{len(ua.user_id)} users",
                         f"{len(ub.user_id)} users, {common} in common")
        order = np.array([pos[u] for u in ua.user_id.tolist()], dtype=np.int64)
    if not np.array_equal(ua.target, ub.target[order]):
        n = int((ua.target != ub.target[order]).sum())
        raise differ("target items", "same users", f"{n} users with another target")
    res = paired_test(ua.rank, ub.rank[order], n_boot=n_boot, seed=seed, metric=metric)
    return {**res, "run_a": str(fa), "run_b": str(fb), "split": ua.which,
            "split_kind": ua.split_kind, "data_fingerprint": ua.fingerprint,
            "reported_a": ma.get(res["metric"]), "reported_b": mb.get(res["metric"])}
