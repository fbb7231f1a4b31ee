"""The durable event store: SQLite (WAL, synchronous=FULL) or PostgreSQL, one code path.

Both speak DB-API 2 (stdlib `sqlite3`, `psycopg` 3); the SQL is the same but for the
placeholder and the key column. Every `append` is committed (fsync'd) before it returns: a
single writer thread per process gathers whatever batches are waiting into one transaction
(group commit), so many concurrent requests share one fsync without any being acknowledged
early. Events carry a unique `event_id` (the client's, one derived from an Idempotency-Key, or
a random one): `INSERT ... ON CONFLICT (event_id) DO NOTHING RETURNING event_id` stores a
retried event once, also across service processes sharing one PostgreSQL.

Rows keep arrival order (`seq`), the order replayed on restart and read by replicas catching
up (`events_after`). On PostgreSQL each write transaction first takes
`LOCK TABLE events IN SHARE ROW EXCLUSIVE MODE` (writers queue, readers never wait), so `seq`
values are handed out in commit order: a replica that has read every event up to seq S never
later sees a smaller seq commit (gaps left by ON CONFLICT DO NOTHING are never filled).
"""

from __future__ import annotations

import queue
import sqlite3
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shiftrec.errors import ConfigError, InputError

EVENT_COLS = ("event_id", "user_id", "item_id", "domain", "ts_us", "event_type", "value",
              "session_id", "received_us")
ITEM_COLS = ("item_id", "domain", "title", "category", "brand", "price", "description",
             "added_us")
_ROWS_PER_STATEMENT = 400


@dataclass(frozen=True)
class StoredEvent:
    event_id: str
    user_id: str
    item_id: str
    domain: str | None
    ts_us: int
    event_type: str
    value: float | None = None
    session_id: str | None = None
    received_us: int = 0

    def row(self) -> tuple[Any, ...]:
        return (self.event_id, self.user_id, self.item_id, self.domain, self.ts_us,
                self.event_type, self.value, self.session_id, self.received_us)


class _Dialect:
    name = "sqlite"
    ph = "?"
    seq = "seq INTEGER PRIMARY KEY AUTOINCREMENT"

    def connect(self, target: str) -> Any:
        raise NotImplementedError


class _SQLite(_Dialect):
    def connect(self, target: str) -> Any:
        con = sqlite3.connect(target, timeout=30.0, check_same_thread=False,
                              isolation_level=None)
        con.execute("PRAGMA journal_mode=WAL")
        con.execute("PRAGMA synchronous=FULL")
        con.execute("PRAGMA busy_timeout=30000")
        return con


class _Postgres(_Dialect):
    name = "postgresql"
    ph = "%s"
    seq = "seq BIGSERIAL PRIMARY KEY"

    def connect(self, target: str) -> Any:
        try:
            import psycopg
        except ImportError:  # pragma: no cover - psycopg is a dependency
            raise ConfigError("PostgreSQL stores need psycopg: pip install 'psycopg[binary]'") \
                from None
        try:
            return psycopg.connect(target, autocommit=True)
        except psycopg.Error as e:
            msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ConfigError(f"cannot connect to the PostgreSQL store: {msg}") from None


def parse_url(url: str) -> tuple[_Dialect, str]:
    """sqlite:///relative/or//absolute/path, sqlite:///:memory: is refused (not durable);
    postgresql://user@host:port/db (or postgres://)."""
    if url.startswith("sqlite:///"):
        path = url[len("sqlite:///"):]
        if not path or path == ":memory:":
            raise ConfigError(f"store URL '{url}' names no file (an in-memory store is not "
                              "durable)")
        return _SQLite(), path
    if url.startswith(("postgresql://", "postgres://", "postgresql+psycopg://")):
        return _Postgres(), url.replace("postgresql+psycopg://", "postgresql://", 1)
    raise ConfigError(f"unknown store URL '{url}': use sqlite:///PATH or postgresql://...")


def redact(url: str) -> str:
    """The URL without a password."""
    if "://" in url and "@" in url:
        scheme, rest = url.split("://", 1)
        cred, host = rest.rsplit("@", 1)
        return f"{scheme}://{cred.split(':', 1)[0]}@{host}"
    return url


class EventStore:
    """Durable append-only event log + the items added at run time."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.dialect, self.target = parse_url(url)
        if isinstance(self.dialect, _SQLite):
            Path(self.target).parent.mkdir(parents=True, exist_ok=True)
        self._con = self.dialect.connect(self.target)
        self._init_schema()
        self._q: queue.Queue[tuple[str, list[Any], Future] | None] = queue.Queue()
        self._closed = False
        self._reader: Any = None
        self._read_lock = threading.Lock()
        self.commits = 0
        self._writer = threading.Thread(target=self._writer_loop, name="event-store-writer",
                                        daemon=True)
        self._writer.start()

    # ------------------------------------------------------------------ schema
    def _init_schema(self) -> None:
        d = self.dialect
        cur = self._con.cursor()
        if isinstance(d, _Postgres):  # two replicas starting at once: one creates the tables
            cur.execute("SELECT pg_advisory_lock(724411)")
        try:
            cur.execute(f"CREATE TABLE IF NOT EXISTS events ({d.seq}, event_id TEXT NOT NULL "
                        "UNIQUE, user_id TEXT NOT NULL, item_id TEXT NOT NULL, domain TEXT, "
                        "ts_us BIGINT NOT NULL, event_type TEXT NOT NULL, value DOUBLE PRECISION,"
                        " session_id TEXT, received_us BIGINT NOT NULL)")
            cur.execute("CREATE TABLE IF NOT EXISTS items (item_id TEXT PRIMARY KEY, domain "
                        "TEXT, title TEXT, category TEXT, brand TEXT, price DOUBLE PRECISION, "
                        "description TEXT, added_us BIGINT NOT NULL)")
        finally:
            if isinstance(d, _Postgres):
                cur.execute("SELECT pg_advisory_unlock(724411)")

    # ------------------------------------------------------------------ writes
    def _writer_loop(self) -> None:
        while True:
            first = self._q.get()
            if first is None:
                return
            jobs = [first]
            stop = False
            while len(jobs) < 256:
                try:
                    nxt = self._q.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    stop = True
                    break
                jobs.append(nxt)
            self._run_jobs(jobs)
            if stop:
                return

    def _run_jobs(self, jobs: list[tuple[str, list[Any], Future]]) -> None:
        cur = self._con.cursor()
        try:
            cur.execute("BEGIN")
            if isinstance(self.dialect, _Postgres):  # seq in commit order across replicas
                cur.execute("LOCK TABLE events IN SHARE ROW EXCLUSIVE MODE")
            results = []
            for kind, rows, _ in jobs:
                results.append(self._insert(cur, kind, rows))
            cur.execute("COMMIT")
            self.commits += 1
        except Exception as e:  # noqa: BLE001 - every waiting request must hear of it
            try:
                cur.execute("ROLLBACK")
            except Exception:  # noqa: BLE001
                pass
            for _, _, fut in jobs:
                fut.set_exception(e)
            return
        for (_, _, fut), res in zip(jobs, results, strict=True):
            fut.set_result(res)

    def _insert(self, cur: Any, kind: str, rows: list[tuple[Any, ...]]) -> list[bool]:
        cols = EVENT_COLS if kind == "events" else ITEM_COLS
        key = "event_id" if kind == "events" else "item_id"
        inserted: set[str] = set()
        one = "(" + ", ".join([self.dialect.ph] * len(cols)) + ")"
        for a in range(0, len(rows), _ROWS_PER_STATEMENT):
            chunk = rows[a:a + _ROWS_PER_STATEMENT]
            sql = (f"INSERT INTO {kind} ({', '.join(cols)}) VALUES "
                   + ", ".join([one] * len(chunk))
                   + f" ON CONFLICT ({key}) DO NOTHING RETURNING {key}")
            cur.execute(sql, [v for r in chunk for v in r])
            inserted.update(r[0] for r in cur.fetchall())
        out = []
        for r in rows:  # the first occurrence of a key in the batch is the stored one
            out.append(r[0] in inserted)
            inserted.discard(r[0])
        return out

    def _submit(self, kind: str, rows: list[tuple[Any, ...]], timeout: float) -> list[bool]:
        if self._closed:
            raise InputError("the event store is closed")
        if not rows:
            return []
        fut: Future = Future()
        self._q.put((kind, rows, fut))
        return fut.result(timeout=timeout)

    def append(self, events: list[StoredEvent], timeout: float = 60.0) -> list[bool]:
        """Store events durably (committed when this returns); per event, True when it was
        stored now and False when its event_id was already stored."""
        return self._submit("events", [e.row() for e in events], timeout)

    def add_items(self, items: list[dict[str, Any]], timeout: float = 60.0) -> list[bool]:
        now = int(time.time() * 1e6)
        rows = [(str(it["item_id"]), it.get("domain"), it.get("title"), it.get("category"),
                 it.get("brand"), it.get("price"), it.get("description"), now) for it in items]
        return self._submit("items", rows, timeout)

    # ------------------------------------------------------------------ reads
    def _read_con(self) -> Any:
        return self.dialect.connect(self.target)

    def _kept_reader(self) -> Any:
        """The one kept reader connection, opened on first use (hold `_read_lock`)."""
        if self._reader is None:
            self._reader = self._read_con()
        return self._reader

    def _rows_after(self, con: Any, seq: int, limit: int) -> list[tuple[Any, ...]]:
        """(seq, *EVENT_COLS) rows with seq > `seq`, in order, at most `limit`, read on `con`."""
        cur = con.cursor()
        cur.execute(f"SELECT seq, {', '.join(EVENT_COLS)} FROM events WHERE seq > "
                    f"{self.dialect.ph} ORDER BY seq LIMIT {int(limit)}", (int(seq),))
        return cur.fetchall()

    def iter_events(self, after_seq: int = 0, batch: int = 50_000) -> Iterator[tuple[Any, ...]]:
        """(seq, *EVENT_COLS) rows in arrival order."""
        con = self._read_con()
        try:
            last = after_seq
            while True:
                rows = self._rows_after(con, last, batch)
                if not rows:
                    return
                yield from rows
                last = rows[-1][0]
        finally:
            con.close()

    def events_after(self, seq: int, limit: int = 50_000) -> list[tuple[Any, ...]]:
        """(seq, *EVENT_COLS) rows with seq > `seq`, in order, at most `limit`; one kept
        reader connection (autocommit: each call sees every commit so far)."""
        with self._read_lock:
            return self._rows_after(self._kept_reader(), seq, limit)

    def event_id_at(self, seq: int) -> str | None:
        with self._read_lock:
            cur = self._kept_reader().cursor()
            cur.execute(f"SELECT event_id FROM events WHERE seq = {self.dialect.ph}", (int(seq),))
            row = cur.fetchone()
            return None if row is None else str(row[0])

    def items(self) -> list[dict[str, Any]]:
        con = self._read_con()
        try:
            cur = con.cursor()
            cur.execute(f"SELECT {', '.join(ITEM_COLS)} FROM items ORDER BY added_us, item_id")
            return [dict(zip(ITEM_COLS, r, strict=True)) for r in cur.fetchall()]
        finally:
            con.close()

    def count(self) -> int:
        con = self._read_con()
        try:
            cur = con.cursor()
            cur.execute("SELECT COUNT(*) FROM events")
            return int(cur.fetchone()[0])
        finally:
            con.close()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._q.put(None)
            self._writer.join(timeout=30)
            self._con.close()
            with self._read_lock:
                if self._reader is not None:
                    self._reader.close()
                    self._reader = None


def default_store_url(run_dir: str | Path) -> str:
    """RUN_DIR/../events.sqlite."""
    return f"sqlite:///{(Path(run_dir).resolve().parent / 'events.sqlite')}"


def export_events(store: EventStore, out_dir: str | Path, name: str = "live-events") -> Path:
    """Write the stored events as a canonical dataset folder (data.schema: events.parquet,
    items.parquet, manifest.json) that `shiftrec ingest`/training read."""
    import polars as pl

    from shiftrec.data.schema import Dataset, conform_events, conform_items

    rows = list(store.iter_events())
    cols = ("seq", *EVENT_COLS)
    data = {c: [r[i] for r in rows] for i, c in enumerate(cols)}
    df = pl.DataFrame({"user_id": pl.Series(data["user_id"], dtype=pl.String),
                       "item_id": pl.Series(data["item_id"], dtype=pl.String),
                       "timestamp": pl.Series(data["ts_us"], dtype=pl.Int64),
                       "event_type": pl.Series(data["event_type"], dtype=pl.String),
                       "value": pl.Series(data["value"], dtype=pl.Float64),
                       "domain": pl.Series(data["domain"], dtype=pl.String),
                       "session_id": pl.Series(data["session_id"], dtype=pl.String)})
    df = df.with_columns(pl.col("timestamp").cast(pl.Datetime("us", "UTC")))
    events = conform_events(df).collect().sort("user_id", "timestamp", maintain_order=True)
    items = conform_items(pl.DataFrame(store.items(), schema={
        "item_id": pl.String, "domain": pl.String, "title": pl.String, "category": pl.String,
        "brand": pl.String, "price": pl.Float64, "description": pl.String, "added_us": pl.Int64})
        .drop("added_us"))
    ds = Dataset(events=events, items=items, name=name,
                 meta={"source": "shiftrec event store", "store": redact(store.url)})
    from shiftrec.manifest import atomic_dir

    with atomic_dir(out_dir) as tmp:
        ds.save(tmp, extra={"exported_events": len(rows)})
    return Path(out_dir)
