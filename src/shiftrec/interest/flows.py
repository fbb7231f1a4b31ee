"""Platform migration flows: each user's dominant topic in consecutive time windows, the
topic -> topic flow matrix of users active in both windows, the largest migrations and how they
change over time, as JSON (the PNG and the interactive Sankey live in shiftrec.report).

Dominant topic of a user in a window: the topic with most events; ties go to the lower topic id.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import polars as pl

from shiftrec.errors import ConfigError, InputError
from shiftrec.interest.events import InterestEvents

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class FlowConfig:
    every: str = "3mo"  # window length as a Polars duration: "1mo", "3mo", "1w", "30d", ...
    start: str | None = None  # ISO date of the first window; default: first event, truncated
    end: str | None = None  # ISO date after the last window; default: after the last event
    top_k: int = 10  # largest migrations reported
    min_count: int = 1  # migrations with fewer users are not listed


@dataclass
class WindowPair:
    a: tuple[str, str]  # [start, end) of the earlier window, ISO dates
    b: tuple[str, str]
    matrix: np.ndarray  # (T, T) users whose dominant topic went from row to column
    users_a: int  # users active in window a
    users_b: int
    message: str = ""

    @property
    def users_both(self) -> int:
        return int(self.matrix.sum())

    @property
    def moved(self) -> int:
        return int(self.matrix.sum() - np.trace(self.matrix))

    @property
    def empty(self) -> bool:
        return bool(self.message)


@dataclass
class FlowReport:
    topic_names: list[str]
    windows: list[tuple[str, str]]
    pairs: list[WindowPair]
    top_k: int = 10
    min_count: int = 1
    message: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def n_topics(self) -> int:
        return len(self.topic_names)

    def largest_migrations(self, top_k: int | None = None) -> list[dict[str, Any]]:
        """Off-diagonal flows with the largest total over all window pairs, with their count,
        rate (share of the source topic's continuing users) per pair and the latest change."""
        if not self.pairs:
            return []
        k = top_k or self.top_k
        stack = np.stack([p.matrix for p in self.pairs])  # (P, T, T)
        tot = stack.sum(0).astype(np.int64)
        np.fill_diagonal(tot, 0)
        flat = np.argsort(-tot, axis=None, kind="stable")[:k]
        out = []
        for f in flat:
            i, j = divmod(int(f), self.n_topics)
            if tot[i, j] < max(1, self.min_count):
                break
            counts = stack[:, i, j].astype(int).tolist()
            src = stack[:, i, :].sum(1)
            rates = [round(float(c) / s, 4) if s else None for c, s in zip(counts, src, strict=False)]
            out.append({"from": self.topic_names[i], "to": self.topic_names[j], "total": int(tot[i, j]),
                        "counts": counts, "rates": rates,
                        "change_last": int(counts[-1] - counts[-2]) if len(counts) > 1 else None})
        return out

    def pair_summary(self, p: WindowPair) -> dict[str, Any]:
        m = p.matrix.copy()
        np.fill_diagonal(m, 0)
        flat = np.argsort(-m, axis=None, kind="stable")[: self.top_k]
        top = []
        for f in flat:
            i, j = divmod(int(f), self.n_topics)
            if m[i, j] < max(1, self.min_count):
                break
            src = int(p.matrix[i].sum())
            top.append({"from": self.topic_names[i], "to": self.topic_names[j], "count": int(m[i, j]),
                        "rate": round(float(m[i, j]) / src, 4) if src else None})
        return {"window_a": list(p.a), "window_b": list(p.b), "users_a": p.users_a, "users_b": p.users_b,
                "users_both": p.users_both, "stayed": int(np.trace(p.matrix)), "moved": p.moved,
                "message": p.message, "top_migrations": top, "matrix": p.matrix.astype(int).tolist()}

    def to_json(self) -> dict[str, Any]:
        return {"topics": self.topic_names, "windows": [list(w) for w in self.windows],
                "message": self.message, "meta": self.meta,
                "largest_migrations": self.largest_migrations(),
                "pairs": [self.pair_summary(p) for p in self.pairs]}


def _parse_date(s: str, what: str) -> datetime:
    try:
        d = datetime.fromisoformat(s)
    except ValueError:
        raise ConfigError(f"flows: {what} '{s}' is not an ISO date (YYYY-MM-DD)") from None
    return d if d.tzinfo else d.replace(tzinfo=UTC)


def make_windows(t_min: int, t_max: int, cfg: FlowConfig) -> np.ndarray:
    """Window boundaries (unix seconds), consecutive windows [b_i, b_i+1) covering the range."""
    try:
        first = pl.Series([t_min * 1_000_000]).cast(pl.Datetime("us", "UTC")).dt.truncate(cfg.every)[0]
    except Exception as e:  # noqa: BLE001 - polars raises several types for a bad interval
        raise ConfigError(f"flows: invalid window length '{cfg.every}' ({str(e).splitlines()[0]}); "
                          f"use a duration such as 1mo, 3mo, 1w or 30d") from None
    start = _parse_date(cfg.start, "start") if cfg.start else first
    end = _parse_date(cfg.end, "end") if cfg.end else \
        datetime.fromtimestamp(t_max + 1, UTC)
    if end <= start:
        raise ConfigError(f"flows: end ({end.date()}) must be after start ({start.date()})")
    try:
        b = pl.datetime_range(start, end, interval=cfg.every, eager=True, time_zone="UTC",
                              closed="both")
    except Exception as e:  # noqa: BLE001 - polars raises several types for a bad interval
        raise ConfigError(f"flows: invalid window length '{cfg.every}' ({str(e).splitlines()[0]}); "
                          f"use a duration such as 1mo, 3mo, 1w or 30d") from None
    secs = (b.dt.epoch("s")).to_numpy().astype(np.int64)
    if secs[-1] < int(end.timestamp()):
        nxt = pl.Series([b[-1]]).dt.offset_by(cfg.every).dt.epoch("s").to_numpy().astype(np.int64)
        secs = np.concatenate([secs, nxt])
    return secs


def _iso(s: int) -> str:
    return datetime.fromtimestamp(int(s), UTC).date().isoformat()


def compute_flows(ev: InterestEvents, topic_names: list[str], cfg: FlowConfig = FlowConfig(),
                  progress: Progress | None = None) -> FlowReport:
    """Flows between every pair of consecutive windows. A window without events yields empty
    pairs carrying a message (never an exception)."""
    T = len(topic_names)
    if ev.n_topics != T:
        raise InputError(f"events use {ev.n_topics} topics but {T} topic names were given")
    if ev.n_events == 0:
        return FlowReport(topic_names, [], [], cfg.top_k, cfg.min_count,
                          message="no events with a known topic: no flows to compute")
    bounds = make_windows(int(ev.time.min()), int(ev.time.max()), cfg)
    W = len(bounds) - 1
    windows = [(_iso(bounds[i]), _iso(bounds[i + 1])) for i in range(W)]
    if W < 2:
        return FlowReport(topic_names, windows, [], cfg.top_k, cfg.min_count,
                          message=f"only {W} window of {cfg.every}: need two consecutive windows")
    win = np.searchsorted(bounds, ev.time, side="right") - 1
    inside = (win >= 0) & (win < W)
    user = np.repeat(np.arange(len(ev), dtype=np.int64), ev.lengths())
    df = pl.DataFrame({"u": user[inside], "w": win[inside].astype(np.int32),
                       "t": ev.topic[inside].astype(np.int32)})
    if progress is not None:
        progress(1, 4)
    dom = (df.group_by("u", "w", "t").len()
           .sort(["u", "w", "len", "t"], descending=[False, False, True, False])
           .group_by("u", "w", maintain_order=True).first()
           .select("u", "w", "t"))
    if progress is not None:
        progress(2, 4)
    active = np.bincount(dom["w"].to_numpy(), minlength=W)
    nxt = dom.with_columns((pl.col("w") - 1).alias("w")).rename({"t": "t2"})
    cnt = (dom.join(nxt, on=["u", "w"], how="inner").group_by("w", "t", "t2").len())
    if progress is not None:
        progress(3, 4)
    mats = np.zeros((W - 1, T, T), np.int64)
    if cnt.height:
        np.add.at(mats, (cnt["w"].to_numpy(), cnt["t"].to_numpy(), cnt["t2"].to_numpy()),
                  cnt["len"].to_numpy())
    pairs = []
    for w in range(W - 1):
        msgs = [f"window {windows[x][0]}..{windows[x][1]} has no events" for x in (w, w + 1)
                if active[x] == 0]
        if not msgs and mats[w].sum() == 0:
            msgs = [f"no user is active in both {windows[w][0]}..{windows[w][1]} and "
                    f"{windows[w + 1][0]}..{windows[w + 1][1]}"]
        pairs.append(WindowPair(windows[w], windows[w + 1], mats[w], int(active[w]),
                                int(active[w + 1]), "; ".join(msgs)))
    if progress is not None:
        progress(4, 4)
    empty = sum(p.empty for p in pairs)
    msg = f"{empty} of {len(pairs)} window pairs are empty" if empty else ""
    return FlowReport(topic_names, windows, pairs, cfg.top_k, cfg.min_count, message=msg,
                      meta={"every": cfg.every, "users": len(ev), "events": ev.n_events,
                            "events_in_windows": int(inside.sum())})
