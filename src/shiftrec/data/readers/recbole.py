"""RecBole atomic files: `.inter` (+ `.item`), and UniSRec's released train/valid/test + `.text`."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import polars as pl

from shiftrec.data.readers._common import ReadResult, check_file, finish, raise_invalid_utf8
from shiftrec.data.schema import conform_items
from shiftrec.errors import InputError

ORDER_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)


def _read_atomic(p: Path) -> pl.DataFrame:
    """Read a RecBole atomic file; header fields look like `name:type`. Returns String columns."""
    check_file(p)
    try:
        df = pl.read_csv(p, separator="\t", infer_schema=False, quote_char=None,
                         truncate_ragged_lines=False)
    except pl.exceptions.ComputeError as e:
        if "utf" in str(e).lower():
            raise_invalid_utf8(p, "\t")
        raise InputError(f"cannot parse RecBole atomic file: {str(e).splitlines()[0]}", path=p) from None
    bad = [c for c in df.columns if ":" not in c]
    if bad:
        raise InputError("RecBole header fields must look like name:type", path=p, row=0, column=bad[0])
    df.columns = [c.split(":")[0] for c in df.columns]
    return df.with_row_index("__row", offset=1)


def read_unisrec(folder: str | Path, name: str | None = None) -> ReadResult:
    """UniSRec's released files: <name>.{train,valid,test}.inter, .item2index, .user2index, .text.

    The files carry order only, no timestamps: each user's full sequence is recovered from the test
    file (history + target; history lengths are checked against train so nothing is truncated) and
    timestamps are synthesised as ORDER_EPOCH + position seconds (meta records this).
    """
    f = Path(folder)
    if not f.is_dir():
        raise InputError("expected the folder holding UniSRec's files", path=f)
    name = name or next((p.name.split(".")[0] for p in sorted(f.glob("*.test.inter"))), None)
    if name is None:
        raise InputError("no *.test.inter file in folder", path=f)
    item2index = pl.read_csv(f / f"{name}.item2index", separator="\t", has_header=False,
                             new_columns=["asin", "idx"], schema_overrides={"asin": pl.String, "idx": pl.Int64})
    user2index = pl.read_csv(f / f"{name}.user2index", separator="\t", has_header=False,
                             new_columns=["user", "idx"], schema_overrides={"user": pl.String, "idx": pl.Int64})
    train = _read_atomic(f / f"{name}.train.inter")
    valid = _read_atomic(f / f"{name}.valid.inter")
    test = _read_atomic(f / f"{name}.test.inter")
    for frame, split in ((train, "train"), (valid, "valid"), (test, "test")):
        for col in ("user_id", "item_id_list", "item_id"):
            if col not in frame.columns:
                raise InputError("required column missing", path=f / f"{name}.{split}.inter", column=col)

    def as_list(c: str) -> pl.Expr:
        return pl.col(c).str.split(" ").list.eval(pl.element().cast(pl.Int64))

    # Train holds every prefix of the training part (longest first, lists cut to the last 50):
    # the full training part is the first item of the shortest prefix plus all targets in order.
    tr = (train.with_columns(as_list("item_id_list").alias("hist"), pl.col("item_id").cast(pl.Int64))
          .sort("__row", descending=True).group_by("user_id", maintain_order=True)
          .agg(pl.col("hist").first().list.first().alias("head"), pl.col("item_id").alias("tail")))
    last = (valid.select("user_id", pl.col("item_id").cast(pl.Int64).alias("v"))
            .join(test.select("user_id", pl.col("item_id").cast(pl.Int64).alias("t")), on="user_id"))
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
    if text_path.exists():
        t = _read_atomic(text_path)
        items = t.select(pl.col("item_id"), pl.col("text").alias("title"))
    items = conform_items(items.with_columns(pl.lit(name).alias("domain")))
    return finish(events, items, [], events.height, [str(f / f"{name}.test.inter"), str(text_path)],
                  meta={"timestamps": "synthetic: order only", "unisrec": {
                      "name": name, "histories_longer_than_50": n_truncated}})


def read_recbole_inter(path: str | Path, domain: str | None = None) -> ReadResult:
    """A plain RecBole `.inter` (user_id, item_id, timestamp[, rating]) with an optional `.item`."""
    p = Path(path)
    df = _read_atomic(p)
    for col in ("user_id", "item_id"):
        if col not in df.columns:
            raise InputError("required column missing", path=p, column=col)
    from shiftrec.data.readers.generic import ColumnMap, map_events

    domain = domain or p.stem
    has_ts = "timestamp" in df.columns
    if not has_ts:  # order only
        df = df.with_columns(pl.int_range(pl.len()).over("user_id").cast(pl.String).alias("timestamp"))
    events, q = map_events(df, ColumnMap(value="rating" if "rating" in df.columns else None,
                                         default_event_type="rating", default_domain=domain,
                                         timestamp_unit="s"), str(p))
    items = pl.DataFrame(schema={"item_id": pl.String})
    item_file = p.with_suffix(".item")
    if item_file.exists():
        idf = _read_atomic(item_file)
        ren = {c: "title" for c in idf.columns if c in ("title", "text", "movie_title")}
        ren |= {c: "category" for c in idf.columns if c in ("categories", "genre", "class")}
        items = idf.rename(ren)
    items = conform_items(items.with_columns(pl.lit(domain).alias("domain")))
    return finish(events, items, q, df.height, [str(p)])
