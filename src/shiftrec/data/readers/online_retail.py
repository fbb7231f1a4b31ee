"""UCI Online Retail I and II (parquet, csv or the original xlsx), with explicit, counted rules."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from shiftrec.data.readers._common import (
    ReadResult,
    check_file,
    empty_quarantine,
    finish,
    quarantine_rows,
)
from shiftrec.data.readers.generic import detect_format, read_frame, timestamp_expr
from shiftrec.data.readers.options import ReadOptions, Recipe, TieOrder
from shiftrec.data.schema import conform_items
from shiftrec.errors import InputError

# Codes that are not products: postage, discounts, manual adjustments, fees, samples, tests.
NON_PRODUCT_CODES = r"^(POST|DOT|M|m|C2|C3|D|S|B|CRUK|PADS|AMAZONFEE|BANK CHARGES|ADJUST\d*|TEST\d+|gift_\d+_\d+)$"

ALIASES = {
    "invoice": ("InvoiceNo", "Invoice"),
    "stock": ("StockCode",),
    "description": ("Description",),
    "quantity": ("Quantity",),
    "date": ("InvoiceDate",),
    "price": ("UnitPrice", "Price"),
    "customer": ("CustomerID", "Customer ID"),
    "country": ("Country",),
}


class UserKey(enum.StrEnum):
    CUSTOMER = "customer"
    INVOICE = "invoice"


@dataclass(frozen=True)
class OnlineRetailOptions:
    user: UserKey = UserKey.CUSTOMER
    drop_cancellations: bool = True
    drop_non_positive_quantity: bool = True
    drop_non_product_codes: bool = True
    drop_missing_customer: bool = True  # only applies when user == customer
    lowercase_text: bool = False
    domain: str = "online-retail"


# UniSRec's recipe: user = invoice, item = StockCode, text = lower-cased description, nothing else
# filtered here (duplicates and 5-core are cleaning steps).
UNISREC_RECIPE = OnlineRetailOptions(user=UserKey.INVOICE, drop_cancellations=False,
                                     drop_non_positive_quantity=False, drop_non_product_codes=False,
                                     drop_missing_customer=False, lowercase_text=True)


def _resolve(df: pl.DataFrame, path: Path) -> dict[str, str]:
    out = {}
    for key, names in ALIASES.items():
        hit = next((n for n in names if n in df.columns), None)
        if hit is None and key in ("invoice", "stock", "date", "quantity"):
            raise InputError(f"required column missing (expected one of {', '.join(names)}; "
                             f"present: {', '.join(c for c in df.columns if c != '__row')})",
                             path=path, column=names[0])
        if hit is not None:
            out[key] = hit
    return out


def _read_any(p: Path) -> tuple[pl.DataFrame, pl.DataFrame]:
    if p.suffix.lower() in (".xlsx", ".xls"):
        try:
            df = pl.read_excel(p, engine="openpyxl", sheet_id=1)
        except Exception as e:  # noqa: BLE001
            raise InputError(f"cannot read as xlsx: {str(e).splitlines()[0]}", path=p) from None
        if df.height == 0:
            raise InputError("sheet has no rows", path=p)
        return df.with_row_index("__row", offset=2), empty_quarantine()  # spreadsheet row (header is row 1)
    detect_format(p)
    df, q = read_frame(p)
    return df, pl.concat(q) if q else empty_quarantine()


def read_online_retail(path: str | Path, opts: OnlineRetailOptions | None = None,
                       tie_order: TieOrder | str = TieOrder.FILE, seed: int = 0) -> ReadResult:
    """Online Retail rows -> purchase events. Rows sharing a (user, timestamp) keep the file's
    order (tie_order='file'), or are put in a seeded random order (tie_order='shuffle')."""
    opts = opts or OnlineRetailOptions()
    tie_order = TieOrder(tie_order)
    p = check_file(path)
    df, read_q = _read_any(p)
    c = _resolve(df, p)
    rows_in = df.height + read_q.height
    src = str(p)

    inv = pl.col(c["invoice"]).cast(pl.String).str.strip_chars()
    stock = pl.col(c["stock"]).cast(pl.String).str.strip_chars()
    qty = pl.col(c["quantity"]).cast(pl.String).str.strip_chars().cast(pl.Float64, strict=False)
    cust = pl.lit(None, pl.String)
    if "customer" in c:  # 17850.0 (float in the originals) -> "17850"; blanks are missing
        raw_c = pl.col(c["customer"]).cast(pl.String).str.strip_chars()
        as_int = raw_c.cast(pl.Float64, strict=False).cast(pl.Int64, strict=False).cast(pl.String)
        cust = pl.when(raw_c == "").then(None).otherwise(pl.coalesce(as_int, raw_c))
    desc = pl.col(c["description"]).cast(pl.String).str.strip_chars() if "description" in c \
        else pl.lit(None, pl.String)
    if opts.lowercase_text:
        desc = desc.str.to_lowercase()
    price = pl.col(c["price"]).cast(pl.Float64, strict=False) if "price" in c else pl.lit(None, pl.Float64)

    work = df.with_columns(
        inv.alias("__inv"), stock.alias("__stock"), qty.alias("__qty"), cust.alias("__cust"),
        desc.alias("__desc"), price.alias("__price"),
        timestamp_expr(df, c["date"], "auto").alias("__ts"),
    )
    # Malformed rows: quarantined with the reason.
    bad = [
        (pl.col("__inv").is_null() | (pl.col("__inv") == ""), c["invoice"], "missing invoice number"),
        (pl.col("__stock").is_null() | (pl.col("__stock") == ""), c["stock"], "missing stock code"),
        (pl.col("__ts").is_null(), c["date"], "unparseable or missing invoice date"),
        (pl.col("__qty").is_null() | ~pl.col("__qty").is_finite(), c["quantity"],
         "quantity is not a finite number"),
    ]
    if "price" in c:  # a price given but NaN / inf (an empty price is allowed: no price)
        bad.append((pl.col("__price").is_not_null() & ~pl.col("__price").is_finite(), c["price"],
                    "unit price is not a finite number"))
    quarantine, seen = [], pl.lit(False)
    for mask, col, reason in bad:
        m = work.select((mask & ~seen).fill_null(False).alias("m")).to_series()
        quarantine.append(quarantine_rows(df.with_columns(m.alias("__m")), pl.col("__m"), src, col,
                                          reason))
        seen = seen | mask
    n_bad = sum(q.height for q in quarantine)
    if n_bad == df.height:
        first = next(q for q in quarantine if q.height)
        raise InputError(f"every row is malformed; first: {first['reason'][0]}", path=p,
                         row=int(first["row"][0]), column=first["column"][0])
    work = work.filter(~seen.fill_null(False))

    # Explicit, counted rules.
    rules: list[tuple[str, pl.Expr]] = []
    if opts.drop_cancellations:
        rules.append(("cancellation", pl.col("__inv").str.starts_with("C")))
    if opts.drop_non_positive_quantity:
        rules.append(("non_positive_quantity", pl.col("__qty") <= 0))
    if opts.drop_non_product_codes:
        rules.append(("non_product_code", pl.col("__stock").str.contains(NON_PRODUCT_CODES)))
    if opts.user == UserKey.CUSTOMER and opts.drop_missing_customer:
        rules.append(("missing_customer_id", pl.col("__cust").is_null()))
    filtered: dict[str, int] = {}
    removed = []
    for name, mask in rules:
        hit = work.filter(mask)
        filtered[name] = hit.height
        if hit.height:
            removed.append(hit.select(pl.col("__row").alias("row"), pl.lit(name).alias("rule"),
                                      pl.col("__inv").alias("invoice"), pl.col("__stock").alias("item_id")))
        work = work.filter(~mask)

    user = pl.col("__inv") if opts.user == UserKey.INVOICE else pl.col("__cust")
    events = work.select(
        user.alias("user_id"), pl.col("__stock").alias("item_id"), pl.col("__ts").alias("timestamp"),
        pl.lit("purchase").alias("event_type"), pl.col("__qty").alias("value"),
        pl.lit(opts.domain).alias("domain"), pl.col("__inv").alias("session_id"))
    # Catalogue: most recent description and median price per stock code.
    items = conform_items(
        work.filter(pl.col("__desc").is_not_null() & (pl.col("__desc") != ""))
        .group_by("__stock", maintain_order=True)
        .agg(pl.col("__desc").last().alias("title"), pl.col("__price").filter(pl.col("__price") > 0)
             .median().alias("price"))
        .rename({"__stock": "item_id"}).with_columns(pl.lit(opts.domain).alias("domain")))
    if tie_order == TieOrder.SHUFFLE:
        # a seeded shuffle of the rows: cleaning sorts stably by (user, time), so only the order
        # of events sharing a (user, timestamp) changes
        events = events.sample(fraction=1.0, shuffle=True, seed=seed)
    fr = pl.concat(removed) if removed else None
    meta = {"online_retail": {"user": opts.user.value, "tie_order": TieOrder(tie_order).value}}
    if tie_order == TieOrder.SHUFFLE:
        meta["online_retail"]["seed"] = seed
    return finish(events, items, [read_q, *quarantine], rows_in, [src], filtered, fr, meta=meta)


def read_online_retail_options(opts: ReadOptions) -> ReadResult:
    recipe = UNISREC_RECIPE if opts.recipe == Recipe.UNISREC else OnlineRetailOptions()
    return read_online_retail(opts.path, recipe, tie_order=opts.tie_order, seed=opts.seed)
