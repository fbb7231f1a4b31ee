"""Plain-English explanations of topic-profile recommendations: which topics contributed most to
an item's score (share of sum_t P(item | t) P(t | user)) and whether a recent shift drove it."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np

from shiftrec.interest.profiles import TopicProfile
from shiftrec.interest.shifts import ShiftDetector, ShiftEvent


@dataclass
class Explanation:
    user: str
    known: bool
    item: int | None = None
    item_label: str = ""
    contributions: list[tuple[str, float]] = field(default_factory=list)  # share of the score
    interest: list[tuple[str, float]] = field(default_factory=list)  # the user's top P(t | u)
    shift_driven: bool = False
    shift: ShiftEvent | None = None
    low_confidence: bool = False
    sentence: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"user": self.user, "known": self.known, "item": self.item, "item_label": self.item_label,
                "contributions": [{"topic": t, "share": round(s, 4)} for t, s in self.contributions],
                "interest": [{"topic": t, "share": round(s, 4)} for t, s in self.interest],
                "shift_driven": self.shift_driven, "low_confidence": self.low_confidence,
                "shift": None if self.shift is None else {
                    "event_index": self.shift.event_index, "time": self.shift.time,
                    "topics_left": list(self.shift.topics_left),
                    "topics_entered": list(self.shift.topics_entered),
                    "magnitude": self.shift.magnitude, "confidence": self.shift.confidence},
                "sentence": self.sentence}


def unknown_user_explanation(user: str) -> Explanation:
    return Explanation(user=user, known=False,
                       sentence=f"Unknown user '{user}': there is no history for this id, so no "
                                f"personal explanation is possible.")


def user_shifts(detector: ShiftDetector, topics: np.ndarray, times: np.ndarray | None,
                user: str = "") -> list[ShiftEvent]:
    """All shifts in one user's topic sequence (events without a topic are skipped, but event
    indices refer to the full sequence)."""
    st = detector.init_state()
    out = []
    tt = np.zeros(len(topics)) if times is None else np.asarray(times, dtype=np.float64)
    for i, (k, t) in enumerate(zip(np.asarray(topics).tolist(), tt.tolist(), strict=False)):
        if k < 0:
            continue
        st, ev = detector.update(st, k, t, user)
        if ev is not None:
            out.append(ShiftEvent(ev.user, i, ev.time, ev.topics_left, ev.topics_entered,
                                  ev.magnitude, ev.confidence, ev.statistic))
    return out


def _date(t: int) -> str:
    return datetime.fromtimestamp(int(t), UTC).date().isoformat()


def _pct(x: float) -> str:
    return f"{100 * x:.0f}%"


def _names(ids: tuple[int, ...], names: list[str]) -> str:
    items = [names[i] for i in ids]
    if not items:
        return "no single topic"
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def explain(model: TopicProfile, history: np.ndarray, times: np.ndarray | None, item: int, *,
            user: str = "", item_label: str | None = None, shifts: list[ShiftEvent] | None = None,
            recent_events: int = 10, max_topics: int = 2, min_share: float = 0.1,
            min_events: int = 3) -> Explanation:
    """Explain why `item` scores for a user with this history (time order).

    A shift "drove" the recommendation when the topic contributing most to the item's score is
    among the topics entered by a shift detected within the user's last `recent_events` events.
    """
    names = model.topic_names
    history = np.asarray(history, np.int64)
    contrib = model.contributions(history, times, item)
    tot = float(contrib.sum())
    share = contrib / tot if tot > 0 else np.zeros_like(contrib)
    order = np.argsort(-share, kind="stable")
    top = [int(t) for t in order[:max_topics] if share[t] >= min_share] or [int(order[0])]
    probs = model.topic_probs([history], None if times is None else [np.asarray(times)])[0]
    interest_order = np.argsort(-probs, kind="stable")[:3]
    n_known = int((model.item_topic[history] >= 0).sum()) if len(history) else 0
    low = n_known < min_events
    label = item_label or f"item {item}"
    driver = None
    for ev in reversed(shifts or []):
        if ev.event_index >= len(history) - recent_events and top[0] in ev.topics_entered:
            driver = ev
            break
    parts = [f"{t_name} ({_pct(share[t])} of the score)" if i == 0 else f"{t_name} ({_pct(share[t])})"
             for i, (t, t_name) in enumerate((t, names[t]) for t in top)]
    if len(top) == 1 and share[top[0]] > 0.95:
        s = (f"'{label}' is suggested because of this shopper's interest in {names[top[0]]}, "
             f"which makes up {_pct(probs[top[0]])} of their time-weighted activity.")
    else:
        s = (f"'{label}' is suggested mainly because of this shopper's interest in "
             + " and ".join(parts) + ".")
    if driver is not None:
        s += (f" It follows a recent shift: around {_date(driver.time)} (event {driver.event_index + 1} "
              f"of {len(history)}) their interest moved from {_names(driver.topics_left, names)} "
              f"to {_names(driver.topics_entered, names)}.")
    else:
        recent = [e for e in (shifts or []) if e.event_index >= len(history) - recent_events]
        if recent:
            s += (f" Their recent shift (to {_names(recent[-1].topics_entered, names)}) did not "
                  f"drive this one; it reflects an established interest.")
        else:
            s += " It reflects an established interest; no recent shift was detected."
    if low:
        s += f" This is based on only {n_known} event(s), so treat it as a weak signal."
    return Explanation(user=user, known=True, item=int(item), item_label=label,
                       contributions=[(names[t], float(share[t])) for t in order[:max_topics + 1]
                                      if share[t] > 0],
                       interest=[(names[t], float(probs[t])) for t in interest_order],
                       shift_driven=driver is not None, shift=driver, low_confidence=low, sentence=s)


class Explainer:
    """Explanations for users of a split: histories by user id, shifts detected on the fly."""

    def __init__(self, model: TopicProfile, user_ids: np.ndarray, histories: list[np.ndarray],
                 times: list[np.ndarray] | None, detector: ShiftDetector | None = None,
                 item_labels: np.ndarray | None = None) -> None:
        self.model = model
        self.index = {str(u): i for i, u in enumerate(user_ids)}
        self.histories = histories
        self.times = times
        self.detector = detector or ShiftDetector(model.n_topics)
        self.item_labels = item_labels

    def recommend(self, user: str, k: int = 10, exclude_seen: bool = False) -> list[int] | None:
        i = self.index.get(str(user))
        if i is None:
            return None
        s = self.model.score([self.histories[i]], None if self.times is None else [self.times[i]])[0]
        if exclude_seen:
            s[self.histories[i]] = -np.inf
        return [int(x) for x in np.argsort(-s, kind="stable")[:k]]

    def explain(self, user: str, item: int, **kw: Any) -> Explanation:
        i = self.index.get(str(user))
        if i is None:
            return unknown_user_explanation(str(user))
        h = self.histories[i]
        t = None if self.times is None else self.times[i]
        shifts = user_shifts(self.detector, self.model.item_topic[h], t, str(user))
        label = None if self.item_labels is None else str(self.item_labels[item])
        return explain(self.model, h, t, item, user=str(user), item_label=label, shifts=shifts, **kw)
