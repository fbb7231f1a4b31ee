"""`shiftrec train`: fit any registered model on a prepared split, save it, report full-ranking
metrics (thin adapter over models.registry, train.trainer and evaluate.ranking)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

# models trained by train.trainer: they accept checkpoint_dir / resume / progress
TRAINER_MODELS = {"sasrec", "transfer", "transfer-transductive"}
# models whose `train:` options are flat (epochs, lr, batch_size, ...) instead of phases
FLAT_TRAIN_MODELS = {"transfer", "transfer-transductive"}
# models that need item text embeddings (`shiftrec encode DATASET --split SPLIT -o EMB`)
TEXT_MODELS = {"transfer", "transfer-transductive"}


def _model_options(config: Path | None, seed: int | None, epochs: int | None,
                   flat_train: bool = False) -> dict[str, Any]:
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
        if epochs is not None and flat_train:
            train["epochs"] = epochs
        elif epochs is not None:
            phases = [dict(p) for p in train.get("phases") or [{}]]
            for p in phases:
                p["epochs"] = epochs
            train["phases"] = phases
        opts["train"] = train
    return opts


def train_cmd(
    split_dir: Annotated[Path, typer.Argument(help="split folder written by `shiftrec prepare`")],
    model: Annotated[str, typer.Option(help="registered model: popularity, itemknn, sasrec, transfer, transfer-transductive, shiftfusion")] = "sasrec",
    out: Annotated[Path, typer.Option("--out", "-o", help="model folder to write")] = Path("out/model"),
    config: Annotated[Path | None, typer.Option(help="YAML of model options (sasrec: `train:` with phases; transfer: `train:` with epochs, lr, batch_size, ...)")] = None,
    seed: Annotated[int | None, typer.Option(help="random seed (trainer models)")] = None,
    epochs: Annotated[int | None, typer.Option(help="max epochs of every phase (trainer models)")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="continue an interrupted run in --out")] = False,
    item_text: Annotated[Path | None, typer.Option(help="transfer models: item embeddings folder from `shiftrec encode DATASET --split SPLIT -o EMB`")] = None,
    base_model: Annotated[Path | None, typer.Option(help="shiftfusion: a saved model folder to fuse with the item flows (default: train the `base:` of --config, sasrec)")] = None,
    topics: Annotated[Path | None, typer.Option(help="shiftfusion: topics folder from `shiftrec topics`, for the shift gate (default: one gate bin)")] = None,
) -> None:
    """Fit a model on a split with early stopping on validation NDCG@10, save it to --out with
    its manifest, and write full-ranking test metrics to --out/metrics.json (per-user ranks beside
    it in metrics.ranks.npz, for `shiftrec compare`).

    The transfer models (text-based) need the items' text embeddings aligned with the split.

    Examples:

      shiftrec train out/scientific-split --model sasrec -o out/sasrec

      shiftrec train out/scientific-split --model itemknn -o out/knn

      shiftrec encode out/scientific --split out/scientific-split -o out/scientific-emb

      shiftrec train out/scientific-split --model transfer --item-text out/scientific-emb -o out/tr

      shiftrec train out/split --model shiftfusion --base-model out/sasrec --topics out/topics -o out/fused
    """
    from rich.console import Console

    from shiftrec.config import to_dict
    from shiftrec.data.splits import SeqSplit
    from shiftrec.errors import ConfigError
    from shiftrec.evaluate.ranking import UserRanks, evaluate, write_metrics
    from shiftrec.manifest import read_json
    from shiftrec.models.registry import MODELS, build_model

    con = Console()
    if model not in MODELS:
        from shiftrec.errors import unknown_name

        raise unknown_name("model", model, MODELS)
    opts = _model_options(config, seed, epochs, flat_train=model in FLAT_TRAIN_MODELS)
    if model in TEXT_MODELS:
        if item_text is not None:
            opts["item_text"] = item_text
        elif opts.get("item_text") is None:
            raise ConfigError(f"model '{model}' needs item text embeddings aligned with the split: "
                              f"run `shiftrec encode DATASET --split {split_dir} -o EMB` and pass "
                              "--item-text EMB (or `shiftrec finetune`, which encodes the items itself)")
        elif not isinstance(opts["item_text"], str | Path):
            raise ConfigError("item_text must be the path of an item embeddings folder", path=config)
    elif (base_model is not None or topics is not None) and model != "shiftfusion":
        raise ConfigError(f"--base-model/--topics apply to shiftfusion, not '{model}'")
    elif item_text is not None or "item_text" in opts:
        raise ConfigError(f"item text embeddings apply to the text models ({', '.join(sorted(TEXT_MODELS))}), "
                          f"not '{model}'")
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
    if model == "shiftfusion" and (base_model is not None or topics is not None):
        rec = _fusion(split, opts, base_model, topics)
    else:
        rec = build_model(model, **opts)
    rec.fit(split)
    rec.save(out)
    metrics, ranks = evaluate(rec, split, "test")
    data_man = read_json(split_dir / "split.json") if (split_dir / "split.json").exists() else None
    cfg = getattr(rec, "config", None)
    write_metrics(out / "metrics.json", metrics, read_json(out / "manifest.json"), data_man,
                  per_user=UserRanks.of(split, "test", ranks),
                  model_config=to_dict(cfg) if cfg is not None else None)
    keys = ("recall@10", "ndcg@10", "recall@50", "ndcg@50")
    con.print("test " + "  ".join(f"{k}={metrics[k]:.4f}" for k in keys))
    con.print(f"wrote {out}/(manifest.json, metrics.json, metrics.ranks.npz, model weights)")


def _fusion(split: Any, opts: dict[str, Any], base_model: Path | None, topics: Path | None) -> Any:
    """A ShiftFusion over a saved base model and/or with the topics' interest gate."""
    from shiftrec.errors import ConfigError
    from shiftrec.interest.topics import Topics
    from shiftrec.models.fusion import ShiftFusion
    from shiftrec.models.registry import build_model, load_model

    item_topic = Topics.load(topics).aligned(split.item_map) if topics is not None else None
    if base_model is None:
        return build_model("shiftfusion", item_topic=item_topic, **opts)
    if "base" in opts or "base_options" in opts:
        raise ConfigError("give the base either as --base-model or as `base:` in --config, not both")
    base = load_model(base_model)
    return ShiftFusion(base, base_fitted=True, item_topic=item_topic, **opts)


def register(app: typer.Typer) -> None:
    app.command("train")(train_cmd)
