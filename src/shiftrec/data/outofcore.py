"""Out-of-core ingest (`shiftrec ingest generic DIR_OR_GLOB --engine streaming`).

Peak memory does not grow with the number of events: it is bounded by one chunk of input rows
(`StreamConfig.chunk_rows`), one user bucket (`bucket_rows`), and state that grows with the
number of distinct items (the item dictionary and counts) and the item catalogue, never with
events. The result is the in-memory engine's, exactly (tests/data/test_out_of_core.py): the
same events in the same order, the same ingest report, quarantine and filtered rows.

How it stays exact:

1. Sample the user column of every file; cut the sorted sample into B ranges of about
   `bucket_rows` events each (B from the row counts of the inputs).
2. Map each chunk of each file with the reader's own `map_events` (row-local: quarantine is per
   row); the bad-row share is checked per file over all its chunks, as the reader checks a
   whole file. Events carry (file, row) as their input order and go to the bucket of their
   user range (spilled to lz4 Arrow IPC files).
3. Per bucket, in user order: sort by (user, time, file, row), which is the in-memory stable
   sort; apply `apply_user_rules` (missing ids, time range, exact dedup, unknown item, bot
   burst): each looks at one user's events only and a user lives in one bucket. Item keys get
   global integer codes from a dictionary that grows with distinct items.
4. Iterative k-core over the buckets: per pass the user filter is local to a bucket, the item
   counts are summed over buckets, then the item filter runs; passes repeat until nothing
   changes (same passes, same count as `kcore_mask`).
5. Write: buckets in user order are the globally sorted events; the content fingerprint is
   hashed bucket by bucket (the same bytes as hashing the whole frame).
"""

from __future__ import annotations

import enum
import hashlib
import math
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from shiftrec.data.clean import (
    FILTER_COLS,
    CleanConfig,
    apply_user_rules,
    time_window,
    user_codes,
)
from shiftrec.data.readers._common import check_file, empty_quarantine
from shiftrec.data.readers.generic import (
    detect_format,
    is_too_bad,
    list_inputs,
    map_events,
    quarantine_priority,
    read_catalogue,
    read_frame,
    too_many_bad,
)
from shiftrec.data.readers.options import ReadOptions
from shiftrec.data.schema import EVENT_SCHEMA, write_dataset_manifest
from shiftrec.errors import InputError
from shiftrec.manifest import atomic_dir, make_manifest, write_json


class Engine(enum.StrEnum):
    """How `shiftrec ingest` runs: AUTO picks MEMORY below `AUTO_STREAMING_ROWS` input rows."""

    AUTO = "auto"
    MEMORY = "memory"
    STREAMING = "streaming"


#: `--engine auto` streams inputs estimated above this many rows (Parquet: exact, from the file
#: metadata; text: bytes / 40, gzip x 4). The in-memory engine peaks near 290 bytes per event.
AUTO_STREAMING_ROWS = 5_000_000


@dataclass(frozen=True)
class StreamConfig:
    chunk_rows: int = 1_000_000  # input rows mapped at a time (Parquet; a text file is one chunk)
    bucket_rows: int = 2_000_000  # target events per user bucket (cleaned in memory at once)
    sample_rows: int = 200_000  # user ids sampled to cut the buckets
    spill_dir: Path | None = None  # default: a temporary folder beside the output


def _parquet_rows(path: Path) -> int:
    import pyarrow.parquet as pq

    try:
        return int(pq.read_metadata(path).num_rows)
    except Exception as e:  # noqa: BLE001 - pyarrow raises many types for bad files
        raise InputError(f"cannot read as Parquet: {str(e).splitlines()[0]}", path=path) from None


def estimate_rows(files: list[Path], fmt: str | None = None) -> int:
    n = 0
    for f in files:
        ffmt = fmt or detect_format(f)
        if ffmt == "parquet":
            n += _parquet_rows(check_file(f))
        else:
            n += check_file(f).stat().st_size // 40 * (4 if f.suffix == ".gz" else 1)
    return n


def choose_engine(engine: Engine | str, files: list[Path], fmt: str | None = None) -> Engine:
    engine = Engine(engine)
    if engine != Engine.AUTO:
        return engine
    return Engine.STREAMING if estimate_rows(files, fmt) > AUTO_STREAMING_ROWS else Engine.MEMORY


def _as_user(df: pl.DataFrame | pl.LazyFrame, col: str) -> pl.Expr:
    return pl.col(col).cast(pl.String).str.strip_chars().alias("user_id")


def _user_sample(files: list[Path], fmt: str | None, col: str, step: int, chunk: int) -> pl.Series:
    """Every `step`-th user id of every file (a file that cannot be scanned here is skipped: the
    sample only balances the buckets, the mapping pass reports the file's faults)."""
    parts: list[pl.Series] = []
    for f in files:
        ffmt = fmt or detect_format(f)
        try:
            if ffmt == "parquet":
                lf = pl.scan_parquet(f)
            elif ffmt in ("csv", "tsv") and f.suffix != ".gz":
                lf = pl.scan_csv(f, infer_schema=False, separator="\t" if ffmt == "tsv" else ",",
                                 truncate_ragged_lines=True, encoding="utf8-lossy")
            else:
                continue
            parts.append(lf.select(_as_user(lf, col)).gather_every(step).collect()["user_id"])
        except Exception:  # noqa: BLE001,S112 - see the docstring
            continue
    s = pl.concat(parts) if parts else pl.Series("user_id", [], dtype=pl.String)
    return s.drop_nulls().sort()


def _boundaries(sample: pl.Series, n_buckets: int) -> pl.Series:
    if n_buckets <= 1 or sample.len() == 0:
        return pl.Series("b", [], dtype=pl.String)
    idx = [k * sample.len() // n_buckets for k in range(1, n_buckets)]
    return sample.gather(idx).unique(maintain_order=True).alias("b")


def _chunks(f: Path, fmt: str, chunk_rows: int):  # noqa: ANN202 - generator of (frame, quarantine)
    """(rows with a 1-based __row, read-level quarantine) of a file, chunk by chunk."""
    if fmt != "parquet":
        df, q = read_frame(f, fmt)
        yield df, (pl.concat(q) if q else empty_quarantine())
        return
    check_file(f)
    n = _parquet_rows(f)
    if n == 0:
        raise InputError("file has no rows", path=f)
    lf = pl.scan_parquet(f)
    for off in range(0, n, chunk_rows):
        try:
            df = lf.slice(off, chunk_rows).collect()
        except Exception as e:  # noqa: BLE001 - pyarrow/polars raise many types
            raise InputError(f"cannot read as Parquet: {str(e).splitlines()[0]}", path=f) from None
        yield df.with_row_index("__row", offset=off + 1), empty_quarantine()


def _ipc(df: pl.DataFrame, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    df.write_ipc(path, compression="lz4")


def ingest_streaming(opts: ReadOptions, cfg: CleanConfig, out_dir: str | Path, name: str,
                     scfg: StreamConfig | None = None) -> dict[str, Any]:
    """Read `opts.path` (a file, folder or glob of generic event files), clean and write the
    dataset folder like `pipeline.ingest` does, out of core. Returns the ingest report."""
    scfg = scfg or StreamConfig()
    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    spill = Path(tempfile.mkdtemp(dir=scfg.spill_dir or out.parent, prefix=f".{out.name}.spill."))
    try:
        return _run(opts, cfg, out, name, scfg, spill)
    finally:
        shutil.rmtree(spill, ignore_errors=True)


def _run(opts: ReadOptions, cfg: CleanConfig, out: Path, name: str, scfg: StreamConfig,
         spill: Path) -> dict[str, Any]:
    cmap = opts.columns
    files = list_inputs(opts.path)
    total = estimate_rows(files, opts.file_format)
    n_buckets = max(1, math.ceil(total / scfg.bucket_rows))
    step = max(1, total // scfg.sample_rows)
    bounds = _boundaries(_user_sample(files, opts.file_format, cmap.user_id, step, scfg.chunk_rows),
                         n_buckets)
    n_buckets = bounds.len() + 1
    prio = quarantine_priority(cmap)
    clock = [time.perf_counter()]
    secs: dict[str, float] = {}

    def lap(phase: str) -> None:
        clock.append(time.perf_counter())
        secs[phase] = round(clock[-1] - clock[-2], 3)

    lap("sample")

    # 2. map chunk by chunk, spill events into user buckets
    rows_in = 0
    q_files: list[Path] = []
    for fi, f in enumerate(files):
        fmt = opts.file_format or detect_format(f)
        n_rows = n_bad = 0
        read_q: list[pl.DataFrame] = []
        map_q: list[pl.DataFrame] = []
        for ci, (df, rq) in enumerate(_chunks(f, fmt, scfg.chunk_rows)):
            rows_in += df.height + rq.height
            n_rows += df.height
            if rq.height:
                read_q.append(rq)
            ev, mq = map_events(df, cmap, str(f), check=False, keep_row=True)
            del df
            for part in mq:
                n_bad += part.height
                map_q.append(part.with_columns(pl.lit(prio[(part["column"][0], part["reason"][0])])
                                               .alias("__p")))
            ev = ev.lazy().select(*(pl.col(c).cast(t) if c in ev.columns else
                                    pl.lit(None, dtype=t).alias(c) for c, t in EVENT_SCHEMA.items()),
                                  pl.lit(fi, dtype=pl.UInt32).alias("__file"),
                                  pl.col("__row").cast(pl.UInt64)).collect()
            b = bounds.search_sorted(ev["user_id"], side="right") if bounds.len() else \
                pl.repeat(0, ev.height, eager=True, dtype=pl.UInt32)
            for (k,), part in ev.with_columns(b.alias("__b")).partition_by(
                    "__b", as_dict=True, include_key=False).items():
                _ipc(part, spill / "bucket" / f"{k:05d}" / f"{fi:06d}_{ci:06d}.ipc")
        if is_too_bad(n_bad, n_rows):
            first = min(map_q, key=lambda q: q["row"][0])
            raise too_many_bad(first.head(1), n_bad, n_rows, f)
        mq_all = (pl.concat(map_q).sort("__p", maintain_order=True).drop("__p")
                  if map_q else empty_quarantine())
        q = pl.concat([*read_q, mq_all])
        if q.height:
            q_files.append(spill / "quarantine" / f"{fi:06d}.ipc")
            _ipc(q, q_files[-1])

    lap("map")
    items, items_q, meta = read_catalogue(opts)  # after the events, as the reader does

    # 3. per bucket: sort, per-user rules, global item codes
    window = time_window(cfg)
    filtered: dict[str, int] = {}
    removed: dict[tuple[int, int], Path] = {}
    rule_ix: dict[str, int] = {}
    keys = pl.DataFrame(schema={"domain": pl.String, "item_id": pl.String, "code": pl.Int64})
    sizes: list[int] = []
    for b in range(n_buckets):
        parts = sorted((spill / "bucket" / f"{b:05d}").glob("*.ipc"))
        ev = (pl.read_ipc(parts[0]) if len(parts) == 1 else pl.concat([pl.read_ipc(p) for p in parts])
              ) if parts else pl.DataFrame(schema={**EVENT_SCHEMA, "__file": pl.UInt32,
                                                   "__row": pl.UInt64})
        ev = ev.sort("user_id", "timestamp", "__file", "__row").drop("__file", "__row")
        shutil.rmtree(spill / "bucket" / f"{b:05d}", ignore_errors=True)
        ev, counts, rows = apply_user_rules(ev, items, cfg, window)
        for rule, n in counts.items():
            filtered[rule] = filtered.get(rule, 0) + n
            rule_ix.setdefault(rule, len(rule_ix))
        for part in rows:
            removed[(rule_ix[part["rule"][0]], b)] = spill / "filtered" / f"{b:05d}_{part['rule'][0]}.ipc"
            _ipc(part, removed[(rule_ix[part["rule"][0]], b)])
        k = ev.select("domain", "item_id").join(keys, on=["domain", "item_id"], how="left",
                                                 nulls_equal=True, maintain_order="left")
        new = k.filter(pl.col("code").is_null()).select("domain", "item_id").unique(maintain_order=True)
        if new.height:
            keys = pl.concat([keys, new.with_columns(
                pl.int_range(keys.height, keys.height + new.height, dtype=pl.Int64).alias("code"))])
            k = ev.select("domain", "item_id").join(keys, on=["domain", "item_id"], how="left",
                                                     nulls_equal=True, maintain_order="left")
        np.save(spill / f"u{b:05d}.npy", user_codes(ev).astype(np.int32))
        np.save(spill / f"i{b:05d}.npy", k["code"].to_numpy().astype(np.int32))
        _ipc(ev, spill / "clean" / f"{b:05d}.ipc")
        sizes.append(ev.height)
        del ev, k

    lap("clean")

    # 4. iterative k-core across buckets
    iters = 0
    n_items = keys.height
    kcore_on = bool(cfg.kcore_user or cfg.kcore_item)
    if kcore_on:
        alive_total = sum(sizes)
        for b in range(n_buckets):
            np.save(spill / f"a{b:05d}.npy", np.ones(sizes[b], dtype=bool))
        while True:
            before, alive_total = alive_total, 0
            item_n = np.zeros(n_items, dtype=np.int64)
            for b in range(n_buckets):
                a = np.load(spill / f"a{b:05d}.npy")
                if cfg.kcore_user:
                    u = np.load(spill / f"u{b:05d}.npy")
                    a &= np.bincount(u[a], minlength=int(u.max(initial=0)) + 1)[u] >= cfg.kcore_user
                if cfg.kcore_item:
                    item_n += np.bincount(np.load(spill / f"i{b:05d}.npy")[a], minlength=n_items)
                else:
                    alive_total += int(a.sum())
                np.save(spill / f"a{b:05d}.npy", a)
            if cfg.kcore_item:
                for b in range(n_buckets):
                    a = np.load(spill / f"a{b:05d}.npy")
                    a &= item_n[np.load(spill / f"i{b:05d}.npy")] >= cfg.kcore_item
                    alive_total += int(a.sum())
                    np.save(spill / f"a{b:05d}.npy", a)
            iters += 1
            if alive_total == before:
                break
        filtered["kcore"] = filtered.get("kcore", 0) + sum(sizes) - alive_total
        rule_ix.setdefault("kcore", len(rule_ix))

    lap("kcore")

    # 5. final events per bucket, fingerprint and summary
    fp_cols = ["user_id", "item_id", "timestamp", "domain"]
    fp = hashlib.sha256()
    fp.update(",".join(f"{c}:{EVENT_SCHEMA[c]}" for c in fp_cols).encode())
    used = np.zeros(n_items, dtype=bool)
    n_users = n_events = 0
    t_min = t_max = None
    finals: list[Path] = []
    for b in range(n_buckets):
        ev = pl.read_ipc(spill / "clean" / f"{b:05d}.ipc")
        i = np.load(spill / f"i{b:05d}.npy")
        u = np.load(spill / f"u{b:05d}.npy")
        clean_file = spill / "clean" / f"{b:05d}.ipc"
        if kcore_on and not (a := np.load(spill / f"a{b:05d}.npy")).all():
            mask = pl.Series(a)
            if cfg.keep_filtered_rows:
                removed[(rule_ix["kcore"], b)] = spill / "filtered" / f"{b:05d}_kcore.ipc"
                _ipc(ev.filter(~mask).select(FILTER_COLS)
                     .with_columns(pl.all().cast(pl.String), pl.lit("kcore").alias("rule")),
                     removed[(rule_ix["kcore"], b)])
            ev, i, u = ev.filter(mask), i[a], u[a]
            clean_file = spill / "final" / f"{b:05d}.ipc"
            _ipc(ev, clean_file)
        if ev.height:
            used[i] = True
            n_users += int(np.count_nonzero(np.diff(u))) + 1  # u is sorted
            n_events += ev.height
            fp.update(ev.select(pl.struct(fp_cols).hash(seed=17))[:, 0].to_numpy().tobytes())
            lo, hi = ev["timestamp"].min(), ev["timestamp"].max()
            t_min = lo if t_min is None or lo < t_min else t_min
            t_max = hi if t_max is None or hi > t_max else t_max
            finals.append(clean_file)  # the bucket's cleaned events, rewritten only if k-core cut
        del ev
    used_keys = keys.filter(pl.Series(used)).select("domain", "item_id")
    kept_items = items.join(used_keys, on=["domain", "item_id"], how="semi", maintain_order="left")
    summary = {"users": n_users, "items": used_keys.height, "events": n_events,
               "domains": sorted(used_keys["domain"].unique().drop_nulls().to_list()),
               "time_span": [str(t_min), str(t_max)] if n_events else None,
               "catalogue_items": kept_items.height}
    q_lf = pl.scan_ipc(q_files) if q_files else empty_quarantine().lazy()
    q_stats = q_lf.group_by("reason").len().collect()
    n_q = int(q_stats["len"].sum()) if q_stats.height else 0
    sources = [str(f) for f in files] + ([str(opts.items)] if opts.items is not None else [])
    report = {
        "name": name,
        "sources": sources,
        "rows_in": rows_in,
        "accepted": n_events,
        "quarantined": n_q,
        "filtered_by_rule": filtered,
        "filtered_total": sum(filtered.values()),
        "balanced": rows_in == n_events + n_q + sum(filtered.values()),
        "kcore_iterations": iters,
        "catalogue": {"items_in": items.height, "items_kept": kept_items.height,
                      "items_quarantined": 0 if items_q is None else items_q.height},
        "quarantine_reasons": (q_stats.sort(["len", "reason"], descending=[True, False]).rows()
                               if n_q else []),
        "summary": summary,
        "config": {k: (v.value if isinstance(v, enum.Enum) else v) for k, v in cfg.__dict__.items()},
        "engine": {"name": Engine.STREAMING.value, "buckets": n_buckets,
                   "chunk_rows": scfg.chunk_rows, "bucket_rows": scfg.bucket_rows},
    }

    with atomic_dir(out) as tmp:
        if finals:
            pl.scan_ipc(finals).sink_parquet(tmp / "events.parquet")
        else:
            pl.DataFrame(schema=EVENT_SCHEMA).write_parquet(tmp / "events.parquet")
        kept_items.write_parquet(tmp / "items.parquet")
        write_dataset_manifest(tmp, name, fp.hexdigest()[:32], summary, meta,
                               {"ingest": {k: report[k] for k in ("rows_in", "accepted", "quarantined",
                                                                  "filtered_by_rule", "sources")}})
        qk = [q_lf.with_columns(pl.lit("event").alias("kind"))]
        if items_q is not None and items_q.height:
            qk.append(items_q.lazy().with_columns(pl.lit("item").alias("kind")))
        if n_q or len(qk) > 1:
            pl.concat(qk).sink_parquet(tmp / "quarantine.parquet")
        else:
            empty_quarantine().with_columns(pl.lit("event").alias("kind")).write_parquet(
                tmp / "quarantine.parquet")
        if removed:
            pl.scan_ipc([removed[k] for k in sorted(removed)]).sink_parquet(tmp / "filtered.parquet")
        lap("write")
        report["engine"]["seconds"] = secs
        write_json(tmp / "ingest_report.json", make_manifest("ingest_report", **report))
    return report
