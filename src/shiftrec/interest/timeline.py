"""One user's interest timeline: topic per event, the recent topic mix, detected shifts (plots: shiftrec.report.plots)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np

from shiftrec.interest.events import InterestEvents
from shiftrec.interest.shifts import ShiftDetector, ShiftEvent


@dataclass
class Timeline:
    user: str
    known: bool
    message: str = ""
    topics: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    times: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    positions: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    recent_mix: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))  # (events, T)
    shifts: list[ShiftEvent] = field(default_factory=list)
    low_confidence: bool = False

    def lines(self, names: list[str]) -> list[str]:
        if not self.known:
            return [self.message]
        out = [f"user {self.user}: {len(self.topics)} events with a topic, {len(self.shifts)} shift(s)"
               + (" [low confidence: too few events for shift detection]" if self.low_confidence else "")]
        for e in self.shifts:
            out.append(f"  {datetime.fromtimestamp(e.time, UTC).date()}  " + e.describe(names))
        return out


def user_timeline(ev: InterestEvents, user: str, detector: ShiftDetector) -> Timeline:
    """Run the streaming detector over one user's events; unknown ids give known=False."""
    idx = np.flatnonzero(ev.user_ids == user) if len(ev) else np.zeros(0, np.int64)
    if len(idx) == 0:
        return Timeline(user=user, known=False,
                        message=f"unknown user '{user}': no events with a known topic for this id")
    topics, times, pos = ev.of(int(idx[0]))
    st = detector.init_state()
    mix = np.zeros((len(topics), detector.T))
    shifts = []
    for i, (k, t) in enumerate(zip(topics.tolist(), times.tolist(), strict=False)):
        st, e = detector.update(st, k, t, user)
        f = np.asarray(st.fast)
        mix[i] = f / f.sum() if f.sum() > 0 else f
        if e is not None:
            shifts.append(ShiftEvent(user, int(pos[i]), e.time, e.topics_left, e.topics_entered,
                                     e.magnitude, e.confidence, e.statistic))
    return Timeline(user, True, "", topics, times, pos, mix, shifts,
                    detector.is_low_confidence(len(topics)))
