"""The demo, as a library function: synthetic store -> ingest -> clean -> split -> models -> evaluation."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import polars as pl

from shiftrec.data.clean import CleanConfig
from shiftrec.data.pipeline import ingest
from shiftrec.data.readers import ColumnMap, ItemColumnMap, read_generic
from shiftrec.data.schema import Dataset
from shiftrec.data.splits import leave_one_out
from shiftrec.data.synthetic import StoreConfig, generate
from shiftrec.evaluate.ranking import evaluate


def _plant_bad_rows(csv_path: Path) -> int:
    """Append a few realistic bad rows so the demo shows quarantine and rule accounting."""
    bad = [
        "U1,I0000001,not-a-date,view,1.0,store",  # unparseable timestamp -> quarantine
        "U1,I0000001,2024-03-01T10:00:00Z,teleport,1.0,store",  # unknown event type -> quarantine
        ",I0000002,2024-03-01T10:00:00Z,view,1.0,store",  # missing user id -> rule
        "U2,NOPE999,2024-03-02T10:00:00Z,view,1.0,store",  # unknown item -> rule
        "U3,I0000003,1971-01-01T00:00:00Z,view,1.0,store",  # out-of-range timestamp -> rule
    ]
    with csv_path.open("a", encoding="utf-8") as f:
        for line in bad:
            f.write(line + "\n")
    return len(bad)


def run_demo(out_dir: str | Path = "out/demo", cfg: StoreConfig | None = None,
             step: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run the whole demo; `step(name)` is called as each stage starts (for progress display)."""
    step = step or (lambda _name: None)
    out = Path(out_dir)
    cfg = cfg or StoreConfig()
    timings: dict[str, float] = {}

    def stage(name: str) -> None:
        timings[name] = time.perf_counter()
        step(name)

    stage("generate synthetic store")
    store = generate(cfg)
    raw = store.write(out / "raw", fmt="csv")
    n_bad = _plant_bad_rows(raw / "events.csv")

    stage("ingest + clean")
    read = read_generic(raw / "events.csv", ColumnMap(event_type="event_type", value="value",
                                                      domain="domain", timestamp_unit="iso"),
                        raw / "items.csv", ItemColumnMap(category="category", brand="brand",
                                                         description="description", price="price",
                                                         domain="domain"))
    report = ingest(read, CleanConfig(kcore_user=5, kcore_item=5), out / "dataset", "demo-store")

    stage("split (leave-one-out)")
    ds = Dataset.load(out / "dataset")
    split = leave_one_out(ds)
    split.save(out / "split")

    results: dict[str, Any] = {}
    from shiftrec.models.popularity import Popularity

    stage("popularity baseline")
    model = Popularity().fit(split)
    metrics, _ = evaluate(model, split, "test")
    results["popularity"] = metrics

    t_end = time.perf_counter()
    names = list(timings)
    durations = {n: round((timings[names[i + 1]] if i + 1 < len(names) else t_end) - timings[n], 3)
                 for i, n in enumerate(names)}
    truth = store.users.group_by("kind").len().sort("kind")
    return {
        "out_dir": str(out),
        "store": {"users": cfg.n_users, "items": cfg.n_items, "events": store.events.height,
                  "planted_bad_rows": n_bad,
                  "planted_shifts": dict(zip(truth["kind"], truth["len"], strict=True))},
        "ingest": {k: report[k] for k in ("rows_in", "accepted", "quarantined", "filtered_by_rule",
                                          "balanced")},
        "split": {"users": len(split.user_ids), "items": split.n_items, "test_users": len(split.test)},
        "results": results,
        "seconds": durations,
    }


def summary_table(result: dict[str, Any]) -> pl.DataFrame:
    rows = [{"model": m, **{k: round(v, 4) for k, v in r.items()
                           if k in ("recall@10", "ndcg@10", "recall@50", "ndcg@50", "mrr")}}
            for m, r in result["results"].items()]
    return pl.DataFrame(rows)
