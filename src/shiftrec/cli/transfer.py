"""`shiftrec pretrain | finetune | evaluate`: transfer learning with the text-based model (thin)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

DATA_HELP = ("a named dataset of the shared data folder (e.g. scientific, online-retail, "
             "online-retail-ii, amazon-beauty) or a prepared dataset folder")


def _console() -> Any:
    from rich.console import Console

    return Console()


def _printer(con: Any) -> Any:
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
) -> None:
    """Pretrain the transferable text model on several source domains at once (in-batch
    contrastive objectives across domains). A dataset with several domains gives one source each.

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
    cfg = _cfg(PretrainConfig, config, epochs=epochs, seed=seed)
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
    _, fields = pretrain(srcs, encoder, cfg, out, resume=resume, progress=_printer(con))
    con.print(f"[bold]checkpoint[/bold] {out} ({fields['provenance']['wall_seconds']}s)")


def finetune_cmd(
    target: Annotated[str, typer.Argument(help=f"target dataset: {DATA_HELP}")],
    checkpoint: Annotated[str | None, typer.Option(help="pretrained checkpoint folder or shipped name (default: the shipped one)")] = None,
    scratch: Annotated[bool, typer.Option("--scratch", help="train from scratch instead")] = False,
    mode: Annotated[str | None, typer.Option(help="inductive (text only) | transductive (text + ID)")] = None,
    freeze: Annotated[str | None, typer.Option(help="none | encoder (train only the adaptor) | adaptor")] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="output checkpoint folder")] = Path("out/finetuned"),
    config: Annotated[Path | None, typer.Option(help="YAML overlay of FinetuneConfig")] = None,
    epochs: Annotated[int | None, typer.Option(help="max epochs")] = None,
    encoder: Annotated[str | None, typer.Option(help="text encoder (default: the checkpoint's)")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="continue an interrupted run in --out")] = False,
    cache_dir: Annotated[Path | None, typer.Option(help="text embedding cache folder")] = None,
    data_root: Annotated[Path | None, typer.Option(help="shared data folder")] = None,
    seed: Annotated[int | None, typer.Option(help="random seed")] = None,
) -> None:
    """Fine-tune a pretrained model on a target dataset (full cross-entropy over all its items),
    then report test metrics. Works out of the box with the shipped checkpoint.

    Example: shiftrec finetune scientific --mode transductive -o out/sci
    """
    from shiftrec.models.transfer import read_manifest
    from shiftrec.pipelines.transfer import (
        FinetuneConfig,
        evaluate_net,
        finetune,
        load_dataset,
        make_source,
    )

    con = _console()
    cfg = _cfg(FinetuneConfig, config, epochs=epochs, seed=seed, mode=mode, freeze=freeze)
    ck = None if scratch else _checkpoint(checkpoint)
    enc = encoder or (read_manifest(ck)["encoder"] if ck is not None else "minilm")
    ds = load_dataset(target, data_root)
    src = make_source(ds, enc, max_len=cfg.model.max_len, cache_dir=cache_dir)
    con.print(f"fine-tuning {'from ' + str(ck) if ck else 'from scratch'} on {src.name} "
              f"({len(src.split.user_ids):,} users, {src.split.n_items:,} items)")
    net, fields = finetune(ck, src.split, src.text, enc, cfg, out, resume=resume,
                           progress=_printer(con), data_name=src.name)
    metrics, ranks = evaluate_net(net, src.split, "test")
    _write_metrics(out / "metrics.json", metrics, out, src, ranks, "test")
    con.print(_fmt(metrics))


def evaluate_cmd(
    target: Annotated[str, typer.Argument(help=f"dataset to evaluate on: {DATA_HELP}")],
    checkpoint: Annotated[str | None, typer.Option(help="checkpoint folder or shipped name (default: the shipped one)")] = None,
    zero_shot: Annotated[bool, typer.Option("--zero-shot", help="score the target's items from text only (unseen domain)")] = False,
    which: Annotated[str, typer.Option(help="test | valid")] = "test",
    out: Annotated[Path | None, typer.Option("--out", "-o", help="write the metrics JSON to this file (per-user ranks go beside it)")] = None,
    encoder: Annotated[str | None, typer.Option(help="text encoder (default: the checkpoint's)")] = None,
    cache_dir: Annotated[Path | None, typer.Option(help="text embedding cache folder")] = None,
    data_root: Annotated[Path | None, typer.Option(help="shared data folder")] = None,
) -> None:
    """Full-ranking evaluation (all items) of a transfer checkpoint; --zero-shot evaluates a
    pretrained model on a domain it never saw.

    Example: shiftrec evaluate amazon-toys --zero-shot
    """
    from shiftrec.errors import ArtifactError
    from shiftrec.models.transfer import Mode, load_checkpoint, read_manifest
    from shiftrec.pipelines.transfer import evaluate_net, item_keys_hash, load_dataset, make_source
    from shiftrec.pipelines.transfer import zero_shot as run_zero_shot

    con = _console()
    ck = _checkpoint(checkpoint)
    man = read_manifest(ck)
    enc = encoder or man["encoder"]
    ds = load_dataset(target, data_root)
    src = make_source(ds, enc, max_len=int(man["dims"]["max_len"]), cache_dir=cache_dir)
    if zero_shot:
        metrics, ranks = run_zero_shot(ck, src.split, src.text, enc, which)
    else:
        if man.get("mode") == Mode.TRANSDUCTIVE and man.get("item_keys_hash") not in (
                None, item_keys_hash(src.split)):
            raise ArtifactError(f"checkpoint's item IDs belong to another item set than '{target}'; "
                                "use --zero-shot to score from text only", path=ck)
        net, _ = load_checkpoint(ck, src.text, encoder=enc)
        metrics, ranks = evaluate_net(net, src.split, which)
    if out is not None:
        _write_metrics(out, metrics, ck, src, ranks, which)
    con.print(f"{'zero-shot ' if zero_shot else ''}{which} on {src.name}: {_fmt(metrics)}")


def _fmt(m: dict[str, float]) -> str:
    return "  ".join(f"{k}={m[k]:.4f}" for k in ("recall@10", "ndcg@10", "recall@50", "ndcg@50"))


def _write_metrics(path: Path, metrics: dict[str, float], ck: Path, src: Any, ranks: Any,
                   which: str) -> None:
    from shiftrec.evaluate.ranking import UserRanks, write_metrics

    man = json.loads((Path(ck) / "manifest.json").read_text()) if (Path(ck) / "manifest.json").exists() else None
    if man is not None:
        man.pop("provenance", None)
    write_metrics(path, metrics, man, {"name": src.name, **src.split.meta},
                  per_user=UserRanks.of(src.split, which, ranks))


def register(app: typer.Typer) -> None:
    app.command("pretrain")(pretrain_cmd)
    app.command("finetune")(finetune_cmd)
    app.command("evaluate")(evaluate_cmd)
