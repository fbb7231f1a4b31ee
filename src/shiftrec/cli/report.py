"""`shiftrec report`: one self-contained HTML report (and PNGs) from saved artifacts."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Annotated

import typer


def report(
    dataset: Annotated[Path | None, typer.Option(help="Dataset folder (`shiftrec ingest`): the Data section.")] = None,
    run: Annotated[list[Path] | None, typer.Option(help="Run folder with metrics.json (repeatable): the Models "
                                                   "section; a servable run feeds the Shoppers' recommendations.")] = None,
    topics: Annotated[Path | None, typer.Option(help="Topics folder (`shiftrec topics`): slices, topic names, Shoppers.")] = None,
    shifts: Annotated[Path | None, typer.Option(help="shifts.parquet or its folder (`shiftrec shifts`): shifted users first.")] = None,
    flows: Annotated[Path | None, typer.Option(help="flows.json or its folder (`shiftrec flows`): Interest migration.")] = None,
    split: Annotated[Path | None, typer.Option(help="Split folder the runs were evaluated on (shifted/stable slices).")] = None,
    users: Annotated[int, typer.Option(help="Sample shoppers listed (shifted first).")] = 60,
    n_boot: Annotated[int, typer.Option(help="Bootstrap resamples for the 95% intervals.")] = 1000,
    png: Annotated[Path | None, typer.Option(help="Also write a PNG of every chart into this folder.")] = None,
    title: Annotated[str, typer.Option(help="Report title.")] = "shiftrec report",
    out: Annotated[Path, typer.Option("--out", "-o", help="The HTML file to write.")] = Path("report.html"),
) -> None:
    """Write ONE self-contained HTML report (Plotly inline; opens from disk, no network).

    Sections appear when their inputs are given: Data (--dataset), Models (--run), Interest
    migration (--flows), Shoppers (--dataset + --topics; recommendations from a servable --run),
    Reproduce (always).

    Example: shiftrec report --dataset out/demo/dataset --run out/demo/runs/sasrec --run out/demo/run
    --topics out/demo/topics --flows out/demo/flows.json -o out/demo/report.html
    """
    from rich.console import Console

    from shiftrec.report.build import build_report
    from shiftrec.report.collect import ReportInputs

    con = Console(stderr=True)
    cmd = "shiftrec " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    inp = ReportInputs(dataset=dataset, runs=tuple(run or ()), topics=topics, shifts=shifts, flows=flows,
                       split=split, title=title, sample_users=users, n_boot=n_boot, commands=(cmd,))
    res = build_report(inp, out, png_dir=png, progress=lambda s: con.print(f"  {s}…", highlight=False))
    for n in res["notes"]:
        con.print(f"[yellow]note:[/yellow] {n}", highlight=False)
    print(f"wrote {res['path']} ({res['bytes']:,} bytes; sections: {', '.join(res['sections'])})")
    for p in res["pngs"]:
        print(f"  {p}")
    print(f"open it: xdg-open {res['path']}   (or file://{Path(res['path']).resolve()})")


def register(app: typer.Typer) -> None:
    app.command("report")(report)
