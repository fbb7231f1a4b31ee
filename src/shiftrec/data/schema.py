"""The canonical schema: events and items as Polars frames, saved as Parquet + JSON manifest."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from shiftrec import SCHEMA_VERSION
from shiftrec.errors import InputError
from shiftrec.manifest import (
    atomic_dir,
    fingerprint_frame,
    make_manifest,
    read_json,
    require_complete,
    write_json,
)


class EventType(enum.StrEnum):
    VIEW = "view"
    CART = "cart"
    PURCHASE = "purchase"
    RATING = "rating"
    REVIEW = "review"


EVENT_TYPES = [e.value for e in EventType]
EVENT_TYPE_DTYPE = pl.Enum(EVENT_TYPES)
TS_DTYPE = pl.Datetime("us", "UTC")

EVENT_SCHEMA: dict[str, pl.DataType] = {
    "user_id": pl.String(),
    "item_id": pl.String(),
    "timestamp": TS_DTYPE,
    "event_type": EVENT_TYPE_DTYPE,
    "value": pl.Float64(),
    "domain": pl.String(),
    "session_id": pl.String(),
}
EVENT_REQUIRED = ("user_id", "item_id", "timestamp")

ITEM_SCHEMA: dict[str, pl.DataType] = {
    "item_id": pl.String(),
    "domain": pl.String(),
    "title": pl.String(),
    "category": pl.String(),  # path joined with " > "
    "brand": pl.String(),
    "description": pl.String(),
    "price": pl.Float64(),
}
CATEGORY_SEP = " > "


def conform_events(df: pl.DataFrame | pl.LazyFrame) -> pl.LazyFrame:
    """Add missing optional columns as nulls, cast, and order columns canonically."""
    lf = df.lazy()
    have = set(lf.collect_schema().names())
    exprs = []
    for name, dtype in EVENT_SCHEMA.items():
        if name in have:
            exprs.append(pl.col(name).cast(dtype))
        else:
            exprs.append(pl.lit(None, dtype=dtype).alias(name))
    return lf.select(exprs)


def conform_items(df: pl.DataFrame | pl.LazyFrame) -> pl.DataFrame:
    lf = df.lazy()
    have = set(lf.collect_schema().names())
    exprs = []
    for name, dtype in ITEM_SCHEMA.items():
        if name in have:
            exprs.append(pl.col(name).cast(dtype))
        else:
            exprs.append(pl.lit(None, dtype=dtype).alias(name))
    return lf.select(exprs).collect()


def empty_items() -> pl.DataFrame:
    return pl.DataFrame(schema=ITEM_SCHEMA)


@dataclass
class Dataset:
    """A clean canonical dataset: events (sorted by user, time) and an item catalogue."""

    events: pl.DataFrame
    items: pl.DataFrame
    name: str = "dataset"
    meta: dict[str, Any] = field(default_factory=dict)
    # (events frame, dense (domain, item) code per event), kept by clean() so that splits need
    # not recompute them; never saved, and used only while `events` is that very frame
    item_codes: Any = field(default=None, repr=False, compare=False)

    def codes(self) -> Any:
        """The cached item codes if they belong to the current events frame, else None."""
        ic = self.item_codes
        return ic[1] if isinstance(ic, tuple) and ic[0] is self.events else None

    @property
    def domains(self) -> list[str]:
        return sorted(self.events["domain"].unique().drop_nulls().to_list())

    def fingerprint(self) -> str:
        return fingerprint_frame(self.events.select("user_id", "item_id", "timestamp", "domain"))

    def summary(self) -> dict[str, Any]:
        ev = self.events
        ts = ev["timestamp"]
        return {
            "users": ev["user_id"].n_unique(),
            "items": ev.select("domain", "item_id").n_unique() if ev.height else 0,
            "events": ev.height,
            "domains": self.domains,
            "time_span": [str(ts.min()), str(ts.max())] if ev.height else None,
            "catalogue_items": self.items.height,
        }

    def write_into(self, folder: str | Path, extra: dict[str, Any] | None = None) -> Path:
        """Write events/items parquet + manifest into an existing folder (no marker, not atomic);
        use `save`, or call this inside `atomic_dir` with the other files of the folder."""
        out = Path(folder)
        self.events.write_parquet(out / "events.parquet")
        self.items.write_parquet(out / "items.parquet")
        write_dataset_manifest(out, self.name, self.fingerprint(), self.summary(), self.meta, extra)
        return out

    def save(self, out_dir: str | Path, extra: dict[str, Any] | None = None) -> Path:
        """Write the dataset folder atomically (temporary sibling, `_COMPLETE` marker, swap): a
        re-run never leaves files of an earlier run, a crash never leaves a half folder."""
        with atomic_dir(out_dir) as tmp:
            self.write_into(tmp, extra)
        return Path(out_dir)

    @classmethod
    def load(cls, path: str | Path) -> Dataset:
        """Alias of `open_dataset(path)` (kept for callers outside shiftrec.data)."""
        return open_dataset(path)


def write_dataset_manifest(folder: str | Path, name: str, fingerprint: str, counts: dict[str, Any],
                           meta: dict[str, Any], extra: dict[str, Any] | None = None) -> None:
    """The manifest.json of a dataset folder (`Dataset.write_into`; the out-of-core ingest writes
    events bucket by bucket and gives the fingerprint and counts it computed on the way)."""
    write_json(Path(folder) / "manifest.json", make_manifest(
        "dataset", name=name, schema_version=SCHEMA_VERSION, fingerprint=fingerprint,
        counts=counts, meta=meta, **(extra or {})))


def open_dataset(path: str | Path) -> Dataset:
    """The one way to read a dataset folder (written by `shiftrec ingest` / `Dataset.save`).

    Refused with one line: a missing or incomplete folder (no `_COMPLETE` marker), a manifest of
    another kind or schema version, unreadable Parquet, a column of the wrong dtype, and events
    whose content fingerprint differs from the manifest's.
    """
    p = require_complete(path, "dataset folder")
    mpath = p / "manifest.json"
    if not mpath.exists():
        raise InputError("not a shiftrec dataset folder (manifest.json missing)", path=p)
    man = read_json(mpath)
    if not isinstance(man, dict) or man.get("kind") != "dataset":
        kind = man.get("kind") if isinstance(man, dict) else None
        raise InputError(f"manifest kind is '{kind}', expected 'dataset'", path=mpath)
    if man.get("schema_version") != SCHEMA_VERSION:
        raise InputError(
            f"schema version {man.get('schema_version')} != supported {SCHEMA_VERSION}",
            path=mpath)
    frames = {}
    for f in ("events", "items"):
        fp = p / f"{f}.parquet"
        try:
            frames[f] = pl.read_parquet(fp)
        except FileNotFoundError:
            raise InputError("file missing from the dataset folder", path=fp) from None
        except Exception as e:  # noqa: BLE001 - polars/pyarrow raise many types for bad files
            raise InputError(f"cannot read as Parquet: {str(e).splitlines()[0]}", path=fp) from None
    events, items = frames["events"], frames["items"]
    for name, dtype in EVENT_SCHEMA.items():
        if events.schema.get(name) != dtype:
            raise InputError(f"events column has dtype {events.schema.get(name)}, expected {dtype}",
                             path=p / "events.parquet", column=name)
    ds = Dataset(events=events, items=items, name=man.get("name", p.name), meta=man.get("meta", {}))
    if ds.fingerprint() != man.get("fingerprint"):
        raise InputError("content fingerprint does not match manifest (file changed?)",
                         path=p / "events.parquet")
    return ds
