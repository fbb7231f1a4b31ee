"""`shiftrec topics | shifts | flows`: interest migration commands (thin CLI layer)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

TOPICS_HELP = (
    "Assign every catalogue item a topic and write a topics folder (topics.npz + topics.parquet + "
    "topics.json manifest with names and distinctive terms).\n\n"
    "Topics are the category path cut to --depth levels where items have categories; otherwise "
    "k-means clusters of item title embeddings (k chosen by silhouette from --k values), each "
    "named by the distinctive words of its titles. Embeddings: --encoder tfidf (TF-IDF + SVD, "
    "fast), a shiftrec.text encoder (minilm, use-multilingual), or --embeddings FOLDER written "
    "by `shiftrec encode`.\n\n"
    "DATASET is a prepared dataset folder (events.parquet, items.parquet, manifest.json).\n\n"
    "Examples:\n\n"
    "shiftrec topics out/store -o out/store-topics\n\n"
    "shiftrec topics out/toys --source learned --encoder minilm --cache-dir cache/minilm -o out/toys-topics\n\n"
    "shiftrec topics out/retail --source learned --k 12 --k 16 --k 24 -o out/retail-topics"
)

SHIFTS_HELP = (
    "Detect interest shifts per user (CUSUM of a recent run of topics against the user's "
    "long-term, lagged topic profile) and write shifts.parquet (or .json) + shifts_summary.json: "
    "user, time, event index, topics left, topics entered, magnitude, confidence.\n\n"
    "With --user U, print one user's timeline instead (and draw it with --plot). When DATASET "
    "is a synthetic store (truth_users.parquet beside it), detections are scored against the "
    "planted shifts.\n\n"
    "Examples:\n\n"
    "shiftrec shifts out/store -o out/store-shifts\n\n"
    "shiftrec shifts out/store --topics out/store-topics --user U17 --plot out/U17.png\n\n"
    "shiftrec shifts out/retail --topics out/retail-topics --threshold 9 --format json -o out/retail-shifts"
)

FLOWS_HELP = (
    "Platform migration flows: each user's dominant topic in consecutive time windows, the "
    "topic -> topic flow matrix of users active in both, the largest migrations and their change "
    "over time. Writes flows.json and flows.png (Sankey of the latest window pair + trends).\n\n"
    "Examples:\n\n"
    "shiftrec flows out/retail --topics out/retail-topics --every 3mo -o out/retail-flows\n\n"
    "shiftrec flows out/store --every 1mo --start 2024-01-01 --end 2025-01-01 -o out/store-flows"
)


def _consoles() -> tuple[Any, Any]:
    from rich.console import Console

    return Console(), Console(stderr=True)


def _bar(console: Any) -> Any:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), console=console, transient=False)


def _fail(err: Any, e: Exception) -> None:
    """Hand the error to the one CLI handler (cli.app.main: one line, exit code 2)."""
    raise e


def load_events_items(path: Path) -> tuple[Any, Any, Any]:
    """(events, items, truth_users or None) from a dataset folder or a synthetic store folder."""
    import polars as pl

    from shiftrec.data.schema import Dataset
    from shiftrec.errors import InputError
    from shiftrec.manifest import read_json

    man_p = path / "manifest.json"
    if not man_p.is_file():
        raise InputError("not a dataset folder (manifest.json missing)", path=path)
    kind = read_json(man_p).get("kind")
    truth = pl.read_parquet(path / "truth_users.parquet") if (path / "truth_users.parquet").is_file() else None
    if kind == "synthetic_store":
        for f in ("events.parquet", "items.parquet"):
            if not (path / f).is_file():
                raise InputError(f"{f} missing", path=path)
        return pl.read_parquet(path / "events.parquet"), pl.read_parquet(path / "items.parquet"), truth
    ds = Dataset.load(path)
    return ds.events, ds.items, truth


def _topics_for(topics: Path | None, items: Any, err: Any) -> Any:
    from shiftrec.interest.topics import (
        TopicConfig,
        Topics,
        TopicSource,
        build_topics,
        category_coverage,
        embed_items,
    )

    if topics is not None:
        return Topics.load(topics)
    if category_coverage(items) >= TopicConfig().min_category_coverage:
        return build_topics(items)
    err.print("[yellow]note:[/yellow] no --topics given and items lack categories: learning "
              "topics from TF-IDF title embeddings (run `shiftrec topics` to control this)")
    emb, enc = embed_items(items, "tfidf")
    return build_topics(items, TopicConfig(source=TopicSource.LEARNED), emb, encoder=enc)


def topics(
    dataset: Annotated[Path, typer.Argument(help="Prepared dataset folder.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output topics folder.")] = Path("out/topics"),
    source: Annotated[str, typer.Option(help="auto | category | learned")] = "auto",
    depth: Annotated[int, typer.Option(help="Category levels kept (category topics).")] = 2,
    k: Annotated[list[int] | None, typer.Option("--k", help="Candidate topic counts (repeatable).")] = None,
    encoder: Annotated[str, typer.Option(help="tfidf, or a shiftrec.text encoder (minilm, ...).")] = "tfidf",
    embeddings: Annotated[Path | None, typer.Option(help="Item-embeddings folder from `shiftrec encode`.")] = None,
    cache_dir: Annotated[Path | None, typer.Option(help="Embedding cache folder (text encoders).")] = None,
    seed: Annotated[int, typer.Option(help="k-means seed.")] = 0,
    config: Annotated[Path | None, typer.Option(help="YAML overlay for the topic config.")] = None,
) -> None:
    from rich.table import Table

    from shiftrec.config import load_yaml
    from shiftrec.errors import ConfigError, ShiftrecError
    from shiftrec.interest.topics import (
        TopicConfig,
        TopicSource,
        build_topics,
        category_coverage,
        embed_items,
        embeddings_for_items,
        save_topics,
    )

    con, err = _consoles()
    try:
        try:
            src = TopicSource(source)
        except ValueError:
            raise ConfigError(f"--source must be one of {[s.value for s in TopicSource]}") from None
        cfg = TopicConfig(source=src, category_depth=depth, seed=seed,
                          **({"k_grid": tuple(k)} if k else {}))
        cfg = load_yaml(cfg, config)
        _, items, _ = load_events_items(dataset)
        learned = cfg.source == TopicSource.LEARNED or (
            cfg.source == TopicSource.AUTO and category_coverage(items) < cfg.min_category_coverage)
        emb, enc = None, "none"
        with _bar(err) as bar:
            if learned:
                task = bar.add_task("embedding titles", total=None)
                if embeddings is not None:
                    emb, enc = embeddings_for_items(items, embeddings)
                else:
                    emb, enc = embed_items(items, encoder, cache_dir,
                                           progress=lambda d, t: bar.update(task, completed=d, total=t))
                bar.update(task, completed=1, total=1)
            task2 = bar.add_task("clustering" if learned else "categories",
                                 total=len(cfg.k_grid) if learned else 1)
            tp = build_topics(items, cfg, emb, progress=lambda d, t: bar.update(task2, completed=d, total=t),
                              encoder=enc)
            bar.update(task2, completed=bar.tasks[task2].total)
        save_topics(tp, out, items, cfg)
    except ShiftrecError as e:
        _fail(err, e)
    table = Table(title=f"{tp.n_topics} {tp.source} topics over {len(tp.keys):,} items")
    for col in ("id", "items", "name", "distinctive terms"):
        table.add_column(col)
    sizes = tp.sizes()
    for i in range(min(tp.n_topics, 40)):
        table.add_row(str(i), f"{sizes[i]:,}", tp.names[i], ", ".join(tp.terms[i][:5]))
    con.print(table)
    if tp.source == "learned":
        con.print(f"k chosen by silhouette: {tp.meta.get('silhouette')}", highlight=False)
    con.print(f"wrote {out}/(topics.npz, topics.parquet, topics.json)")


def shifts(
    dataset: Annotated[Path, typer.Argument(help="Prepared dataset folder (or synthetic store folder).")],
    topics_dir: Annotated[Path | None, typer.Option("--topics", help="Topics folder (`shiftrec topics`).")] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder.")] = Path("out/shifts"),
    fmt: Annotated[str, typer.Option("--format", help="parquet | json")] = "parquet",
    user: Annotated[str | None, typer.Option(help="Print one user's timeline.")] = None,
    plot: Annotated[Path | None, typer.Option(help="With --user: write the timeline PNG here.")] = None,
    threshold: Annotated[float | None, typer.Option(help="CUSUM threshold (nats); higher = fewer shifts.")] = None,
    config: Annotated[Path | None, typer.Option(help="YAML overlay for the shift config.")] = None,
    tolerance: Annotated[int, typer.Option(help="Events after a planted shift a detection may come.")] = 10,
) -> None:
    import numpy as np

    from shiftrec.config import load_yaml, overlay, to_dict
    from shiftrec.errors import ConfigError, InputError, ShiftrecError
    from shiftrec.interest.events import InterestEvents
    from shiftrec.interest.shifts import (
        ShiftConfig,
        ShiftDetector,
        evaluate_detection,
        truth_arrays,
    )
    from shiftrec.interest.timeline import user_timeline
    from shiftrec.manifest import atomic_dir, make_manifest, write_json
    from shiftrec.report.plots import plot_timeline

    con, err = _consoles()
    try:
        if fmt not in ("parquet", "json"):
            raise ConfigError(f"--format must be parquet or json, got '{fmt}'")
        cfg = load_yaml(ShiftConfig(), config)
        if threshold is not None:
            cfg = overlay(cfg, {"threshold": threshold})
        events, items, truth = load_events_items(dataset)
        tp = _topics_for(topics_dir, items, err)
        ev = InterestEvents.from_frame(events, tp)
        det = ShiftDetector(tp.n_topics, cfg)
        if user is not None:
            tl = user_timeline(ev, user, det)
            if not tl.known:
                raise InputError(tl.message, path=dataset)
            for line in tl.lines(tp.names):
                con.print(line, highlight=False, soft_wrap=True)
            if plot is not None:
                plot_timeline(tl, tp.names, plot)
                con.print(f"wrote {plot}")
            return
        with _bar(err) as bar:
            task = bar.add_task(f"detecting shifts ({ev.n_events:,} events)", total=len(ev))
            res = det.detect(ev, progress=lambda d, t: bar.update(task, completed=d, total=t))
        frame = res.to_frame(ev.user_ids, tp.names)
        lens = ev.lengths()
        summary: dict[str, Any] = {
            "users": len(ev), "events": ev.n_events, "events_without_topic": ev.dropped,
            "shifts": len(res), "users_with_shift": int(len(np.unique(res.user))),
            "low_confidence_users": int((lens < cfg.min_history).sum()),
            "top_transitions": [],
        }
        if len(res):
            tr = (frame.with_columns(frame["topics_left"].list.first().fill_null("(none)").alias("from"))
                  .group_by("from", "topic_entered").len().sort("len", descending=True).head(10))
            summary["top_transitions"] = [{"from": r[0], "to": r[1], "users": r[2]} for r in tr.rows()]
        if truth is not None:
            ta = truth_arrays(ev, truth)
            summary["against_planted_truth"] = evaluate_detection(
                res.user, res.event_index, ta["truth_user"], ta["truth_index"], ta["stable_users"],
                tolerance)
        with atomic_dir(out) as tmp:
            if fmt == "parquet":
                frame.write_parquet(tmp / "shifts.parquet")
            else:
                rows = frame.with_columns(frame["time"].dt.to_string("%Y-%m-%dT%H:%M:%SZ")).to_dicts()
                write_json(tmp / "shifts.json", rows)
            write_json(tmp / "shifts_summary.json", make_manifest(
                "shifts", config=to_dict(cfg), topics=str(topics_dir) if topics_dir else "auto",
                dataset=str(dataset), **summary))
    except ShiftrecError as e:
        _fail(err, e)
    con.print(f"{summary['shifts']:,} shifts in {summary['users_with_shift']:,} of {summary['users']:,} "
              f"users ({summary['low_confidence_users']:,} users too short to judge: low confidence)")
    for t in summary["top_transitions"][:5]:
        con.print(f"  {t['from']} -> {t['to']}: {t['users']:,}", highlight=False)
    if "against_planted_truth" in summary:
        m = summary["against_planted_truth"]
        con.print(f"vs planted shifts: precision {m['precision']:.3f}, recall {m['recall']:.3f}, "
                  f"F1 {m['f1']:.3f}, median delay {m['median_delay_events']} events, "
                  f"false alarms on stable users {m['false_alarm_rate_stable_users']:.1%}")
    con.print(f"wrote {out}/(shifts.{fmt}, shifts_summary.json)")


def flows(
    dataset: Annotated[Path, typer.Argument(help="Prepared dataset folder (or synthetic store folder).")],
    topics_dir: Annotated[Path | None, typer.Option("--topics", help="Topics folder (`shiftrec topics`).")] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder.")] = Path("out/flows"),
    every: Annotated[str, typer.Option(help="Window length: 1mo, 3mo, 1w, 30d, ...")] = "3mo",
    start: Annotated[str | None, typer.Option(help="First window start (YYYY-MM-DD).")] = None,
    end: Annotated[str | None, typer.Option(help="End of the last window (YYYY-MM-DD).")] = None,
    top_k: Annotated[int, typer.Option(help="Largest migrations listed.")] = 10,
    max_topics: Annotated[int, typer.Option(help="Topics drawn individually in the plot.")] = 8,
    title: Annotated[str | None, typer.Option(help="Plot title.")] = None,
) -> None:
    from shiftrec.errors import ShiftrecError
    from shiftrec.interest.events import InterestEvents
    from shiftrec.interest.flows import FlowConfig, compute_flows
    from shiftrec.manifest import atomic_dir, make_manifest, write_json
    from shiftrec.report.plots import plot_flows

    con, err = _consoles()
    try:
        events, items, _ = load_events_items(dataset)
        tp = _topics_for(topics_dir, items, err)
        ev = InterestEvents.from_frame(events, tp)
        cfg = FlowConfig(every=every, start=start, end=end, top_k=top_k)
        with _bar(err) as bar:
            task = bar.add_task(f"flows over {ev.n_events:,} events", total=4)
            rep = compute_flows(ev, tp.names, cfg, progress=lambda d, t: bar.update(task, completed=d, total=t))
        with atomic_dir(out) as tmp:
            write_json(tmp / "flows.json", make_manifest("flows", dataset=str(dataset), **rep.to_json()))
            plot_flows(rep, tmp / "flows.png", max_topics=max_topics, title=title)
    except ShiftrecError as e:
        _fail(err, e)
    if rep.message:
        err.print(f"[yellow]note:[/yellow] {rep.message}", highlight=False)
    for p in rep.pairs:
        if p.message:
            err.print(f"[yellow]  {p.a[0]}..{p.b[1]}: {p.message}[/yellow]", highlight=False)
    for m in rep.largest_migrations(min(top_k, 8)):
        con.print(f"  {m['from']} -> {m['to']}: {m['total']:,} users (per window pair {m['counts']})",
                  highlight=False, soft_wrap=True)
    con.print(f"wrote {out}/(flows.json, flows.png)")


def register(app: typer.Typer) -> None:
    """Add `topics`, `shifts` and `flows` to the main CLI."""
    app.command("topics", help=TOPICS_HELP)(topics)
    app.command("shifts", help=SHIFTS_HELP)(shifts)
    app.command("flows", help=FLOWS_HELP)(flows)
