"""Amazon readers: (a) the 2018 raw JSON-lines release, (b) interaction CSV + items.csv."""

from __future__ import annotations

import gzip
import json
import re
from collections.abc import Iterator
from pathlib import Path

import polars as pl

from shiftrec.data.readers._common import (
    QUARANTINE_SCHEMA,
    ReadResult,
    check_file,
    finish,
)
from shiftrec.data.readers.generic import (
    ColumnMap,
    ItemColumnMap,
    map_events,
    map_items,
    read_frame,
)
from shiftrec.data.schema import CATEGORY_SEP, conform_items
from shiftrec.errors import InputError

CHUNK = 200_000


def _lines(p: Path) -> Iterator[tuple[int, str]]:
    opener = gzip.open if p.suffix == ".gz" else open
    try:
        with opener(p, "rb") as f:
            for lineno, raw in enumerate(f, start=1):
                try:
                    yield lineno, raw.decode("utf-8")
                except UnicodeDecodeError as e:
                    raise InputError(f"invalid UTF-8 (byte {e.start} of line {lineno})", path=p,
                                     row=lineno) from None
    except (OSError, EOFError) as e:
        raise InputError(f"cannot read file: {e}", path=p) from None


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

    for lineno, text in _lines(p):
        if not text.strip():
            continue
        rows_in += 1
        try:
            obj = json.loads(text)
        except ValueError as e:
            q_rows.append({"source_file": src, "row": lineno, "column": None,
                           "reason": f"malformed JSON: {str(e).splitlines()[0]}", "raw": text[:2000]})
            continue
        missing = next((k for k in ("reviewerID", "asin", "unixReviewTime") if obj.get(k) in (None, "")), None)
        ts = obj.get("unixReviewTime")
        if missing is None and not isinstance(ts, int | float):
            try:
                ts = int(str(ts))
            except ValueError:
                missing = "unixReviewTime"
        if missing is not None:
            q_rows.append({"source_file": src, "row": lineno, "column": missing,
                           "reason": f"missing or invalid {missing}", "raw": text[:2000]})
            continue
        ov = obj.get("overall")
        buf["__row"].append(lineno)
        buf["user_id"].append(str(obj["reviewerID"]))
        buf["item_id"].append(str(obj["asin"]))
        buf["ts"].append(int(ts))
        buf["value"].append(float(ov) if isinstance(ov, int | float) else None)
        if len(buf["__row"]) >= CHUNK:
            flush()
    flush()
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
    if isinstance(v, int | float):
        return float(v)
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
    for lineno, text in _lines(p):
        if not text.strip():
            continue
        n += 1
        try:
            obj = json.loads(text)
        except ValueError as e:
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
    if items_path is not None:
        idf, _ = read_frame(items_path, "csv")
        items = map_items(idf, ItemColumnMap(), str(items_path), domain)
        sources.append(str(items_path))
    return finish(events, conform_items(items), q + q2, df.height, sources)
