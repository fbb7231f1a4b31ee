"""Out-of-core ingest (`shiftrec ingest generic DIR_OR_GLOB --engine streaming`).

Peak memory does not grow with the number of events: each process holds one chunk of input
rows (`StreamConfig.chunk_rows`) or one user bucket (`bucket_rows`) at a time, about 0.8 GiB
with the defaults (measured: the largest process peaks at 0.8-0.9 GiB from 10M to 100M
events); the driver also holds state that grows with the number of distinct items (the item
dictionary and counts) and the item catalogue, never with events. The per-file and per-bucket
tasks run in `workers` processes (default min(4, CPUs)), so all processes together stay near
(workers + 1) x 0.8 GiB; `--engine ray` runs the same tasks on a Ray cluster. The result is the in-memory engine's, exactly (tests/data/test_out_of_core.py): the
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
    RAY = "ray"  # the streaming engine's tasks on a Ray cluster (`RayRunner`)


#: `--engine auto` streams inputs estimated above this many rows (Parquet: exact, from the file
#: metadata; text: bytes / 40, gzip x 4). The in-memory engine peaks near 250 bytes per event
#: (2.4-2.5 GiB at 10M events, bench/results/ingest_scale.json).
AUTO_STREAMING_ROWS = 5_000_000


@dataclass(frozen=True)
class StreamConfig:
    chunk_rows: int = 1_000_000  # input rows mapped at a time (Parquet; a text file is one chunk)
    bucket_rows: int = 2_000_000  # target events per user bucket (cleaned in memory at once)
    sample_rows: int = 200_000  # user ids sampled to cut the buckets
    workers: int = 0  # processes running the per-file / per-bucket tasks (0: min(4, CPUs))
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


def _user_sample(files: list[Path], fmt: str | None, col: str, step: int) -> pl.Series:
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
                     scfg: StreamConfig | None = None, runner: Runner | None = None
                     ) -> dict[str, Any]:
    """Read `opts.path` (a file, folder or glob of generic event files), clean and write the
    dataset folder like `pipeline.ingest` does, out of core. Returns the ingest report.

    `runner` runs the per-file and per-bucket tasks (default: one after another in this process;
    `ray_runner` spreads them over a Ray cluster); the result does not depend on it."""
    scfg = scfg or StreamConfig()
    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    spill = Path(tempfile.mkdtemp(dir=scfg.spill_dir or out.parent, prefix=f".{out.name}.spill."))
    if runner is None:
        import os

        n = scfg.workers or min(4, os.cpu_count() or 1)
        runner = PoolRunner(n) if n > 1 else LocalRunner()
    try:
        return _run(opts, cfg, out, name, scfg, spill, runner)
    finally:
        runner.close()
        shutil.rmtree(spill, ignore_errors=True)


class Runner:
    """Runs `fn(**shared, **item)` for each item and returns the results in item order; the
    first ShiftrecError in item order is raised (as a sequential loop would raise it)."""

    name = "streaming"
    workers: int | None = 1  # tasks that can run at once (None: not known)

    def __init__(self) -> None:
        self.pids: set[int] = set()  # the processes that ran tasks

    def map(self, fn: Any, shared: dict[str, Any], items: list[dict[str, Any]]) -> list[Any]:
        raise NotImplementedError

    def close(self) -> None:  # noqa: B027 - optional hook
        pass


def _call(fn: Any, shared: dict[str, Any], kw: dict[str, Any]) -> dict[str, Any]:
    """fn(**shared, **kw), a ShiftrecError returned as data (re-raised by `_raise_first`)."""
    import os

    from shiftrec.errors import ShiftrecError

    try:
        res = fn(**shared, **kw)
    except ShiftrecError as e:
        res = {"__error": {"cls": type(e).__name__, "message": e.message, "path": e.path,
                           "row": e.row, "column": e.column}}
    return {"__pid": os.getpid(), "res": res}


def _raise_first(results: list[dict[str, Any]]) -> list[Any]:
    """The results, or the first error in item order, as a sequential loop would raise it."""
    from shiftrec import errors

    for r in results:
        if isinstance(r, dict) and "__error" in r:
            e = r["__error"]
            raise getattr(errors, e["cls"])(e["message"], path=e["path"], row=e["row"],
                                             column=e["column"])
    return results


class PoolRunner(Runner):
    """The tasks in `workers` local processes (spawned once per ingest): peak memory is about
    `workers` + 1 times one task's."""

    def __init__(self, workers: int) -> None:
        super().__init__()
        self.workers = workers
        self._pool: Any = None

    def map(self, fn: Any, shared: dict[str, Any], items: list[dict[str, Any]]) -> list[Any]:
        if self._pool is None:
            import multiprocessing as mp
            from concurrent.futures import ProcessPoolExecutor

            self._pool = ProcessPoolExecutor(self.workers, mp_context=mp.get_context("spawn"))
        out = [f.result() for f in [self._pool.submit(_call, fn, shared, it) for it in items]]
        self.pids.update(r["__pid"] for r in out)
        return _raise_first([r["res"] for r in out])

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None


class LocalRunner(Runner):
    def map(self, fn: Any, shared: dict[str, Any], items: list[dict[str, Any]]) -> list[Any]:
        import os

        self.pids.add(os.getpid())
        return [fn(**shared, **it) for it in items]


class RayRunner(Runner):
    """The tasks as Ray Data map tasks (one block per file or bucket, 1 CPU each) on a Ray cluster:
    the running one if this process is connected, else `ray.init(address)` (None: the cluster
    named by RAY_ADDRESS, else a new local one). Every worker needs shiftrec installed and must
    see the inputs, the output's parent folder and the spill folder at the same paths (shared
    storage such as NFS); the driver runs the k-core passes and writes the output."""

    name = "ray"

    def __init__(self, address: str | None = None, num_cpus: int | None = None) -> None:
        super().__init__()
        connect_ray(address, num_cpus)
        self.workers = None  # known once tasks run (map)

    def map(self, fn: Any, shared: dict[str, Any], items: list[dict[str, Any]]) -> list[Any]:
        import json

        import ray.data

        # every task takes 1 CPU, so the cluster's CPUs are the tasks that can run at once (as
        # RayEncoder counts its workers); the most seen, as an autoscaling cluster can grow
        cpus = int(ray.cluster_resources().get("CPU", 0))
        self.workers = max(self.workers or 0, cpus) or None
        ray.data.DataContext.get_current().execution_options.preserve_order = True
        rows = [{"__i": k, **it} for k, it in enumerate(items)]
        ds = ray.data.from_items(rows, override_num_blocks=max(1, len(rows)))
        out = ds.map(_ray_task, fn_kwargs={"fn": fn, "shared": shared}, num_cpus=1).take_all()
        res = [json.loads(r["json"]) for r in sorted(out, key=lambda r: r["__i"])]
        self.pids.update(r["__pid"] for r in res)
        return _raise_first([r["res"] for r in res])


def connect_ray(address: str | None, num_cpus: int | None) -> Any:
    """The `ray` module, connected (ingest and encode share this): the running connection, else
    `ray.init(address)` after checking the address answers, else a new local Ray with `num_cpus`
    CPUs. Every failure is one ConfigError line."""
    from shiftrec.errors import ConfigError

    try:
        import ray
    except ImportError:
        raise ConfigError("--engine ray needs Ray: pip install 'shiftrec[ray]' (ray[data])") from None
    if not ray.is_initialized():
        if address:
            _check_reachable(address)
        kw: dict[str, Any] = {"address": address} if address else \
            {"num_cpus": num_cpus, "include_dashboard": False}
        try:
            ray.init(**kw, log_to_driver=False)
        except (ConnectionError, RuntimeError, ValueError) as e:
            raise ConfigError(f"cannot start or join Ray (address {address or 'local'}): "
                              f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    return ray


def _check_reachable(address: str) -> None:
    """A ConfigError at once (not a minutes-long Ray timeout) for an address that is malformed
    or whose port does not answer; 'auto' is left to Ray."""
    import socket

    from shiftrec.errors import ConfigError

    if address == "auto":
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"--address must be 'auto', HOST:PORT or ray://HOST:PORT, not '{address}'")
    try:
        socket.create_connection((host, int(port)), timeout=3).close()
    except OSError as e:
        raise ConfigError(f"cannot reach the Ray cluster at {address}: {e.strerror or e}") from None


def _ray_task(row: dict[str, Any], fn: Any, shared: dict[str, Any]) -> dict[str, Any]:
    import json

    return {"__i": row["__i"], "json": json.dumps(_call(fn, shared, {k: v for k, v in row.items()
                                                                    if k != "__i"}))}


# ---- the tasks: each reads and writes only its own files under the spill folder ----------------

def map_file(spill: str, fi: int, path: str, opts: ReadOptions, bounds: pl.Series,
             chunk_rows: int) -> dict[str, Any]:
    """Map file `fi` chunk by chunk into user-bucket parts; its quarantine in file order (the
    reader's parts: read-level, then each fault in `map_events` order)."""
    f, sp = Path(path), Path(spill)
    cmap = opts.columns
    prio = quarantine_priority(cmap)
    fmt = opts.file_format or detect_format(f)
    rows_in = n_rows = n_bad = 0
    read_q: list[pl.DataFrame] = []
    map_q: list[pl.DataFrame] = []
    for ci, (df, rq) in enumerate(_chunks(f, fmt, chunk_rows)):
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
            _ipc(part, sp / "bucket" / f"{k:05d}" / f"{fi:06d}_{ci:06d}.ipc")
    if is_too_bad(n_bad, n_rows):
        first = min(map_q, key=lambda q: q["row"][0])
        raise too_many_bad(first.head(1), n_bad, n_rows, f)
    mq_all = (pl.concat(map_q).sort("__p", maintain_order=True).drop("__p")
              if map_q else empty_quarantine())
    q = pl.concat([*read_q, mq_all])
    qf = None
    if q.height:
        qf = str(sp / "quarantine" / f"{fi:06d}.ipc")
        _ipc(q, Path(qf))
    return {"rows_in": rows_in, "quarantine": qf}


def clean_bucket(spill: str, b: int, items: pl.DataFrame, cfg: CleanConfig,
                 window: tuple[Any, Any]) -> dict[str, Any]:
    """Sort bucket `b` as the in-memory engine sorts, apply the per-user rules; write its events,
    user codes, distinct item keys (first-seen order) and each event's index into them."""
    sp = Path(spill)
    parts = sorted((sp / "bucket" / f"{b:05d}").glob("*.ipc"))
    ev = (pl.concat([pl.read_ipc(p) for p in parts]) if parts else
          pl.DataFrame(schema={**EVENT_SCHEMA, "__file": pl.UInt32, "__row": pl.UInt64}))
    ev = ev.sort("user_id", "timestamp", "__file", "__row").drop("__file", "__row")
    shutil.rmtree(sp / "bucket" / f"{b:05d}", ignore_errors=True)
    ev, counts, rows = apply_user_rules(ev, items, cfg, window)
    removed = {}
    for part in rows:
        rule = part["rule"][0]
        removed[rule] = str(sp / "filtered" / f"{b:05d}_{rule}.ipc")
        _ipc(part, Path(removed[rule]))
    k = ev.select("domain", "item_id")
    keys = k.unique(maintain_order=True).with_row_index("__k")
    idx = k.join(keys, on=["domain", "item_id"], how="left", nulls_equal=True,
                 maintain_order="left")["__k"]
    _ipc(keys.drop("__k"), sp / "keys" / f"{b:05d}.ipc")
    np.save(sp / f"u{b:05d}.npy", user_codes(ev).astype(np.int32))
    np.save(sp / f"l{b:05d}.npy", idx.to_numpy().astype(np.int32))
    _ipc(ev, sp / "clean" / f"{b:05d}.ipc")
    return {"counts": counts, "removed": removed, "size": ev.height}


def finish_bucket(spill: str, b: int, kcore_on: bool, keep_rows: bool) -> dict[str, Any]:
    """Bucket `b` after the k-core: its final events file, the k-core's removed rows, the row
    hashes of the content fingerprint, the item codes it uses and its counts."""
    sp = Path(spill)
    ev = pl.read_ipc(sp / "clean" / f"{b:05d}.ipc")
    i = np.load(sp / f"i{b:05d}.npy")
    u = np.load(sp / f"u{b:05d}.npy")
    final = sp / "clean" / f"{b:05d}.ipc"
    removed = None
    if kcore_on and not (a := np.load(sp / f"a{b:05d}.npy")).all():
        mask = pl.Series(a)
        if keep_rows:
            removed = str(sp / "filtered" / f"{b:05d}_kcore.ipc")
            _ipc(ev.filter(~mask).select(FILTER_COLS)
                 .with_columns(pl.all().cast(pl.String), pl.lit("kcore").alias("rule")), Path(removed))
        ev, i, u = ev.filter(mask), i[a], u[a]
        final = sp / "final" / f"{b:05d}.ipc"  # rewritten only when the k-core cut the bucket
        _ipc(ev, final)
    res: dict[str, Any] = {"events": ev.height, "removed": removed, "final": None}
    if ev.height:
        np.save(sp / f"used{b:05d}.npy", np.unique(i))
        np.save(sp / f"h{b:05d}.npy", ev.select(pl.struct(FP_COLS).hash(seed=17))[:, 0].to_numpy())
        ts = ev["timestamp"].dt.epoch("us")
        res.update(users=int(np.count_nonzero(np.diff(u))) + 1,  # u is sorted
                   t_min=int(ts.min()), t_max=int(ts.max()), final=str(final))
    return res


FP_COLS = ["user_id", "item_id", "timestamp", "domain"]


def _run(opts: ReadOptions, cfg: CleanConfig, out: Path, name: str, scfg: StreamConfig,
         spill: Path, runner: Runner) -> dict[str, Any]:
    clock = [time.perf_counter()]
    secs: dict[str, float] = {}

    def lap(phase: str) -> None:
        clock.append(time.perf_counter())
        secs[phase] = round(clock[-1] - clock[-2], 3)

    # 1. cut users into buckets
    files = list_inputs(opts.path)
    total = estimate_rows(files, opts.file_format)
    step = max(1, total // scfg.sample_rows)
    bounds = _boundaries(_user_sample(files, opts.file_format, opts.columns.user_id, step),
                         max(1, math.ceil(total / scfg.bucket_rows)))
    n_buckets = bounds.len() + 1
    lap("sample")

    # 2. map every file into the buckets
    mapped = runner.map(map_file, {"spill": str(spill), "opts": opts, "bounds": bounds,
                                   "chunk_rows": scfg.chunk_rows},
                        [{"fi": fi, "path": str(f)} for fi, f in enumerate(files)])
    rows_in = sum(m["rows_in"] for m in mapped)
    q_files = [Path(m["quarantine"]) for m in mapped if m["quarantine"]]
    lap("map")
    items, items_q, meta = read_catalogue(opts)  # after the events, as the reader does

    # 3. clean every bucket; global item codes from the buckets' keys, in bucket order
    cleaned = runner.map(clean_bucket, {"spill": str(spill), "items": items, "cfg": cfg,
                                        "window": time_window(cfg)},
                         [{"b": b} for b in range(n_buckets)])
    filtered: dict[str, int] = {}
    rule_ix: dict[str, int] = {}
    removed: dict[tuple[int, int], Path] = {}
    for b, c in enumerate(cleaned):
        for rule, n in c["counts"].items():
            filtered[rule] = filtered.get(rule, 0) + n
            rule_ix.setdefault(rule, len(rule_ix))
        for rule, path in c["removed"].items():
            removed[(rule_ix[rule], b)] = Path(path)
    keys = pl.DataFrame(schema={"domain": pl.String, "item_id": pl.String, "code": pl.Int64})
    for b in range(n_buckets):
        kb = pl.read_ipc(spill / "keys" / f"{b:05d}.ipc")  # distinct keys of the bucket
        code = kb.join(keys, on=["domain", "item_id"], how="left", nulls_equal=True,
                       maintain_order="left")["code"]
        fresh = code.is_null()
        n_new = int(fresh.sum())
        g = code.fill_null(0).to_numpy().copy()
        if n_new:  # keys not seen in earlier buckets get the next codes, in first-seen order
            g[fresh.to_numpy()] = np.arange(keys.height, keys.height + n_new)
            keys = pl.concat([keys, kb.filter(fresh).with_columns(
                pl.int_range(keys.height, keys.height + n_new, dtype=pl.Int64).alias("code"))])
        np.save(spill / f"i{b:05d}.npy", g[np.load(spill / f"l{b:05d}.npy")].astype(np.int32))
    sizes = [c["size"] for c in cleaned]
    lap("clean")

    # 4. iterative k-core across buckets (the driver streams the buckets' code arrays)
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

    # 5. final events per bucket; fingerprint (row hashes in bucket order) and summary
    done = runner.map(finish_bucket, {"spill": str(spill), "kcore_on": kcore_on,
                                      "keep_rows": cfg.keep_filtered_rows},
                      [{"b": b} for b in range(n_buckets)])
    lap("finish")
    fp = hashlib.sha256()
    fp.update(",".join(f"{c}:{EVENT_SCHEMA[c]}" for c in FP_COLS).encode())
    used = np.zeros(n_items, dtype=bool)
    finals: list[Path] = []
    for b, d in enumerate(done):
        if d["removed"]:
            removed[(rule_ix["kcore"], b)] = Path(d["removed"])
        if d["final"]:
            finals.append(Path(d["final"]))
            used[np.load(spill / f"used{b:05d}.npy")] = True
            fp.update(np.load(spill / f"h{b:05d}.npy").tobytes())
    n_events = sum(d["events"] for d in done)
    n_users = sum(d.get("users", 0) for d in done)
    span = None
    if n_events:
        us = pl.Series([min(d["t_min"] for d in done if d["final"]),
                        max(d["t_max"] for d in done if d["final"])]).cast(pl.Datetime("us"))
        span = [str(t) for t in us.dt.replace_time_zone("UTC")]
    used_keys = keys.filter(pl.Series(used)).select("domain", "item_id")
    kept_items = items.join(used_keys, on=["domain", "item_id"], how="semi", maintain_order="left")
    summary = {"users": n_users, "items": used_keys.height, "events": n_events,
               "domains": sorted(used_keys["domain"].unique().drop_nulls().to_list()),
               "time_span": span, "catalogue_items": kept_items.height}
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
        "engine": {"name": runner.name, "buckets": n_buckets,
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
        report["engine"]["task_processes"] = len(runner.pids)
        report["engine"]["workers"] = getattr(runner, "workers", None)
        write_json(tmp / "ingest_report.json", make_manifest("ingest_report", **report))
    return report
