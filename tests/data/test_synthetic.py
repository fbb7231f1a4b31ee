from __future__ import annotations

import polars as pl

from shiftrec.data.synthetic import StoreConfig, generate


def test_seeded_and_planted_truth() -> None:
    a = generate(StoreConfig(n_users=200, n_items=120, seed=3))
    b = generate(StoreConfig(n_users=200, n_items=120, seed=3))
    assert a.events.equals(b.events)
    assert a.shifts.height == a.users.filter(pl.col("kind") != "stable").height > 0
    # after a jump the user's events are dominated by the new topic
    cat = a.items.select("item_id", "category")
    ev = a.events.join(cat, on="item_id").with_columns(pl.int_range(pl.len()).over("user_id").alias("pos"))
    j = a.users.filter(pl.col("kind") == "jump").row(0, named=True)
    mine = ev.filter(pl.col("user_id") == j["user_id"])
    after = mine.filter(pl.col("pos") >= j["shift_index"])
    before = mine.filter(pl.col("pos") < j["shift_index"])
    assert (after["category"] == j["topic_after"]).mean() > 0.5
    assert (before["category"] == j["topic_before"]).mean() > 0.5
    # timestamps increase within each user and stay inside the configured year
    ts = a.events.group_by("user_id", maintain_order=True).agg(pl.col("timestamp").diff().min().alias("d"))
    assert ts["d"].drop_nulls().dt.total_seconds().min() >= 0
