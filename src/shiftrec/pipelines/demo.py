"""The demo, as a library function: synthetic store -> ingest -> clean -> split -> topics ->
models -> evaluation (a run folder per model, with per-user ranks) -> interest shifts and flows ->
a servable run of the best model. The HTML report and PNGs are drawn one layer up
(`shiftrec.report.demo.finish_demo`), since pipelines may not import report.

`--lang zh` makes the store Chinese; its topics are then learned from the multilingual
encoder's title embeddings (use-multilingual) and named by jieba-segmented title words."""

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
from shiftrec.manifest import write_json


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


SERVED_MODEL = "sasrec+flows"  # the model packaged as the demo's servable run


def _demo_topics(ds: Dataset, cfg: StoreConfig, out: Path) -> tuple[Any, str]:
    """English: one topic per category. Chinese: k-means topics of the use-multilingual
    embeddings of the titles (k by silhouette), named by their distinctive jieba words."""
    from shiftrec.data.synthetic import Lang
    from shiftrec.interest.topics import (
        TopicConfig,
        TopicSource,
        category_topics,
        embed_items,
        learned_topics,
    )

    if cfg.lang == Lang.ZH:
        emb, enc = embed_items(ds.items, "use-multilingual", cache_dir=out / "cache" / "text")
        return learned_topics(ds.items, emb, TopicConfig(source=TopicSource.LEARNED,
                                                         k_grid=(8, 12, 16, 20)), encoder=enc), \
            "learned (use-multilingual + k-means, jieba-named)"
    return category_topics(ds.items), "category"


def demo_sasrec(epochs: int = 8, threads: int = 0) -> Any:
    """The demo's SASRec (also run by bench/threads.py): lr 2e-3, batch 1024, patience 2;
    threads 0 = auto (train.threads)."""
    from shiftrec.models.sasrec import SASRec
    from shiftrec.train.trainer import Phase, TrainConfig

    return SASRec(train=TrainConfig(phases=(Phase(epochs=epochs, lr=2e-3, batch_size=1024,
                                                  patience=2),), threads=threads))


def run_demo(out_dir: str | Path = "out/demo", cfg: StoreConfig | None = None,
             step: Callable[[str], None] | None = None, sasrec_epochs: int = 8,
             servable: bool = True) -> dict[str, Any]:
    """Run the whole demo; `step(name)` is called as each stage starts (for progress display).

    Writes under `out_dir`: raw/, dataset/, split/, topics/, runs/<model>/ (model + metrics.json
    + metrics.ranks.npz), shifts.parquet, flows.json, run/ (a servable run of SERVED_MODEL when
    `servable`) and summary.json."""
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
    slices: dict[str, Any] = {}
    from shiftrec.interest.slices import shift_slices
    from shiftrec.models.itemknn import ItemKNN
    from shiftrec.models.popularity import Popularity

    stage("topics" + (" (use-multilingual)" if cfg.lang == "zh" else " (item categories)"))
    topics, topic_source = _demo_topics(ds, cfg, out)
    topics.save(out / "topics", data_fingerprint=ds.fingerprint())
    item_topic = topics.aligned(split.item_map)
    masks = shift_slices(split.test, item_topic)

    from shiftrec.interest.profiles import TopicProfile

    models: list[tuple[str, Callable[[], Any]]] = [
        ("popularity", Popularity),
        ("itemknn", ItemKNN),
        ("topic_profile", lambda: TopicProfile(item_topic, topics.names)),
        ("sasrec", lambda: demo_sasrec(sasrec_epochs)),
    ]
    from shiftrec.evaluate.ranking import UserRanks, sliced, write_metrics
    from shiftrec.manifest import read_json
    from shiftrec.models.fusion import ShiftFusion

    fitted: dict[str, Any] = {}
    # last: SASRec fused with the item-level migration flows, gated by the shift statistic
    models.append(("sasrec+flows", lambda: ShiftFusion(fitted["sasrec"], item_topic=item_topic,
                                                       base_fitted=True)))
    for name, make in models:
        stage(f"model: {name}")
        model = fitted[name] = make().fit(split)
        metrics, ranks = evaluate(model, split, "test")
        run_dir = out / "runs" / name.replace("+", "-")
        model.save(run_dir / "model")
        write_metrics(run_dir / "metrics.json", metrics, read_json(run_dir / "model" / "manifest.json"),
                      {"dataset": str(out / "dataset"), "fingerprint": ds.fingerprint()},
                      per_user=UserRanks.of(split, "test", ranks), model_name=name)
        results[name] = metrics
        slices[name] = {k: {m: v[m] for m in ("ndcg@10", "recall@10", "n_users")}
                        for k, v in sliced(ranks, masks).items()}

    stage("interest shifts vs planted truth")
    interest = _interest_report(store, topics, out)

    served = None
    if servable:
        stage(f"servable run ({SERVED_MODEL})")
        from shiftrec.pipelines.run import write_run

        served = str(write_run(out / "run", model_dir=out / "runs" / SERVED_MODEL.replace("+", "-")
                               / "model", split=split, dataset=ds, topics_dir=out / "topics",
                               name=f"demo-{SERVED_MODEL}"))

    t_end = time.perf_counter()
    names = list(timings)
    durations = {n: round((timings[names[i + 1]] if i + 1 < len(names) else t_end) - timings[n], 3)
                 for i, n in enumerate(names)}
    truth = store.users.group_by("kind").len().sort("kind")
    result = {
        "out_dir": str(out),
        "lang": cfg.lang.value,
        "topics": {"source": topic_source, "names": topics.names},
        "runs": {n: str(out / "runs" / n.replace("+", "-")) for n in results},
        "servable_run": served,
        "store": {"users": cfg.n_users, "items": cfg.n_items, "events": store.events.height,
                  "planted_bad_rows": n_bad,
                  "planted_shifts": dict(zip(truth["kind"], truth["len"], strict=True))},
        "ingest": {k: report[k] for k in ("rows_in", "accepted", "quarantined", "filtered_by_rule",
                                          "balanced")},
        "split": {"users": len(split.user_ids), "items": split.n_items, "test_users": len(split.test)},
        "results": results,
        "slices": slices,
        "interest": interest,
        "seconds": durations,
    }
    write_json(out / "summary.json", result)
    return result


def _interest_report(store: Any, topics: Any, out: Path) -> dict[str, Any]:
    """Detect shifts on the store's events, score them against the planted truth, compute the
    platform flows and one shifted user's timeline (drawn by the report layer)."""
    import numpy as np

    from shiftrec.interest.events import InterestEvents
    from shiftrec.interest.flows import FlowConfig, compute_flows
    from shiftrec.interest.shifts import (
        ShiftConfig,
        ShiftDetector,
        evaluate_detection,
        truth_arrays,
    )
    from shiftrec.interest.timeline import user_timeline
    from shiftrec.manifest import make_manifest

    ev = InterestEvents.from_frame(store.events.with_columns(pl.lit(store.config.domain).alias("domain")),
                                   topics)
    det = ShiftDetector(topics.n_topics, ShiftConfig())
    res = det.detect(ev)
    truth = truth_arrays(ev, store.users)
    quality = evaluate_detection(res.user, res.event_index, truth["truth_user"], truth["truth_index"],
                                 truth["stable_users"])
    res.to_frame(ev.user_ids, topics.names).write_parquet(out / "shifts.parquet")
    flows = compute_flows(ev, topics.names, FlowConfig(every="3mo"))
    write_json(out / "flows.json", make_manifest("flows", dataset=str(out / "dataset"),
                                                 **flows.to_json()))
    jumper = store.users.filter(pl.col("kind") == "jump")["user_id"][0]
    tl = user_timeline(ev, jumper, det)
    planted = store.users.filter(pl.col("user_id") == jumper).row(0, named=True)
    top = [{k: m[k] for k in ("from", "to", "total")} for m in flows.largest_migrations(3)]
    return {"detection": quality, "shifts_detected": len(res),
            "users_with_shift": int(len(np.unique(res.user))),
            "example_user": {"user": jumper, "planted_shift_index": planted["shift_index"],
                             "planted": f"{planted['topic_before']} -> {planted['topic_after']}",
                             "timeline": tl.lines(topics.names)[:6]},
            "top_migrations": top, "plots": []}


def summary_table(result: dict[str, Any]) -> pl.DataFrame:
    rows = [{"model": m, **{k: round(v, 4) for k, v in r.items()
                           if k in ("recall@10", "ndcg@10", "recall@50", "ndcg@50", "mrr")}}
            for m, r in result["results"].items()]
    return pl.DataFrame(rows)
