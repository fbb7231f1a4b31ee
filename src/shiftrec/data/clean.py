"""Cleaning with counted rules and quarantine; accounting: rows_in = accepted + quarantined + filtered."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from shiftrec.data.readers._common import ReadResult, empty_quarantine
from shiftrec.data.schema import Dataset
from shiftrec.manifest import atomic_dir, make_manifest, write_json


class DedupMode(enum.StrEnum):
    NONE = "none"
    EXACT = "exact"  # identical user, item, timestamp, event type, value and domain
    USER_ITEM = "user_item"  # keep the first event of each (user, item, domain)


@dataclass(frozen=True)
class CleanConfig:
    dedup: DedupMode = DedupMode.EXACT
    min_time: str = "1990-01-01"
    max_time: str | None = None  # default: now + 1 day
    drop_unknown_items: bool = True  # only where the domain has a catalogue
    bot_max_events_per_minute: int | None = None  # None disables the burst rule
    kcore_user: int = 0
    kcore_item: int = 0
    keep_filtered_rows: bool = True


UNISREC_CLEAN = CleanConfig(dedup=DedupMode.EXACT, kcore_user=5, kcore_item=5)

FILTER_COLS = ["user_id", "item_id", "timestamp", "event_type", "domain"]


def _ts(s: str) -> datetime:
    return datetime.fromisoformat(s).replace(tzinfo=UTC) if "+" not in s else datetime.fromisoformat(s)


def first_distinct(ev: pl.DataFrame, cols: list[str]) -> pl.Series:
    """True for the first occurrence of each distinct row over `cols` (exact, hash-accelerated).

    A 64-bit hash of (user, item, timestamp) finds candidate duplicates; only those rows are
    compared exactly on all of `cols`.
    """
    key = [c for c in ("user_id", "item_id", "timestamp") if c in cols] or cols
    h = ev.select(pl.struct(key).hash(seed=3).alias("h"))["h"]
    return _exact_among(ev, cols, h.is_duplicated())


def first_distinct_sorted(ev: pl.DataFrame, cols: list[str]) -> pl.Series:
    """`first_distinct` for events sorted (stably) by user then time, with user_id and timestamp
    among `cols`: exact duplicates share (user, timestamp), so they sit in one run of equal
    (user, timestamp); only rows in runs longer than one are compared exactly."""
    same = ev.select(((pl.col("user_id") == pl.col("user_id").shift(1))
                      & (pl.col("timestamp") == pl.col("timestamp").shift(1))).fill_null(False).alias("s"))["s"]
    return _exact_among(ev, cols, same | same.shift(-1, fill_value=False))


def _exact_among(ev: pl.DataFrame, cols: list[str], cand: pl.Series) -> pl.Series:
    keep = pl.repeat(True, ev.height, eager=True, dtype=pl.Boolean)
    if cand.any():
        idx = cand.arg_true()
        first = ev[idx].select(pl.struct(cols).is_first_distinct().alias("f"))["f"]
        keep = keep.scatter(idx, first)
    return keep


def kcore(events: pl.DataFrame, k_user: int, k_item: int) -> tuple[pl.DataFrame, int]:
    """Iterative k-core: repeat until every user has >= k_user and every item >= k_item events."""
    u, i = item_user_codes(events)
    alive, iters = kcore_mask(u, i, k_user, k_item)
    return events.filter(pl.Series(alive)), iters


def _dense(phys: np.ndarray) -> np.ndarray:
    """Non-negative integer codes -> dense codes 0..k-1 (O(n + max))."""
    if phys.size == 0:
        return phys.astype(np.int64)
    present = np.zeros(int(phys.max()) + 1, dtype=np.int64)
    present[phys] = 1
    return (np.cumsum(present) - 1)[phys]


def item_user_codes(ev: pl.DataFrame, users: bool = True) -> tuple[np.ndarray | None, np.ndarray]:
    """Dense integer codes for users (None unless asked) and for (domain, item) keys."""
    cols = ("user_id", "domain", "item_id") if users else ("domain", "item_id")
    cat = ev.select(*(pl.col(c).cast(pl.String).cast(pl.Categorical).to_physical().alias(c)
                      for c in cols))
    u = _dense(cat["user_id"].to_numpy()) if users else None
    i = _dense(cat["item_id"].to_numpy())
    if cat["domain"].n_unique() > 1:
        d = _dense(cat["domain"].to_numpy())
        i = _dense(d * (int(i.max()) + 1) + i)
    return u, i


def kcore_mask(u: np.ndarray, i: np.ndarray, k_user: int, k_item: int) -> tuple[np.ndarray, int]:
    """Alive mask of the iterative k-core over integer user and item codes; and the pass count."""
    alive = np.ones(len(u), dtype=bool)
    iters = 0
    while True:
        n = int(alive.sum())
        if k_user > 0:
            alive &= np.bincount(u[alive], minlength=int(u.max(initial=0)) + 1)[u] >= k_user
        if k_item > 0:
            alive &= np.bincount(i[alive], minlength=int(i.max(initial=0)) + 1)[i] >= k_item
        iters += 1
        if int(alive.sum()) == n:
            return alive, iters


def time_window(cfg: CleanConfig) -> tuple[datetime, datetime]:
    """The accepted [min_time, max_time] of a config (max_time None: now + 1 day)."""
    lo = _ts(cfg.min_time)
    hi = _ts(cfg.max_time) if cfg.max_time else datetime.now(UTC) + timedelta(days=1)
    return lo, hi


def _apply_rule(ev: pl.DataFrame, rule: str, keep: pl.Expr | pl.Series, counts: dict[str, int],
                removed: list[pl.DataFrame] | None) -> pl.DataFrame:
    mask = ev.select(keep.alias("k")).to_series() if isinstance(keep, pl.Expr) else keep
    mask = mask.fill_null(False)
    n_drop = int(ev.height - mask.sum())
    counts[rule] = counts.get(rule, 0) + n_drop
    if n_drop and removed is not None:
        removed.append(ev.filter(~mask).select(FILTER_COLS).with_columns(
            pl.all().cast(pl.String), pl.lit(rule).alias("rule")))
    return ev.filter(mask) if n_drop else ev


def apply_user_rules(ev: pl.DataFrame, items: pl.DataFrame, cfg: CleanConfig,
                     window: tuple[datetime, datetime]
                     ) -> tuple[pl.DataFrame, dict[str, int], list[pl.DataFrame]]:
    """The rules that look at one user's events only (missing ids, time range, dedup, unknown
    item, bot burst), in order, on events sorted stably by (user, time). Returns the kept events,
    the count per rule (every rule of the config, zeros included) and the removed rows (when
    `cfg.keep_filtered_rows`). Applying it to disjoint sets of whole users and concatenating is
    the same as applying it once: the out-of-core engine relies on that."""
    counts: dict[str, int] = {}
    removed: list[pl.DataFrame] | None = [] if cfg.keep_filtered_rows else None

    def apply(rule: str, keep: pl.Expr | pl.Series) -> None:
        nonlocal ev
        ev = _apply_rule(ev, rule, keep, counts, removed)

    apply("missing_user_id", pl.col("user_id").is_not_null() & (pl.col("user_id") != ""))
    apply("missing_item_id", pl.col("item_id").is_not_null() & (pl.col("item_id") != ""))
    lo, hi = window
    apply("timestamp_out_of_range", pl.col("timestamp").is_between(lo, hi))
    if cfg.dedup == DedupMode.EXACT:
        apply("duplicate", first_distinct_sorted(
            ev, ["user_id", "item_id", "timestamp", "event_type", "value", "domain"]))
    elif cfg.dedup == DedupMode.USER_ITEM:  # the earliest event of each (user, item, domain)
        apply("duplicate", first_distinct(ev, ["user_id", "item_id", "domain"]))
    if cfg.drop_unknown_items and items.height:
        cat_domains = items["domain"].unique()
        if cat_domains.len() == 1 and ev["domain"].n_unique() == 1:
            keep = ev["item_id"].is_in(items["item_id"].implode())
            if ev.height and ev["domain"][0] != cat_domains[0]:
                keep = pl.repeat(True, ev.height, eager=True, dtype=pl.Boolean)
        else:
            known = items.select("domain", "item_id").with_columns(pl.lit(True).alias("__known"))
            flag = ev.select("domain", "item_id").join(known, on=["domain", "item_id"], how="left",
                                                       maintain_order="left")
            keep = flag["__known"].fill_null(False) | ~flag["domain"].is_in(cat_domains.implode())
        apply("unknown_item", keep)
    if cfg.bot_max_events_per_minute:
        # a user is bot-like if any sliding 60 s window holds more than N events
        n = cfg.bot_max_events_per_minute
        bots = ev.select("user_id", "timestamp").filter(
            (pl.col("timestamp").shift(-n).over("user_id") - pl.col("timestamp"))
            < timedelta(seconds=60))["user_id"].unique()
        apply("bot_burst", ~pl.col("user_id").is_in(bots.implode()))
    return ev, counts, removed or []


def user_codes(ev: pl.DataFrame) -> np.ndarray:
    """Dense user codes of events sorted by user (users are contiguous): a user's code counts the
    user changes before it."""
    return np.cumsum(ev.select((pl.col("user_id") != pl.col("user_id").shift(1)).fill_null(True)
                               .alias("c"))["c"].to_numpy()) - 1


def clean(read: ReadResult, cfg: CleanConfig | None = None, name: str = "dataset"
          ) -> tuple[Dataset, dict[str, Any], pl.DataFrame]:
    """Apply the cleaning rules in order. Returns (dataset, report, filtered_rows).

    Events are sorted once by (user, time), stably, so ties keep their input order; every rule
    then only filters, which keeps that order.
    """
    cfg = cfg or CleanConfig()
    ev = read.events.sort("user_id", "timestamp", maintain_order=True)
    filtered = dict(read.filtered)
    removed: list[pl.DataFrame] = []
    if read.filtered_rows is not None and cfg.keep_filtered_rows:
        removed.append(read.filtered_rows.with_columns(pl.all().cast(pl.String)))
    ev, counts, rule_rows = apply_user_rules(ev, read.items, cfg, time_window(cfg))
    for rule, n in counts.items():
        filtered[rule] = filtered.get(rule, 0) + n
    removed.extend(rule_rows)

    def apply(rule: str, keep: pl.Series) -> None:
        nonlocal ev
        ev = _apply_rule(ev, rule, keep, filtered, removed if cfg.keep_filtered_rows else None)

    iters = 0
    u = user_codes(ev)  # users are contiguous after the sort
    _, i = item_user_codes(ev, users=False)
    if cfg.kcore_user or cfg.kcore_item:
        alive, iters = kcore_mask(u, i, cfg.kcore_user, cfg.kcore_item)
        apply("kcore", pl.Series(alive))
        u, i = u[alive], _dense(i[alive])

    # catalogue rows of the items that remain: one event row per distinct item finds them
    first_rows = pl.Series(i).is_first_distinct().arg_true()
    used = ev[first_rows].select("domain", "item_id")
    items = read.items.join(used, on=["domain", "item_id"], how="semi", maintain_order="left")
    ds = Dataset(events=ev, items=items, name=name, meta=read.meta, item_codes=(ev, i))
    summary = {"users": int(np.count_nonzero(np.bincount(u))) if u.size else 0,
               "items": used.height, "events": ev.height,
               "domains": sorted(used["domain"].unique().drop_nulls().to_list()),
               "time_span": ([str(ev["timestamp"].min()), str(ev["timestamp"].max())]
                             if ev.height else None),
               "catalogue_items": items.height}
    q = read.quarantine
    report = {
        "name": name,
        "sources": read.sources,
        "rows_in": read.rows_in,
        "accepted": ev.height,
        "quarantined": q.height,
        "filtered_by_rule": filtered,
        "filtered_total": sum(filtered.values()),
        "balanced": read.rows_in == ev.height + q.height + sum(filtered.values()),
        "kcore_iterations": iters,
        "catalogue": {"items_in": read.items.height, "items_kept": items.height,
                      "items_quarantined": 0 if read.items_quarantine is None else read.items_quarantine.height},
        "quarantine_reasons": (q.group_by("reason").len().sort(["len", "reason"], descending=[True, False])
                               .rows() if q.height else []),
        "summary": summary,
        "config": {k: (v.value if isinstance(v, enum.Enum) else v) for k, v in cfg.__dict__.items()},
    }
    fr = pl.concat(removed, how="diagonal_relaxed") if removed else pl.DataFrame()
    return ds, report, fr


def write_outputs(out_dir: str | Path, ds: Dataset, report: dict[str, Any], read: ReadResult,
                  filtered_rows: pl.DataFrame) -> Path:
    """Dataset (events/items parquet + manifest), quarantine.parquet, filtered.parquet,
    ingest_report.json, written atomically (`atomic_dir`): a re-run never leaves a file of an
    earlier run (such as a stale filtered.parquet)."""
    with atomic_dir(out_dir) as tmp:
        _write_outputs_into(tmp, ds, report, read, filtered_rows)
    return Path(out_dir)


def _write_outputs_into(out: Path, ds: Dataset, report: dict[str, Any], read: ReadResult,
                        filtered_rows: pl.DataFrame) -> None:
    ds.write_into(out, extra={"ingest": {k: report[k] for k in ("rows_in", "accepted", "quarantined",
                                                           "filtered_by_rule", "sources")}})
    q = read.quarantine.with_columns(pl.lit("event").alias("kind"))
    if read.items_quarantine is not None and read.items_quarantine.height:
        q = pl.concat([q, read.items_quarantine.with_columns(pl.lit("item").alias("kind"))])
    (q if q.height else empty_quarantine().with_columns(pl.lit("event").alias("kind"))
     ).write_parquet(out / "quarantine.parquet")
    if filtered_rows.height:
        filtered_rows.write_parquet(out / "filtered.parquet")
    write_json(out / "ingest_report.json", make_manifest("ingest_report", **report))
