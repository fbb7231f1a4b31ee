"""Shared pieces for readers: the ReadResult, quarantine rows, file checks, timestamp parsing."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from shiftrec.data.schema import conform_events, empty_items
from shiftrec.errors import InputError

QUARANTINE_SCHEMA = {
    "source_file": pl.String(),
    "row": pl.Int64(),
    "column": pl.String(),
    "reason": pl.String(),
    "raw": pl.String(),
}


def empty_quarantine() -> pl.DataFrame:
    return pl.DataFrame(schema=QUARANTINE_SCHEMA)


@dataclass
class ReadResult:
    """What a reader returns: parsed events, the item catalogue, quarantined rows, rule counts.

    Invariant: rows_in == events.height + quarantine.height + sum(filtered.values())
    """

    events: pl.DataFrame
    items: pl.DataFrame
    quarantine: pl.DataFrame
    rows_in: int
    filtered: dict[str, int] = field(default_factory=dict)
    filtered_rows: pl.DataFrame | None = None
    sources: list[str] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)
    items_quarantine: pl.DataFrame | None = None  # catalogue rows rejected (not event rows)

    @staticmethod
    def concat(parts: list[ReadResult]) -> ReadResult:
        filtered: dict[str, int] = {}
        for p in parts:
            for k, v in p.filtered.items():
                filtered[k] = filtered.get(k, 0) + v
        fr = [p.filtered_rows for p in parts if p.filtered_rows is not None]
        items = pl.concat([p.items for p in parts], how="vertical") if parts else empty_items()
        meta: dict[str, Any] = {}
        for p in parts:
            meta.update(p.meta)
        return ReadResult(
            events=pl.concat([p.events for p in parts], how="vertical"),
            items=items.unique(["domain", "item_id"], keep="first", maintain_order=True),
            quarantine=pl.concat([p.quarantine for p in parts], how="vertical"),
            rows_in=sum(p.rows_in for p in parts),
            filtered=filtered,
            filtered_rows=pl.concat(fr, how="diagonal_relaxed") if fr else None,
            sources=[s for p in parts for s in p.sources],
            meta=meta,
            items_quarantine=pl.concat([p.items_quarantine for p in parts if p.items_quarantine is not None])
            if any(p.items_quarantine is not None for p in parts) else None,
        )


def check_file(path: str | Path) -> Path:
    p = Path(path)
    if not p.exists():
        raise InputError("file not found", path=p)
    if p.is_dir():
        raise InputError("expected a file, got a folder", path=p)
    if p.stat().st_size == 0:
        raise InputError("file is empty", path=p)
    return p


def require_columns(path: Path, have: list[str], required: list[str]) -> None:
    for c in required:
        if c not in have:
            raise InputError(f"required column missing (columns present: {', '.join(have)})",
                             path=path, column=c)


def find_invalid_utf8(path: Path) -> tuple[int, int] | None:
    """Return (1-based line, byte offset in line) of the first invalid UTF-8 sequence, or None."""
    opener = _opener(path)
    with opener(path, "rb") as f:
        for lineno, line in enumerate(f, start=1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError as e:
                return lineno, e.start
    return None


def _opener(path: Path):  # noqa: ANN202
    if path.suffix == ".gz":
        import gzip

        return gzip.open
    return open


def raise_invalid_utf8(path: Path, sep: str | None = ",", header: bool = True) -> None:
    hit = find_invalid_utf8(path)
    if hit is None:
        return
    lineno, offset = hit
    column = None
    if sep is not None:
        with _opener(path)(path, "rb") as f:
            lines = f.read().split(b"\n")
        head = lines[0].decode("utf-8", "replace").rstrip("\r").split(sep) if header else []
        field_idx = lines[lineno - 1][:offset].count(sep.encode())
        if field_idx < len(head):
            column = head[field_idx]
    row = lineno - 1 if header else lineno
    raise InputError(f"invalid UTF-8 (byte {offset} of line {lineno})", path=path, row=row,
                     column=column)


def quarantine_rows(df: pl.DataFrame, mask: pl.Expr, source: str, column: str, reason: str,
                    row_col: str = "__row") -> pl.DataFrame:
    """Quarantine entries for rows of `df` where `mask` holds; raw = JSON of the row."""
    bad = df.filter(mask)
    if bad.height == 0:
        return empty_quarantine()
    cols = [c for c in bad.columns if not c.startswith("__")]
    raws = [json.dumps(r, default=str, ensure_ascii=False) for r in bad.select(cols).iter_rows(named=True)]
    return pl.DataFrame({
        "source_file": [source] * bad.height,
        "row": bad[row_col].cast(pl.Int64),
        "column": [column] * bad.height,
        "reason": [reason] * bad.height,
        "raw": raws,
    }, schema=QUARANTINE_SCHEMA)


def parse_timestamp(expr: pl.Expr, unit: str = "auto") -> pl.Expr:
    """Parse a string column into UTC datetimes. unit: auto | s | ms | iso | a strftime format.

    auto: integers are unix seconds (milliseconds when > 1e11); else ISO 8601 / common formats.
    Unparseable values become null (the caller quarantines them).
    """
    from shiftrec.data.schema import TS_DTYPE

    s = expr.cast(pl.String).str.strip_chars()
    num = s.cast(pl.Float64, strict=False)
    if unit == "s":
        return (num * 1e6).cast(pl.Int64).cast(pl.Datetime("us")).dt.replace_time_zone("UTC")
    if unit == "ms":
        return (num * 1e3).cast(pl.Int64).cast(pl.Datetime("us")).dt.replace_time_zone("UTC")
    from_num = (pl.when(num.abs() > 1e11).then(num * 1e3).otherwise(num * 1e6)
                .cast(pl.Int64).cast(pl.Datetime("us")).dt.replace_time_zone("UTC"))
    if unit not in ("auto", "iso"):
        return s.str.to_datetime(unit, strict=False, time_unit="us").dt.replace_time_zone(
            "UTC", non_existent="null", ambiguous="null") if "%z" not in unit else \
            s.str.to_datetime(unit, strict=False, time_unit="us").dt.convert_time_zone("UTC")
    parsed = pl.coalesce(
        s.str.to_datetime("%Y-%m-%dT%H:%M:%S%.fZ", strict=False, time_unit="us").dt.replace_time_zone("UTC"),
        s.str.to_datetime("%Y-%m-%dT%H:%M:%S%.f%z", strict=False, time_unit="us").dt.convert_time_zone("UTC"),
        s.str.to_datetime("%Y-%m-%d %H:%M:%S%.f", strict=False, time_unit="us").dt.replace_time_zone("UTC"),
        s.str.to_datetime("%Y-%m-%dT%H:%M:%S%.f", strict=False, time_unit="us").dt.replace_time_zone("UTC"),
        s.str.to_datetime("%Y-%m-%d %H:%M", strict=False, time_unit="us").dt.replace_time_zone("UTC"),
        s.str.to_date("%Y-%m-%d", strict=False).cast(pl.Datetime("us")).dt.replace_time_zone("UTC"),
        s.str.to_datetime("%m/%d/%Y %H:%M", strict=False, time_unit="us").dt.replace_time_zone("UTC"),
    )
    if unit == "iso":
        return parsed.cast(TS_DTYPE)
    return pl.when(num.is_not_null()).then(from_num).otherwise(parsed).cast(TS_DTYPE)


def finish(events: pl.DataFrame, items: pl.DataFrame, quarantine: list[pl.DataFrame],
           rows_in: int, sources: list[str], filtered: dict[str, int] | None = None,
           filtered_rows: pl.DataFrame | None = None, meta: dict[str, Any] | None = None) -> ReadResult:
    q = pl.concat(quarantine, how="vertical") if quarantine else empty_quarantine()
    return ReadResult(
        events=conform_events(events).collect(), items=items, quarantine=q, rows_in=rows_in,
        filtered=filtered or {}, filtered_rows=filtered_rows, sources=sources, meta=meta or {})
