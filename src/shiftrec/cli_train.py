"""`shiftrec train`: fit any registered model on a prepared split, save it, report full-ranking
metrics (thin adapter over models.registry, train.trainer and evaluate.ranking)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

# models trained by train.trainer: they accept checkpoint_dir / resume / progress
TRAINER_MODELS = {"sasrec"}


def _model_options(config: Path | None, seed: int | None, epochs: int | None) -> dict[str, Any]:
    import yaml

    from shiftrec.errors import ConfigError

    opts: dict[str, Any] = {}
    if config is not None:
        if not config.exists():
            raise ConfigError("config file not found", path=config)
        try:
            opts = yaml.safe_load(config.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"invalid YAML: {str(e).splitlines()[0]}", path=config) from None
        if not isinstance(opts, dict):
            raise ConfigError("top level must be a mapping of model options", path=config)
    if seed is not None or epochs is not None:
        train = dict(opts.get("train") or {})
        if seed is not None:
            train["seed"] = seed
        if epochs is not None:
            phases = [dict(p) for p in train.get("phases") or [{}]]
            for p in phases:
                p["epochs"] = epochs
            train["phases"] = phases
        opts["train"] = train
    return opts


def train_cmd(
    split_dir: Annotated[Path, typer.Argument(help="split folder written by `shiftrec prepare`")],
    model: Annotated[str, typer.Option(help="registered model: popularity, itemknn, sasrec, ...")] = "sasrec",
    out: Annotated[Path, typer.Option("--out", "-o", help="model folder to write")] = Path("out/model"),
    config: Annotated[Path | None, typer.Option(help="YAML of model options (for sasrec also `train:` with phases)")] = None,
    seed: Annotated[int | None, typer.Option(help="random seed (trainer models)")] = None,
    epochs: Annotated[int | None, typer.Option(help="max epochs of every phase (trainer models)")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="continue an interrupted run in --out")] = False,
) -> None:
    """Fit a model on a split with early stopping on validation NDCG@10, save it to --out with
    its manifest, and write full-ranking test metrics to --out/metrics.json.

    Examples:

      shiftrec train out/scientific-split --model sasrec -o out/sasrec

      shiftrec train out/scientific-split --model itemknn -o out/knn
    """
    from rich.console import Console

    from shiftrec.config import to_dict
    from shiftrec.data.splits import SeqSplit
    from shiftrec.errors import ConfigError
    from shiftrec.evaluate.ranking import evaluate, write_metrics
    from shiftrec.manifest import read_json
    from shiftrec.models.registry import MODELS, build_model

    con = Console()
    if model not in MODELS:
        from shiftrec.errors import unknown_name

        raise unknown_name("model", model, MODELS)
    opts = _model_options(config, seed, epochs)
    if model in TRAINER_MODELS:
        def show(ev: Any) -> None:
            if ev.kind == "epoch":
                m = ev.metrics.get("ndcg@10")
                star = " *" if ev.improved else ""
                con.print(f"  {ev.phase} epoch {ev.epoch}: loss={ev.loss:.4f}"
                          + (f" valid ndcg@10={m:.4f}" if m is not None else "")
                          + f" ({ev.seconds:.1f}s){star}")

        opts |= {"checkpoint_dir": out / "trainer", "resume": resume, "progress": show}
    elif resume or seed is not None or epochs is not None:
        raise ConfigError(f"--resume/--seed/--epochs apply to trainer models ({', '.join(sorted(TRAINER_MODELS))}), not '{model}'")
    split = SeqSplit.load(split_dir)
    con.print(f"training {model} on {split.name}: {len(split.user_ids):,} users, {split.n_items:,} items")
    rec = build_model(model, **opts)
    rec.fit(split)
    rec.save(out)
    metrics, _ = evaluate(rec, split, "test")
    data_man = read_json(split_dir / "split.json") if (split_dir / "split.json").exists() else None
    cfg = getattr(rec, "config", None)
    write_metrics(out / "metrics.json", metrics, read_json(out / "manifest.json"), data_man,
                  split="test", model_config=to_dict(cfg) if cfg is not None else None)
    keys = ("recall@10", "ndcg@10", "recall@50", "ndcg@50")
    con.print("test " + "  ".join(f"{k}={metrics[k]:.4f}" for k in keys))
    con.print(f"wrote {out}/(manifest.json, metrics.json, model weights)")


def register(app: typer.Typer) -> None:
    app.command("train")(train_cmd)
