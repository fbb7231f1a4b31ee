"""Model selection on validation for the shift slices (the rule behind the README's shift rows).

The rule (`SELECTION`): among the candidates whose *stable*-slice validation NDCG@10 is not
below the baseline's (SASRec's), take the best *shifted*-slice validation NDCG@10; if none
qualifies, take the best overall validation NDCG@10. It chooses the shift-aware variant
(models.presets.VARIANTS) and the base model under the item-flow fusion, per dataset.

Candidates are given as slice scores: ``{name: {"all": x, "shifted": y, "stable": z}}`` of one
metric (NDCG@10 by default); `slice_scores` extracts them from per-slice metric dicts such as
`slice_metrics` returns. Conventions, so that every case has one answer:

- a value that is missing, None or NaN (e.g. an empty slice) is *not available*: a candidate
  without a stable value does not pass the guard, one without the score being maximised cannot
  win by it; a baseline without a stable value lets no candidate pass the guard;
- ties on the maximised score go to the higher overall score, then to the earlier candidate in
  the given order;
- no candidate, or none with an available overall score, is an InputError.

This module sits below `train` and `models`: it ranks numbers, splits and the topic profile of
`interest`, and knows no concrete sequence model.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from shiftrec.errors import InputError
from shiftrec.evaluate.metrics import all_metrics

METRIC = "ndcg@10"

SELECTION = ("on validation: the variant with the best shifted-slice NDCG@10 among those whose "
             "stable-slice NDCG@10 is not below SASRec's (the target's criterion); if none "
             "qualifies, the best overall validation NDCG@10")
SHIFT_FIRST = "on validation: best shifted-slice NDCG@10, stable ignored"
BEST_OVERALL = "on validation: best overall NDCG@10"

SliceScores = Mapping[str, float | None]


@dataclass(frozen=True)
class Selection:
    """The outcome of a selection rule: the chosen candidate, the candidates that passed the
    stable guard (empty for rules without one) and whether the rule fell back to the overall
    score."""

    chosen: str
    qualified: tuple[str, ...]
    fell_back: bool
    rule: str

    def to_json(self) -> dict[str, Any]:
        return {"chosen": self.chosen, "qualified": list(self.qualified),
                "fell_back": self.fell_back, "rule": self.rule}


def available(x: Any) -> float | None:
    """`x` as a float, or None when it is missing, None or NaN (not a comparable score)."""
    if x is None:
        return None
    v = float(x)
    return None if math.isnan(v) else v


def _get(scores: SliceScores, sl: str) -> float | None:
    return available(scores.get(sl))


def best_by(candidates: Mapping[str, SliceScores], sl: str,
            among: Sequence[str] | None = None) -> str | None:
    """The candidate with the best available `sl` score (ties: higher overall, then earlier in
    order); None when no candidate has one."""
    names = list(candidates) if among is None else list(among)
    best, key = None, None
    for name in names:
        v = _get(candidates[name], sl)
        if v is None:
            continue
        a = _get(candidates[name], "all")
        k = (v, -math.inf if a is None else a)
        if key is None or k > key:
            best, key = name, k
    return best


def _check(candidates: Mapping[str, SliceScores]) -> None:
    if not candidates:
        raise InputError("selection: no candidate to choose from")


def select_shift_aware(candidates: Mapping[str, SliceScores], baseline: SliceScores) -> Selection:
    """SELECTION: best shifted score among the candidates whose stable score is not below the
    baseline's; else best overall score."""
    _check(candidates)
    floor = _get(baseline, "stable")
    qualified = tuple(c for c, s in candidates.items()
                      if floor is not None and (v := _get(s, "stable")) is not None and v >= floor)
    chosen = best_by(candidates, "shifted", qualified) if qualified else None
    if chosen is not None:
        return Selection(chosen, qualified, False, SELECTION)
    chosen = best_by(candidates, "all")
    if chosen is None:
        raise InputError("selection: no candidate has an overall validation score")
    return Selection(chosen, qualified, True, SELECTION)


def select_shift_first(candidates: Mapping[str, SliceScores]) -> Selection:
    """SHIFT_FIRST: best shifted score, the stable slice ignored (reported beside SELECTION)."""
    _check(candidates)
    chosen = best_by(candidates, "shifted")
    if chosen is None:
        raise InputError("selection: no candidate has a shifted-slice validation score")
    return Selection(chosen, (), False, SHIFT_FIRST)


def select_best(scores: Mapping[str, float | None]) -> Selection:
    """BEST_OVERALL over plain scores {name: value} (ties: the earlier one)."""
    _check(scores)
    chosen = best_by({k: {"all": v} for k, v in scores.items()}, "all")
    if chosen is None:
        raise InputError("selection: no candidate has a validation score")
    return Selection(chosen, (), False, BEST_OVERALL)


def slice_scores(metrics: Mapping[str, Mapping[str, Any]], metric: str = METRIC) -> dict[str, float | None]:
    """{slice: metric} from per-slice metric dicts ({slice: {metric: value, ...}})."""
    return {sl: (m.get(metric) if isinstance(m, Mapping) else None) for sl, m in metrics.items()}


def slice_metrics(ranks: np.ndarray, masks: Mapping[str, np.ndarray],
                  ks: tuple[int, ...] = (10, 20)) -> dict[str, dict[str, float]]:
    """Metrics of 1-based ranks overall ("all") and on each slice mask."""
    ranks = np.asarray(ranks)
    out = {"all": all_metrics(ranks, ks)}
    for name, m in masks.items():
        m = np.asarray(m, dtype=bool)
        if len(m) != len(ranks):
            raise InputError(f"slice '{name}' has {len(m)} entries for {len(ranks)} ranks")
        out[name] = all_metrics(ranks[m], ks)
    return out


# ----------------------------------------------------------------------------- topic profile

HALF_LIFE_GRID: tuple[tuple[float, str], ...] = (
    (7.0, "days"), (30.0, "days"), (180.0, "days"), (5.0, "events"), (20.0, "events"))


def select_topic_profile(split: Any, item_topic: np.ndarray, topic_names: list[str],
                         grid: Sequence[tuple[float, str]] = HALF_LIFE_GRID,
                         ) -> tuple[Any, dict[str, Any]]:
    """The interest.profiles.TopicProfile recommender whose decay half-life (from `grid`) gives
    the best validation NDCG@10 (BEST_OVERALL, ties to the earlier), fitted on `split`; and the
    validation score of every half-life tried."""
    from shiftrec.evaluate.ranking import evaluate
    from shiftrec.interest.profiles import DecayUnit, ProfileConfig, TopicProfile

    if not grid:
        raise InputError("select_topic_profile: empty half-life grid")
    best: Any = None
    scores: dict[str, float] = {}
    for hl, unit in grid:
        key = f"{hl:g} {DecayUnit(unit).value}"
        m = TopicProfile(item_topic, topic_names,
                         ProfileConfig(half_life=hl, decay_unit=DecayUnit(unit))).fit(split)
        scores[key] = evaluate(m, split, "valid", ks=(10,))[0][METRIC]
        if available(scores[key]) is not None and select_best(scores).chosen == key:
            best = m  # keep only the best fitted profile
    if best is None:
        raise InputError("select_topic_profile: no half-life has a validation score")
    return best, {"valid_ndcg@10_by_half_life": {k: round(v, 5) for k, v in scores.items()},
                  "chosen": {"half_life": best.cfg.half_life,
                             "decay_unit": best.cfg.decay_unit.value}}
