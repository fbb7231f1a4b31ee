"""Thin Typer adapter: parse options, call the library, print. The library never prints."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

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
    from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    return Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                    TextColumn("{task.completed}/{task.total}"), TimeElapsedColumn(),
                    transient=False, console=_console())


FORMATS = ("amazon-2018", "amazon-csv", "online-retail", "unisrec", "recbole", "generic")


def _parse_map(pairs: list[str] | None, mapping: Path | None) -> dict[str, str]:
    from shiftrec.errors import ConfigError

    out: dict[str, str] = {}
    if mapping is not None:
        import yaml

        if not mapping.exists():
            raise ConfigError("mapping file not found", path=mapping)
        data = yaml.safe_load(mapping.read_text(encoding="utf-8")) or {}
        if not isinstance(data, dict):
            raise ConfigError("mapping YAML must be a mapping of field: column", path=mapping)
        out.update({str(k): str(v) for k, v in data.items()})
    for p in pairs or []:
        if "=" not in p:
            raise ConfigError(f"--map expects field=column, got '{p}'")
        k, v = p.split("=", 1)
        out[k.strip()] = v.strip()
    return out


@app.command()
def ingest(
    fmt: Annotated[str, typer.Argument(help=f"source format: {', '.join(FORMATS)}; or 'preset'")],
    path: Annotated[str, typer.Argument(help="events file/folder, or a preset name with 'preset'")],
    out: Annotated[Path, typer.Option("--out", "-o", help="output folder")] = Path("out/dataset"),
    items: Annotated[Path | None, typer.Option(help="item catalogue file (generic/amazon formats)")] = None,
    map_: Annotated[list[str] | None, typer.Option("--map", help="generic: field=column (repeatable)")] = None,
    mapping: Annotated[Path | None, typer.Option(help="generic: YAML mapping of field: column")] = None,
    recipe: Annotated[str | None, typer.Option(help="online-retail: 'unisrec' for UniSRec's recipe")] = None,
    kcore: Annotated[int, typer.Option(help="iterative k-core on users and items (0 = off)")] = 0,
    dedup: Annotated[str, typer.Option(help="none | exact | user_item")] = "exact",
    bot_per_minute: Annotated[int | None, typer.Option(help="drop users above N events/minute")] = None,
    config: Annotated[Path | None, typer.Option(help="YAML overlay for the cleaning config")] = None,
    data_root: Annotated[Path | None, typer.Option(help="shared data folder for presets")] = None,
) -> None:
    """Read a source, clean it, write events/items parquet, quarantine and ingest_report.json.

    Examples:

      shiftrec ingest preset scientific -o out/scientific

      shiftrec ingest online-retail ../shared/data/online-retail/online_retail_I.parquet --recipe unisrec --kcore 5

      shiftrec ingest amazon-2018 ../shared/data/amazon-2018-raw/Gift_Cards_5.json.gz -o out/gift

      shiftrec ingest generic my_log.csv --items items.csv --map user_id=visitor --map item_id=sku --map timestamp=ts --map event_type=event
    """
    from shiftrec.config import load_yaml
    from shiftrec.data.clean import CleanConfig, DedupMode
    from shiftrec.data.pipeline import ingest as run_ingest
    from shiftrec.data.readers import (
        READERS,
        UNISREC_RECIPE,
        ColumnMap,
        ItemColumnMap,
        OnlineRetailOptions,
    )
    from shiftrec.errors import ConfigError, unknown_name

    try:
        dmode = DedupMode(dedup)
    except ValueError:
        raise ConfigError(f"--dedup must be one of {[m.value for m in DedupMode]}") from None
    cfg = CleanConfig(dedup=dmode, kcore_user=kcore, kcore_item=kcore, bot_max_events_per_minute=bot_per_minute)
    name = Path(path).name.split(".")[0]
    with _progress() as prog:
        task = prog.add_task(f"reading {path}", total=3)
        if fmt == "preset":
            from shiftrec.data.presets import load_preset

            read, preset_cfg = load_preset(path, data_root)
            cfg = preset_cfg if (kcore == 0 and dedup == "exact" and bot_per_minute is None) else cfg
            name = path
        elif fmt not in READERS:
            raise unknown_name("format", fmt, list(READERS) + ["preset"])
        elif fmt == "generic":
            m = _parse_map(map_, mapping)
            item_keys = {f"item_{k}": k for k in ("title", "category", "brand", "description", "price")}
            imap = ItemColumnMap(**{v: m.pop(k) for k, v in item_keys.items() if k in m})
            try:
                cmap = ColumnMap(**m)
            except TypeError:
                valid = [f for f in ColumnMap.__dataclass_fields__]
                raise ConfigError(f"unknown mapping field in {sorted(m)}; valid: {valid} "
                                  f"(+ item_title, item_category, ...)") from None
            read = READERS["generic"](path, cmap, items, imap)
        elif fmt == "online-retail":
            if recipe not in (None, "unisrec"):
                raise ConfigError(f"unknown recipe '{recipe}'; valid: unisrec")
            read = READERS[fmt](path, UNISREC_RECIPE if recipe else OnlineRetailOptions())
        elif fmt == "amazon-csv":
            read = READERS[fmt](path, items)
        elif fmt == "amazon-2018":
            read = READERS[fmt](path, items)
        else:
            read = READERS[fmt](path)
        cfg = load_yaml(cfg, config)
        prog.update(task, advance=1, description="cleaning")
        report = run_ingest(read, cfg, out, name)
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
    dataset: Annotated[Path, typer.Argument(help="dataset folder written by `shiftrec ingest`")],
    out: Annotated[Path, typer.Option("--out", "-o")] = Path("out/split"),
    split: Annotated[str, typer.Option(help="loo | temporal | cross-domain")] = "loo",
    max_len: Annotated[int, typer.Option(help="history length kept")] = 50,
    test_start: Annotated[float | None, typer.Option(help="temporal: unix time or quantile in (0,1)")] = None,
    valid_start: Annotated[float | None, typer.Option(help="temporal: unix time or quantile in (0,1)")] = None,
    source: Annotated[list[str] | None, typer.Option(help="cross-domain: source domain (repeatable)")] = None,
    target: Annotated[str | None, typer.Option(help="cross-domain: target domain")] = None,
) -> None:
    """Split a dataset: leave-one-out (UniSRec), global temporal, or cross-domain.

    Examples:

      shiftrec prepare out/scientific -o out/scientific-split

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
        splits = run_prepare(dataset, out, kind, max_len, test_start, valid_start, source, target)
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
    json_out: Annotated[bool, typer.Option("--json", help="print the summary as JSON")] = False,
) -> None:
    """Run the whole pipeline on an embedded synthetic store with planted interest shifts.

    Example: shiftrec demo --users 2000 --seed 0 -o out/demo
    """
    from shiftrec.data.synthetic import StoreConfig
    from shiftrec.pipelines.demo import run_demo, summary_table

    cfg = StoreConfig(n_users=users, n_items=items, seed=seed)
    with _progress() as prog:
        task = prog.add_task("demo", total=None)
        result = run_demo(out, cfg, step=lambda s: prog.update(task, description=s))
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
        con.print("plots: " + ", ".join(it["plots"]))
    con.print(f"outputs in {result['out_dir']}")


def _register_extensions() -> None:
    """Commands from other stages, each module adding its own (explicit list, no discovery)."""
    import importlib

    for mod in ("shiftrec.cli.text", "shiftrec.cli.train", "shiftrec.cli.interest", "shiftrec.cli.transfer",
                "shiftrec.cli.compare", "shiftrec.cli.serve", "shiftrec.cli.report"):
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
