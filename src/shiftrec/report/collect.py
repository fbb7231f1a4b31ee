"""Gather what the report shows from saved artifacts into one JSON-able dict per section.

Every section is optional: it is collected only when its inputs are given. Nothing here draws;
`shiftrec.report.html` renders the dict, `shiftrec.report.plots` draws PNG twins.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from shiftrec.errors import ArtifactError, InputError
from shiftrec.manifest import read_json

KS = (5, 10, 20, 50)
METRICS = tuple(f"{m}@{k}" for m in ("recall", "ndcg", "mrr") for k in KS)
Progress = Callable[[str], None]


@dataclass(frozen=True)
class ReportInputs:
    """What to show. `runs`: evaluated run folders (metrics.json + metrics.ranks.npz);
    `servable`: a servable run (`shiftrec.pipelines.run.write_run`) whose recommendations the
    Shoppers section shows (default: the first of `runs` that is servable)."""

    dataset: Path | None = None
    runs: tuple[Path, ...] = ()
    topics: Path | None = None
    shifts: Path | None = None
    flows: Path | None = None
    split: Path | None = None  # for the shifted/stable slices (default: the one a run records)
    servable: Path | None = None
    title: str = "shiftrec report"
    sample_users: int = 60  # shoppers listed (shifted first)
    n_boot: int = 1000  # bootstrap resamples for the 95% intervals
    seed: int = 0
    k_recs: int = 10
    commands: tuple[str, ...] = ()  # the commands that produced the inputs and this report


@dataclass
class Collected:
    data: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def _iso(t: int) -> str:
    return datetime.fromtimestamp(int(t), UTC).strftime("%Y-%m-%d")


def _json_safe(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _json_safe(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_json_safe(v) for v in x]
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, float) and not np.isfinite(x):
        return None
    return x


# ---------------------------------------------------------------- data

def data_section(dataset: Path) -> dict[str, Any]:
    """Ingest accounting, events over time, users/items, quarantine's top reasons."""
    ds = Path(dataset)
    if not (ds / "events.parquet").is_file():
        raise InputError("not a dataset folder (events.parquet missing)", path=ds)
    rep = read_json(ds / "ingest_report.json") if (ds / "ingest_report.json").is_file() else {}
    man = read_json(ds / "manifest.json") if (ds / "manifest.json").is_file() else {}
    ev = pl.read_parquet(ds / "events.parquet", columns=None)
    cols = set(ev.columns)
    by = ["event_type"] if "event_type" in cols else []
    weekly = (ev.with_columns(pl.col("timestamp").dt.truncate("1w").alias("week"))
              .group_by(["week", *by]).len().sort(["week", *by]))
    series: dict[str, dict[str, list[Any]]] = {}
    for row in weekly.iter_rows(named=True):
        s = series.setdefault(str(row.get("event_type", "events")), {"x": [], "y": []})
        s["x"].append(row["week"].strftime("%Y-%m-%d"))
        s["y"].append(int(row["len"]))
    per_user = ev.group_by("user_id").len()["len"].to_numpy()
    reasons: list[list[Any]] = [list(r) for r in rep.get("quarantine_reasons", [])]
    if not reasons and (ds / "quarantine.parquet").is_file():
        q = pl.read_parquet(ds / "quarantine.parquet")
        if q.height and "reason" in q.columns:
            reasons = [list(r) for r in q.group_by("reason").len().sort("len", descending=True).rows()]
    filtered = {k: int(v) for k, v in rep.get("filtered_by_rule", {}).items()}
    items_n = pl.read_parquet(ds / "items.parquet").height if (ds / "items.parquet").is_file() else None
    return {
        "name": rep.get("name") or man.get("name") or ds.name,
        "path": str(ds),
        "accounting": {"rows_in": rep.get("rows_in"), "accepted": rep.get("accepted", ev.height),
                       "quarantined": rep.get("quarantined"), "filtered_by_rule": filtered,
                       "balanced": rep.get("balanced")},
        "counts": {"events": ev.height, "users": int(ev["user_id"].n_unique()),
                   "items": int(ev["item_id"].n_unique()), "catalogue_items": items_n,
                   "time_span": [str(ev["timestamp"].min())[:10], str(ev["timestamp"].max())[:10]]
                   if ev.height else None,
                   "events_per_user_median": float(np.median(per_user)) if len(per_user) else 0.0},
        "events_over_time": series,
        "events_per_user_hist": np.histogram(per_user, bins=min(30, max(1, len(np.unique(per_user)))))
        [0].tolist() if len(per_user) else [],
        "events_per_user_edges": np.histogram(per_user, bins=min(30, max(1, len(np.unique(per_user)))))
        [1].round(1).tolist() if len(per_user) else [],
        "quarantine_reasons": reasons[:10],
        "fingerprint": man.get("fingerprint") or man.get("content_fingerprint"),
    }


# ---------------------------------------------------------------- models

def _bootstrap(values: dict[str, np.ndarray], n_boot: int, seed: int) -> dict[str, tuple[float, float]]:
    """Percentile 95% intervals of each metric's mean, the same user resamples for all metrics."""
    n = len(next(iter(values.values())))
    if n == 0:
        return {k: (float("nan"), float("nan")) for k in values}
    rng = np.random.default_rng(seed)
    mat = np.stack(list(values.values()))  # (M, n)
    boots = np.empty((len(values), n_boot))
    step = max(1, 2_000_000 // n)
    for s in range(0, n_boot, step):
        idx = rng.integers(0, n, size=(min(step, n_boot - s), n))
        boots[:, s:s + step] = mat[:, idx].mean(axis=2)
    lo, hi = np.quantile(boots, 0.025, axis=1), np.quantile(boots, 0.975, axis=1)
    return {k: (float(lo[i]), float(hi[i])) for i, k in enumerate(values)}


def _slice_masks(split_dir: Path, topics_dir: Path, user_index: np.ndarray, which: str
                 ) -> dict[str, np.ndarray] | None:
    from shiftrec.data.splits import SeqSplit
    from shiftrec.interest.slices import shift_slices
    from shiftrec.interest.topics import Topics

    sp = SeqSplit.load(split_dir)
    es = sp.test if which == "test" else sp.valid
    if len(es) != len(user_index) or not np.array_equal(np.asarray(es.users), user_index):
        return None
    return shift_slices(es, Topics.load(topics_dir).aligned(sp.item_map))


def models_section(runs: Sequence[Path], n_boot: int, seed: int, topics: Path | None,
                   split: Path | None, notes: list[str]) -> dict[str, Any]:
    """Every run side by side with bootstrap 95% intervals, shifted/stable slices, paired tests."""
    from shiftrec.evaluate.metrics import per_user_metric
    from shiftrec.evaluate.ranking import read_user_ranks
    from shiftrec.evaluate.significance import compare_runs

    out: list[dict[str, Any]] = []
    for r in runs:
        ur, man = read_user_ranks(r)
        name = man.get("model_name") or (man.get("model") or {}).get("model") or Path(r).name
        vals = {m: per_user_metric(ur.rank, m) for m in METRICS}
        ci = _bootstrap(vals, n_boot, seed)
        row: dict[str, Any] = {
            "name": str(name), "path": str(r), "split": ur.which, "split_kind": ur.split_kind,
            "data_fingerprint": ur.fingerprint, "n_users": int(len(ur.rank)),
            "metrics": {m: float(v.mean()) for m, v in vals.items()},
            "ci95": {m: list(ci[m]) for m in METRICS},
            "ranks_sha1": man.get("per_user", {}).get("ranks_sha1"),
            "model_fingerprint": (man.get("model") or {}).get("data_fingerprint"),
            "slices": {},
        }
        split_dir = split or (Path(man["split_dir"]) if man.get("split_dir") else None)
        if topics is not None and split_dir is not None and Path(split_dir).exists():
            masks = _slice_masks(Path(split_dir), topics, ur.user_index, ur.which)
            if masks is None:
                notes.append(f"{r}: its users are not the evaluated users of {split_dir}; no slices")
            else:
                for sl, mk in masks.items():
                    sub = {m: vals[m][mk] for m in ("recall@10", "ndcg@10")}
                    sci = _bootstrap(sub, n_boot, seed) if mk.any() else {}
                    row["slices"][sl] = {"n_users": int(mk.sum()),
                                         **{m: float(v.mean()) if len(v) else None for m, v in sub.items()},
                                         **{f"{m}_ci95": list(sci[m]) for m in sci}}
        out.append(row)
    tests = []
    for i in range(len(runs)):
        for j in range(i + 1, len(runs)):
            try:
                t = compare_runs(runs[i], runs[j], "ndcg@10", n_boot=n_boot, seed=seed)
            except ArtifactError as e:
                tests.append({"a": out[i]["name"], "b": out[j]["name"], "error": e.one_line()})
                continue
            tests.append({"a": out[i]["name"], "b": out[j]["name"], "metric": t["metric"],
                          "mean_a": t["mean_a"], "mean_b": t["mean_b"], "diff": t["diff"],
                          "ci95": [t["ci95_low"], t["ci95_high"]], "t_test_p": t["t_test_p"],
                          "wilcoxon_p": t["wilcoxon_p"], "n_users": t["n_users"]})
    return {"runs": out, "paired": tests, "ks": list(KS), "n_boot": n_boot}


# ---------------------------------------------------------------- migration

def migration_section(flows: Path, topics: Path | None) -> dict[str, Any]:
    f = Path(flows)
    fj = f / "flows.json" if f.is_dir() else f
    if not fj.is_file():
        raise InputError("flows file not found (a folder with flows.json, or the file)", path=f)
    fl = read_json(fj)
    if "pairs" not in fl or "topics" not in fl:
        raise ArtifactError("not a flows file (pairs/topics missing)", path=fj)
    out = {"topics": fl["topics"], "windows": fl.get("windows", []), "message": fl.get("message", ""),
           "largest": fl.get("largest_migrations", []), "meta": fl.get("meta", {}),
           "pairs": [{k: p[k] for k in ("window_a", "window_b", "users_both", "stayed", "moved",
                                        "message", "matrix", "top_migrations")} for p in fl["pairs"]]}
    out["terms"] = _topic_terms(topics) if topics else None
    return out


def _topic_terms(topics: Path) -> dict[str, Any]:
    from shiftrec.interest.topics import Topics

    tp = Topics.load(topics)
    return {"names": tp.names, "terms": tp.terms, "sizes": tp.sizes().tolist(), "source": tp.source,
            "meta": {k: v for k, v in tp.meta.items() if k in ("k", "encoder", "category_depth")}}


def sankey_nodes(matrix: Sequence[Sequence[int]]) -> tuple[list[int], list[int]]:
    """Topics drawn on each side of one window pair's Sankey: those with users leaving (left)
    and arriving (right). The report's JavaScript draws exactly these nodes."""
    m = np.asarray(matrix)
    return np.flatnonzero(m.sum(1) > 0).tolist(), np.flatnonzero(m.sum(0) > 0).tolist()


# ---------------------------------------------------------------- shoppers

def _load_recommender(run: Path) -> Any:
    """The serve layer's Recommender for a servable run, or None when serve is not installed."""
    for mod in ("shiftrec.serve.recommender", "shiftrec.serve.recommend", "shiftrec.serve"):
        try:
            m = importlib.import_module(mod)
        except ModuleNotFoundError:
            continue
        if hasattr(m, "Recommender"):
            return m.Recommender.load(run)
    return None


def _plain(x: Any) -> Any:
    """dataclass / pydantic / dict / list -> plain JSON-able structure."""
    if dataclasses.is_dataclass(x) and not isinstance(x, type):
        return _plain(dataclasses.asdict(x))
    if hasattr(x, "model_dump"):
        return _plain(x.model_dump())
    if isinstance(x, dict):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_plain(v) for v in x]
    if hasattr(x, "value") and hasattr(x, "name") and type(x).__module__ != "builtins":  # enums
        return x.value
    return _json_safe(x)


def recommendations_for(rec: Any, user: str, k: int) -> dict[str, Any]:
    """{'items': [{item_id, title, score, reasons: [{kind, text}]}], 'shift': ...} for a user."""
    try:
        res = _plain(rec.recommend(user, k=k, exclude_seen=True, explain=True))
    except TypeError:
        res = _plain(rec.recommend(user, k=k))
    if isinstance(res, list):
        res = {"items": res}
    items = []
    for it in res.get("items", []):
        reasons = it.get("reasons", [])
        reasons = [r if isinstance(r, dict) else {"kind": "", "text": str(r)} for r in reasons]
        items.append({"item_id": str(it.get("item_id")), "title": it.get("title"),
                      "score": it.get("score"), "reasons": reasons})
    return {"items": items, "shift": res.get("shift"), "model": res.get("model")}


def shoppers_section(dataset: Path, topics: Path, shifts: Path | None, servable: Path | None,
                     n_users: int, k: int, seed: int, notes: list[str]) -> dict[str, Any]:
    """Sample users (shifted first): topic timeline with detected shifts, last items seen, and
    the servable run's recommendations with reasons."""
    from shiftrec.interest.events import InterestEvents
    from shiftrec.interest.shifts import ShiftConfig, ShiftDetector
    from shiftrec.interest.timeline import user_timeline
    from shiftrec.interest.topics import Topics

    tp = Topics.load(topics)
    events = pl.read_parquet(Path(dataset) / "events.parquet")
    items = pl.read_parquet(Path(dataset) / "items.parquet") if (Path(dataset) / "items.parquet").is_file() \
        else None
    ev = InterestEvents.from_frame(events, tp)
    cfg = ShiftConfig()
    if servable is not None and (Path(servable) / "shift.json").is_file():
        from shiftrec.config import from_dict

        try:
            cfg = from_dict(ShiftConfig, read_json(Path(servable) / "shift.json"), where="shift.json")
        except Exception:  # noqa: BLE001 - an older/newer shift config: the defaults still draw
            cfg = ShiftConfig()
    det = ShiftDetector(tp.n_topics, cfg)
    if shifts is not None:
        sp = Path(shifts)
        sf = sp / "shifts.parquet" if sp.is_dir() else sp
        shifted_ids = pl.read_parquet(sf)["user_id"].unique(maintain_order=True).to_list()
    else:
        res = det.detect(ev)
        shifted_ids = [str(u) for u in dict.fromkeys(np.asarray(ev.user_ids, dtype=object)[res.user])]
    rng = np.random.default_rng(seed)
    all_ids = [str(u) for u in ev.user_ids]
    shifted_set = set(shifted_ids)
    n_shift = min(len(shifted_ids), max(1, (2 * n_users) // 3))
    pick_shift = sorted(rng.choice(len(shifted_ids), n_shift, replace=False).tolist()) if shifted_ids else []
    chosen = [shifted_ids[i] for i in pick_shift]
    stable = [u for u in all_ids if u not in shifted_set]
    n_stable = min(len(stable), n_users - len(chosen))
    chosen += [stable[i] for i in sorted(rng.choice(len(stable), n_stable, replace=False).tolist())] \
        if n_stable > 0 else []
    titles: dict[str, str] = {}
    if items is not None and "title" in items.columns:
        titles = dict(zip(items["item_id"].cast(pl.String).to_list(),
                          items["title"].cast(pl.String).fill_null("").to_list(), strict=False))
    user_items = (events.filter(pl.col("user_id").is_in(chosen)).sort("timestamp")
                  .group_by("user_id", maintain_order=True).agg(pl.col("item_id").tail(5)))
    last_items = {r[0]: r[1] for r in user_items.iter_rows()}
    rec = None
    if servable is not None:
        try:
            rec = _load_recommender(Path(servable))
        except Exception as e:  # noqa: BLE001 - report without recommendations, say why
            notes.append(f"recommendations unavailable: {e}")
        if rec is None and not notes:
            notes.append("recommendations unavailable: the serve layer (shiftrec.serve.Recommender) "
                         "is not installed")
    users = []
    for u in chosen:
        tl = user_timeline(ev, u, det)
        if not tl.known:
            continue
        vol = tl.recent_mix.sum(0)
        keep = [int(t) for t in np.argsort(-vol, kind="stable")[:6] if vol[t] > 0]
        entry: dict[str, Any] = {
            "user_id": u, "shifted": u in shifted_set, "n_events": int(len(tl.topics)),
            "times": [_iso(t) for t in tl.times.tolist()],
            "topics": tl.topics.astype(int).tolist(),
            "mix": {str(t): np.round(tl.recent_mix[:, t], 3).tolist() for t in keep},
            "shifts": [{"index": int(np.searchsorted(tl.positions, e.event_index)), "date": _iso(e.time),
                        "from": [tp.names[t] for t in e.topics_left],
                        "to": [tp.names[t] for t in e.topics_entered],
                        "confidence": round(float(e.confidence), 3)} for e in tl.shifts],
            "low_confidence": bool(tl.low_confidence),
            "recent": [{"item_id": str(i), "title": titles.get(str(i), "")} for i in last_items.get(u, [])],
        }
        if rec is not None:
            try:
                entry["recs"] = recommendations_for(rec, u, k)
            except Exception as e:  # noqa: BLE001 - one user's failure is shown, not fatal
                entry["recs"] = {"items": [], "error": str(e).splitlines()[0]}
        users.append(entry)
    users.sort(key=lambda x: (not x["shifted"], x["user_id"]))
    return {"topics": tp.names, "users": users, "servable": str(servable) if servable else None,
            "has_recs": rec is not None}


# ---------------------------------------------------------------- reproduce

def reproduce_section(inp: ReportInputs, collected: dict[str, Any]) -> dict[str, Any]:
    fps: list[dict[str, Any]] = []

    def add(what: str, path: Any, fp: Any, **more: Any) -> None:
        fps.append({"what": what, "path": str(path), "fingerprint": fp, **more})

    if inp.dataset is not None:
        man = read_json(Path(inp.dataset) / "manifest.json") if (Path(inp.dataset) / "manifest.json").is_file() else {}
        add("dataset", inp.dataset, man.get("fingerprint"), created=man.get("created"))
    if inp.topics is not None:
        tm = read_json(Path(inp.topics) / "topics.json")
        add("topics", inp.topics, tm.get("data_fingerprint"), source=tm.get("source"))
    for r in collected.get("models", {}).get("runs", []):
        add(f"run {r['name']}", r["path"], r["data_fingerprint"], ranks_sha1=r.get("ranks_sha1"))
    if inp.flows is not None:
        add("flows", inp.flows, None, every=collected.get("migration", {}).get("meta", {}).get("every"))
    if inp.servable is not None and (Path(inp.servable) / "manifest.json").is_file():
        sm = read_json(Path(inp.servable) / "manifest.json")
        add("servable run", inp.servable, sm.get("data_fingerprint"), parts=sm.get("fingerprints"))
    from shiftrec.manifest import versions

    return {"fingerprints": fps, "commands": list(inp.commands), "versions": versions(),
            "created": datetime.now(UTC).isoformat(timespec="seconds")}


def _is_servable(run: Path) -> bool:
    p = Path(run) / "manifest.json"
    return p.is_file() and read_json(p).get("kind") == "run"


def collect(inp: ReportInputs, progress: Progress | None = None) -> Collected:
    say = progress or (lambda _s: None)
    c = Collected()
    c.data["title"] = inp.title
    runs = [r for r in inp.runs if not _is_servable(r)]
    servable = inp.servable or next((r for r in inp.runs if _is_servable(r)), None)
    inp = dataclasses.replace(inp, servable=servable)
    if inp.dataset is not None:
        say("data")
        c.data["data"] = data_section(inp.dataset)
    if runs:
        say("models")
        c.data["models"] = models_section(runs, inp.n_boot, inp.seed, inp.topics, inp.split, c.notes)
    if inp.flows is not None:
        say("interest migration")
        c.data["migration"] = migration_section(inp.flows, inp.topics)
    if inp.dataset is not None and inp.topics is not None:
        say("shoppers")
        c.data["shoppers"] = shoppers_section(inp.dataset, inp.topics, inp.shifts, servable,
                                              inp.sample_users, inp.k_recs, inp.seed, c.notes)
    elif servable is not None:
        c.notes.append("the Shoppers section needs --dataset and --topics")
    say("reproduce")
    c.data["reproduce"] = reproduce_section(inp, c.data)
    c.data["notes"] = c.notes
    c.data = _json_safe(c.data)
    return c
