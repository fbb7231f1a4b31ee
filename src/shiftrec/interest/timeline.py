"""One user's interest timeline: topic per event, the recent topic mix, detected shifts; text and PNG."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from shiftrec.errors import InputError
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


def plot_timeline(tl: Timeline, names: list[str], path: str | Path, max_topics: int = 6) -> Path:
    """Stacked area of the recent topic mix per event, markers for each event's topic, and
    vertical lines at detected shifts."""
    if not tl.known:
        raise InputError(tl.message)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    n, T = tl.recent_mix.shape
    vol = tl.recent_mix.sum(0)
    keep = [int(t) for t in np.argsort(-vol, kind="stable")[:max_topics] if vol[t] > 0]
    rest = [t for t in range(T) if t not in keep]
    ys = [tl.recent_mix[:, t] for t in keep]
    labels = [names[t] for t in keep]
    if rest and tl.recent_mix[:, rest].sum() > 0:
        ys.append(tl.recent_mix[:, rest].sum(1))
        labels.append("other topics")
    fig, ax = plt.subplots(figsize=(12, 4.8))
    x = np.arange(n)
    cmap = plt.get_cmap("tab10")
    ax.stackplot(x, *ys, labels=[lab[:40] for lab in labels], colors=[cmap(i % 10) for i in range(len(ys))],
                 alpha=0.75)
    colour_of = {t: cmap(i % 10) for i, t in enumerate(keep)}
    ax.scatter(x, np.full(n, 1.03), c=[colour_of.get(int(t), (0.5, 0.5, 0.5, 1)) for t in tl.topics],
               s=14, clip_on=False, marker="s")
    for e in tl.shifts:
        xi = int(np.searchsorted(tl.positions, e.event_index))
        ax.axvline(xi, color="black", lw=1.5, ls="--")
        ax.text(xi + 0.2, 0.5, f"shift → {names[e.topics_entered[0]][:24]}\nconf {e.confidence:.2f}",
                fontsize=8, va="center", rotation=90)
    ax.set_xlim(-0.5, max(n - 0.5, 0.5))
    ax.set_ylim(0, 1.06)
    ax.set_xlabel("event")
    ax.set_ylabel("recent topic mix (fast decay)")
    when = ""
    if n:
        when = (f" ({datetime.fromtimestamp(int(tl.times[0]), UTC).date()} .. "
                f"{datetime.fromtimestamp(int(tl.times[-1]), UTC).date()})")
    ax.set_title(f"Interest timeline of user {tl.user}{when}: {len(tl.shifts)} shift(s)"
                 + (" — low confidence" if tl.low_confidence else ""))
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return out
