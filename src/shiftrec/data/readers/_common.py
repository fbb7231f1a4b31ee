"""Shared pieces for readers: the ReadResult, quarantine rows, file checks, timestamp parsing."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
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


def _opener(path: Path):  # noqa: ANN202
    if path.suffix == ".gz":
        import gzip

        return gzip.open
    return open


def _gz_error(path: Path) -> InputError:
    return InputError("cannot decompress: truncated or corrupt gzip file", path=path)


@contextmanager
def _read_errors(path: Path) -> Iterator[None]:
    """A truncated or corrupt .gz, or an unreadable file, as one InputError line."""
    import zlib

    try:
        yield
    except (EOFError, zlib.error) as e:
        raise _gz_error(path) from e
    except OSError as e:
        if path.suffix == ".gz":
            raise _gz_error(path) from None
        raise InputError(f"cannot read file: {e.strerror or e}", path=path) from None


def read_bytes(path: Path) -> bytes:
    """The file's bytes, decompressed when it ends in .gz; a corrupt .gz is one InputError line."""
    with _read_errors(path), _opener(path)(path, "rb") as f:
        return f.read()


def iter_lines(path: Path) -> Iterator[tuple[int, bytes]]:
    """(1-based line number, raw line bytes) of a text file, .gz decompressed; a UTF-8 BOM at the
    start is dropped; a truncated or corrupt .gz is one InputError line."""
    with _read_errors(path), _opener(path)(path, "rb") as f:
        for lineno, raw in enumerate(f, start=1):
            if lineno == 1 and raw.startswith(BOM):
                raw = raw[len(BOM):]
            yield lineno, raw


BOM = b"\xef\xbb\xbf"

#: a reader refuses a file when more than this share of its rows is malformed (wrong format,
#: separator or mapping, far more likely than a file that is mostly bad)
MAX_BAD_FRACTION = 0.5


def quarantine_frame(source: str, rows: list[int], columns: list[str | None], reasons: list[str],
                     raws: list[str]) -> pl.DataFrame:
    return pl.DataFrame({"source_file": [source] * len(rows), "row": rows, "column": columns,
                         "reason": reasons, "raw": raws}, schema=QUARANTINE_SCHEMA)


def _has_surrogate(s: str) -> bool:
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _printable(s: str) -> str:
    return s.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def read_delimited(path: Path, sep: str, quote: str | None = '"', what: str = "CSV"
                   ) -> tuple[pl.DataFrame, pl.DataFrame]:
    """A delimited text file with a header -> (String columns + 1-based `__row`, quarantine).

    Rows are numbered from 1 after the header. The fast path is Polars; a file it cannot read
    whole (a ragged row, an invalid UTF-8 byte), or whose last column has gaps (possibly a row
    with too few fields), is read row by row instead: each ragged row and each row holding an
    invalid UTF-8 byte is quarantined and every other row kept.
    """
    try:
        df = pl.read_csv(path, infer_schema=False, separator=sep, quote_char=quote,
                         truncate_ragged_lines=False)
    except pl.exceptions.NoDataError:
        raise InputError("file is empty", path=path) from None
    except Exception:  # noqa: BLE001 - any failure: the row-by-row reader says what and where
        df = None
    if df is not None and df.width and df[df.columns[-1]].null_count() == 0:
        if df.columns[0].startswith("\ufeff"):
            df = df.rename({df.columns[0]: df.columns[0][1:]})
        if df.height == 0:
            raise InputError("file has a header but no rows", path=path)
        return df.with_row_index("__row", offset=1), empty_quarantine()
    return _read_delimited_rows(path, sep, quote, what)


def _read_delimited_rows(path: Path, sep: str, quote: str | None, what: str
                         ) -> tuple[pl.DataFrame, pl.DataFrame]:
    import csv
    import io

    text = read_bytes(path).decode("utf-8", "surrogateescape").removeprefix("\ufeff")
    if not text.strip():
        raise InputError("file is empty", path=path)
    csv.field_size_limit(2**31 - 1)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=sep,
                        quotechar=quote or '"', quoting=csv.QUOTE_MINIMAL if quote else csv.QUOTE_NONE,
                        strict=False)
    src = str(path)
    try:
        header = next(reader)
    except csv.Error as e:
        raise InputError(f"cannot parse the header as {what}: {e}", path=path, row=0) from None
    if any(_has_surrogate(h) for h in header):
        raise InputError("invalid UTF-8 in the header", path=path, row=0)
    n = len(header)
    cols: list[list[str | None]] = [[] for _ in range(n)]
    rows: list[int] = []
    q_rows: list[int] = []
    q_cols: list[str | None] = []
    q_reasons: list[str] = []
    q_raws: list[str] = []
    rec = 0
    while True:
        try:
            fields = next(reader)
        except StopIteration:
            break
        except csv.Error as e:
            rec += 1
            q_rows.append(rec)
            q_cols.append(None)
            q_reasons.append(f"cannot parse as {what}: {e}")
            q_raws.append("")
            continue
        rec += 1
        if not fields:  # a blank line: a row of empty fields, as Polars reads it
            fields = [""] * n
        bad_col = next((j for j, v in enumerate(fields) if _has_surrogate(v)), None)
        if bad_col is not None or len(fields) != n:
            q_rows.append(rec)
            raw = _printable(sep.join(fields))[:2000]
            q_raws.append(raw)
            if bad_col is not None:
                q_cols.append(header[bad_col] if bad_col < n else None)
                q_reasons.append("invalid UTF-8")
            else:
                q_cols.append(None)
                q_reasons.append(f"ragged row: {len(fields)} fields, the header has {n}")
            continue
        rows.append(rec)
        for j, v in enumerate(fields):
            cols[j].append(v if v != "" else None)
    if rec == 0:
        raise InputError("file has a header but no rows", path=path)
    if not rows or len(q_rows) / rec > MAX_BAD_FRACTION:
        raise InputError(f"{q_reasons[0]} ({len(q_rows)} of {rec} rows bad; check the format)",
                         path=path, row=q_rows[0], column=q_cols[0])
    try:
        df = pl.DataFrame({h: c for h, c in zip(header, cols, strict=True)},
                          schema={h: pl.String for h in header})
    except (pl.exceptions.DuplicateError, ValueError):
        raise InputError(f"duplicate column names in the header: {header}", path=path, row=0) from None
    df = df.with_columns(pl.Series("__row", rows, dtype=pl.UInt32))
    return (df.select("__row", *header),
            quarantine_frame(src, q_rows, q_cols, q_reasons, q_raws))


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


def epoch_us(us: pl.Expr) -> pl.Expr:
    """Float microseconds since the epoch -> UTC datetime; NaN, inf and values beyond the
    datetime range (|t| >= 9.2e18 us, about year 292,000) become null, never an overflow."""
    ok = us.is_finite() & (us.abs() < 9.2e18)
    return (pl.when(ok).then(us).otherwise(None).cast(pl.Int64).cast(pl.Datetime("us"))
            .dt.replace_time_zone("UTC"))


def parse_timestamp(expr: pl.Expr, unit: str = "auto") -> pl.Expr:
    """Parse a string column into UTC datetimes. unit: auto | s | ms | iso | a strftime format.

    auto: integers are unix seconds (milliseconds when > 1e11); else ISO 8601 / common formats.
    Unparseable values become null (the caller quarantines them).
    """
    from shiftrec.data.schema import TS_DTYPE

    s = expr.cast(pl.String).str.strip_chars()
    num = s.cast(pl.Float64, strict=False)
    if unit == "s":
        return epoch_us(num * 1e6)
    if unit == "ms":
        return epoch_us(num * 1e3)
    from_num = epoch_us(pl.when(num.abs() > 1e11).then(num * 1e3).otherwise(num * 1e6))
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
