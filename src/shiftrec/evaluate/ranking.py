"""Full-ranking evaluation over all items (never sampled), with slices and a metrics.json writer."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from shiftrec.data.splits import EvalSet, SeqSplit
from shiftrec.errors import InputError
from shiftrec.evaluate.metrics import KS, all_metrics, ranks_from_scores
from shiftrec.manifest import make_manifest, write_json


def rank_targets(model: Any, evalset: EvalSet, batch_size: int = 512, max_len: int = 50,
                 exclude_history: bool = False, progress: Any = None) -> np.ndarray:
    """Score every item for each user in `evalset` and return the 1-based rank of the target."""
    if len(evalset) == 0:
        raise InputError("evaluation split is empty: no user has enough events to evaluate")
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
        ranks[a:b] = ranks_from_scores(scores, evalset.target[a:b])
        if progress is not None:
            progress(b - a)
    return ranks


def evaluate(model: Any, split: SeqSplit, which: str = "test", ks: tuple[int, ...] = KS,
             **kw: Any) -> tuple[dict[str, float], np.ndarray]:
    es = split.test if which == "test" else split.valid
    ranks = rank_targets(model, es, **kw)
    return all_metrics(ranks, ks), ranks


def sliced(ranks: np.ndarray, masks: dict[str, np.ndarray], ks: tuple[int, ...] = KS) -> dict[str, dict[str, float]]:
    return {name: all_metrics(ranks[m], ks) for name, m in masks.items()}


def write_metrics(path: str | Path, metrics: dict[str, Any], model_manifest: dict[str, Any] | None,
                  data_manifest: dict[str, Any] | None, **extra: Any) -> None:
    write_json(path, make_manifest("metrics", metrics=metrics, model=model_manifest,
                                   data=data_manifest, **extra) | dict(metrics))
