"""Shifted / stable evaluation slices.

A user's *dominant topics* are the smallest set of their most-weighted history topics
(exponential time decay, see ProfileConfig) whose decayed mass covers at least `coverage` of
the total, capped at `max_topics` topics. A test user is **shifted** when the topic of the test
item is not among the dominant topics of their history, **stable** otherwise. Users whose test
item or whole history has no topic are in neither slice.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from shiftrec.errors import ConfigError
from shiftrec.interest.profiles import DecayUnit, ProfileConfig, topic_mass


@dataclass(frozen=True)
class SliceConfig:
    coverage: float = 0.8  # dominant topics cover at least this share of decayed mass
    max_topics: int = 3  # ... but are never more than this many
    half_life: float = 30.0
    decay_unit: DecayUnit = DecayUnit.DAYS

    def __post_init__(self) -> None:
        if not 0.0 < self.coverage <= 1.0:
            raise ConfigError(f"slices: coverage must be in (0, 1], got {self.coverage}")
        if self.max_topics < 1:
            raise ConfigError(f"slices: max_topics must be >= 1, got {self.max_topics}")


def dominant_mask(mass: np.ndarray, cfg: SliceConfig = SliceConfig()) -> np.ndarray:
    """(users, topics) bool: the dominant topics of each row of decayed topic mass."""
    mass = np.asarray(mass, dtype=np.float64)
    tot = mass.sum(1, keepdims=True)
    share = np.divide(mass, tot, out=np.zeros_like(mass), where=tot > 0)
    order = np.argsort(-share, axis=1, kind="stable")
    srt = np.take_along_axis(share, order, axis=1)
    cum = np.cumsum(srt, axis=1)
    # number of topics needed: first position where the cumulative share reaches coverage
    need = (cum < cfg.coverage - 1e-12).sum(1) + 1
    need = np.minimum(need, cfg.max_topics)
    ranks = np.empty_like(order)
    np.put_along_axis(ranks, order, np.arange(mass.shape[1])[None, :].repeat(len(mass), 0), axis=1)
    return (ranks < need[:, None]) & (mass > 0)


def shift_slices(evalset: Any, item_topic: np.ndarray, cfg: SliceConfig = SliceConfig()
                 ) -> dict[str, np.ndarray]:
    """Boolean masks over the users of `evalset` (an EvalSet): {'shifted', 'stable'}, for
    shiftrec.evaluate.ranking.sliced."""
    item_topic = np.asarray(item_topic, np.int64)
    T = int(item_topic.max(initial=-1)) + 1
    h = evalset.history
    pc = ProfileConfig(half_life=cfg.half_life, decay_unit=cfg.decay_unit)
    times = h.times if cfg.decay_unit == DecayUnit.DAYS else None
    mass, n_ev = topic_mass(h.indptr, item_topic[h.items], times, max(T, 1), pc)
    dom = dominant_mask(mass, cfg)
    tt = item_topic[np.asarray(evalset.target, np.int64)]
    valid = (tt >= 0) & (n_ev > 0)
    in_dom = np.zeros(len(tt), bool)
    in_dom[valid] = dom[np.flatnonzero(valid), tt[valid]]
    return {"shifted": valid & ~in_dom, "stable": valid & in_dom}


def slice_summary(masks: dict[str, np.ndarray]) -> dict[str, Any]:
    n = len(next(iter(masks.values()))) if masks else 0
    out: dict[str, Any] = {k: int(v.sum()) for k, v in masks.items()}
    out["neither"] = int(n - sum(v.sum() for v in masks.values()))
    out["shifted_share"] = round(out.get("shifted", 0) / n, 4) if n else None
    return out
