"""`shiftrec shift-slices`: the README's shift table for one split, from the CLI (thin adapter
over pipelines.experiment, models.presets and evaluate.selection)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer


def shift_slices_cmd(
    split_dir: Annotated[Path, typer.Argument(help="split folder written by `shiftrec prepare`")],
    topics: Annotated[Path, typer.Option(help="topics folder from `shiftrec topics` (defines the shifted / stable slices and the topic signals)")],
    out: Annotated[Path, typer.Option("--out", "-o", help="experiment folder (resumable: finished runs are kept)")] = Path("out/shift-slices"),
    setting: Annotated[str | None, typer.Option(help="a README setting (epoch caps and variants): online-retail/loo, online-retail-customers/temporal, amazon-toys/loo, amazon-toys/temporal")] = None,
    variant: Annotated[list[str] | None, typer.Option("--variant", help="shift-aware variant to compare (repeatable; default: the setting's, else none, time, trend, topic, all)")] = None,
    sasrec_epochs: Annotated[int | None, typer.Option(help="SASRec epoch cap (early stopping on validation)")] = None,
    finetune_epochs: Annotated[int | None, typer.Option(help="epoch cap of each variant's fine-tuning")] = None,
    seed: Annotated[int, typer.Option(help="random seed")] = 0,
    threads: Annotated[int | None, typer.Option(help="torch threads for training")] = None,
    device: Annotated[str, typer.Option(help="cpu | cuda | auto")] = "cpu",
    baselines: Annotated[bool, typer.Option("--baselines/--no-baselines", help="also popularity, topic profile, item-kNN")] = True,
    fusion: Annotated[bool, typer.Option("--fusion/--no-fusion", help="also the item-flow fusion (ShiftFusion) over SASRec and the chosen variant")] = True,
    json_out: Annotated[bool, typer.Option("--json", help="print the result as JSON")] = False,
) -> None:
    """Train SASRec and the shift-aware variants on a split, choose the variant on validation
    (best shifted-slice NDCG@10 among those not below SASRec on the stable slice; else best
    overall), fuse with the item flows, and report test NDCG@10 on the shifted / stable slices.
    Writes OUT/shift_slices.json; OUT/runs/ keeps every model and its per-user ranks.

    Example (the toys leave-one-out column of the README's shift table; for a
    temporal column, `prepare --split temporal --test-start 0.9 --valid-start 0.8`):

      shiftrec ingest preset amazon-toys -o out/toys

      shiftrec prepare out/toys -o out/toys-loo

      shiftrec topics out/toys --source learned --encoder minilm -o out/toys-topics

      shiftrec shift-slices out/toys-loo --topics out/toys-topics --setting amazon-toys/loo -o out/toys-shift
    """
    from dataclasses import replace

    from rich.console import Console

    from shiftrec.errors import ConfigError
    from shiftrec.models.presets import Budget
    from shiftrec.models.presets import setting as get_setting
    from shiftrec.pipelines.experiment import ExperimentConfig, headline, run_shift_slices

    con = Console(stderr=json_out)
    over: dict[str, Any] = {"seed": seed, "baselines": baselines, "fusion": fusion, "device": device}
    if variant:
        over["variants"] = tuple(variant)
    if sasrec_epochs is not None:
        over["sasrec_epochs"] = sasrec_epochs
    if finetune_epochs is not None:
        over["finetune_epochs"] = finetune_epochs
    budget = get_setting(setting).budget if setting else Budget()
    if threads is not None:
        if threads < 1:
            raise ConfigError(f"--threads must be >= 1, got {threads}")
        over["budget"] = replace(budget, threads=threads)
    cfg = (ExperimentConfig.from_setting(get_setting(setting), **over) if setting
           else ExperimentConfig(**over))

    def show(tag: str, ev: Any) -> None:
        if ev.kind == "epoch":
            m = ev.metrics.get("ndcg@10")
            con.print(f"  {tag} epoch {ev.epoch}: loss={ev.loss:.4f}"
                      + (f" valid ndcg@10={m:.4f}" if m is not None else "")
                      + f" ({ev.seconds:.1f}s){' *' if ev.improved else ''}", highlight=False)

    result = run_shift_slices(split_dir, topics, out, cfg, step=lambda s: con.print(s, highlight=False),
                              progress=show)
    if json_out:
        print(json.dumps(result, indent=2, default=str))
        return
    ab = result["ablation"]
    con.print(f"chosen variant on validation: [bold]{ab['chosen']}[/bold]"
              + (" (none qualified: best overall)" if ab["fell_back"] else "")
              + f"; shifted-first: {ab['chosen_shift_first']}"
              + (f"; fusion base: {ab['fusion_chosen']}" if "fusion_chosen" in ab else ""))
    from rich.markup import escape
    from rich.table import Table

    sl = result["test_slices"]
    table = Table(title=f"Test NDCG@10 (shifted {sl.get('shifted')} / stable {sl.get('stable')} users)")
    for c in ("model", "shifted", "stable", "all"):
        table.add_column(c, justify="left" if c == "model" else "right")
    for r in headline(result):
        table.add_row(escape(r["label"]), *[f"{r[k]:.4f}" for k in ("shifted", "stable", "all")])
    con.print(table)
    for name, t in result["paired_tests"].items():
        x = t["shifted"]
        rel = "n/a" if x["relative_change"] is None else f"{100 * x['relative_change']:+.1f}%"
        con.print(f"{name} vs sasrec, shifted: {x['mean_a']:.4f} -> {x['mean_b']:.4f} ({rel}), "
                  f"paired t p={x['t_test_p']:.3g}", highlight=False)
    con.print(f"wrote {out}/shift_slices.json")


def register(app: typer.Typer) -> None:
    app.command("shift-slices")(shift_slices_cmd)
