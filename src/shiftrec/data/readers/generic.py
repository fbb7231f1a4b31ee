"""Generic reader: CSV, Parquet or JSONL with a column mapping (CLI flags or YAML)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from shiftrec.data.readers._common import (
    ReadResult,
    check_file,
    finish,
    parse_timestamp,
    quarantine_rows,
    raise_invalid_utf8,
    require_columns,
)
from shiftrec.data.schema import EVENT_TYPES, TS_DTYPE, conform_items, empty_items
from shiftrec.errors import InputError

EVENT_SYNONYMS = {
    "view": "view", "click": "view", "pv": "view", "detail": "view", "impression": "view",
    "cart": "cart", "addtocart": "cart", "add_to_cart": "cart", "add-to-cart": "cart",
    "purchase": "purchase", "buy": "purchase", "transaction": "purchase", "order": "purchase",
    "rating": "rating", "rate": "rating", "review": "review",
}


@dataclass(frozen=True)
class ColumnMap:
    """Which source column holds each canonical field (None = absent)."""

    user_id: str = "user_id"
    item_id: str = "item_id"
    timestamp: str = "timestamp"
    event_type: str | None = None
    value: str | None = None
    domain: str | None = None
    session_id: str | None = None
    timestamp_unit: str = "auto"  # auto | s | ms | iso | strftime format
    default_event_type: str = "purchase"
    default_domain: str = "default"


@dataclass(frozen=True)
class ItemColumnMap:
    item_id: str = "item_id"
    title: str | None = "title"
    category: str | None = None
    brand: str | None = None
    description: str | None = None
    price: str | None = None
    domain: str | None = None


def detect_format(path: Path) -> str:
    name = path.name.lower().removesuffix(".gz")
    for ext, fmt in ((".csv", "csv"), (".tsv", "tsv"), (".parquet", "parquet"), (".pq", "parquet"),
                     (".jsonl", "jsonl"), (".ndjson", "jsonl"), (".json", "jsonl")):
        if name.endswith(ext):
            return fmt
    raise InputError("unknown file format (expected .csv, .tsv, .parquet, .jsonl, optionally .gz)",
                     path=path)


def read_frame(path: str | Path, fmt: str | None = None) -> tuple[pl.DataFrame, list[pl.DataFrame]]:
    """Read a whole table with a 1-based `__row` column; malformed JSON lines are quarantined."""
    p = check_file(path)
    fmt = fmt or detect_format(p)
    if fmt in ("csv", "tsv"):
        sep = "\t" if fmt == "tsv" else ","
        try:
            df = pl.read_csv(p, infer_schema=False, separator=sep, quote_char='"',
                             truncate_ragged_lines=False)
        except pl.exceptions.ComputeError as e:
            msg = str(e)
            if "utf-8" in msg.lower() or "utf8" in msg.lower():
                raise_invalid_utf8(p, sep)
            raise InputError(f"cannot parse as {fmt.upper()}: {msg.splitlines()[0]}", path=p) from None
        except pl.exceptions.NoDataError:
            raise InputError("file is empty", path=p) from None
        if df.height == 0:
            raise InputError("file has a header but no rows", path=p)
        return df.with_row_index("__row", offset=1), []
    if fmt == "parquet":
        try:
            df = pl.read_parquet(p)
        except Exception as e:  # noqa: BLE001 - pyarrow/polars raise many types
            raise InputError(f"cannot read as Parquet: {str(e).splitlines()[0]}", path=p) from None
        if df.height == 0:
            raise InputError("file has no rows", path=p)
        return df.with_row_index("__row", offset=1), []
    if fmt == "jsonl":
        return _read_jsonl(p)
    raise InputError(f"unsupported format '{fmt}'", path=p)


def _read_jsonl(p: Path) -> tuple[pl.DataFrame, list[pl.DataFrame]]:
    import gzip

    opener = gzip.open if p.suffix == ".gz" else open
    rows, bad_rows, bad_raw, bad_reason = [], [], [], []
    with opener(p, "rb") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                text = line.decode("utf-8")
            except UnicodeDecodeError as e:
                raise InputError(f"invalid UTF-8 (byte {e.start} of line {lineno})", path=p,
                                 row=lineno) from None
            try:
                obj = json.loads(text)
                if not isinstance(obj, dict):
                    raise ValueError("not a JSON object")
            except ValueError as e:
                bad_rows.append(lineno)
                bad_raw.append(text[:2000].rstrip("\n"))
                bad_reason.append(f"malformed JSON: {str(e).splitlines()[0]}")
                continue
            obj["__row"] = lineno
            rows.append(obj)
    if not rows and not bad_rows:
        raise InputError("file is empty", path=p)
    if not rows:
        raise InputError(f"no valid JSON line ({bad_reason[0]})", path=p, row=bad_rows[0])
    df = pl.from_dicts(rows, infer_schema_length=None)
    q = pl.DataFrame({"source_file": [str(p)] * len(bad_rows), "row": bad_rows,
                      "column": [None] * len(bad_rows), "reason": bad_reason, "raw": bad_raw},
                     schema={"source_file": pl.String, "row": pl.Int64, "column": pl.String,
                             "reason": pl.String, "raw": pl.String})
    return df, [q]


def timestamp_expr(df: pl.DataFrame, col: str, unit: str) -> pl.Expr:
    dtype = df.schema[col]
    if isinstance(dtype, pl.Datetime):
        e = pl.col(col)
        e = e.dt.replace_time_zone("UTC") if dtype.time_zone is None else e.dt.convert_time_zone("UTC")
        return e.cast(TS_DTYPE)
    if isinstance(dtype, pl.Date):
        return pl.col(col).cast(pl.Datetime("us")).dt.replace_time_zone("UTC")
    return parse_timestamp(pl.col(col), unit)


def map_events(df: pl.DataFrame, cmap: ColumnMap, source: str,
               max_bad_fraction: float = 0.5) -> tuple[pl.DataFrame, list[pl.DataFrame]]:
    """Map source columns to canonical events; quarantine rows whose fields fail to parse."""
    path = Path(source)
    required = [cmap.user_id, cmap.item_id, cmap.timestamp]
    optional = [c for c in (cmap.event_type, cmap.value, cmap.domain, cmap.session_id) if c]
    require_columns(path, [c for c in df.columns if c != "__row"], required + optional)

    def as_str(c: str) -> pl.Expr:
        e = pl.col(c) if df.schema[c] == pl.String else pl.col(c).cast(pl.String)
        return e.str.strip_chars()

    ts = timestamp_expr(df, cmap.timestamp, cmap.timestamp_unit)
    exprs = [pl.col("__row"), as_str(cmap.user_id).alias("user_id"),
             as_str(cmap.item_id).alias("item_id"), ts.alias("timestamp")]
    # (source column, parsed output column, reason) for malformed fields, in priority order:
    # a field is malformed when the source has a value and parsing it gave null
    checks: list[tuple[str, str, str]] = [(cmap.timestamp, "timestamp", "unparseable timestamp")]
    if cmap.event_type:
        raw = pl.col(cmap.event_type)
        if df.schema[cmap.event_type] != pl.String:
            raw = raw.cast(pl.String)
        raw_vals = df.select(raw.unique().drop_nulls())[cmap.event_type].to_list()
        lut = {v: EVENT_SYNONYMS.get(v.strip().lower()) for v in raw_vals}
        exprs.append(raw.replace_strict(lut, default=None, return_dtype=pl.String).alias("event_type"))
        checks.append((cmap.event_type, "event_type",
                       f"unknown event type (valid: {', '.join(EVENT_TYPES)})"))
    else:
        exprs.append(pl.lit(cmap.default_event_type).alias("event_type"))
    if cmap.value:
        v = pl.col(cmap.value)
        v = v.cast(pl.Float64) if df.schema[cmap.value].is_numeric() else \
            v.cast(pl.String).str.strip_chars().cast(pl.Float64, strict=False)
        exprs.append(v.alias("value"))
        checks.append((cmap.value, "value", "value is not a number"))
    exprs.append((as_str(cmap.domain).fill_null(cmap.default_domain) if cmap.domain
                  else pl.lit(cmap.default_domain)).alias("domain"))
    if cmap.session_id:
        exprs.append(as_str(cmap.session_id).alias("session_id"))
    out = df.lazy().select(*exprs).collect()
    # parsing maps null to null, so a field's extra nulls are exactly its malformed values
    if all(out[dst].null_count() == df[src].null_count() for src, dst, _ in checks):
        return out.drop("__row"), []
    flag_names = [f"__bad{i}" for i in range(len(checks))]
    flags = df.select(*[(pl.col(src).is_not_null() & out[dst].is_null()).alias(f)
                        for (src, dst, _), f in zip(checks, flag_names, strict=True)])
    out = pl.concat([out, flags], how="horizontal")
    any_bad = out.select(pl.any_horizontal(flag_names).alias("b"))["b"]
    n_bad = int(any_bad.sum())
    quarantine, seen = [], pl.repeat(False, df.height, eager=True, dtype=pl.Boolean)
    for (col, _, reason), name in zip(checks, flag_names, strict=True):
        m = out[name] & ~seen
        quarantine.append(quarantine_rows(df.with_columns(m.alias("__m")), pl.col("__m"), source,
                                          col, reason))
        seen = seen | out[name]
    if n_bad == df.height or n_bad / df.height > max_bad_fraction:
        first = min((q for q in quarantine if q.height), key=lambda q: q["row"][0])
        bad_val = json.loads(first["raw"][0]).get(first["column"][0])
        raise InputError(f"{first['reason'][0]} (value {bad_val!r}; {n_bad} of {df.height} rows bad, "
                         "check the format/mapping)", path=path, row=int(first["row"][0]),
                         column=first["column"][0])
    return out.filter(~any_bad).drop("__row", *flag_names), quarantine


def map_items(df: pl.DataFrame, imap: ItemColumnMap, source: str, default_domain: str) -> pl.DataFrame:
    path = Path(source)
    require_columns(path, df.columns, [imap.item_id])
    exprs = [pl.col(imap.item_id).cast(pl.String).str.strip_chars().alias("item_id")]
    for canon in ("title", "category", "brand", "description"):
        src = getattr(imap, canon)
        if src and src in df.columns:
            exprs.append(pl.col(src).cast(pl.String).alias(canon))
    if imap.price and imap.price in df.columns:
        exprs.append(pl.col(imap.price).cast(pl.String).str.replace_all(r"[$,£€\s]", "")
                     .cast(pl.Float64, strict=False).alias("price"))
    exprs.append((pl.col(imap.domain).cast(pl.String) if imap.domain and imap.domain in df.columns
                  else pl.lit(default_domain)).alias("domain"))
    return conform_items(df.select(exprs).filter(pl.col("item_id").is_not_null())
                         .unique(["domain", "item_id"], keep="first", maintain_order=True))


def read_generic(events_path: str | Path, cmap: ColumnMap | None = None,
                 items_path: str | Path | None = None, imap: ItemColumnMap | None = None,
                 fmt: str | None = None) -> ReadResult:
    cmap = cmap or ColumnMap()
    df, q = read_frame(events_path, fmt)
    rows_in = df.height + sum(x.height for x in q)
    events, q2 = map_events(df, cmap, str(events_path))
    items = empty_items()
    sources = [str(events_path)]
    if items_path is not None:
        idf, _ = read_frame(items_path)
        items = map_items(idf, imap or ItemColumnMap(), str(items_path), cmap.default_domain)
        sources.append(str(items_path))
    return finish(events, items, q + q2, rows_in, sources)
