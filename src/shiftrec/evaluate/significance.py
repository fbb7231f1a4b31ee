"""Paired significance tests between two runs on the same users."""

from __future__ import annotations

import numpy as np

from shiftrec.evaluate.metrics import per_user_ndcg


def paired_test(ranks_a: np.ndarray, ranks_b: np.ndarray, k: int = 10, n_boot: int = 2000,
                seed: int = 0) -> dict[str, float]:
    """Compare per-user NDCG@k of run A and run B (same users, same order).

    Returns the mean difference (B - A), a paired t-test p-value, a Wilcoxon signed-rank p-value
    and a paired-bootstrap 95% interval of the difference.
    """
    from scipy import stats

    if len(ranks_a) != len(ranks_b):
        raise ValueError("paired test needs the same users in both runs")
    a, b = per_user_ndcg(ranks_a, k), per_user_ndcg(ranks_b, k)
    d = b - a
    t_p = float(stats.ttest_rel(b, a).pvalue) if np.any(d) else 1.0
    w_p = float(stats.wilcoxon(d[d != 0]).pvalue) if np.count_nonzero(d) > 10 else float("nan")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(d), size=(n_boot, len(d)))
    boots = d[idx].mean(axis=1)
    return {"metric": f"ndcg@{k}", "mean_a": float(a.mean()), "mean_b": float(b.mean()),
            "diff": float(d.mean()), "t_test_p": t_p, "wilcoxon_p": w_p,
            "ci95_low": float(np.quantile(boots, 0.025)), "ci95_high": float(np.quantile(boots, 0.975)),
            "n_users": int(len(d))}
