"""Generic reader: CSV, Parquet or JSONL with a column mapping (CLI flags or YAML)."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl

from shiftrec.data.readers._common import (
    MAX_BAD_FRACTION,
    ReadResult,
    check_file,
    empty_quarantine,
    finish,
    iter_lines,
    parse_timestamp,
    quarantine_frame,
    quarantine_rows,
    read_delimited,
    require_columns,
)
from shiftrec.data.readers.options import ColumnMap, ItemColumnMap, ReadOptions
from shiftrec.data.schema import EVENT_TYPES, TS_DTYPE, conform_items, empty_items
from shiftrec.errors import InputError

EVENT_SYNONYMS = {
    "view": "view", "click": "view", "pv": "view", "detail": "view", "impression": "view",
    "cart": "cart", "addtocart": "cart", "add_to_cart": "cart", "add-to-cart": "cart",
    "purchase": "purchase", "buy": "purchase", "transaction": "purchase", "order": "purchase",
    "rating": "rating", "rate": "rating", "review": "review",
}


def detect_format(path: Path) -> str:
    name = path.name.lower().removesuffix(".gz")
    for ext, fmt in ((".csv", "csv"), (".tsv", "tsv"), (".parquet", "parquet"), (".pq", "parquet"),
                     (".jsonl", "jsonl"), (".ndjson", "jsonl"), (".json", "jsonl")):
        if name.endswith(ext):
            return fmt
    raise InputError("unknown file format (expected .csv, .tsv, .parquet, .jsonl, optionally .gz)",
                     path=path)


def read_frame(path: str | Path, fmt: str | None = None) -> tuple[pl.DataFrame, list[pl.DataFrame]]:
    """Read a whole table with a 1-based `__row` column and the quarantine of rows that could
    not be read (malformed JSON lines, ragged CSV rows, rows with an invalid UTF-8 byte)."""
    p = check_file(path)
    fmt = fmt or detect_format(p)
    if fmt in ("csv", "tsv"):
        df, q = read_delimited(p, "\t" if fmt == "tsv" else ",", '"', fmt.upper())
        return df, [q]
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
    """JSON lines: a line that is not valid UTF-8 or not a JSON object is quarantined; a UTF-8
    BOM at the start is dropped; blank lines are skipped (not rows)."""
    rows, bad_rows, bad_raw, bad_reason = [], [], [], []
    for lineno, line in iter_lines(p):
        if not line.strip():
            continue
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as e:
            bad_rows.append(lineno)
            bad_raw.append(line.decode("utf-8", "replace")[:2000].rstrip("\n"))
            bad_reason.append(f"invalid UTF-8 (byte {e.start} of the line)")
            continue
        try:
            obj = json.loads(text)
            if not isinstance(obj, dict):
                raise ValueError("not a JSON object")
        except (ValueError, RecursionError) as e:
            bad_rows.append(lineno)
            bad_raw.append(text[:2000].rstrip("\n"))
            bad_reason.append(f"malformed JSON: {str(e).splitlines()[0]}")
            continue
        obj.pop("__row", None)
        obj["__row"] = lineno
        rows.append(obj)
    if not rows and not bad_rows:
        raise InputError("file is empty", path=p)
    if not rows:
        raise InputError(f"{bad_reason[0]} ({len(bad_rows)} of {len(rows) + len(bad_rows)} lines bad)",
                         path=p, row=bad_rows[0])
    try:
        df = pl.from_dicts(rows, infer_schema_length=None)
    except Exception:  # noqa: BLE001 - mixed types across lines: read every field as text
        df = pl.from_dicts([{k: (v if k == "__row" or v is None else
                                 (json.dumps(v) if isinstance(v, dict | list) else str(v)))
                             for k, v in r.items()} for r in rows], infer_schema_length=None)
    q = quarantine_frame(str(p), bad_rows, [None] * len(bad_rows), bad_reason, bad_raw)
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


def _blank(df: pl.DataFrame, c: str) -> pl.Series:
    col = df[c]
    if col.dtype == pl.String:
        return (col.is_null() | (col.str.strip_chars() == "")).fill_null(True)
    return col.is_null()


MISSING = "missing required field"
BAD_TIMESTAMP = "unparseable timestamp (not a date, or out of range)"
BAD_EVENT_TYPE = f"unknown event type (valid: {', '.join(EVENT_TYPES)})"
BAD_VALUE = "value is not a finite number"


def quarantine_priority(cmap: ColumnMap) -> dict[tuple[str, str], int]:
    """(column, reason) -> rank of the quarantine parts `map_events` returns, in its order (a row
    is quarantined once, under its first fault)."""
    specs = [(c, MISSING) for c in (cmap.user_id, cmap.item_id, cmap.timestamp)]
    specs.append((cmap.timestamp, BAD_TIMESTAMP))
    if cmap.event_type:
        specs.append((cmap.event_type, BAD_EVENT_TYPE))
    if cmap.value:
        specs.append((cmap.value, BAD_VALUE))
    out: dict[tuple[str, str], int] = {}
    for k, spec in enumerate(specs):
        out.setdefault(spec, k)
    return out


def too_many_bad(first: pl.DataFrame, n_bad: int, n_rows: int, path: Path) -> InputError:
    """The error for a file whose share of bad rows says the format or mapping is wrong; `first`
    is the quarantine entry of its first bad row."""
    bad_val = json.loads(first["raw"][0]).get(first["column"][0])
    return InputError(f"{first['reason'][0]} (value {bad_val!r}; {n_bad} of {n_rows} rows bad, "
                      "check the format/mapping)", path=path, row=int(first["row"][0]),
                      column=first["column"][0])


def is_too_bad(n_bad: int, n_rows: int, max_bad_fraction: float = MAX_BAD_FRACTION) -> bool:
    return n_bad > 0 and (n_bad == n_rows or n_bad / n_rows > max_bad_fraction)


def map_events(df: pl.DataFrame, cmap: ColumnMap, source: str,
               max_bad_fraction: float = MAX_BAD_FRACTION, check: bool = True,
               keep_row: bool = False) -> tuple[pl.DataFrame, list[pl.DataFrame]]:
    """Map source columns to canonical events; quarantine each row with a missing required field
    (user, item, timestamp) or a field that fails to parse: a timestamp that is not a date or is
    NaN / inf / out of the datetime range, an unknown event type, a value that is not a finite
    number. More than `max_bad_fraction` bad rows is an error (a wrong format or mapping) unless
    `check` is False (a caller mapping a file in chunks checks the whole file itself, with
    `is_too_bad` and `too_many_bad`). `keep_row` keeps the 1-based `__row` column."""
    path = Path(source)
    required = [cmap.user_id, cmap.item_id, cmap.timestamp]
    optional = [c for c in (cmap.event_type, cmap.value, cmap.domain, cmap.session_id) if c]
    require_columns(path, [c for c in df.columns if not c.startswith("__")], required + optional)

    def as_str(c: str) -> pl.Expr:
        e = pl.col(c) if df.schema[c] == pl.String else pl.col(c).cast(pl.String)
        return e.str.strip_chars()

    ts = timestamp_expr(df, cmap.timestamp, cmap.timestamp_unit)
    exprs = [pl.col("__row"), as_str(cmap.user_id).alias("user_id"),
             as_str(cmap.item_id).alias("item_id"), ts.alias("timestamp")]
    # (source column, parsed output column, reason) for malformed fields, in priority order:
    # a field is malformed when the source has a value and parsing it gave null
    checks: list[tuple[str, str, str]] = [(cmap.timestamp, "timestamp", BAD_TIMESTAMP)]
    if cmap.event_type:
        raw = pl.col(cmap.event_type)
        if df.schema[cmap.event_type] != pl.String:
            raw = raw.cast(pl.String)
        raw_vals = df.select(raw.unique().drop_nulls())[cmap.event_type].to_list()
        lut = {v: EVENT_SYNONYMS.get(v.strip().lower()) for v in raw_vals}
        exprs.append(raw.replace_strict(lut, default=None, return_dtype=pl.String).alias("event_type"))
        checks.append((cmap.event_type, "event_type", BAD_EVENT_TYPE))
    else:
        exprs.append(pl.lit(cmap.default_event_type).alias("event_type"))
    if cmap.value:
        v = pl.col(cmap.value)
        v = v.cast(pl.Float64) if df.schema[cmap.value].is_numeric() else \
            v.cast(pl.String).str.strip_chars().cast(pl.Float64, strict=False)
        exprs.append(pl.when(v.is_finite()).then(v).otherwise(None).alias("value"))
        checks.append((cmap.value, "value", BAD_VALUE))
    exprs.append((as_str(cmap.domain).fill_null(cmap.default_domain) if cmap.domain
                  else pl.lit(cmap.default_domain)).alias("domain"))
    if cmap.session_id:
        exprs.append(as_str(cmap.session_id).alias("session_id"))
    out = df.lazy().select(*exprs).collect()
    # masks in priority order: a row is quarantined once, under its first fault
    masks: list[tuple[pl.Series, str, str]] = [
        (_blank(df, c), c, MISSING) for c in required]
    for src, dst, reason in checks:
        masks.append((~_blank(df, src) & out[dst].is_null(), src, reason))
    drop = [] if keep_row else ["__row"]
    if not any(m.any() for m, _, _ in masks):
        return out.drop(drop), []
    quarantine, seen = [], pl.repeat(False, df.height, eager=True, dtype=pl.Boolean)
    for m, col, reason in masks:
        fresh = m & ~seen
        if fresh.any():
            quarantine.append(quarantine_rows(df.with_columns(fresh.alias("__m")), pl.col("__m"),
                                              source, col, reason))
        seen = seen | m
    n_bad = int(seen.sum())
    if check and is_too_bad(n_bad, df.height, max_bad_fraction):
        raise too_many_bad(min(quarantine, key=lambda q: q["row"][0]), n_bad, df.height, path)
    return out.filter(~seen).drop(drop), quarantine


def map_items(df: pl.DataFrame, imap: ItemColumnMap, source: str, default_domain: str) -> pl.DataFrame:
    path = Path(source)
    require_columns(path, df.columns, [imap.item_id])
    exprs = [pl.col(imap.item_id).cast(pl.String).str.strip_chars().alias("item_id")]
    for canon in ("title", "category", "brand", "description"):
        src = getattr(imap, canon)
        if src and src in df.columns:
            exprs.append(pl.col(src).cast(pl.String).alias(canon))
    if imap.price and imap.price in df.columns:
        price = (pl.col(imap.price).cast(pl.String).str.replace_all(r"[$,£€\s]", "")
                 .cast(pl.Float64, strict=False))
        # a NaN / inf price is no price (counted in the result's meta by the caller)
        exprs.append(pl.when(price.is_finite()).then(price).otherwise(None).alias("price"))
    exprs.append((pl.col(imap.domain).cast(pl.String) if imap.domain and imap.domain in df.columns
                  else pl.lit(default_domain)).alias("domain"))
    return conform_items(df.select(exprs).filter(pl.col("item_id").is_not_null())
                         .unique(["domain", "item_id"], keep="first", maintain_order=True))


def read_generic(events_path: str | Path, cmap: ColumnMap | None = None,
                 items_path: str | Path | None = None, imap: ItemColumnMap | None = None,
                 fmt: str | None = None) -> ReadResult:
    return read_generic_options(ReadOptions(path=Path(events_path), items=items_path,
                                            columns=cmap or ColumnMap(),
                                            item_columns=imap or ItemColumnMap(), file_format=fmt))


INPUT_SUFFIXES = (".csv", ".tsv", ".parquet", ".pq", ".jsonl", ".ndjson", ".json")


def is_glob(path: str | Path) -> bool:
    return any(ch in str(path) for ch in "*?[")


def list_inputs(path: str | Path) -> list[Path]:
    """The event files a PATH names: the file itself; every data file under a folder (recursive:
    partitioned layouts such as date=2024-01-01/part-0.parquet; names starting with '.' or '_',
    such as _SUCCESS, are skipped); or the files a glob matches (`**` recursive). Sorted by path:
    that order is the input order (the tie order of events sharing a user and a time)."""
    import glob

    p = Path(path)
    if is_glob(path):
        files = sorted(Path(f) for f in glob.glob(str(path), recursive=True) if Path(f).is_file())
        if not files:
            raise InputError("no file matches the pattern", path=p)
        return files
    if p.is_dir():
        files = sorted(f for f in p.rglob("*") if f.is_file()
                       and not any(part.startswith((".", "_")) for part in f.relative_to(p).parts)
                       and f.name.lower().removesuffix(".gz").endswith(INPUT_SUFFIXES))
        if not files:
            raise InputError(f"no data file ({', '.join(INPUT_SUFFIXES)}, optionally .gz) in the "
                             "folder", path=p)
        return files
    return [p]


def read_catalogue(opts: ReadOptions) -> tuple[pl.DataFrame, pl.DataFrame | None, dict]:
    """(items, items quarantine or None, meta) of `opts.items` (empty catalogue when None)."""
    meta: dict = {}
    if opts.items is None:
        return empty_items(), None, meta
    idf, iq = read_frame(opts.items)
    items, n_bad_price = _items_with_price_count(idf, opts.item_columns, str(opts.items),
                                                 opts.columns.default_domain)
    if n_bad_price:
        meta["catalogue_prices_not_finite"] = n_bad_price
    return items, (pl.concat(iq) if iq else empty_quarantine()), meta


def read_generic_options(opts: ReadOptions) -> ReadResult:
    """Events file (CSV, TSV, Parquet, JSON lines, optionally .gz) mapped by `opts.columns`, and
    an optional item catalogue mapped by `opts.item_columns`. PATH may also be a folder or a glob
    of such files (`list_inputs`): each file is read as if alone (its own quarantine rows and
    bad-row check) and the events are concatenated in path order."""
    files = list_inputs(opts.path)
    if len(files) > 1 or files[0] != Path(opts.path):
        from dataclasses import replace

        parts = [read_generic_options(replace(opts, path=f, items=None)) for f in files]
        res = ReadResult.concat(parts)
        res.items, res.items_quarantine, meta = read_catalogue(opts)
        res.meta.update(meta)
        if opts.items is not None:
            res.sources.append(str(opts.items))
        return res
    cmap = opts.columns
    df, q = read_frame(opts.path, opts.file_format)
    rows_in = df.height + sum(x.height for x in q)
    events, q2 = map_events(df, cmap, str(opts.path))
    sources = [str(opts.path)]
    items, items_q, meta = read_catalogue(opts)
    if opts.items is not None:
        sources.append(str(opts.items))
    res = finish(events, items, q + q2, rows_in, sources, meta=meta)
    res.items_quarantine = items_q
    return res


def _items_with_price_count(idf: pl.DataFrame, imap: ItemColumnMap, source: str,
                            default_domain: str) -> tuple[pl.DataFrame, int]:
    """map_items, and how many catalogue prices were present but NaN / inf (stored as null)."""
    n = 0
    if imap.price and imap.price in idf.columns:
        raw = idf[imap.price].cast(pl.String).str.replace_all(r"[$,£€\s]", "").cast(pl.Float64, strict=False)
        n = int((raw.is_not_null() & ~raw.is_finite()).sum())
    return map_items(idf.drop("__row", strict=False), imap, source, default_domain), n
