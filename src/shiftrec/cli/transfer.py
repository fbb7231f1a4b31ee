"""`shiftrec pretrain | finetune | evaluate`: transfer learning with the text-based model (thin)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

DATA_HELP = ("a named dataset of the shared data folder (e.g. scientific, online-retail, "
             "online-retail-ii, amazon-beauty) or a prepared dataset folder")
TARGET_HELP = ("a split folder written by `shiftrec prepare` (used as is; the items' text then "
               "comes from --item-text), or a dataset folder / named dataset of the shared data "
               "folder (split with the default leave-one-out; its items' text is encoded)")
THREADS_HELP = "torch threads; 0 = auto (from the model size and the idle cores)"


def _console() -> Any:
    from rich.console import Console

    return Console()


def epoch_printer(con: Any) -> Any:
    """Training progress, one line per epoch (also used by the transfer benchmarks)."""
    def show(ev: Any) -> None:
        if ev.kind == "epoch":
            m = " ".join(f"{k}={v:.4f}" for k, v in ev.metrics.items()
                         if k in ("ndcg@10", "recall@10", "ndcg@50"))
            star = " *" if ev.improved else ""
            con.print(f"  {ev.phase} epoch {ev.epoch}: loss={ev.loss:.4f} {m} ({ev.seconds:.1f}s){star}")
        elif ev.kind == "phase_end":
            con.print(f"  {ev.phase} done in {ev.seconds:.1f}s, best valid {ev.metrics.get('best'):.4f}")
    return show


def _cfg(cls: Any, config: Path | None, **over: Any) -> Any:
    from shiftrec.config import load_yaml, overlay

    cfg = load_yaml(cls(), config)
    return overlay(cfg, {k: v for k, v in over.items() if v is not None}, where="option")


def _checkpoint(spec: str | None) -> Path:
    from shiftrec.models.transfer_fit import DEFAULT_PRETRAINED, pretrained_path

    if spec is None:
        return pretrained_path(DEFAULT_PRETRAINED)
    p = Path(spec)
    return p if p.exists() else pretrained_path(spec)


def pretrain_cmd(
    sources: Annotated[list[str], typer.Argument(help=f"source datasets: {DATA_HELP}")],
    out: Annotated[Path, typer.Option("--out", "-o", help="checkpoint folder")] = Path("out/pretrained"),
    encoder: Annotated[str, typer.Option(help="text encoder: minilm, use-multilingual or a model folder")] = "minilm",
    config: Annotated[Path | None, typer.Option(help="YAML overlay of PretrainConfig")] = None,
    epochs: Annotated[int | None, typer.Option(help="max epochs (overrides the config)")] = None,
    max_users: Annotated[int, typer.Option(help="subsample at most N users per source (0 = all)")] = 0,
    resume: Annotated[bool, typer.Option("--resume", help="continue an interrupted run in --out")] = False,
    cache_dir: Annotated[Path | None, typer.Option(help="text embedding cache folder")] = None,
    data_root: Annotated[Path | None, typer.Option(help="shared data folder")] = None,
    seed: Annotated[int | None, typer.Option(help="random seed")] = None,
    threads: Annotated[int | None, typer.Option(help=THREADS_HELP)] = None,
    repeat_gate: Annotated[bool, typer.Option("--repeat-gate", help="the repeat/explore gate: the items of the history together get the share of next items that were found in the history of the sources' training sequences (counted now, stored in the checkpoint; `evaluate --zero-shot --repeat-gate` uses it)")] = False,
) -> None:
    """Pretrain the transferable text model on several source domains at once (contrastive: each
    batch from one domain, its negatives the batch's other targets plus 4,096 items drawn from
    that domain; dropout 0.1 — the shipped checkpoint's recipe; `--config` YAML may change any of
    it, e.g. `same_domain: false`). A dataset with several domains gives one source each.

    Append @N to a source to subsample N users of it (overrides --max-users).

    Example: shiftrec pretrain amazon-beauty@3000 amazon-health@1500 amazon-electronics-2018@1500 -o out/pre
    """
    from shiftrec.pipelines.transfer import (
        PretrainConfig,
        load_dataset,
        pretrain,
        sources_from_dataset,
    )

    con = _console()
    cfg = _cfg(PretrainConfig, config, epochs=epochs, seed=seed, threads=threads,
               repeat_gate=True if repeat_gate else None)
    srcs = []
    for spec in sources:
        n = max_users
        name, _, cap = spec.rpartition("@")
        if name and cap.isdigit():  # per-source subsample: amazon-beauty@3000
            spec, n = name, int(cap)
        ds = load_dataset(spec, data_root)
        srcs += sources_from_dataset(ds, encoder, max_users=n, seed=cfg.seed,
                                     max_len=cfg.model.max_len, cache_dir=cache_dir)
    con.print(f"pretraining on {', '.join(s.name for s in srcs)} "
              f"({sum(len(s.split.user_ids) for s in srcs):,} users)")
    net, fields = pretrain(srcs, encoder, cfg, out, resume=resume, progress=epoch_printer(con))
    con.print(f"[bold]checkpoint[/bold] {out} ({fields['provenance']['wall_seconds']}s)")
    if cfg.repeat_gate:
        con.print(_gate_line(net.repeat_fit, "the sources'"))


def finetune_cmd(
    target: Annotated[str, typer.Argument(help=f"target: {TARGET_HELP}", metavar="SPLIT_OR_DATASET")],
    checkpoint: Annotated[str | None, typer.Option(help="pretrained checkpoint folder or shipped name (default: the shipped one)")] = None,
    scratch: Annotated[bool, typer.Option("--scratch", help="train from scratch instead")] = False,
    mode: Annotated[str | None, typer.Option(help="inductive (text only; the default) | transductive (text + item IDs) | auto (fine-tune both, keep the one better on validation: twice the time; IDs won on shops of ~150 items and lost where most test items were rarely bought)")] = None,
    freeze: Annotated[str | None, typer.Option(help="none | encoder (train only the adaptor) | adaptor")] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="output checkpoint folder")] = Path("out/finetuned"),
    config: Annotated[Path | None, typer.Option(help="YAML overlay of FinetuneConfig (epochs, lr, batch_size, patience, seed, threads, ...)")] = None,
    epochs: Annotated[int | None, typer.Option(help="max epochs (default 100; early stopping ends most runs well before)")] = None,
    lr: Annotated[float | None, typer.Option(help="learning rate (default 5e-4 fine-tuning a checkpoint, 2e-3 with --scratch)")] = None,
    batch_size: Annotated[int | None, typer.Option(help="supervised targets per batch (default 1024)")] = None,
    patience: Annotated[int | None, typer.Option(help="epochs without a better validation NDCG@10 before stopping; the best epoch is kept (default 10)")] = None,
    threads: Annotated[int | None, typer.Option(help=THREADS_HELP)] = None,
    encoder: Annotated[str | None, typer.Option(help="text encoder (default: the checkpoint's)")] = None,
    item_text: Annotated[Path | None, typer.Option(help="item embeddings folder (`shiftrec encode DATASET --split SPLIT -o EMB`); needed when the target is a split folder")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="continue an interrupted run in --out (an error when --out holds no checkpoint)")] = False,
    cache_dir: Annotated[Path | None, typer.Option(help="text embedding cache folder")] = None,
    data_root: Annotated[Path | None, typer.Option(help="shared data folder")] = None,
    seed: Annotated[int | None, typer.Option(help="random seed")] = None,
    text_path: Annotated[bool, typer.Option("--text-path", help="after training, add the text-similarity path (cosine of the history's recency-weighted titles with each item's) with the weight, decay and text transform (none, centre, whiten) best on validation; weight 0 is a choice, so validation never gets worse")] = False,
    repeat_gate: Annotated[bool, typer.Option("--repeat-gate", help="the repeat/explore gate: the items of each history together get the share of next items that were found in the history in the target's training sequences (Amazon shops: almost none, so the history drops below the rest when every item is ranked); saved with the model")] = False,
    interpolate: Annotated[bool | None, typer.Option("--interpolate/--no-interpolate", help="after training, mix the fine-tuned weights back toward the pretrained ones (WiSE-FT: alpha * fine-tuned + (1 - alpha) * pretrained, alpha from 0 to 1 in steps of 0.1 chosen on validation; 1 = unchanged, 0 = the pretrained weights). On by default when fine-tuning a checkpoint; not with --scratch")] = None,
) -> None:
    """Fine-tune a pretrained model on a target (full cross-entropy over all its items), then
    report test metrics. Works out of the box with the shipped checkpoint; the defaults (lr 5e-4,
    or 2e-3 with --scratch; batch 1024; patience 10, at most 100 epochs) were chosen on the
    validation splits of shops the checkpoint never saw, giving training from scratch the same
    room to converge. After training, the weights are mixed back toward the checkpoint's with the
    share best on validation (WiSE-FT; --no-interpolate keeps the fine-tuned weights).

    Example: shiftrec finetune scientific --mode auto -o out/sci
    """
    from shiftrec.errors import ConfigError
    from shiftrec.models.transfer import read_manifest
    from shiftrec.pipelines.transfer import (
        FinetuneConfig,
        evaluate_net,
        finetune,
        open_target,
        target_source,
    )

    con = _console()
    cfg = _cfg(FinetuneConfig, config, epochs=epochs, seed=seed, mode=mode, freeze=freeze, lr=lr,
               batch_size=batch_size, patience=patience, threads=threads,
               text_path=True if text_path else None, repeat_gate=True if repeat_gate else None,
               interpolate=interpolate)
    if scratch and interpolate:
        raise ConfigError("--interpolate mixes the fine-tuned weights with the pretrained ones: "
                          "it does not go with --scratch")
    ck = None if scratch else _checkpoint(checkpoint)
    enc = encoder or (read_manifest(ck)["encoder"] if ck is not None else "minilm")
    tgt = open_target(target, data_root, max_len=cfg.model.max_len)
    src = target_source(tgt, enc, item_text=item_text, cache_dir=cache_dir)
    con.print(f"fine-tuning {'from ' + str(ck) if ck else 'from scratch'} on {src.name} "
              f"({len(src.split.user_ids):,} users, {src.split.n_items:,} items)")
    net, fields = finetune(ck, src.split, src.text, enc, cfg, out, resume=resume,
                           progress=epoch_printer(con), data_name=src.name)
    ms = fields.get("mode_selection")
    if ms is not None:
        con.print(f"mode auto: kept {ms['chosen']} (valid NDCG@10 "
                  + ", ".join(f"{m} {v:.4f}" for m, v in ms["valid_ndcg@10"].items()) + ")")
    mix = fields.get("interpolation")
    if mix is not None:
        by = mix["valid_by_alpha"]
        con.print(f"interpolated: {mix['alpha']:g} × fine-tuned + {1 - mix['alpha']:g} × pretrained, "
                  f"chosen on valid NDCG@10 {mix['valid_ndcg@10']:.4f} (alpha 1, the fine-tuned "
                  f"weights: {by['1']:.4f}; alpha 0, the checkpoint's: {by['0']:.4f})")
    tp = fields.get("text_path")
    if tp is not None:
        con.print(_text_path_line(tp))
    if net.repeat_fit is not None:
        con.print(_gate_line(net.repeat_fit, "the target's"))
    metrics, ranks = evaluate_net(net, src.split, "test", threads=cfg.threads)
    _write_metrics(out / "metrics.json", metrics, out, src, ranks, "test")
    con.print(_fmt(metrics))


def evaluate_cmd(
    target: Annotated[str, typer.Argument(help=f"to evaluate on: {TARGET_HELP}", metavar="SPLIT_OR_DATASET")],
    checkpoint: Annotated[str | None, typer.Option(help="checkpoint folder or shipped name (default: the shipped one)")] = None,
    zero_shot: Annotated[bool, typer.Option("--zero-shot", help="score the target's items from text only (unseen domain)")] = False,
    text_path: Annotated[bool, typer.Option("--text-path", help="with --zero-shot: add the text-similarity path (cosine of the history's recency-weighted titles with each item's) with the weight, decay and text transform (none, centre, whiten) best on the target's validation users; nothing is trained, and weight 0 is a choice")] = False,
    which: Annotated[str, typer.Option(help="test | valid")] = "test",
    exclude_seen: Annotated[bool, typer.Option("--exclude-seen", help="rank each user's target among the items outside their history (a history item that is the target stays ranked), as `shiftrec serve` leaves the history out by default (the default ranks every item: RecBole's and UniSRec's protocol); with --text-path the path is chosen the same way")] = False,
    repeat_gate: Annotated[bool, typer.Option("--repeat-gate", help="with --zero-shot: the checkpoint's repeat/explore gate (the history's items together get the share of next items found in the history of its sources: `pretrain --repeat-gate`); a fine-tuned model uses the gate it was trained with")] = False,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="write the metrics JSON to this file (per-user ranks go beside it)")] = None,
    encoder: Annotated[str | None, typer.Option(help="text encoder (default: the checkpoint's)")] = None,
    item_text: Annotated[Path | None, typer.Option(help="item embeddings folder (`shiftrec encode DATASET --split SPLIT -o EMB`); needed when the target is a split folder")] = None,
    threads: Annotated[int, typer.Option(help=THREADS_HELP)] = 0,
    cache_dir: Annotated[Path | None, typer.Option(help="text embedding cache folder")] = None,
    data_root: Annotated[Path | None, typer.Option(help="shared data folder")] = None,
) -> None:
    """Full-ranking evaluation (all items; --exclude-seen: all but the user's history) of a
    transfer checkpoint; --zero-shot evaluates a pretrained model on a domain it never saw. A
    transductive checkpoint is refused on a target with another item map (its item-map
    fingerprint differs) unless --zero-shot.

    Example: shiftrec evaluate amazon-toys --zero-shot --text-path
    """
    from shiftrec.errors import ConfigError
    from shiftrec.evaluate.ranking import seen_items
    from shiftrec.models.transfer import read_manifest
    from shiftrec.pipelines.transfer import (
        checkpoint_net,
        evaluate_net,
        open_target,
        select_text_path,
        target_source,
        zero_shot_net,
    )

    if threads < 0:
        raise ConfigError(f"--threads must be >= 0 (0 = auto), got {threads}")
    if text_path and not zero_shot:
        raise ConfigError("--text-path goes with --zero-shot (a fine-tuned model gets its text "
                          "path at training time: shiftrec finetune --text-path)")
    if repeat_gate and not zero_shot:
        raise ConfigError("--repeat-gate goes with --zero-shot (a fine-tuned model gets its gate "
                          "at training time: shiftrec finetune --repeat-gate)")
    con = _console()
    ck = _checkpoint(checkpoint)
    man = read_manifest(ck)
    enc = encoder or man["encoder"]
    tgt = open_target(target, data_root, max_len=int(man["dims"]["max_len"]))
    src = target_source(tgt, enc, item_text=item_text, cache_dir=cache_dir)
    tp: dict[str, Any] | None = None
    if zero_shot:
        net = zero_shot_net(ck, src.split, src.text, enc, repeat_gate=repeat_gate)
        if text_path:
            tp = select_text_path(net, src.split, threads=threads, exclude_seen=exclude_seen)
            con.print(_text_path_line(tp))
        metrics, ranks = evaluate_net(net, src.split, which, threads=threads, exclude_seen=exclude_seen)
    else:
        net = checkpoint_net(ck, src.split, src.text, enc, name=src.name)
        metrics, ranks = evaluate_net(net, src.split, which, threads=threads, exclude_seen=exclude_seen)
    if net.repeat_fit is not None:
        con.print(_gate_line(net.repeat_fit, "the checkpoint's sources'" if zero_shot else "the fine-tuning data's"))
    if out is not None:
        _write_metrics(out, metrics, ck, src, ranks, which, seen_items=seen_items(exclude_seen),
                       repeat_gate=net.repeat_fit,  # the gate used (None: none), whatever the checkpoint holds
                       **({} if tp is None else {"text_path": {k: v for k, v in tp.items() if k != "grid"}}))
    con.print(f"{'zero-shot ' if zero_shot else ''}{'+ text path ' if tp else ''}{which} on {src.name}"
              f"{' (seen items excluded)' if exclude_seen else ''}: {_fmt(metrics)}")


def _text_path_line(tp: dict[str, Any]) -> str:
    return (f"text path: weight {tp['weight']:g}"
            + (f", decay {tp['decay']:g}, text transform {tp.get('transform') or 'none'}" if tp["decay"] else " (none)")
            + f"; valid NDCG@10 {tp['valid_ndcg@10_without']:.4f} -> {tp['valid_ndcg@10']:.4f}"
            + (" (the largest weight tried; a larger one might do better)" if tp.get("at_grid_top") else ""))


def _gate_line(g: dict[str, Any], where: str) -> str:
    return (f"repeat gate: the history's items share {g['share']:.4g} of the probability "
            f"({g['repeats']:,} of {g['transitions']:,} next items in {where} training sequences "
            "were in the history)")


def _fmt(m: dict[str, float]) -> str:
    return "  ".join(f"{k}={m[k]:.4f}" for k in ("recall@10", "ndcg@10", "recall@50", "ndcg@50"))


def _write_metrics(path: Path, metrics: dict[str, float], ck: Path, src: Any, ranks: Any,
                   which: str, **extra: Any) -> None:
    from shiftrec.evaluate.ranking import UserRanks, write_metrics
    from shiftrec.manifest import read_json

    man = read_json(Path(ck) / "manifest.json") if (Path(ck) / "manifest.json").exists() else None
    if man is not None:
        man.pop("provenance", None)
    write_metrics(path, metrics, man, {"name": src.name, **src.split.meta},
                  per_user=UserRanks.of(src.split, which, ranks), **extra)


def register(app: typer.Typer) -> None:
    app.command("pretrain")(pretrain_cmd)
    app.command("finetune")(finetune_cmd)
    app.command("evaluate")(evaluate_cmd)
