"""Platform migration flows: each user's dominant topic in consecutive time windows, the
topic -> topic flow matrix of users active in both windows, the largest migrations and how they
change over time; JSON and a PNG (a two-column Sankey of the latest pair + migration trends).

Dominant topic of a user in a window: the topic with most events; ties go to the lower topic id.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
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


# ---------------------------------------------------------------- plot

def _short(s: str, n: int = 26) -> str:
    return s if len(s) <= n else s[: n - 1] + "…"


def plot_flows(report: FlowReport, path: str | Path, max_topics: int = 8, pair: int = -1,
               title: str | None = None) -> Path:
    """PNG: a two-column Sankey of one window pair (default: the latest non-empty one) with the
    `max_topics` largest topics (the rest grouped as 'other'; coloured bands = migrations, grey
    = stayed), beside the largest migrations' counts over all window pairs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(16, 8.5), gridspec_kw={"width_ratios": [1.25, 1]})
    nonempty = [i for i, p in enumerate(report.pairs) if not p.empty]
    if not nonempty:
        for a in (ax, ax2):
            a.axis("off")
        ax.text(0.5, 0.5, report.message or "no flows: every window pair is empty", ha="center",
                va="center", fontsize=14, wrap=True)
        fig.savefig(out, dpi=110, bbox_inches="tight")
        plt.close(fig)
        return out
    pi = nonempty[-1] if pair == -1 else pair
    p = report.pairs[pi]
    if p.empty:
        raise InputError(f"window pair {pi} is empty: {p.message}")
    T = report.n_topics
    vol = p.matrix.sum(1) + p.matrix.sum(0)
    keep = [int(i) for i in np.argsort(-vol, kind="stable")[:max_topics] if vol[i] > 0]
    other = T > len(keep)
    groups = np.full(T, len(keep), np.int64)
    groups[keep] = np.arange(len(keep))
    G = len(keep) + int(other)
    names = [report.topic_names[i] for i in keep] + (["other topics"] if other else [])
    m = np.zeros((G, G))
    np.add.at(m, (groups[:, None].repeat(T, 1), groups[None, :].repeat(T, 0)), p.matrix)
    total = m.sum()
    gap = 0.012 * total
    cmap = plt.get_cmap("tab20" if G > 10 else "tab10")
    colours = [cmap(i % cmap.N) for i in range(G)]
    if other:
        colours[-1] = (0.6, 0.6, 0.6, 1.0)

    def stack(sizes: np.ndarray) -> np.ndarray:
        tops = np.zeros(G)
        y = total + gap * (G - 1)
        for g in range(G):
            tops[g] = y
            y -= sizes[g] + gap
        return tops

    out_sz, in_sz = m.sum(1), m.sum(0)
    ltop, rtop = stack(out_sz), stack(in_sz)
    x0, x1, w = 0.0, 1.0, 0.04
    lcur, rcur = ltop.copy(), rtop.copy()
    xs = np.linspace(x0 + w, x1 - w, 60)
    sm = (1 - np.cos(np.pi * (xs - xs[0]) / (xs[-1] - xs[0]))) / 2
    # allocate each band's slot on both sides first; then draw stays (grey) under migrations
    bands = {}
    for i in range(G):
        for j in range(G):
            if m[i, j] > 0:
                bands[(i, j)] = [lcur[i], None]
                lcur[i] -= m[i, j]
    for j in range(G):
        for i in range(G):
            if m[i, j] > 0:
                bands[(i, j)][1] = rcur[j]
                rcur[j] -= m[i, j]
    for (i, j), (yl, yr) in sorted(bands.items(), key=lambda kv: kv[0][0] != kv[0][1]):
        h = m[i, j]
        top = yl + (yr - yl) * sm
        stay = i == j
        ax.fill_between(xs, top - h, top, color=(0.75, 0.75, 0.75) if stay else colours[i],
                        alpha=0.45 if stay else 0.7, linewidth=0)
    for g in range(G):
        ax.add_patch(plt.Rectangle((x0, ltop[g] - out_sz[g]), w, out_sz[g], color=colours[g]))
        ax.add_patch(plt.Rectangle((x1 - w, rtop[g] - in_sz[g]), w, in_sz[g], color=colours[g]))
        if out_sz[g] > 0:
            ax.text(x0 - 0.01, ltop[g] - out_sz[g] / 2, f"{_short(names[g])}  {int(out_sz[g])}",
                    ha="right", va="center", fontsize=9)
        if in_sz[g] > 0:
            ax.text(x1 + 0.01, rtop[g] - in_sz[g] / 2, f"{int(in_sz[g])}  {_short(names[g])}",
                    ha="left", va="center", fontsize=9)
    ax.set_xlim(-0.55, 1.55)
    ax.set_ylim(-gap, total + gap * G)
    ax.axis("off")
    moved = p.moved
    ax.set_title(f"Dominant topic of {p.users_both:,} returning users\n{p.a[0]}..{p.a[1]}  →  "
                 f"{p.b[0]}..{p.b[1]}   ({moved:,} moved = {moved / max(p.users_both, 1):.0%}; "
                 f"grey = stayed)", fontsize=11)
    # right: the largest migrations over time
    mig = report.largest_migrations(6)
    labels = [f"{pp.a[0][:7]}→{pp.b[0][:7]}" for pp in report.pairs]
    xi = np.arange(len(report.pairs))
    for r in mig:
        ax2.plot(xi, r["counts"], marker="o", label=f"{_short(r['from'], 22)} → {_short(r['to'], 22)}")
    ax2.set_xticks(xi)
    ax2.set_xticklabels(labels, rotation=45, ha="right", fontsize=8)
    ax2.set_ylabel("users whose dominant topic moved")
    ax2.set_title("Largest migrations over consecutive window pairs", fontsize=11)
    ax2.grid(alpha=0.3)
    if mig:
        ax2.legend(fontsize=8, loc="upper left")
    if title:
        fig.suptitle(title, fontsize=13)
    fig.tight_layout()
    fig.savefig(out, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return out
