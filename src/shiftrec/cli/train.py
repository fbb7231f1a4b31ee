"""`shiftrec train`: fit any registered model on a prepared split, save it, report full-ranking
metrics (thin adapter over models.registry, train.trainer and evaluate.ranking)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer


# the CLI's model sets come from the registry's ModelSpec flags (models.registry)
def _names(flag: str) -> set[str]:
    from shiftrec.models.registry import names_where

    return names_where(flag)


def _model_options(config: Path | None, seed: int | None, epochs: int | None,
                   threads: int | None = None, torch_model: bool = True) -> dict[str, Any]:
    """Model options from --config YAML, with --seed / --epochs / --threads set in its `train:`
    mapping (the one training dialect: each flag changes only the field it names)."""
    from shiftrec.config import read_yaml_mapping
    from shiftrec.errors import ConfigError

    opts: dict[str, Any] = {}
    if config is not None:
        opts = read_yaml_mapping(config, "a mapping of model options")
    flags = {k: v for k, v in (("seed", seed), ("epochs", epochs), ("threads", threads))
             if v is not None}
    if flags and torch_model:
        train = opts.get("train") or {}
        if not isinstance(train, dict):
            raise ConfigError("`train:` must be a mapping of training options", path=config)
        opts["train"] = {**train, **flags}
    return opts


def train_cmd(
    data: Annotated[str, typer.Argument(help="split folder written by `shiftrec prepare`, or a dataset folder / named dataset (split with the default leave-one-out)", metavar="SPLIT_OR_DATASET")],
    model: Annotated[str, typer.Option(help="registered model: popularity, itemknn, sasrec, transfer, transfer-transductive, textsim (no training: item text similarity), shiftfusion, shiftaware, topic_profile")] = "sasrec",
    out: Annotated[Path, typer.Option("--out", "-o", help="model folder to write")] = Path("out/model"),
    config: Annotated[Path | None, typer.Option(help="YAML of model options; training options go under `train:` (epochs, lr, batch_size, patience, seed, threads, ...; `phases:` for several phases)")] = None,
    seed: Annotated[int | None, typer.Option(help="random seed (torch models)")] = None,
    epochs: Annotated[int | None, typer.Option(help="max epochs of every phase (torch models); other training options keep their values")] = None,
    threads: Annotated[int, typer.Option(help="torch threads for training and scoring; 0 = auto (from the model size and the idle cores)")] = 0,
    resume: Annotated[bool, typer.Option("--resume", help="continue an interrupted run in --out (an error when --out holds no checkpoint)")] = False,
    item_text: Annotated[Path | None, typer.Option(help="text models (transfer, transfer-transductive, textsim): item embeddings folder from `shiftrec encode DATASET --split SPLIT -o EMB`")] = None,
    base_model: Annotated[Path | None, typer.Option(help="shiftfusion: a saved model folder to fuse with the item flows; shiftaware: a saved SASRec to warm-start from")] = None,
    topics: Annotated[Path | None, typer.Option(help="topics folder from `shiftrec topics`: needed by shiftaware and topic_profile; shiftfusion's shift gate (default: one gate bin)")] = None,
    data_root: Annotated[Path | None, typer.Option(help="shared data folder (for a named dataset)")] = None,
    select_metric: Annotated[str | None, typer.Option(help="shiftfusion: the validation metric its weights are chosen on (ndcg@10 by default; e.g. recall@50 keeps more deep recall)")] = None,
    exclude_seen: Annotated[bool, typer.Option("--exclude-seen", help="test metrics rank each user's target among the items outside their history (a history item that is the target stays ranked), as `shiftrec serve` leaves the history out by default (the default ranks every item: RecBole's and UniSRec's protocol); textsim chooses its decay and text transform the same way; training and early stopping are unchanged; not for shiftfusion")] = False,
    repeat_gate: Annotated[bool, typer.Option("--repeat-gate", help="sasrec, transfer, transfer-transductive: the repeat/explore gate (the history's items together get the share of next items found in the history of the training sequences; counted before training, saved with the model; `shiftrec finetune --repeat-gate` for the pretrained text model)")] = False,
) -> None:
    """Fit a model on a split with early stopping on validation NDCG@10, save it to --out with
    its manifest (file hashes, item-map fingerprint), and write full-ranking test metrics to
    --out/metrics.json (per-user ranks beside it in metrics.ranks.npz, for `shiftrec compare`).

    Input (the same for train, finetune and evaluate): a split folder written by `shiftrec
    prepare` is used as is; a dataset folder or a named dataset is split with the default
    leave-one-out. The transfer models (text-based) need the items' text embeddings aligned
    with the split.

    Examples:

      shiftrec train out/scientific-split --model sasrec -o out/sasrec

      shiftrec train out/scientific-split --model sasrec --epochs 30 --threads 1 -o out/sasrec

      shiftrec train out/scientific-split --model itemknn -o out/knn

      shiftrec encode out/scientific --split out/scientific-split -o out/scientific-emb

      shiftrec train out/scientific-split --model transfer --item-text out/scientific-emb -o out/tr

      shiftrec train out/split --model shiftfusion --base-model out/sasrec --topics out/topics -o out/fused
    """
    from rich.console import Console

    from shiftrec.config import to_dict
    from shiftrec.errors import ConfigError
    from shiftrec.evaluate.ranking import UserRanks, evaluate, seen_items, write_metrics
    from shiftrec.manifest import read_json
    from shiftrec.models.registry import REGISTRY, build_model, spec
    from shiftrec.pipelines.transfer import open_target

    con = Console()
    ms = spec(model)
    text_models = _names("needs_item_text")
    if threads < 0:
        raise ConfigError(f"--threads must be >= 0 (0 = auto), got {threads}")
    opts = _model_options(config, seed, epochs, threads or None, torch_model=ms.torch)
    if ms.needs_item_text:
        if item_text is not None:
            opts["item_text"] = item_text
        elif opts.get("item_text") is None:
            raise ConfigError(f"model '{model}' needs item text embeddings aligned with the split: "
                              f"run `shiftrec encode DATASET --split {data} -o EMB` and pass "
                              "--item-text EMB (or `shiftrec finetune`, which encodes the items itself)")
        elif not isinstance(opts["item_text"], str | Path):
            raise ConfigError("item_text must be the path of an item embeddings folder", path=config)
    elif item_text is not None or "item_text" in opts:
        raise ConfigError(f"item text embeddings apply to the text models ({', '.join(sorted(text_models))}), "
                          f"not '{model}'")
    uses_topics = ms.needs_topics or ms.needs_base
    if topics is not None and not uses_topics:
        raise ConfigError(f"--topics applies to {', '.join(sorted(_names('needs_topics') | _names('needs_base')))}, "
                          f"not '{model}'")
    if base_model is not None and not (ms.needs_base or model == "shiftaware"):
        raise ConfigError(f"--base-model applies to shiftfusion (and shiftaware's warm start), not '{model}'")
    if ms.needs_topics and topics is None and opts.get("item_topic") is None:
        raise ConfigError(f"model '{model}' needs item topics: run `shiftrec topics DATASET -o TOPICS` "
                          "and pass --topics TOPICS")
    if ms.torch:
        def show(ev: Any) -> None:
            if ev.kind == "epoch":
                m = ev.metrics.get("ndcg@10")
                star = " *" if ev.improved else ""
                con.print(f"  {ev.phase} epoch {ev.epoch}: loss={ev.loss:.4f}"
                          + (f" valid ndcg@10={m:.4f}" if m is not None else "")
                          + f" ({ev.seconds:.1f}s){star}")

        opts |= {"checkpoint_dir": out / "trainer", "resume": resume, "progress": show}
    elif resume or seed is not None or epochs is not None:
        torch_names = ", ".join(sorted(n for n, s in REGISTRY.items() if s.torch))
        raise ConfigError(f"--resume/--seed/--epochs apply to the torch models ({torch_names}), not '{model}'")
    if exclude_seen and model == "shiftfusion":
        raise ConfigError("--exclude-seen does not apply to shiftfusion: its flow weights are "
                          "chosen on validation ranking every item")
    if repeat_gate:
        if model not in ("sasrec", "transfer", "transfer-transductive"):
            raise ConfigError(f"--repeat-gate applies to sasrec, transfer and transfer-transductive, "
                              f"not '{model}'")
        opts["repeat_gate"] = True
    if select_metric is not None:
        if model != "shiftfusion":
            raise ConfigError(f"--select-metric applies to shiftfusion, not '{model}'")
        opts["select_metric"] = select_metric
    target = open_target(data, data_root)
    split = target.split
    con.print(f"training {model} on {split.name}: {len(split.user_ids):,} users, {split.n_items:,} items")
    item_topic = None
    if topics is not None:
        from shiftrec.interest.topics import Topics

        item_topic = Topics.load(topics).aligned(split.item_map)
    if model == "shiftfusion" and (base_model is not None or topics is not None):
        rec = _fusion(split, opts, base_model, item_topic)
    else:
        if item_topic is not None:
            opts["item_topic"] = item_topic
        if base_model is not None:  # shiftaware: warm start from a saved SASRec
            opts["init_from"] = base_model
        if exclude_seen and model == "textsim":  # decay and transform chosen as the test ranks
            opts["select_exclude_seen"] = True
        rec = build_model(model, **opts)
    rec.fit(split)
    if getattr(rec, "valid_ndcg", None) is not None:  # textsim: what validation chose
        con.print(f"textsim: decay {rec.decay:g}, text transform {rec.transform.value} (valid NDCG@10 "
                  f"{rec.valid_ndcg:.4f}{', seen items excluded' if exclude_seen else ''}; best of "
                  f"{len(rec.selection)} choices)")
    from shiftrec.train.trainer import dist_info

    if not dist_info().main:
        return  # under torchrun only rank 0 saves, evaluates and writes metrics
    rec.save(out)
    metrics, ranks = evaluate(rec, split, "test", exclude_history=exclude_seen)
    if target.split_dir is not None and (target.split_dir / "split.json").exists():
        data_man = read_json(target.split_dir / "split.json")
    else:
        data_man = {"name": split.name, "split_kind": split.kind, "meta": split.meta}
    cfg = getattr(rec, "config", None)
    write_metrics(out / "metrics.json", metrics, read_json(out / "manifest.json"), data_man,
                  per_user=UserRanks.of(split, "test", ranks),
                  model_config=to_dict(cfg) if cfg is not None else None,
                  seen_items=seen_items(exclude_seen))
    keys = ("recall@10", "ndcg@10", "recall@50", "ndcg@50")
    con.print("test " + ("(seen items excluded) " if exclude_seen else "") + "  ".join(f"{k}={metrics[k]:.4f}" for k in keys))
    con.print(f"wrote {out}/(manifest.json, metrics.json, metrics.ranks.npz, model weights)")


def _fusion(split: Any, opts: dict[str, Any], base_model: Path | None, item_topic: Any) -> Any:
    """A ShiftFusion over a saved base model (trained on this split's item map) and/or with the
    topics' interest gate."""
    from shiftrec.errors import ConfigError
    from shiftrec.models.fusion import ShiftFusion
    from shiftrec.models.registry import build_model, load_model

    if base_model is None:
        return build_model("shiftfusion", item_topic=item_topic, **opts)
    if "base" in opts or "base_options" in opts:
        raise ConfigError("give the base either as --base-model or as `base:` in --config, not both")
    base = load_model(base_model, split=split)
    return ShiftFusion(base, base_fitted=True, item_topic=item_topic, **opts)


def register(app: typer.Typer) -> None:
    app.command("train")(train_cmd)
