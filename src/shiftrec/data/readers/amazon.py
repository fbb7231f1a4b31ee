"""Amazon readers: (a) the 2018 raw JSON-lines release, (b) interaction CSV + items.csv."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from pathlib import Path

import polars as pl

from shiftrec.data.readers._common import (
    QUARANTINE_SCHEMA,
    ReadResult,
    check_file,
    finish,
    iter_lines,
)
from shiftrec.data.readers.generic import (
    ColumnMap,
    ItemColumnMap,
    map_events,
    map_items,
    read_frame,
)
from shiftrec.data.readers.options import ReadOptions
from shiftrec.data.schema import CATEGORY_SEP, conform_items
from shiftrec.errors import InputError

CHUNK = 200_000


def _lines(p: Path, q_rows: list[dict]) -> Iterator[tuple[int, str]]:
    """Decoded lines; a line that is not valid UTF-8 goes to `q_rows` (quarantine) instead."""
    for lineno, raw in iter_lines(p):
        try:
            yield lineno, raw.decode("utf-8")
        except UnicodeDecodeError as e:
            q_rows.append({"source_file": str(p), "row": lineno, "column": None,
                           "reason": f"invalid UTF-8 (byte {e.start} of the line)",
                           "raw": raw.decode("utf-8", "replace")[:2000]})


# unixReviewTime must be a finite number of seconds inside the datetime range
_MAX_EPOCH_S = 9.2e12


def _review_time(v: object) -> int | None:
    if isinstance(v, bool):
        return None
    if isinstance(v, str):
        try:
            v = float(v.strip())
        except ValueError:
            return None
    if isinstance(v, int | float) and math.isfinite(v) and abs(v) < _MAX_EPOCH_S:
        return int(v)
    return None


def domain_from_filename(p: Path) -> str:
    name = p.name
    for pre, suf in (("meta_", ".json.gz"), ("", "_5.json.gz"), ("", ".json.gz"), ("", ".jsonl"),
                     ("", ".json")):
        if name.startswith(pre) and name.endswith(suf):
            return name[len(pre):len(name) - len(suf)] if suf else name[len(pre):]
    return p.stem


def read_amazon_reviews(path: str | Path, domain: str | None = None) -> ReadResult:
    """Reviews JSON-lines (reviewerID, asin, overall, unixReviewTime), streamed in chunks."""
    p = check_file(path)
    domain = domain or domain_from_filename(p)
    src = str(p)
    parts: list[pl.DataFrame] = []
    q_rows: list[dict] = []
    rows_in = 0
    buf: dict[str, list] = {"__row": [], "user_id": [], "item_id": [], "ts": [], "value": []}

    def flush() -> None:
        if buf["__row"]:
            parts.append(pl.DataFrame(buf, schema={"__row": pl.Int64, "user_id": pl.String,
                                                   "item_id": pl.String, "ts": pl.Int64,
                                                   "value": pl.Float64}))
            for v in buf.values():
                v.clear()

    for lineno, text in _lines(p, q_rows):
        if not text.strip():
            continue
        rows_in += 1
        try:
            obj = json.loads(text)
            if not isinstance(obj, dict):
                raise ValueError("not a JSON object")
        except (ValueError, RecursionError) as e:
            q_rows.append({"source_file": src, "row": lineno, "column": None,
                           "reason": f"malformed JSON: {str(e).splitlines()[0]}", "raw": text[:2000]})
            continue
        missing = next((k for k in ("reviewerID", "asin", "unixReviewTime")
                        if obj.get(k) is None or str(obj.get(k)).strip() == ""), None)
        ts = None if missing else _review_time(obj.get("unixReviewTime"))
        reason = f"missing required field {missing}" if missing else None
        if missing is None and ts is None:
            missing, reason = "unixReviewTime", "unixReviewTime is not a finite unix time in range"
        ov = obj.get("overall")
        if missing is None and ov is not None and not (
                isinstance(ov, int | float) and not isinstance(ov, bool) and math.isfinite(ov)):
            missing, reason = "overall", "overall is not a finite number"
        if missing is not None:
            q_rows.append({"source_file": src, "row": lineno, "column": missing,
                           "reason": reason, "raw": text[:2000]})
            continue
        buf["__row"].append(lineno)
        buf["user_id"].append(str(obj["reviewerID"]).strip())
        buf["item_id"].append(str(obj["asin"]).strip())
        buf["ts"].append(ts)
        buf["value"].append(None if ov is None else float(ov))
        if len(buf["__row"]) >= CHUNK:
            flush()
    flush()
    rows_in += sum(1 for r in q_rows if r["reason"].startswith("invalid UTF-8"))
    if rows_in == 0:
        raise InputError("file is empty", path=p)
    if not parts:
        raise InputError(f"no valid review line ({q_rows[0]['reason']})", path=p, row=q_rows[0]["row"])
    df = pl.concat(parts)
    events = df.select(
        "user_id", "item_id",
        pl.from_epoch("ts", time_unit="s").dt.replace_time_zone("UTC").alias("timestamp"),
        pl.lit("rating").alias("event_type"), "value", pl.lit(domain).alias("domain"))
    q = pl.DataFrame(q_rows, schema=QUARANTINE_SCHEMA)
    return finish(events, conform_items(pl.DataFrame(schema={"item_id": pl.String})), [q], rows_in, [src])


_HTML = re.compile(r"<[^>]+>")


def _clean_text(v: object) -> str | None:
    if v is None:
        return None
    if isinstance(v, list):
        v = " ".join(str(x) for x in v if x)
    s = _HTML.sub(" ", str(v))
    s = re.sub(r"\s+", " ", s).strip()
    return s or None


def _price(v: object) -> float | None:
    """A finite price or None (NaN / inf prices count as none)."""
    if isinstance(v, bool):
        return None
    if isinstance(v, int | float):
        return float(v) if math.isfinite(v) else None
    if isinstance(v, str):
        m = re.search(r"\d[\d,]*\.?\d*", v)
        if m:
            try:
                return float(m.group(0).replace(",", ""))
            except ValueError:
                return None
    return None


def read_amazon_meta(path: str | Path, domain: str | None = None) -> tuple[pl.DataFrame, int, pl.DataFrame]:
    """meta_<Category>.json.gz -> (items, rows_in, quarantine)."""
    p = check_file(path)
    domain = domain or domain_from_filename(p)
    rows, q_rows, n = [], [], 0
    for lineno, text in _lines(p, q_rows):
        if not text.strip():
            continue
        n += 1
        try:
            obj = json.loads(text)
            if not isinstance(obj, dict):
                raise ValueError("not a JSON object")
        except (ValueError, RecursionError) as e:
            q_rows.append({"source_file": str(p), "row": lineno, "column": None,
                           "reason": f"malformed JSON: {str(e).splitlines()[0]}", "raw": text[:2000]})
            continue
        if not obj.get("asin"):
            q_rows.append({"source_file": str(p), "row": lineno, "column": "asin",
                           "reason": "missing asin", "raw": text[:2000]})
            continue
        cats = obj.get("category") or []
        if cats and isinstance(cats[0], list):  # 2014-style nested categories
            cats = cats[0]
        rows.append({
            "item_id": str(obj["asin"]), "domain": domain, "title": _clean_text(obj.get("title")),
            "category": CATEGORY_SEP.join(_clean_text(c) or "" for c in cats) or None,
            "brand": _clean_text(obj.get("brand")),
            "description": _clean_text(obj.get("description")),
            "price": _price(obj.get("price")),
        })
    items = conform_items(pl.DataFrame(rows, schema={"item_id": pl.String, "domain": pl.String,
                                                     "title": pl.String, "category": pl.String,
                                                     "brand": pl.String, "description": pl.String,
                                                     "price": pl.Float64}))
    items = items.unique(["domain", "item_id"], keep="first", maintain_order=True)
    return items, n, pl.DataFrame(q_rows, schema=QUARANTINE_SCHEMA)


def read_amazon_2018(reviews: str | Path, meta: str | Path | None = None,
                     domain: str | None = None) -> ReadResult:
    rp = Path(reviews)
    domain = domain or domain_from_filename(rp)
    if meta is None:
        cand = rp.with_name(f"meta_{domain}.json.gz")
        meta = cand if cand.exists() else None
    res = read_amazon_reviews(rp, domain)
    if meta is not None:
        items, n_meta, mq = read_amazon_meta(meta, domain)
        res.items = items
        res.items_quarantine = mq
        res.meta["catalogue"] = {"source": str(meta), "items": items.height, "quarantined": mq.height,
                                 "rows_in": n_meta}
        res.sources.append(str(meta))
    return res


def read_amazon_csv(folder_or_file: str | Path, items_path: str | Path | None = None,
                    domain: str | None = None) -> ReadResult:
    """interactions.csv(.gz) with user_id,item_id,timestamp (+ items.csv(.gz) with item_id,title)."""
    p = Path(folder_or_file)
    if p.is_dir():
        inter = next((p / n for n in ("interactions.csv.gz", "interactions.csv") if (p / n).exists()), None)
        if inter is None:
            raise InputError("folder has no interactions.csv(.gz)", path=p)
        items_path = items_path or next((p / n for n in ("items.csv.gz", "items.csv") if (p / n).exists()), None)
        domain = domain or p.name
    else:
        inter = p
        domain = domain or p.parent.name
    df, q = read_frame(inter, "csv")
    events, q2 = map_events(df, ColumnMap(timestamp_unit="s", default_event_type="rating",
                                          default_domain=domain), str(inter))
    items = pl.DataFrame(schema={"item_id": pl.String})
    sources = [str(inter)]
    items_q = None
    if items_path is not None:
        idf, iq = read_frame(items_path, "csv")
        items = map_items(idf.drop("__row"), ItemColumnMap(), str(items_path), domain)
        items_q = pl.concat(iq)
        sources.append(str(items_path))
    res = finish(events, conform_items(items), q + q2, df.height + sum(x.height for x in q), sources)
    res.items_quarantine = items_q
    return res


def read_amazon_csv_options(opts: ReadOptions) -> ReadResult:
    return read_amazon_csv(opts.path, opts.items, opts.domain)


def read_amazon_2018_options(opts: ReadOptions) -> ReadResult:
    return read_amazon_2018(opts.path, opts.items, opts.domain)
