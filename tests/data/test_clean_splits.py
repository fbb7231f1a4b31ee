"""Cleaning rules, accounting, k-core and splits on tiny fixtures with known answers."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import polars as pl
from hypothesis import given, settings
from hypothesis import strategies as st

from shiftrec.data.clean import CleanConfig, DedupMode, clean, first_distinct, kcore
from shiftrec.data.readers._common import finish
from shiftrec.data.schema import Dataset, conform_items
from shiftrec.data.splits import SeqSplit, leave_one_out, temporal


def events(rows: list[tuple]) -> pl.DataFrame:
    return pl.DataFrame(
        [{"user_id": u, "item_id": i, "timestamp": datetime.fromtimestamp(t, UTC), "domain": "d"}
         for u, i, t in rows])


def read_of(rows: list[tuple], items: list[str] | None = None):
    ev = events(rows)
    it = conform_items(pl.DataFrame({"item_id": items, "domain": ["d"] * len(items)})) if items \
        else conform_items(pl.DataFrame(schema={"item_id": pl.String}))
    return finish(ev.with_columns(pl.lit("view").alias("event_type")), it, [], ev.height, ["t"])


def test_rules_count_and_balance() -> None:
    rows = [("u1", "a", 1e9), ("u1", "a", 1e9), ("u1", "b", 1e9 + 5), ("", "a", 1e9),
            ("u2", "zzz", 1e9), ("u3", "a", 1)]
    ds, rep, fr = clean(read_of(rows, ["a", "b"]))
    assert rep["filtered_by_rule"]["duplicate"] == 1
    assert rep["filtered_by_rule"]["missing_user_id"] == 1
    assert rep["filtered_by_rule"]["unknown_item"] == 1
    assert rep["filtered_by_rule"]["timestamp_out_of_range"] == 1  # 1970
    assert rep["accepted"] == 2 and rep["balanced"]
    assert sorted(fr["rule"].to_list()) == sorted(["duplicate", "missing_user_id", "unknown_item",
                                                   "timestamp_out_of_range"])


def test_kcore_iterates_to_fixpoint() -> None:
    # u3's only 2 events hold item c; removing u3 drops c below 2, which then drops u2 below 2
    rows = [("u1", "a", 1e9), ("u1", "b", 1e9 + 1), ("u2", "a", 1e9), ("u2", "c", 1e9 + 1),
            ("u3", "c", 1e9), ("u4", "a", 1e9), ("u4", "b", 1e9 + 1)]
    ev = events(rows)
    kept, iters = kcore(ev, 2, 2)
    assert sorted(kept["user_id"].unique().to_list()) == ["u1", "u4"]
    assert iters >= 2


def test_bot_burst_rule() -> None:
    rows = [("bot", f"i{k}", 1e9 + k) for k in range(30)] + [("u", "i1", 1e9), ("u", "i2", 1e9 + 99)]
    ds, rep, _ = clean(read_of(rows), CleanConfig(bot_max_events_per_minute=20))
    assert rep["filtered_by_rule"]["bot_burst"] == 30
    assert ds.events["user_id"].unique().to_list() == ["u"]


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 3), st.integers(0, 2)), min_size=1, max_size=40))
def test_first_distinct_matches_reference(rows) -> None:
    df = pl.DataFrame({"a": [r[0] for r in rows], "b": [str(r[1]) for r in rows], "c": [r[2] for r in rows]})
    got = first_distinct(df, ["a", "b", "c"]).to_list()
    seen, want = set(), []
    for r in rows:
        want.append(r not in seen)
        seen.add(r)
    assert got == want


def test_dedup_user_item_mode() -> None:
    rows = [("u", "a", 1e9), ("u", "a", 1e9 + 10), ("u", "b", 1e9 + 20)]
    _, rep, _ = clean(read_of(rows), CleanConfig(dedup=DedupMode.USER_ITEM))
    assert rep["filtered_by_rule"]["duplicate"] == 1


def _ds(rows) -> Dataset:
    ds, _, _ = clean(read_of(rows), CleanConfig(dedup=DedupMode.NONE))
    return ds


def test_leave_one_out_known_answer(tmp_path) -> None:
    rows = [("u1", it, 1e9 + k) for k, it in enumerate("abcde")] + [("u2", "x", 1e9), ("u2", "y", 1e9 + 1)]
    sp = leave_one_out(_ds(rows), max_len=2)
    keys = sp.item_map.keys
    u1 = list(sp.user_ids).index("u1")
    assert [keys[i] for i in sp.train[u1]] == ["d/a", "d/b", "d/c"]
    assert len(sp.test) == 1  # u2 has 2 events: train only
    assert keys[sp.valid.target[0]] == "d/d" and keys[sp.test.target[0]] == "d/e"
    assert [keys[i] for i in sp.test.history[0]] == ["d/c", "d/d"]  # cut to max_len
    sp.save(tmp_path / "s")
    back = SeqSplit.load(tmp_path / "s")
    assert np.array_equal(back.test.target, sp.test.target)
    assert list(back.item_map.keys) == list(keys)


def test_ties_keep_file_order() -> None:
    rows = [("u", "c", 1e9), ("u", "a", 1e9), ("u", "b", 1e9)]
    sp = leave_one_out(_ds(rows))
    assert [sp.item_map.keys[i] for i in sp.train[0]] == ["d/c"]
    assert sp.item_map.keys[sp.test.target[0]] == "d/b"


def test_temporal_split_known_answer() -> None:
    rows = [("u1", "a", 100), ("u1", "b", 200), ("u1", "c", 300), ("u1", "d", 400),
            ("u2", "a", 150), ("u2", "e", 350), ("u3", "z", 390)]
    rows = [(u, i, 1e9 + t) for u, i, t in rows]
    sp = temporal(_ds(rows), test_start=1e9 + 300, valid_start=1e9 + 200)
    keys = sp.item_map.keys
    name = {i: u for i, u in enumerate(sp.user_ids)}
    assert {name[u]: keys[t] for u, t in zip(sp.valid.users, sp.valid.target, strict=True)} == {"u1": "d/b"}
    assert {name[u]: keys[t] for u, t in zip(sp.test.users, sp.test.target, strict=True)} == {
        "u1": "d/c", "u2": "d/e"}  # u3 has no history before the cut
    u1 = list(sp.user_ids).index("u1")
    assert [keys[i] for i in sp.train[u1]] == ["d/a"]


def test_dataset_roundtrip_and_fingerprint(tmp_path) -> None:
    ds = _ds([("u", "a", 1e9), ("u", "b", 1e9 + 1)])
    ds.save(tmp_path / "ds")
    back = Dataset.load(tmp_path / "ds")
    assert back.fingerprint() == ds.fingerprint()
    assert back.events.equals(ds.events)


def test_split_index_matches_reference_after_kcore() -> None:
    """The fast item index (integer codes kept by clean) equals a plain first-appearance index,
    also when the k-core removed items and when the codes come from a filtered dataset."""
    rng = np.random.default_rng(3)
    rows = [(f"u{rng.integers(40)}", f"i{rng.integers(30)}", 1e9 + k) for k in range(600)]
    ds, rep, _ = clean(read_of(rows), CleanConfig(dedup=DedupMode.NONE, kcore_user=8, kcore_item=8))
    assert rep["filtered_by_rule"]["kcore"] > 0
    split = leave_one_out(ds)
    seen = ds.events.select("domain", "item_id").unique(maintain_order=True)
    want = ["<pad>"] + [f"{d}/{i}" for d, i in seen.iter_rows()]
    assert split.item_map.keys.tolist() == want
    idx = {k: n for n, k in enumerate(want)}
    flat = [idx[f"d/{i}"] for i in ds.events["item_id"].to_list()]
    got = np.concatenate([split.train.items, split.test.target])
    assert set(got.tolist()) <= set(flat)
    first_user = split.user_ids[0]
    hist = ds.events.filter(pl.col("user_id") == first_user)["item_id"].to_list()
    assert split.test.target[0] == idx[f"d/{hist[-1]}"]
    # codes that belong to another events frame (a filtered copy) are recomputed, not trusted
    assert ds.codes() is not None
    sub = Dataset(events=ds.events.head(100), items=ds.items, item_codes=ds.item_codes)
    assert sub.codes() is None
    assert leave_one_out(sub).n_items == sub.events.select("item_id").n_unique()
