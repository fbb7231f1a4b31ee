"""`shiftrec package`, `recommend`, `serve`, `export-events`: thin adapters over
pipelines.run and shiftrec.serve."""

from __future__ import annotations

import json
import os
import secrets
import threading
import time
from pathlib import Path
from typing import Annotated

import typer


def package_cmd(
    model_dir: Annotated[Path, typer.Argument(help="saved model folder (`shiftrec train -o DIR`)")],
    split: Annotated[Path, typer.Option(help="the split folder the model was trained on")],
    dataset: Annotated[Path, typer.Option(help="the clean dataset folder the split was made from")],
    out: Annotated[Path, typer.Option("--out", "-o", help="run folder to write")] = Path("out/run"),
    topics: Annotated[Path | None, typer.Option(help="topics folder (`shiftrec topics`); default: item categories")] = None,
    flow_every: Annotated[str, typer.Option(help="window length of the platform flows")] = "3mo",
) -> None:
    """Package a trained model as a servable run: model, item map, catalogue, topics, flows,
    user histories and the shift detector's configuration, fingerprinted in its manifest.

    Example:

      shiftrec package out/fused --split out/split --dataset out/dataset -o out/run
    """
    from rich.console import Console

    from shiftrec.manifest import read_json
    from shiftrec.pipelines.run import write_run

    p = write_run(out, model_dir=model_dir, split=split, dataset=dataset, topics_dir=topics,
                  flow_every=flow_every)
    man = read_json(p / "manifest.json")
    Console().print(f"wrote run {p}: model {man['model']}, {man['n_items']:,} items, "
                    f"{man['n_users']:,} users, {man['n_topics']} topics")


def recommend_cmd(
    run_dir: Annotated[Path, typer.Argument(help="run folder (`shiftrec package` or `make demo`)")],
    user: Annotated[str | None, typer.Option("--user", "-u", help="user id")] = None,
    k: Annotated[int, typer.Option("-k", help="how many items")] = 10,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON instead of a table")] = False,
    all_users: Annotated[bool, typer.Option("--all", help="top-k of every user into -o")] = False,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="--all: Parquet file to write")] = None,
    store: Annotated[str | None, typer.Option(help="event store URL whose events extend the histories")] = None,
) -> None:
    """Top-k items with reasons for one user, or (--all -o recs.parquet) for every user.

    Examples:

      shiftrec recommend out/demo/run --user U12 -k 5

      shiftrec recommend out/demo/run --all -o recs.parquet
    """
    from rich.console import Console
    from rich.table import Table

    from shiftrec.errors import ConfigError
    from shiftrec.serve.recommender import Recommender

    con = Console()
    if all_users == (user is not None):
        raise ConfigError("give exactly one of --user U and --all")
    if all_users and out is None:
        raise ConfigError("--all needs -o FILE.parquet")
    if store is not None:
        from shiftrec.serve.app import Service

        svc = Service(run_dir, store)
        rec = svc.rec
        svc.close()
    else:
        rec = Recommender.load(run_dir)
    if all_users:
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        users = rec.user_ids()
        with Progress(TextColumn("{task.description}"), BarColumn(),
                      TextColumn("{task.completed}/{task.total} users"), TimeElapsedColumn(),
                      console=con) as bar:
            task = bar.add_task("recommending", total=len(users))
            df = rec.recommend_many(users, k, progress=lambda n: bar.advance(task, n))
        assert out is not None
        out.parent.mkdir(parents=True, exist_ok=True)
        df.write_parquet(out)
        con.print(f"wrote {out}: top-{k} of {len(users):,} users ({df.height:,} rows)")
        return
    assert user is not None
    r = rec.recommend(user, k)
    if as_json:
        typer.echo(json.dumps(r.to_dict(), indent=2))
        return
    sh = r.shift
    head = f"user {user}: {'cold (no history): popular items' if r.cold else 'model ' + r.model}"
    if sh["shifted"]:
        head += f"; recent shift {', '.join(sh['from'] or ['?'])} -> {', '.join(sh['to'])} at {sh['at']}"
    t = Table(title=head, show_lines=False)
    for c in ("#", "item", "title", "score", "reasons"):
        t.add_column(c, overflow="fold")
    for i, it in enumerate(r.items, 1):
        t.add_row(str(i), it.item_id, it.title or "", f"{it.score:.4f}",
                  "; ".join(x.text for x in it.reasons))
    con.print(t)


def serve_cmd(
    run_dir: Annotated[Path, typer.Argument(help="run folder (`shiftrec package` or `make demo`)")],
    host: Annotated[str, typer.Option(help="interface to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port")] = 8000,
    store: Annotated[str | None, typer.Option(help="event store: sqlite:///PATH (default RUN_DIR/../events.sqlite) or postgresql://...")] = None,
    token_file: Annotated[Path | None, typer.Option(help="file holding the bearer token for writes (else $SHIFTREC_TOKEN; else one is made and written beside the store)")] = None,
    auth_reads: Annotated[bool, typer.Option("--auth-reads", help="require the token on reads too")] = False,
    reload: Annotated[bool, typer.Option("--reload", help="swap in RUN_DIR again when it is rewritten (retrained)")] = False,
    log_level: Annotated[str, typer.Option(help="uvicorn log level")] = "warning",
    snapshot_dir: Annotated[Path | None, typer.Option(help="live user state snapshot: written every --snapshot-every s and on shutdown, loaded on start so only later events are replayed (default RUN_DIR/../serve-snapshot with the default SQLite store; give one per replica with PostgreSQL)")] = None,
    snapshot_every: Annotated[float, typer.Option(help="seconds between snapshots (0: only on shutdown)")] = 300.0,
    sync_interval: Annotated[float, typer.Option(help="seconds between looks at the store for events other replicas stored (0: never; a replica always sees its own writes at once)")] = 0.5,
    ann: Annotated[str, typer.Option(help="FAISS candidate retrieval + exact re-scoring for user x item vector models (sasrec, transfer): auto (from --ann-threshold items), on, off")] = "auto",
    ann_threshold: Annotated[int, typer.Option(help="--ann auto: catalogue size from which candidate retrieval is used")] = 200_000,
    ann_nprobe: Annotated[int, typer.Option(help="IVF cells probed per query (of up to 1024)")] = 256,
    ann_candidates: Annotated[int, typer.Option(help="candidates re-scored exactly per query")] = 500,
) -> None:
    """Serve recommendations with reasons over HTTP (FastAPI + uvicorn); events posted to
    /v1/events are stored durably and update the user's state at once. OpenAPI at /openapi.json.

    Example:

      SHIFTREC_TOKEN=secret shiftrec serve out/demo/run --port 8000
    """
    import uvicorn

    from shiftrec.errors import ConfigError
    from shiftrec.serve.app import Service, create_app
    from shiftrec.serve.store import default_store_url, redact

    token = None
    if token_file is not None:
        if not token_file.is_file():
            raise ConfigError("token file not found", path=token_file)
        token = token_file.read_text(encoding="utf-8").strip()
        if not token:
            raise ConfigError("token file is empty", path=token_file)
    elif os.environ.get("SHIFTREC_TOKEN"):
        token = os.environ["SHIFTREC_TOKEN"].strip()
    made = None
    if not token:
        made = Path(run_dir).resolve().parent / "serve.token"
        if made.is_file() and made.read_text().strip():
            token = made.read_text().strip()
        else:
            token = secrets.token_urlsafe(24)
            fd = os.open(made, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(token + "\n")
    url = store or default_store_url(run_dir)
    if snapshot_dir is None and store is None:
        snapshot_dir = Path(run_dir).resolve().parent / "serve-snapshot"
    svc = Service(run_dir, url, token=token, auth_reads=auth_reads, snapshot_dir=snapshot_dir,
                  ann=ann_config(ann, ann_threshold, ann_nprobe, ann_candidates))
    app = create_app(svc)
    from shiftrec.report.dashboard import mount

    mount(app)  # the live dashboard at GET / (report/ sits above serve/, so the CLI joins them)
    r = svc.rec
    typer.echo(f"serving run {r.manifest.get('name')} (model {r.model_name}, {r.n_items:,} items, "
               f"{r.n_users:,} users) on http://{host}:{port}  store {redact(url)} "
               f"({svc.events_replayed:,} stored events replayed"
               + (f" after snapshot {snapshot_dir} at seq {svc.snapshot_seq:,}"
                  if svc.snapshot_loaded else "") + ")")
    a = r.ann_info
    if a.get("active"):
        how = (f"built in {a['build_s']} s ({a['rebuilt_because']})" if a["source"] == "built"
               else f"loaded in {a['load_s']} s")
        typer.echo(f"candidate retrieval: FAISS IVF-SQ8 (nlist {a['nlist']}, nprobe {a['nprobe']}) "
                   f"over {r.n_items:,} item vectors, {how}; index {a.get('path', 'in memory')}")
    else:
        typer.echo(f"candidate retrieval off: {a.get('reason')}")
    if made is not None:
        typer.echo(f"write token in {made} (set SHIFTREC_TOKEN or --token-file to choose one)")
    if reload:
        _watch(svc, Path(run_dir))
    _every(sync_interval, svc.catch_up, "store-sync")
    _every(snapshot_every, svc.write_snapshot, "snapshot-writer")
    try:
        import gc

        gc.collect()
        gc.freeze()  # the loaded run's objects: never scanned again by the cyclic collector
        uvicorn.run(app, host=host, port=port, log_level=log_level, access_log=False,
                    proxy_headers=False, server_header=False, date_header=False)
    finally:
        svc.close()


def ann_config(mode: str, threshold: int, nprobe: int, candidates: int) -> object:
    """The serve.retrieval.AnnConfig of the --ann options (unknown mode: ConfigError)."""
    from shiftrec.errors import ConfigError
    from shiftrec.serve.retrieval import AnnConfig, AnnMode

    try:
        m = AnnMode(mode)
    except ValueError:
        raise ConfigError(f"--ann must be one of auto, on, off; got '{mode}'") from None
    return AnnConfig(mode=m, threshold=threshold, nprobe=min(nprobe, AnnConfig().nlist),
                     n_candidates=candidates)


def _every(seconds: float, fn: object, name: str) -> None:
    """Call fn() every `seconds` in a daemon thread (0: never); errors are printed, the
    loop goes on."""
    if seconds <= 0:
        return

    def loop() -> None:
        while True:
            time.sleep(seconds)
            try:
                fn()  # type: ignore[operator]
            except Exception as e:  # noqa: BLE001 - keep serving
                typer.echo(f"{name} failed: {e}", err=True)

    threading.Thread(target=loop, name=name, daemon=True).start()


def _watch(svc: object, run_dir: Path, interval: float = 2.0) -> threading.Thread:
    """Reload the run when its manifest changes (the run folder is swapped in atomically)."""
    from shiftrec.serve.app import run_identity

    def loop() -> None:
        while True:
            time.sleep(interval)
            try:
                ident = run_identity(run_dir) if (run_dir / "_COMPLETE").is_file() else None
                if ident and ident != svc.run_identity:  # type: ignore[attr-defined]
                    info = svc.reload(run_dir)  # type: ignore[attr-defined]
                    typer.echo(f"reloaded {run_dir}: {info}")
            except Exception as e:  # noqa: BLE001 - keep serving the old run
                typer.echo(f"reload failed, still serving the previous run: {e}", err=True)

    th = threading.Thread(target=loop, name="run-reloader", daemon=True)
    th.start()
    return th


def export_events_cmd(
    store: Annotated[str, typer.Option(help="sqlite:///PATH or postgresql://...")],
    out: Annotated[Path, typer.Option("--out", "-o", help="dataset folder to write")],
) -> None:
    """Write the stored events (and added items) as a canonical dataset folder, for
    `shiftrec prepare`/training (events.parquet, items.parquet, manifest.json)."""
    from shiftrec.serve.store import EventStore, export_events

    s = EventStore(store)
    try:
        p = export_events(s, out)
        n = s.count()
    finally:
        s.close()
    typer.echo(f"wrote {p}: {n:,} events")


def register(app: typer.Typer) -> None:
    app.command("package")(package_cmd)
    app.command("recommend")(recommend_cmd)
    app.command("serve")(serve_cmd)
    app.command("export-events")(export_events_cmd)
