"""Exact counts on the real shared datasets (skipped when ../shared/data is absent)."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from shiftrec.data.clean import UNISREC_CLEAN, CleanConfig, clean
from shiftrec.data.readers import UNISREC_RECIPE, read_online_retail, read_unisrec
from shiftrec.data.splits import leave_one_out

pytestmark = pytest.mark.data


def test_online_retail_unisrec_recipe_exact(shared_data) -> None:
    read = read_online_retail(shared_data / "online-retail/online_retail_I.parquet", UNISREC_RECIPE)
    ds, report, _ = clean(read, UNISREC_CLEAN, "online-retail")
    s = ds.summary()
    assert (s["users"], s["items"], s["events"]) == (16_520, 3_469, 519_906)
    assert report["rows_in"] == 541_909 and report["balanced"]
    # text is the lower-cased description
    assert ds.items["title"].str.to_lowercase().equals(ds.items["title"])


def test_online_retail_shuffle_preset_is_the_same_data_in_another_order(shared_data) -> None:
    """The comparable protocol (`online-retail-shuffle`): the same users, items and events as the
    file-order preset; only the order of an invoice's lines differs, so the test targets change."""
    from shiftrec.pipelines.transfer import load_dataset

    a, b = (load_dataset(n, shared_data) for n in ("online-retail", "online-retail-shuffle"))
    assert (b.summary()["users"], b.summary()["items"], b.summary()["events"]) == (16_520, 3_469, 519_906)
    key = ["user_id", "item_id", "timestamp"]
    assert a.events.select(key).sort(key).equals(b.events.select(key).sort(key))
    sa, sb = leave_one_out(a, 50), leave_one_out(b, 50)
    same_target = float(np.mean(sa.test.target == sb.test.target))
    assert 0.0 < same_target < 0.9  # reordered ties move many held-out items, not all


def test_scientific_exact_counts_and_targets(shared_data) -> None:
    folder = shared_data / "unisrec-scientific"
    ds, report, _ = clean(read_unisrec(folder), CleanConfig(dedup="none"), "scientific")
    s = ds.summary()
    assert (s["users"], s["items"], s["events"]) == (8_442, 4_385, 59_427)
    assert report["balanced"]
    split = leave_one_out(ds)
    item2asin = pl.read_csv(folder / "Scientific.item2index", separator="\t", has_header=False,
                            new_columns=["asin", "idx"])
    asin = dict(zip(item2asin["idx"].to_list(), item2asin["asin"].to_list(), strict=True))
    user2 = pl.read_csv(folder / "Scientific.user2index", separator="\t", has_header=False,
                        new_columns=["user", "idx"])
    user = dict(zip(user2["idx"].to_list(), user2["user"].to_list(), strict=True))
    keys = split.item_map.keys
    for name, es in (("valid", split.valid), ("test", split.test)):
        released = pl.read_csv(folder / f"Scientific.{name}.inter", separator="\t")
        released.columns = [c.split(":")[0] for c in released.columns]
        want = {user[u]: asin[i] for u, i in zip(released["user_id"], released["item_id"], strict=True)}
        got = {split.user_ids[u]: keys[t].split("/", 1)[1] for u, t in zip(es.users, es.target, strict=True)}
        assert got == want
        # histories are the released item_id_list (last 50)
        r0 = released.row(0, named=True)
        u0 = next(i for i, u in enumerate(es.users) if split.user_ids[u] == user[r0["user_id"]])
        hist = [keys[x].split("/", 1)[1] for x in es.history[u0]]
        assert hist == [asin[int(x)] for x in r0["item_id_list"].split(" ")]
    assert np.all(split.test.history.lengths() <= 50)
