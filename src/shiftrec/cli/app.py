"""Thin Typer adapter: parse options, call the library, print. The library never prints."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from shiftrec.errors import ShiftrecError


class _OneLineErrors(typer.core.TyperGroup):
    """The one error handler: every ShiftrecError from any command is one line on stderr and
    exit code 2 (no traceback), whether the CLI runs as `shiftrec` or under a test runner."""

    def invoke(self, ctx: typer.Context) -> object:
        try:
            return super().invoke(ctx)
        except ShiftrecError as e:
            typer.echo(f"error: {e.one_line()}", err=True)
            raise typer.Exit(2) from None
        except OSError as e:  # the file system refused (permission, disk full, read-only) mid-write
            where = f"{e.filename}: " if getattr(e, "filename", None) else ""
            typer.echo(f"error: {where}{e.strerror or e}", err=True)
            raise typer.Exit(2) from None


app = typer.Typer(
    cls=_OneLineErrors,
    name="shiftrec",
    help="Capture how shoppers' interests migrate, and recommend accordingly.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _console():  # noqa: ANN202
    from rich.console import Console

    return Console(stderr=False)


def _progress():  # noqa: ANN202
    """A progress display on stderr, shown only on a terminal and erased when done: nothing of it
    reaches stdout, and a failing command prints only its one error line."""
    from rich.console import Console
    from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    err = Console(stderr=True)
    return Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                    TextColumn("{task.completed}/{task.total}"), TimeElapsedColumn(),
                    transient=True, console=err, disable=not err.is_terminal)


def _parse_map(pairs: list[str] | None, mapping: Path | None) -> tuple[dict[str, str], set[str]]:
    """(field -> column, the fields that came from the YAML file)."""
    from shiftrec.errors import ConfigError

    out: dict[str, str] = {}
    from_file: set[str] = set()
    if mapping is not None:
        import yaml

        if not mapping.is_file():
            raise ConfigError("mapping file not found", path=mapping)
        try:
            data = yaml.safe_load(mapping.read_text(encoding="utf-8")) or {}
        except UnicodeDecodeError as e:
            raise ConfigError(f"mapping file is not UTF-8 text (byte {e.start})", path=mapping) from None
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            what = getattr(e, "problem", None) or type(e).__name__
            raise ConfigError(f"invalid YAML: {what}", path=mapping,
                              row=None if mark is None else mark.line + 1) from None
        if not isinstance(data, dict):
            raise ConfigError("mapping YAML must be a mapping of field: column", path=mapping)
        bad = next((k for k, v in data.items() if not isinstance(v, str | int) or isinstance(v, bool)), None)
        if bad is not None:
            raise ConfigError(f"mapping field '{bad}' must name a column (a string)", path=mapping)
        out.update({str(k): str(v) for k, v in data.items()})
        from_file = set(out)
    for p in pairs or []:
        if "=" not in p:
            raise ConfigError(f"--map expects field=column, got '{p}'")
        k, v = p.split("=", 1)
        out[k.strip()] = v.strip()
        from_file.discard(k.strip())
    return out, from_file


def _column_maps(m: dict[str, str], from_file: set[str], mapping: Path | None, events: str):  # noqa: ANN202
    from dataclasses import fields

    from shiftrec.data.readers import ColumnMap, ItemColumnMap
    from shiftrec.errors import ConfigError

    ev_fields = [f.name for f in fields(ColumnMap)]
    item_fields = [f"item_{f.name}" for f in fields(ItemColumnMap) if f.name != "item_id"]
    for k in m:
        if k not in ev_fields and k not in item_fields:
            src = mapping if k in from_file else events
            how = "in the mapping file" if k in from_file else "given with --map"
            raise ConfigError(f"unknown mapping field '{k}' {how}; valid: "
                              f"{', '.join(ev_fields + item_fields)}", path=src)
    imap = ItemColumnMap(**{k.removeprefix("item_"): v for k, v in m.items() if k in item_fields})
    return ColumnMap(**{k: v for k, v in m.items() if k in ev_fields}), imap


def _ingest_command_class():  # noqa: ANN202
    """`shiftrec ingest FORMAT --help` adds that format's columns, timestamp units and companion
    files to the usual help; `shiftrec ingest --help` lists the formats."""
    from typer.core import TyperCommand

    class IngestCommand(TyperCommand):
        def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
            wants_help = any(a in ctx.help_option_names for a in args)
            fmt = next((a for a in args if not a.startswith("-")), None)  # before parsing eats args
            try:
                return super().parse_args(ctx, args)
            except BaseException:  # the eager --help prints the usual help and exits
                if wants_help:
                    from shiftrec.data.readers import READERS

                    if fmt in READERS:
                        typer.echo(READERS[fmt].help_text(fmt))
                    else:
                        typer.echo("formats (shiftrec ingest FORMAT --help for one format's columns, "
                                   "timestamp units and companion files):")
                        for n, spec in READERS.items():
                            typer.echo(f"  {n:14s} {spec.description}")
                        typer.echo("  preset         a named dataset of the shared data folder "
                                   "(shiftrec datasets)")
                raise

    return IngestCommand


@app.command(cls=_ingest_command_class())
def ingest(
    fmt: Annotated[str, typer.Argument(
        help="source format: amazon-2018, amazon-csv, online-retail, unisrec, recbole, generic; or "
             "'preset'. `shiftrec ingest FORMAT --help` shows the format's columns")],
    path: Annotated[str, typer.Argument(help="events file/folder, or a preset name with 'preset'")],
    out: Annotated[Path, typer.Option("--out", "-o", help="output folder")] = Path("out/dataset"),
    items: Annotated[Path | None, typer.Option(help="item catalogue file (generic/amazon formats)")] = None,
    map_: Annotated[list[str] | None, typer.Option("--map", help="generic: field=column (repeatable)")] = None,
    mapping: Annotated[Path | None, typer.Option(help="generic: YAML mapping of field: column")] = None,
    recipe: Annotated[str | None, typer.Option(help="online-retail: 'unisrec' for UniSRec's recipe")] = None,
    tie_order: Annotated[str, typer.Option(help="online-retail: order of events sharing (user, time): "
                                                "file | shuffle")] = "file",
    seed: Annotated[int, typer.Option(help="online-retail: seed of --tie-order shuffle")] = 0,
    domain: Annotated[str | None, typer.Option(help="amazon-*/recbole: domain name (default: from the "
                                                    "file name)")] = None,
    name_: Annotated[str | None, typer.Option("--name", help="unisrec: file stem (default: the "
                                                             "*.test.inter found)")] = None,
    kcore: Annotated[int, typer.Option(help="iterative k-core on users and items (0 = off)")] = 0,
    dedup: Annotated[str, typer.Option(help="none | exact | user_item")] = "exact",
    bot_per_minute: Annotated[int | None, typer.Option(help="drop users above N events/minute")] = None,
    config: Annotated[Path | None, typer.Option(help="YAML overlay for the cleaning config")] = None,
    data_root: Annotated[Path | None, typer.Option(help="shared data folder for presets")] = None,
    engine: Annotated[str, typer.Option(help="auto | memory | streaming | ray (generic: out of core, "
                                             "for a file, a folder of partitions or a glob; auto "
                                             "streams above 5M input rows; ray: the streaming "
                                             "engine's tasks on a Ray cluster)")] = "auto",
    address: Annotated[str | None, typer.Option(help="--engine ray: the cluster ('auto', "
                                                     "'ray://HOST:10001'); default: RAY_ADDRESS, "
                                                     "else a local Ray")] = None,
) -> None:
    """Read a source, clean it, write events/items parquet, quarantine and ingest_report.json.

    The output folder is written atomically (a re-run replaces it whole; `_COMPLETE` marks it done).

    Examples:

      shiftrec ingest preset scientific -o out/scientific

      shiftrec ingest online-retail ../shared/data/online-retail/online_retail_I.parquet --recipe unisrec --kcore 5

      shiftrec ingest amazon-2018 ../shared/data/amazon-2018-raw/Gift_Cards_5.json.gz -o out/gift

      shiftrec ingest generic my_log.csv --items items.csv --map user_id=visitor --map item_id=sku --map timestamp=ts --map event_type=event

      shiftrec ingest generic 'logs/date=*/part-*.parquet' --engine streaming -o out/big

      shiftrec ingest generic --help   (the format's required columns, timestamp units, companion files)
    """
    from shiftrec.config import load_yaml
    from shiftrec.data.clean import CleanConfig, DedupMode
    from shiftrec.data.pipeline import check_output_path, ingest_source
    from shiftrec.data.pipeline import ingest as run_ingest
    from shiftrec.data.readers import READERS, ReadOptions, Recipe
    from shiftrec.errors import ConfigError, unknown_name

    try:
        dmode = DedupMode(dedup)
    except ValueError:
        raise ConfigError(f"--dedup must be one of {[m.value for m in DedupMode]}") from None
    cfg = CleanConfig(dedup=dmode, kcore_user=kcore, kcore_item=kcore, bot_max_events_per_minute=bot_per_minute)
    if fmt != "preset" and fmt not in READERS:
        raise unknown_name("format", fmt, [*READERS, "preset"])
    check_output_path(out)
    name = Path(path).name.split(".")[0]
    if any(ch in path for ch in "*?["):  # a glob: the first folder without a pattern names it
        name = next((p.name for p in Path(path).parents if not any(ch in str(p) for ch in "*?[")),
                    "dataset") or "dataset"
    with _progress() as prog:
        task = prog.add_task(f"reading {path}", total=3)
        if fmt == "preset":
            from shiftrec.data.presets import load_preset

            if engine not in ("auto", "memory"):
                raise ConfigError(f"--engine {engine} reads the generic format only, not presets")

            read, preset_cfg = load_preset(path, data_root)
            cfg = preset_cfg if (kcore == 0 and dedup == "exact" and bot_per_minute is None) else cfg
            name = path
        else:
            kw: dict = {}
            if map_ or mapping is not None:
                m, from_file = _parse_map(map_, mapping)
                kw["columns"], kw["item_columns"] = _column_maps(m, from_file, mapping, path)
            opts = ReadOptions(path=Path(path), items=items, domain=domain, name=name_,
                               recipe=recipe or Recipe.STORE, tie_order=tie_order, seed=seed, **kw)
        cfg = load_yaml(cfg, config)
        prog.update(task, advance=1, description="cleaning")
        if fmt == "preset":
            report = run_ingest(read, cfg, out, name)
        else:
            report = ingest_source(fmt, opts, cfg, out, name, engine, address=address)
        prog.update(task, advance=2, description="written")
    con = _console()
    s = report["summary"]
    con.print(f"[bold]{name}[/bold]: rows in {report['rows_in']:,} = accepted {report['accepted']:,}"
              f" + quarantined {report['quarantined']:,} + filtered {report['filtered_total']:,}"
              f"  ({'balanced' if report['balanced'] else 'UNBALANCED'})")
    rules = {k: v for k, v in report["filtered_by_rule"].items() if v}
    if rules:
        con.print("  filtered by rule: " + ", ".join(f"{k}={v:,}" for k, v in rules.items()))
    if report["quarantined"]:
        con.print(f"  quarantine reasons: {report['quarantine_reasons'][:5]}")
    con.print(f"  {s['users']:,} users, {s['items']:,} items, {s['events']:,} events, "
              f"span {s['time_span']}")
    con.print(f"  wrote {out}/(events.parquet, items.parquet, quarantine.parquet, ingest_report.json)")


@app.command()
def prepare(
    dataset: Annotated[str, typer.Argument(help="dataset folder written by `shiftrec ingest`, or a named dataset of the shared data folder (`shiftrec datasets` lists them)", metavar="DATASET")],
    out: Annotated[Path, typer.Option("--out", "-o")] = Path("out/split"),
    split: Annotated[str, typer.Option(help="loo | temporal | cross-domain")] = "loo",
    max_len: Annotated[int, typer.Option(help="history length kept")] = 50,
    test_start: Annotated[float | None, typer.Option(help="temporal: unix time or quantile in (0,1)")] = None,
    valid_start: Annotated[float | None, typer.Option(help="temporal: unix time or quantile in (0,1)")] = None,
    source: Annotated[list[str] | None, typer.Option(help="cross-domain: source domain (repeatable)")] = None,
    target: Annotated[str | None, typer.Option(help="cross-domain: target domain")] = None,
    data_root: Annotated[Path | None, typer.Option(help="shared data folder (for a named dataset)")] = None,
) -> None:
    """Split a dataset: leave-one-out (UniSRec), global temporal, or cross-domain.

    Examples:

      shiftrec prepare out/scientific -o out/scientific-split

      shiftrec prepare gift-cards -o out/gift-cards-split

      shiftrec prepare out/store --split temporal --test-start 0.9 --valid-start 0.8 -o out/store-temporal
    """
    from shiftrec.data.pipeline import SplitKind
    from shiftrec.data.pipeline import prepare as run_prepare
    from shiftrec.errors import ConfigError

    try:
        kind = SplitKind(split)
    except ValueError:
        raise ConfigError(f"--split must be one of {[k.value for k in SplitKind]}") from None
    with _progress() as prog:
        task = prog.add_task("splitting", total=1)
        src: Any = Path(dataset)
        if not src.exists() and "/" not in dataset and "\\" not in dataset:
            # a named dataset, read and cleaned as `ingest preset` does
            from shiftrec.pipelines.transfer import load_dataset

            src = load_dataset(dataset, data_root)
        splits = run_prepare(src, out, kind, max_len, test_start, valid_start, source, target)
        prog.update(task, advance=1)
    con = _console()
    for sub, sp in splits.items():
        con.print(f"{sub or sp.kind}: {len(sp.user_ids):,} users, {sp.n_items:,} items, "
                  f"{len(sp.train.items):,} train events, valid {len(sp.valid):,}, test {len(sp.test):,}"
                  f" -> {out / sub if sub else out}")


@app.command()
def datasets(data_root: Annotated[Path | None, typer.Option()] = None) -> None:
    """List the named datasets usable with `shiftrec ingest preset NAME`."""
    from shiftrec.data.presets import PRESETS
    from shiftrec.paths import data_root as find_root

    root = find_root(data_root)
    con = _console()
    con.print(f"shared data folder: {root or 'not found (set SHIFTREC_DATA)'}")
    for n, p in PRESETS.items():
        con.print(f"  {n:28s} {p.description}")


@app.command()
def demo(
    out: Annotated[Path, typer.Option("--out", "-o", help="output folder")] = Path("out/demo"),
    users: Annotated[int, typer.Option(help="synthetic users")] = 2000,
    items: Annotated[int, typer.Option(help="synthetic items")] = 1200,
    seed: Annotated[int, typer.Option(help="random seed")] = 0,
    lang: Annotated[str, typer.Option(help="store language: en | zh (Chinese titles and categories; "
                                           "topics from the use-multilingual encoder)")] = "en",
    json_out: Annotated[bool, typer.Option("--json", help="print the summary as JSON")] = False,
) -> None:
    """Run the whole pipeline on an embedded synthetic store with planted interest shifts, and
    write OUT/report.html (one self-contained file) and a servable run OUT/run.

    Example: shiftrec demo --users 2000 --seed 0 -o out/demo;  shiftrec demo --lang zh -o out/demo-zh
    """
    from shiftrec.data.synthetic import StoreConfig
    from shiftrec.pipelines.demo import run_demo, summary_table
    from shiftrec.report.demo import finish_demo

    cfg = StoreConfig(n_users=users, n_items=items, seed=seed, lang=lang)
    with _progress() as prog:
        task = prog.add_task("demo", total=None)
        result = run_demo(out, cfg, step=lambda s: prog.update(task, description=s))
        prog.update(task, description="report")
        rep = finish_demo(result)
        result["report"] = rep["path"]
        result["interest"]["plots"] = rep["pngs"]
        prog.update(task, total=1, completed=1, description="done")
    if json_out:
        print(json.dumps(result, indent=2, default=str))
        return
    con = _console()
    st, ig, sp = result["store"], result["ingest"], result["split"]
    con.print(f"[bold]Synthetic store[/bold]: {st['users']:,} users, {st['items']:,} items, "
              f"{st['events']:,} events, planted shifts {st['planted_shifts']}")
    con.print(f"[bold]Ingest[/bold]: rows in {ig['rows_in']:,} = accepted {ig['accepted']:,} + "
              f"quarantined {ig['quarantined']:,} + filtered {sum(ig['filtered_by_rule'].values()):,} "
              f"{ {k: v for k, v in ig['filtered_by_rule'].items() if v} }")
    con.print(f"[bold]Split[/bold] (leave-one-out): {sp['users']:,} users, {sp['items']:,} items, "
              f"{sp['test_users']:,} test users")
    from rich.table import Table

    tab = summary_table(result)
    table = Table(title="Full-ranking test metrics (all items)")
    for c in tab.columns:
        table.add_column(c, justify="left" if c == "model" else "right")
    for row in tab.iter_rows():
        table.add_row(*[f"{v:.4f}" if isinstance(v, float) else str(v) for v in row])
    con.print(table)
    sl = result.get("slices", {})
    if sl:
        con.print("NDCG@10 by slice (shifted = test item's topic outside the user's dominant topics): "
                  + "; ".join(f"{m} {v['shifted']['ndcg@10']:.4f}/{v['stable']['ndcg@10']:.4f}"
                              for m, v in sl.items()) + "  (shifted/stable)")
    it = result.get("interest")
    if it:
        d = it["detection"]
        con.print(f"[bold]Shift detection vs planted truth[/bold]: precision {d['precision']:.3f}, "
                  f"recall {d['recall']:.3f}, F1 {d['f1']:.3f}, median delay {d['median_delay_events']:.0f}"
                  f" events, false alarms on stable users {d['false_alarm_rate_stable_users']:.1%}")
        ex = it["example_user"]
        con.print(f"Example user {ex['user']}: planted {ex['planted']} at event {ex['planted_shift_index']}")
        for line in ex["timeline"]:
            con.print(f"  {line}", highlight=False)
        for m in it["top_migrations"]:
            con.print(f"  migration {m['from']} -> {m['to']}: {m['total']} users", highlight=False)
        con.print("plots: " + ", ".join(it["plots"]), highlight=False)
    con.print(f"outputs in {result['out_dir']}")
    report_path = Path(result["report"]).resolve()
    con.print(f"[bold]Report[/bold]: {result['report']} — open it with: xdg-open {result['report']}"
              f"  (or file://{report_path})", highlight=False, soft_wrap=True)
    if result.get("servable_run"):
        con.print(f"[bold]Serve it[/bold]: shiftrec serve {result['servable_run']} --port 8000, then open "
                  f"http://127.0.0.1:8000/ or curl http://127.0.0.1:8000/v1/users/"
                  f"{result['interest']['example_user']['user']}/recommendations", highlight=False,
                  soft_wrap=True)


def _register_extensions() -> None:
    """Commands from other stages, each module adding its own (explicit list, no discovery)."""
    import importlib

    for mod in ("shiftrec.cli.text", "shiftrec.cli.train", "shiftrec.cli.interest", "shiftrec.cli.transfer",
                "shiftrec.cli.compare", "shiftrec.cli.serve", "shiftrec.cli.report", "shiftrec.cli.experiment"):
        try:
            module = importlib.import_module(mod)
        except ModuleNotFoundError as e:
            if e.name == mod:
                continue
            raise
        module.register(app)


_register_extensions()


def main() -> None:
    app()


if __name__ == "__main__":
    main()
