"""One reader per source format, in an explicit registry."""

from __future__ import annotations

from collections.abc import Callable

from shiftrec.data.readers._common import ReadResult
from shiftrec.data.readers.amazon import read_amazon_2018, read_amazon_csv
from shiftrec.data.readers.generic import ColumnMap, ItemColumnMap, read_generic
from shiftrec.data.readers.online_retail import (
    UNISREC_RECIPE,
    OnlineRetailOptions,
    read_online_retail,
)
from shiftrec.data.readers.recbole import read_recbole_inter, read_unisrec

READERS: dict[str, Callable[..., ReadResult]] = {
    "amazon-2018": read_amazon_2018,
    "amazon-csv": read_amazon_csv,
    "online-retail": read_online_retail,
    "unisrec": read_unisrec,
    "recbole": read_recbole_inter,
    "generic": read_generic,
}

__all__ = ["READERS", "ReadResult", "ColumnMap", "ItemColumnMap", "OnlineRetailOptions",
           "UNISREC_RECIPE", "read_amazon_2018", "read_amazon_csv", "read_online_retail",
           "read_unisrec", "read_recbole_inter", "read_generic"]
