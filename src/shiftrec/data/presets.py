"""Named datasets in the shared data folder: how to read and clean each (explicit registry)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from shiftrec.data.clean import UNISREC_CLEAN, CleanConfig, DedupMode
from shiftrec.data.readers import (
    UNISREC_RECIPE,
    ReadResult,
    TieOrder,
    read_amazon_2018,
    read_amazon_csv,
    read_online_retail,
    read_unisrec,
)
from shiftrec.errors import InputError, unknown_name
from shiftrec.paths import ENV_VAR, data_root


@dataclass(frozen=True)
class Preset:
    description: str
    read: Callable[[Path], ReadResult]
    clean: CleanConfig


AMAZON_DOMAINS = ("beauty", "clothing", "health", "toys", "books", "electronics-2014", "electronics-2018")
_NO_DEDUP = CleanConfig(dedup=DedupMode.NONE)

PRESETS: dict[str, Preset] = {
    "scientific": Preset("UniSRec's Amazon 2018 Industrial & Scientific files (exact)",
                         lambda r: read_unisrec(r / "unisrec-scientific"), _NO_DEDUP),
    "online-retail": Preset("UCI Online Retail I, UniSRec recipe (user = invoice, 5-core)",
                            lambda r: read_online_retail(r / "online-retail/online_retail_I.parquet",
                                                         UNISREC_RECIPE), UNISREC_CLEAN),
    "online-retail-ii": Preset("UCI Online Retail II 2009-10, UniSRec recipe",
                               lambda r: read_online_retail(
                                   r / "online-retail/online_retail_II_2009-2010.parquet",
                                   UNISREC_RECIPE), UNISREC_CLEAN),
    "online-retail-shuffle": Preset(
        "UCI Online Retail I, UniSRec recipe, lines of an invoice in a seeded random order (seed 0) "
        "as in UniSRec's released files: the protocol comparable with the papers",
        lambda r: read_online_retail(r / "online-retail/online_retail_I.parquet", UNISREC_RECIPE,
                                     tie_order=TieOrder.SHUFFLE, seed=0), UNISREC_CLEAN),
    "online-retail-ii-shuffle": Preset(
        "UCI Online Retail II 2009-10, UniSRec recipe, invoice lines in a seeded random order (seed 0)",
        lambda r: read_online_retail(r / "online-retail/online_retail_II_2009-2010.parquet", UNISREC_RECIPE,
                                     tie_order=TieOrder.SHUFFLE, seed=0), UNISREC_CLEAN),
    "online-retail-customers": Preset("UCI Online Retail I by customer, store rules on",
                                      lambda r: read_online_retail(r / "online-retail/online_retail_I.parquet"),
                                      CleanConfig()),
    "gift-cards": Preset("Amazon 2018 Gift Cards 5-core raw JSON + metadata",
                         lambda r: read_amazon_2018(r / "amazon-2018-raw/Gift_Cards_5.json.gz"), CleanConfig()),
    "magazines": Preset("Amazon 2018 Magazine Subscriptions 5-core raw JSON + metadata",
                        lambda r: read_amazon_2018(r / "amazon-2018-raw/Magazine_Subscriptions_5.json.gz"),
                        CleanConfig()),
}
for _d in AMAZON_DOMAINS:
    PRESETS[f"amazon-{_d}"] = Preset(f"Amazon 2014/2018 {_d} 5-core (interactions.csv + items.csv)",
                                     lambda r, d=_d: read_amazon_csv(r / "amazon" / d), _NO_DEDUP)


def load_preset(name: str, root: str | Path | None = None) -> tuple[ReadResult, CleanConfig]:
    if name not in PRESETS:
        raise unknown_name("dataset", name, PRESETS)
    r = data_root(root)
    if r is None:
        raise InputError(f"shared data folder not found: set {ENV_VAR} or pass --data-root")
    p = PRESETS[name]
    return p.read(r), p.clean
