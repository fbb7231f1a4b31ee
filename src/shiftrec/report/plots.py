"""Static charts (matplotlib, PNG) for papers: the platform flows, one user's timeline, and a PNG
twin of every chart in the HTML report. Chinese (and other CJK) labels render with a CJK font
found on the system (Debian's fonts-wqy-microhei or fonts-noto-cjk); `cjk_font()` says which.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from shiftrec.errors import InputError
from shiftrec.interest.flows import FlowReport
from shiftrec.interest.timeline import Timeline

# Debian packages that provide CJK glyphs, and the family names they register
CJK_FONT_FILES = (
    "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc",
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc",
)
CJK_FAMILIES = ("WenQuanYi Micro Hei", "Noto Sans CJK SC", "WenQuanYi Zen Hei", "Noto Sans CJK JP")


def has_cjk(text: str) -> bool:
    return any("\u3000" <= ch <= "\u9fff" or "\uf900" <= ch <= "\ufaff" for ch in text)


def cjk_font() -> str | None:
    """The family name of an installed CJK font matplotlib can use, registering it if needed."""
    from matplotlib import font_manager

    for f in CJK_FONT_FILES:
        if Path(f).is_file():
            try:
                font_manager.fontManager.addfont(f)
            except (OSError, RuntimeError):
                continue
    have = {f.name for f in font_manager.fontManager.ttflist}
    for fam in CJK_FAMILIES:
        if fam in have:
            return fam
    return None


def _plt(texts: Sequence[str] = ()) -> Any:
    """pyplot on the Agg backend, with a CJK fallback font when any label needs one."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fam = cjk_font() if any(has_cjk(t) for t in texts) else None
    plt.rcParams["font.family"] = ["DejaVu Sans", fam] if fam else ["DejaVu Sans"]
    plt.rcParams["axes.unicode_minus"] = False
    return plt


# ---------------------------------------------------------------- flows

def _short(s: str, n: int = 26) -> str:
    return s if len(s) <= n else s[: n - 1] + "…"


def plot_flows(report: FlowReport, path: str | Path, max_topics: int = 8, pair: int = -1,
               title: str | None = None) -> Path:
    """PNG: a two-column Sankey of one window pair (default: the latest non-empty one) with the
    `max_topics` largest topics (the rest grouped as 'other'; coloured bands = migrations, grey
    = stayed), beside the largest migrations' counts over all window pairs."""
    plt = _plt(report.topic_names + [title or ""])

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


# ---------------------------------------------------------------- timeline

def plot_timeline(tl: Timeline, names: list[str], path: str | Path, max_topics: int = 6) -> Path:
    """Stacked area of the recent topic mix per event, markers for each event's topic, and
    vertical lines at detected shifts."""
    if not tl.known:
        raise InputError(tl.message)
    plt = _plt(names)

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


# ---------------------------------------------------------------- PNG twins of the report's charts

def flow_report_from_json(fl: dict[str, Any]) -> FlowReport:
    """A FlowReport rebuilt from its JSON (flows.json or the report's migration section)."""
    from shiftrec.interest.flows import WindowPair

    pairs = [WindowPair(tuple(p["window_a"]), tuple(p["window_b"]), np.asarray(p["matrix"], np.int64),
                        int(p.get("users_a", 0)), int(p.get("users_b", 0)), p.get("message", ""))
             for p in fl["pairs"]]
    return FlowReport(list(fl["topics"]), [tuple(w) for w in fl.get("windows", [])], pairs,
                      message=fl.get("message", ""))


def _save(fig: Any, plt: Any, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def plot_data(sec: dict[str, Any], out_dir: Path) -> list[Path]:
    """Ingest accounting, events per week, quarantine reasons (one PNG each)."""
    a = sec["accounting"]
    reasons = sec.get("quarantine_reasons") or []
    plt = _plt([sec.get("name", "")] + [str(r[0]) for r in reasons] + list(sec["events_over_time"]))
    out = []
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.bar(["rows in"], [a.get("rows_in") or 0], color="#16213e")
    bottom = 0.0
    parts = [("accepted", a.get("accepted") or 0, "#59a14f"), ("quarantined", a.get("quarantined") or 0, "#e15759")]
    parts += [(f"filtered: {k}", v, None) for k, v in a.get("filtered_by_rule", {}).items() if v]
    for label, v, c in parts:
        ax.bar(["accounted for"], [v], bottom=bottom, label=f"{label} ({v:,})", color=c)
        bottom += v
    ax.set_ylabel("rows")
    ax.set_title("Ingest accounting: rows in = accepted + quarantined + filtered by rule")
    ax.legend(fontsize=8, loc="lower right")
    out.append(_save(fig, plt, out_dir / "data_accounting.png"))
    fig, ax = plt.subplots(figsize=(9, 4))
    series = sec["events_over_time"]
    if series:
        x = [datetime.fromisoformat(d) for d in next(iter(series.values()))["x"]]
        ys = []
        for s in series.values():
            m = dict(zip(s["x"], s["y"], strict=False))
            ys.append([m.get(d.strftime("%Y-%m-%d"), 0) for d in x])
        ax.stackplot(x, *ys, labels=list(series), alpha=0.8)
        ax.legend(fontsize=8, loc="upper left")
    ax.set_ylabel("events per week")
    ax.set_title("Events per week")
    out.append(_save(fig, plt, out_dir / "data_events.png"))
    if reasons:
        fig, ax = plt.subplots(figsize=(8, 0.5 + 0.4 * len(reasons)))
        ax.barh([str(r[0])[:60] for r in reasons][::-1], [r[1] for r in reasons][::-1], color="#e15759")
        ax.set_xlabel("rows")
        ax.set_title("Quarantine: top reasons")
        out.append(_save(fig, plt, out_dir / "data_quarantine.png"))
    return out


def plot_models(sec: dict[str, Any], out_dir: Path, metrics: Sequence[str] = ("ndcg@10", "recall@10")
                ) -> list[Path]:
    """Each metric's runs with bootstrap 95% intervals; shifted vs stable NDCG@10."""
    runs = sec["runs"]
    plt = _plt([r["name"] for r in runs])
    out = []
    names = [r["name"] for r in runs]
    for m in metrics:
        fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(runs)), 4.2))
        y = np.array([r["metrics"][m] for r in runs])
        lo = np.array([r["ci95"][m][0] for r in runs])
        hi = np.array([r["ci95"][m][1] for r in runs])
        ax.bar(names, y, yerr=[y - lo, hi - y], capsize=4, color=[f"C{i}" for i in range(len(runs))])
        ax.set_ylabel(m)
        ax.set_title(f"{m.upper()} with bootstrap 95% intervals ({sec['n_boot']} resamples)")
        ax.tick_params(axis="x", rotation=20)
        out.append(_save(fig, plt, out_dir / f"models_{m.replace('@', '_at_')}.png"))
    sl = [r for r in runs if r.get("slices", {}).get("shifted")]
    if sl:
        fig, ax = plt.subplots(figsize=(max(6, 1.3 * len(sl)), 4.2))
        x = np.arange(len(sl))
        for off, key, c in ((-0.2, "shifted", "#e15759"), (0.2, "stable", "#59a14f")):
            y = np.array([r["slices"][key]["ndcg@10"] or 0 for r in sl])
            ax.bar(x + off, y, width=0.4, color=c, label=f"{key} ({sl[0]['slices'][key]['n_users']:,} users)")
        ax.set_xticks(x)
        ax.set_xticklabels([r["name"] for r in sl], rotation=20)
        ax.set_ylabel("NDCG@10")
        ax.set_title("NDCG@10 on shifted vs stable users")
        ax.legend(fontsize=8)
        out.append(_save(fig, plt, out_dir / "models_slices.png"))
    return out
