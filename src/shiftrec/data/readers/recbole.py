"""RecBole atomic files: `.inter` (+ `.item`), and UniSRec's released train/valid/test + `.text`."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import polars as pl

from shiftrec.data.readers._common import (
    ReadResult,
    check_file,
    empty_quarantine,
    finish,
    quarantine_rows,
    read_delimited,
)
from shiftrec.data.readers.options import ColumnMap, ReadOptions
from shiftrec.data.schema import conform_items
from shiftrec.errors import InputError

ORDER_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)


def _read_atomic(p: Path) -> tuple[pl.DataFrame, pl.DataFrame]:
    """A RecBole atomic file (header fields look like `name:type`) -> (String columns with a
    1-based `__row`, quarantine of ragged / invalid UTF-8 rows). A header without rows is an error."""
    check_file(p)
    df, q = read_delimited(p, "\t", None, "RecBole atomic file")
    names = [c for c in df.columns if c != "__row"]
    bad = [c for c in names if ":" not in c]
    if bad:
        raise InputError("RecBole header fields must look like name:type", path=p, row=0, column=bad[0])
    return df.rename({c: c.split(":")[0] for c in names}), q


def _read_index(p: Path, key: str) -> pl.DataFrame:
    """A UniSRec `.item2index` / `.user2index` file: key<TAB>integer index, no header."""
    check_file(p)
    try:
        df = pl.read_csv(p, separator="\t", has_header=False, new_columns=[key, "idx"],
                         schema_overrides={key: pl.String, "idx": pl.String}, quote_char=None)
    except Exception as e:  # noqa: BLE001 - polars raises several types for unreadable text
        raise InputError(f"cannot read as key<TAB>index: {str(e).splitlines()[0]}", path=p) from None
    idx = df["idx"].str.strip_chars().cast(pl.Int64, strict=False)
    if idx.null_count():
        row = int(idx.is_null().arg_true()[0]) + 1
        raise InputError("index is not an integer", path=p, row=row, column="idx")
    return df.with_columns(idx.alias("idx"))


def _check_unisrec_rows(frame: pl.DataFrame, path: Path, items: pl.Series, users: pl.Series,
                        has_list: bool) -> pl.DataFrame:
    """Quarantine rows of a UniSRec .inter file with a non-integer or unknown index."""
    src = str(path)
    parts = []
    cols = [("item_id", pl.concat_list(pl.col("item_id").str.strip_chars()))]
    if has_list:
        cols.append(("item_id_list", pl.col("item_id_list").str.strip_chars().str.split(" ")))
    masks: list[tuple[pl.Series, str, str]] = []
    for c in ("user_id", "item_id", "item_id_list"):
        if c == "item_id_list" and not has_list:
            continue
        masks.append((frame[c].is_null() | (frame[c].str.strip_chars() == ""), c, "missing required field"))
    uidx = frame["user_id"].str.strip_chars().cast(pl.Int64, strict=False)
    masks.append((frame["user_id"].is_not_null() & uidx.is_null(), "user_id", "user index is not an integer"))
    masks.append((uidx.is_not_null() & ~uidx.is_in(users.implode()), "user_id", "user index not in .user2index"))
    for c, expr in cols:
        tok = frame.select("__row", expr.alias("t")).explode("t").with_columns(
            pl.col("t").cast(pl.Int64, strict=False).alias("i"))
        non_int = tok.filter(pl.col("t").is_not_null() & pl.col("i").is_null())["__row"].unique()
        unknown = tok.filter(pl.col("i").is_not_null() & ~pl.col("i").is_in(items.implode()))["__row"].unique()
        masks.append((frame["__row"].is_in(non_int.implode()), c, "not an integer item index"))
        masks.append((frame["__row"].is_in(unknown.implode()), c, "item index not in .item2index"))
    seen = pl.repeat(False, frame.height, eager=True, dtype=pl.Boolean)
    for m, c, reason in masks:
        m = m.fill_null(False)
        fresh = m & ~seen
        if fresh.any():
            parts.append(quarantine_rows(frame.with_columns(fresh.alias("__m")), pl.col("__m"), src, c,
                                         reason))
        seen = seen | m
    return pl.concat(parts) if parts else empty_quarantine()


def read_unisrec(folder: str | Path, name: str | None = None) -> ReadResult:
    """UniSRec's released files: <name>.{train,valid,test}.inter, .item2index, .user2index, .text.

    The files carry order only, no timestamps: each user's full sequence is recovered from the test
    file (history + target; history lengths are checked against train so nothing is truncated) and
    timestamps are synthesised as ORDER_EPOCH + position seconds (meta records this).

    A row with a missing field, a non-integer index or an index absent from .item2index /
    .user2index is quarantined, and so is its user: a sequence with a hole cannot be rebuilt, so
    that user's other rows are not used (meta counts these users). Accounting: rows_in counts
    the events rebuilt plus the quarantined rows.
    """
    f = Path(folder)
    if not f.is_dir():
        raise InputError("expected the folder holding UniSRec's files", path=f)
    name = name or next((p.name.split(".")[0] for p in sorted(f.glob("*.test.inter"))), None)
    if name is None:
        raise InputError("no *.test.inter file in folder", path=f)
    item2index = _read_index(f / f"{name}.item2index", "asin")
    user2index = _read_index(f / f"{name}.user2index", "user")
    frames, quarantine = {}, []
    for split in ("train", "valid", "test"):
        path = f / f"{name}.{split}.inter"
        frame, q = _read_atomic(path)
        for col in ("user_id", "item_id_list", "item_id"):
            if col not in frame.columns:
                raise InputError("required column missing", path=path, column=col)
        quarantine += [q, _check_unisrec_rows(frame, path, item2index["idx"], user2index["idx"], True)]
        frames[split] = frame
    q_all = pl.concat(quarantine)
    bad_users: set[str] = set()
    if q_all.height:
        import json

        for raw in q_all["raw"].to_list():
            try:
                u = json.loads(raw).get("user_id")
            except (ValueError, AttributeError):
                u = raw.split("\t", 1)[0] if raw else None
            if u is not None:
                bad_users.add(str(u).strip())
    if bad_users:
        drop = pl.Series(sorted(bad_users), dtype=pl.String).implode()
        frames = {k: v.filter(~pl.col("user_id").str.strip_chars().is_in(drop)) for k, v in frames.items()}
    train, valid, test = frames["train"], frames["valid"], frames["test"]
    for frame in (train, valid, test):
        if frame.height == 0:
            raise InputError("no usable row left after quarantine", path=f / f"{name}.test.inter")

    def as_list(c: str) -> pl.Expr:
        return pl.col(c).str.strip_chars().str.split(" ").list.eval(pl.element().cast(pl.Int64))

    # Train holds every prefix of the training part (longest first, lists cut to the last 50):
    # the full training part is the first item of the shortest prefix plus all targets in order.
    tr = (train.with_columns(as_list("item_id_list").alias("hist"),
                             pl.col("item_id").str.strip_chars().cast(pl.Int64),
                             pl.col("user_id").str.strip_chars())
          .sort("__row", descending=True).group_by("user_id", maintain_order=True)
          .agg(pl.col("hist").first().list.first().alias("head"), pl.col("item_id").alias("tail")))
    last = (valid.select(pl.col("user_id").str.strip_chars(),
                         pl.col("item_id").str.strip_chars().cast(pl.Int64).alias("v"))
            .join(test.select(pl.col("user_id").str.strip_chars(),
                              pl.col("item_id").str.strip_chars().cast(pl.Int64).alias("t")),
                  on="user_id"))
    seqs = (tr.join(last, on="user_id", how="right")
            .select(pl.col("user_id").cast(pl.Int64).alias("uidx"),
                    pl.concat_list("head", "tail", "v", "t").alias("seq")))
    n_truncated = int(seqs.filter(pl.col("seq").list.len() > 51).height)
    long = seqs.explode("seq").with_columns(pl.int_range(pl.len()).over("uidx").alias("pos"))
    events = (long.join(user2index, left_on="uidx", right_on="idx", how="left")
              .join(item2index, left_on="seq", right_on="idx", how="left")
              .sort("uidx", "pos", maintain_order=True)
              .select(pl.col("user").alias("user_id"), pl.col("asin").alias("item_id"),
                      (pl.lit(ORDER_EPOCH) + pl.duration(seconds=pl.col("pos"))).dt.convert_time_zone("UTC")
                      .alias("timestamp"),
                      pl.lit("review").alias("event_type"), pl.lit(None, pl.Float64).alias("value"),
                      pl.lit(name).alias("domain")))
    items = pl.DataFrame(schema={"item_id": pl.String, "title": pl.String})
    text_path = f / f"{name}.text"
    items_q = None
    if text_path.exists():
        t, items_q = _read_atomic(text_path)
        for col in ("item_id", "text"):
            if col not in t.columns:
                raise InputError("required column missing", path=text_path, column=col)
        items = t.select(pl.col("item_id"), pl.col("text").alias("title"))
    items = conform_items(items.with_columns(pl.lit(name).alias("domain")))
    res = finish(events, items, [q_all], events.height + q_all.height,
                 [str(f / f"{name}.test.inter"), str(text_path)],
                 meta={"timestamps": "synthetic: order only", "unisrec": {
                     "name": name, "histories_longer_than_50": n_truncated,
                     "users_quarantined": len(bad_users)}})
    res.items_quarantine = items_q
    return res


def read_unisrec_options(opts: ReadOptions) -> ReadResult:
    return read_unisrec(opts.path, opts.name)


def read_recbole_inter(path: str | Path, domain: str | None = None) -> ReadResult:
    """A plain RecBole `.inter` (user_id, item_id, timestamp[, rating]) with an optional `.item`."""
    p = Path(path)
    df, q0 = _read_atomic(p)
    for col in ("user_id", "item_id"):
        if col not in df.columns:
            raise InputError("required column missing", path=p, column=col)
    from shiftrec.data.readers.generic import map_events

    domain = domain or p.stem
    has_ts = "timestamp" in df.columns
    if not has_ts:  # order only
        df = df.with_columns(pl.int_range(pl.len()).over("user_id").cast(pl.String).alias("timestamp"))
    events, q = map_events(df, ColumnMap(value="rating" if "rating" in df.columns else None,
                                         default_event_type="rating", default_domain=domain,
                                         timestamp_unit="s"), str(p))
    items = pl.DataFrame(schema={"item_id": pl.String})
    item_file = p.with_suffix(".item")
    items_q = None
    if item_file.exists():
        idf, items_q = _read_atomic(item_file)
        ren = {c: "title" for c in idf.columns if c in ("title", "text", "movie_title")}
        ren |= {c: "category" for c in idf.columns if c in ("categories", "genre", "class")}
        items = idf.drop("__row").rename(ren)
    items = conform_items(items.with_columns(pl.lit(domain).alias("domain")))
    res = finish(events, items, [q0, *q], df.height + q0.height, [str(p)])
    res.items_quarantine = items_q
    return res


def read_recbole_options(opts: ReadOptions) -> ReadResult:
    return read_recbole_inter(opts.path, opts.domain)
