"""One reader per source format, in an explicit table: every reader takes one `ReadOptions`."""

from __future__ import annotations

from shiftrec.data.readers._common import ReadResult
from shiftrec.data.readers.amazon import (
    read_amazon_2018,
    read_amazon_2018_options,
    read_amazon_csv,
    read_amazon_csv_options,
)
from shiftrec.data.readers.generic import read_generic, read_generic_options
from shiftrec.data.readers.online_retail import (
    UNISREC_RECIPE,
    OnlineRetailOptions,
    read_online_retail,
    read_online_retail_options,
)
from shiftrec.data.readers.options import (
    ColumnMap,
    ItemColumnMap,
    ReaderSpec,
    ReadOptions,
    Recipe,
    TieOrder,
    check_options,
)
from shiftrec.data.readers.recbole import (
    read_recbole_inter,
    read_recbole_options,
    read_unisrec,
    read_unisrec_options,
)
from shiftrec.errors import unknown_name

READERS: dict[str, ReaderSpec] = {
    "amazon-2018": ReaderSpec(
        read_amazon_2018_options,
        "Amazon 2018 raw reviews JSON lines (one JSON object per line), optionally with metadata",
        "a reviews file <Category>[_5].json(.gz)",
        ("reviewerID", "asin", "unixReviewTime (overall optional: the rating value)"),
        "unixReviewTime: unix seconds (a finite number; NaN / inf / out of range is quarantined)",
        ("meta_<Category>.json.gz beside the reviews (or --items FILE): asin, title, category, "
         "brand, description, price",),
        frozenset({"items", "domain"})),
    "amazon-csv": ReaderSpec(
        read_amazon_csv_options,
        "Amazon interactions CSV (the UniSRec-era 5-core exports)",
        "a folder holding interactions.csv(.gz), or the CSV file itself",
        ("user_id", "item_id", "timestamp"),
        "timestamp: unix seconds",
        ("items.csv(.gz) in the folder (or --items FILE): item_id, title",),
        frozenset({"items", "domain"})),
    "online-retail": ReaderSpec(
        read_online_retail_options,
        "UCI Online Retail I / II (Parquet, CSV or the original xlsx)",
        "the data file",
        ("InvoiceNo|Invoice", "StockCode", "Quantity", "InvoiceDate "
         "(Description, UnitPrice|Price, CustomerID|Customer ID, Country optional)"),
        "InvoiceDate: a date-time ('2010-12-01 08:26:00', '12/1/2010 8:26', ISO 8601) or unix "
        "seconds (milliseconds when > 1e11), read as UTC",
        (),
        frozenset({"recipe", "tie_order", "seed"})),
    "unisrec": ReaderSpec(
        read_unisrec_options,
        "UniSRec's released RecBole files (order only: timestamps are synthesised from position)",
        "the folder holding <name>.{train,valid,test}.inter",
        ("user_id:token", "item_id_list:token_seq", "item_id:token (in each .inter file)"),
        "none in the files: event k of a user gets 2000-01-01 + k seconds",
        ("<name>.item2index (required)", "<name>.user2index (required)",
         "<name>.text (optional: item_id, text)"),
        frozenset({"name"})),
    "recbole": ReaderSpec(
        read_recbole_options,
        "a RecBole atomic .inter file (tab-separated, header fields name:type)",
        "the .inter file",
        ("user_id", "item_id", "timestamp (optional: without it, file order)", "rating (optional)"),
        "timestamp: unix seconds",
        ("<stem>.item beside it (optional): item_id, title|text|movie_title, categories|genre|class",),
        frozenset({"domain"})),
    "generic": ReaderSpec(
        read_generic_options,
        "any event log: CSV, TSV, Parquet or JSON lines (optionally .gz), columns named by --map",
        "the events file",
        ("user_id", "item_id", "timestamp (rename with --map user_id=COL ...; optional: "
         "event_type, value, domain, session_id)",),
        "auto (integers: unix seconds, milliseconds when > 1e11; text: ISO 8601 / common "
        "formats); or --map timestamp_unit=s|ms|iso|<strftime>",
        ("--items FILE (optional catalogue: item_id, title; --map item_category=COL ...)",),
        frozenset({"items", "columns", "item_columns", "file_format"})),
}


def read(fmt: str, opts: ReadOptions) -> ReadResult:
    """Read `opts.path` as format `fmt` (a key of READERS): a table lookup, nothing else."""
    if fmt not in READERS:
        raise unknown_name("format", fmt, list(READERS))
    spec = READERS[fmt]
    check_options(fmt, spec, opts)
    return spec.read(opts)


__all__ = ["READERS", "ReadResult", "ReadOptions", "ReaderSpec", "Recipe", "TieOrder", "ColumnMap",
           "ItemColumnMap", "OnlineRetailOptions", "UNISREC_RECIPE", "read", "read_amazon_2018",
           "read_amazon_csv", "read_online_retail", "read_unisrec", "read_recbole_inter",
           "read_generic"]
