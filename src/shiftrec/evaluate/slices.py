"""Evaluation slices by the popularity of the target item in training (cold / warm items).

A user's held-out target is **cold** when that item occurs at most `edges[0]` times in the
training sequences the models were fit on (SeqSplit.train: for leave-one-out, every user's
events before the validation item), and **warm** otherwise. More edges give more bins:
edges (5, 50) -> cold = 0..5, pop_6_50 = 6..50, warm = 51 and up. Every user falls in exactly
one bin; an item never seen in training counts 0 (cold). These slices sit beside the
shifted / stable ones of interest.slices (which need topics); these need only the split.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from shiftrec.errors import ConfigError
from shiftrec.evaluate.metrics import KS, all_metrics

#: cold = at most this many training interactions (issue 11)
COLD_MAX = 5
POPULARITY_BY = "target_train_interactions"


@dataclass(frozen=True)
class PopularityBins:
    """Upper-inclusive bin edges on the target item's training interaction count."""

    edges: tuple[int, ...] = (COLD_MAX,)

    def __post_init__(self) -> None:
        e = tuple(self.edges)
        if not e:
            raise ConfigError("popularity bins: give at least one edge (cold = count <= edge)")
        if any(not isinstance(x, int | np.integer) or isinstance(x, bool) or x < 0 for x in e):
            raise ConfigError(f"popularity bins: edges must be non-negative integers, got {list(e)}")
        if any(b <= a for a, b in zip(e, e[1:], strict=False)):
            raise ConfigError(f"popularity bins: edges must increase, got {list(e)}")
        object.__setattr__(self, "edges", tuple(int(x) for x in e))

    def names(self) -> list[str]:
        """cold, pop_<lo>_<hi> for the middle bins, warm."""
        e = self.edges
        return ["cold", *[f"pop_{e[i] + 1}_{e[i + 1]}" for i in range(len(e) - 1)], "warm"]

    def ranges(self) -> dict[str, tuple[int, int | None]]:
        """Each bin's inclusive [min, max] count (max None = no upper bound)."""
        lo = [0, *[x + 1 for x in self.edges]]
        hi: list[int | None] = [*self.edges, None]
        return dict(zip(self.names(), zip(lo, hi, strict=True), strict=True))

    def describe(self) -> dict[str, Any]:
        """What metrics.json records beside the slice metrics."""
        return {"by": POPULARITY_BY, "edges": list(self.edges),
                "bins": {k: {"min": a, "max": b} for k, (a, b) in self.ranges().items()},
                "counted_in": "training sequences (SeqSplit.train); an unseen item counts 0"}


def item_train_counts(train: Any, n_items: int) -> np.ndarray:
    """(n_items + 1,) int64: how often each item index occurs in the training sequences
    (a data.splits.Seqs, or a list of arrays); index 0 (padding) is 0."""
    items = getattr(train, "items", None)
    if items is not None and hasattr(train, "indptr"):
        items = items[train.indptr[0]:train.indptr[-1]]
    else:
        items = np.concatenate([np.asarray(s) for s in train]) if len(train) else np.zeros(0)
    c = np.bincount(np.asarray(items, dtype=np.int64), minlength=n_items + 1)[:n_items + 1]
    c[0] = 0
    return c.astype(np.int64)


def popularity_slices(target_counts: np.ndarray, bins: PopularityBins = PopularityBins()
                      ) -> dict[str, np.ndarray]:
    """Boolean masks over users (one per bin, disjoint, covering everyone) from each user's
    target-item training count. Pure: depends only on the counts and the edges."""
    c = np.asarray(target_counts, dtype=np.int64)
    idx = np.searchsorted(np.asarray(bins.edges), c, side="left")  # count <= edge[i] -> bin i
    return {name: idx == i for i, name in enumerate(bins.names())}


def target_train_counts(split: Any, evalset: Any) -> np.ndarray:
    """Training count of each evaluated user's target item (aligned with evalset.target)."""
    counts = item_train_counts(split.train, split.n_items)
    t = np.asarray(evalset.target, dtype=np.int64)
    out = np.zeros(len(t), dtype=np.int64)
    ok = (t >= 0) & (t < len(counts))
    out[ok] = counts[t[ok]]
    return out


def popularity_metrics(ranks: np.ndarray, target_counts: np.ndarray,
                       bins: PopularityBins = PopularityBins(), ks: tuple[int, ...] = KS
                       ) -> dict[str, dict[str, Any]]:
    """{bin name: all_metrics of the users in it}; an empty bin has n_users 0 and None for
    every metric (JSON has no NaN)."""
    ranks = np.asarray(ranks)
    if len(ranks) != len(target_counts):
        from shiftrec.errors import InputError

        raise InputError(f"{len(ranks)} ranks but {len(target_counts)} target counts")
    out: dict[str, dict[str, Any]] = {}
    for name, m in popularity_slices(target_counts, bins).items():
        met: dict[str, Any] = all_metrics(ranks[m], ks)
        out[name] = met if m.any() else {k: (0 if k == "n_users" else None) for k in met}
    return out
