"""Transfer table: Scientific (UniSRec's exact files) and Online Retail I (UniSRec's recipe).

Rows: popularity; SASRec (IDs); ours from scratch (inductive, text only); ours pretrained then
fine-tuned (inductive and transductive); ours zero-shot. Full ranking over all items, test
metrics of the model selected on validation only (early stopping on valid NDCG@10). Every row
records its seed, wall time and epochs.

Pretrained checkpoints: Scientific uses the checkpoint shipped in the package (pretrained on the
Amazon source domains, see its manifest); Online Retail uses a temporal-transfer checkpoint
pretrained here on Online Retail II 2009-10 (same store, one year earlier).

Rows run one at a time and merge into bench/results/transfer_table.json, so a budget-limited run
can be split into several invocations:

    python bench/transfer_table.py --dataset scientific --rows pop,sasrec,scratch
    python bench/transfer_table.py --dataset online-retail --rows pretrain,ft-ind
    python bench/transfer_table.py --dataset online-retail-shuffle --rows pretrain,ft-trans  # comparable
    python bench/transfer_table.py --table-only     # rewrite the markdown from the JSON
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from shiftrec.text.transform import parse_transforms

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
OUT_JSON = RESULTS / "transfer_table.json"
OUT_MD = RESULTS / "transfer_table.md"
LOCK = ROOT / "out" / ".transfer_table.lock"
METRICS = ("recall@10", "ndcg@10", "recall@50", "ndcg@50")

PUBLISHED = {
    "scientific": [("SASRec (IDs)", 0.1080, 0.0553, 0.2042, 0.0760),
                   ("UniSRec, text only (inductive)", 0.1188, 0.0641, 0.2394, 0.0903),
                   ("UniSRec, text + ID", 0.1235, 0.0634, 0.2473, 0.0904),
                   ("VQ-Rec (retrained 2023)", 0.1238, 0.0645, 0.2409, 0.0901)],
    "online-retail": [("SASRec", 0.1460, 0.0675, 0.3872, 0.1201),
                      ("FDSA", 0.1490, 0.0719, 0.3802, 0.1223),
                      ("UniSRec, text + ID", 0.1537, 0.0724, 0.3885, 0.1239),
                      ("VQ-Rec", 0.1557, 0.0730, 0.3994, 0.1263)],
}
PUBLISHED["online-retail-shuffle"] = PUBLISHED["online-retail"] + [("TedRec (CIKM'24)", 0.2234, 0.1316, float("nan"),
                                                                     float("nan"))]
ROW_LABELS = {
    "pop": "popularity",
    "itemknn": "item-kNN (the item flows alone)",
    "sasrec": "SASRec (IDs, ours, hidden 64)",
    "scratch": "ours from scratch (inductive, text only)",
    "scratch-trans": "ours from scratch (transductive, text + ID)",
    "ft-ind": "ours pretrained + fine-tuned (inductive)",
    "ft-trans": "ours pretrained + fine-tuned (transductive)",
    "ft-adaptor": "ours pretrained + adaptor-only fine-tune (inductive)",
    "zero-shot": "ours zero-shot (pretrained, no target training)",
    "pretrain": "(pretraining run for this dataset)",
    "ft-ind+flows": "ours pretrained + fine-tuned (inductive) + item flows (ShiftFusion)",
    "ft-trans+flows": "ours pretrained + fine-tuned (transductive) + item flows (ShiftFusion)",
    "sasrec+flows": "SASRec (IDs, ours) + item flows (ShiftFusion)",
    "textsim": "text similarity, no training (TextSim)",
    "textsim+flows": "text similarity (no training) + item flows (ShiftFusion)",
    "scratch+text": "ours from scratch + text path (chosen on validation)",
    "ft-ind+text": "ours pretrained + fine-tuned (inductive) + text path (chosen on validation)",
    "ft-trans+text": "ours pretrained + fine-tuned (transductive) + text path (chosen on validation)",
    "scratch-trans+text": "ours from scratch (transductive) + text path (chosen on validation)",
}
PRETRAIN_SOURCE = {"online-retail": "online-retail-ii", "online-retail-shuffle": "online-retail-ii-shuffle"}


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def load_results() -> dict[str, Any]:
    if OUT_JSON.exists():
        return json.loads(OUT_JSON.read_text())
    return {"rows": {}}


def save_results(res: dict[str, Any]) -> None:
    from shiftrec.manifest import write_json

    RESULTS.mkdir(parents=True, exist_ok=True)
    write_json(OUT_JSON, res)
    OUT_MD.write_text(markdown(res))


SEED_TAG = re.compile(r"^(?P<row>[^@]+)@seed(?P<seed>\d+)$")
SEED_FREE = ("pop", "itemknn", "textsim", "textsim+flows", "zero-shot")  # no training seed


def seed_groups(rows: dict[str, Any]) -> dict[str, dict[int, str]]:
    """Rows run with several training seeds: row -> {seed: key}, the untagged key being the row's
    own seed and 'row@seedN' seed N. Only rows with at least two seeds."""
    groups: dict[str, dict[int, str]] = {}
    for key, r in rows.items():
        m = SEED_TAG.match(key)
        if m:
            groups.setdefault(m["row"], {})[int(m["seed"])] = key
        elif "@" not in key and key.split("~")[0] in ROW_LABELS and key != "pretrain":
            groups.setdefault(key, {})[int(r.get("seed", 0))] = key
    return {k: dict(sorted(g.items())) for k, g in groups.items() if len(g) > 1}


def seeds_section(ds: str, rows: dict[str, Any], ranks: dict[str, np.ndarray]) -> list[str]:
    """Mean ± sample std over training seeds of every row run with several seeds, beside the
    seed-free rows; the paired t-test between the best and the runner-up on per-user NDCG@10
    averaged over the seeds (among the rows run with every seed; every seed's ranks needed)."""
    from shiftrec.evaluate.significance import seed_averaged_test

    groups = seed_groups(rows)
    if not groups:
        return []
    lines = [f"### {ds} over training seeds", "",
             "mean ± sample std (ddof = 1) over the seeds; rows without a training seed once.", "",
             "| system | Recall@10 | NDCG@10 | Recall@50 | NDCG@50 | seeds |", "|---|---|---|---|---|---|"]
    means: dict[str, float] = {}
    # every row of ROW_LABELS, and after each the same row with its suffixes (~tx, ~wise, ~rg)
    keyed = [(k, ROW_LABELS[k.split("~")[0]] + (f" ({k.split('~', 1)[1]})" if "~" in k else ""))
             for base in ROW_LABELS for k in [base, *sorted(g for g in groups
                                                           if "~" in g and g.split("~")[0] == base)]]
    for key, label in keyed:
        if key in groups:
            vals = np.array([[rows[k]["test"][m] for m in METRICS] for k in groups[key].values()])
            cells = [f"{mu:.4f} ± {sd:.4f}" for mu, sd in zip(vals.mean(0), vals.std(0, ddof=1), strict=True)]
            seeds = ", ".join(map(str, groups[key]))
            means[key] = float(vals[:, 1].mean())
        elif key in SEED_FREE and key in rows:
            cells = [f"{rows[key]['test'][m]:.4f}" for m in METRICS]
            seeds = "no training seed"
            means[key] = rows[key]["test"]["ndcg@10"]
        else:
            continue
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {seeds} |")

    def runs(key: str) -> tuple[list[np.ndarray], list[int]] | None:
        keys = groups[key] if key in groups else {0: key}
        have = {s: k for s, k in keys.items() if f"{ds}/{k}" in ranks}
        if len(have) < len(keys):
            return None
        return [ranks[f"{ds}/{k}"] for k in have.values()], list(have)

    # best and runner-up among the rows run with every seed (and the rows without a seed)
    every = max((tuple(g) for g in groups.values()), key=len)
    order = sorted((k for k in means if k not in groups or tuple(groups[k]) == every),
                   key=means.get, reverse=True)
    lines.append("")
    if len(order) > 1:
        best, runner = order[0], order[1]
        a, b = runs(runner), runs(best)
        if a is None or b is None:
            lines.append(f"Best {best}, runner-up {runner}: paired test not run (per-user ranks of "
                         f"every seed not kept for {best if b is None else runner}).")
        else:
            d = seed_averaged_test(a[0], b[0])
            lines.append(f"Best **{best}** vs runner-up {runner}, per-user NDCG@10 averaged over seeds "
                         f"{b[1]} / {a[1]}: {d['mean_a']:.4f} -> {d['mean_b']:.4f} "
                         f"({100 * d['diff'] / max(d['mean_a'], 1e-12):+.1f}%), paired t-test "
                         f"p = {d['t_test_p']:.2g}, 95% CI of the difference [{d['ci95_low']:.4f}, "
                         f"{d['ci95_high']:.4f}], n = {d['n_users']}.")
    return lines + [""]


def markdown(res: dict[str, Any]) -> str:
    lines = ["# Transfer table (full ranking over all items, leave-one-out, test; selected on valid)",
             ""]
    ranks = load_ranks()
    for ds in ("scientific", "online-retail", "online-retail-shuffle"):
        rows = res["rows"].get(ds, {})
        lines += [f"## {ds}", "",
                  "| system | Recall@10 | NDCG@10 | Recall@50 | NDCG@50 | seed | wall s | epochs |",
                  "|---|---|---|---|---|---|---|---|"]
        for name, r10, n10, r50, n50 in PUBLISHED[ds]:
            cells = " | ".join("" if x != x else f"{x:.4f}" for x in (r10, n10, r50, n50))  # nan: not published
            lines.append(f"| published: {name} | {cells} | | | |")
        for key, label in ROW_LABELS.items():
            r = rows.get(key)
            if r is None or key == "pretrain":
                continue
            m = r["test"]
            # a resumed row's own timer misses the earlier part: count the trained epochs too
            wall = max(r["wall_seconds"], sum(h["train_seconds"] for h in r.get("history", [])))
            lines.append(f"| {label} | " + " | ".join(f"{m[k]:.4f}" for k in METRICS)
                         + f" | {r['seed']} | {wall:.0f} | {r.get('epochs', '')} |")
        pre = rows.get("pretrain")
        if pre:
            lines += ["", f"Pretraining for this table: {pre.get('note', '')} "
                          f"({pre['wall_seconds']:.0f} s, seed {pre['seed']})."]
        lines.append("")
        lines += seeds_section(ds, rows, ranks)
    notes = res.get("notes")
    if notes:
        lines += ["## Notes", ""] + [f"- {n}" for n in notes] + [""]
    return "\n".join(lines)


RANKS = RESULTS / "transfer_table.ranks.npz"


def store_ranks(key: str, ranks: np.ndarray) -> None:
    from shiftrec.manifest import read_npz, write_npz

    write_npz(RANKS, {**read_npz(RANKS), key: np.asarray(ranks, np.int32)})


def load_ranks() -> dict[str, np.ndarray]:
    from shiftrec.manifest import read_npz

    return {k: v.astype(np.int64) for k, v in read_npz(RANKS).items()}


def paired_tests(ds_name: str, pairs: str) -> None:
    """Paired t-test and bootstrap CI of NDCG@10 per user between stored rows."""
    from shiftrec.evaluate.significance import paired_test

    ranks = load_ranks()
    res = load_results()
    out = res.setdefault("paired", {}).setdefault(ds_name, {})
    for pair in pairs.split(","):
        a, b = pair.split(":")
        ka, kb = f"{ds_name}/{a}", f"{ds_name}/{b}"
        if ka not in ranks or kb not in ranks:
            raise SystemExit(f"no stored ranks for {ka if ka not in ranks else kb}: run that row first")
        d = paired_test(ranks[ka], ranks[kb], k=10)
        out[f"{b} vs {a}"] = {k: d[k] for k in ("mean_a", "mean_b", "diff", "t_test_p", "ci95_low",
                                                "ci95_high", "n_users")}
        print(ds_name, f"{b} vs {a}", f"{d['mean_a']:.4f} -> {d['mean_b']:.4f}",
              f"({100 * d['diff'] / max(d['mean_a'], 1e-12):+.1f}%) p={d['t_test_p']:.2g}")
    save_results(res)


def prepare(ds_name: str, cache_dir: Path) -> Any:
    from shiftrec.pipelines.transfer import load_dataset, make_source

    ds = load_dataset(ds_name)
    return make_source(ds, "minilm", cache_dir=cache_dir)


GATED_ROWS = ("scratch", "scratch-trans", "ft-ind", "ft-trans", "ft-adaptor")  # --repeat-gate
MIXED_ROWS = ("ft-ind", "ft-trans", "ft-adaptor")  # --interpolate


def fit_suffix(row: str, args: argparse.Namespace) -> str:
    """'~rg' (--repeat-gate) and '~wise' (--interpolate) for the trained text rows and the +text /
    +flows rows built on them: in the row's key and its work folder."""
    base = row.split("~")[0].removesuffix("+flows").removesuffix("+text")
    return (("~wise" if getattr(args, "interpolate", False) and base in MIXED_ROWS else "")
            + ("~rg" if getattr(args, "repeat_gate", False) and base in GATED_ROWS else ""))


def tx_suffix(row: str, args: argparse.Namespace) -> str:
    """'~tx' for a text-similarity row choosing among transforms (the raw rows keep their keys)."""
    uses = row in ("textsim", "textsim+flows") or row.endswith("+text")
    return "~tx" if uses and parse_transforms(args.text_transforms) != ("none",) else ""


def _progress(tag: str) -> Any:
    """One line per epoch (the CLI's printer; `tag` names the row in the log above it)."""
    from rich.console import Console

    from shiftrec.cli.transfer import epoch_printer

    print(f"row {tag}", flush=True)
    return epoch_printer(Console(width=160))


def _test_metrics(m: dict[str, float]) -> dict[str, float]:
    return {k: float(m[k]) for k in METRICS + ("mrr",) if k in m}


def run_row(row: str, ds_name: str, src: Any, args: argparse.Namespace, work: Path
            ) -> tuple[dict[str, Any], np.ndarray | None]:
    """The row's results, and its per-user test ranks (None for rows without a test ranking)."""
    import torch

    from shiftrec.evaluate.ranking import evaluate
    from shiftrec.models.transfer import Freeze, Mode, TransferConfig
    from shiftrec.models.transfer_fit import pretrained_path
    from shiftrec.pipelines.transfer import (
        FinetuneConfig,
        PretrainConfig,
        evaluate_net,
        finetune,
        pretrain,
        zero_shot,
    )

    torch.set_num_threads(args.threads)
    split, text = src.split, src.text
    t0 = time.perf_counter()
    out: dict[str, Any] = {"seed": args.seed, "dataset": ds_name}
    ranks = None
    common = dict(epochs=args.epochs, patience=args.patience, seed=args.seed, threads=args.threads,
                  batch_size=args.batch_size, lr=args.lr)
    drop = {} if args.dropout is None else {"dropout": args.dropout, "attn_dropout": args.dropout}
    ck_dir = work / (f"{ds_name}-pretrained" + (f"-pop{args.pop_buckets}" if args.pop_buckets else ""))

    def row_dir(name: str) -> Path:
        """Where a row saves its model (and a +flows / +text row finds its base): per tag."""
        return work / f"{ds_name}-{name}{fit_suffix(name, args)}{'-' + args.tag if args.tag else ''}"

    def pre_ck() -> Path:
        if args.checkpoint:  # a folder, or the name of a shipped checkpoint
            p = Path(args.checkpoint)
            return p if p.exists() else pretrained_path(args.checkpoint)
        return ck_dir if ds_name in PRETRAIN_SOURCE else pretrained_path()

    def hist_of(fields: dict[str, Any]) -> dict[str, Any]:
        prov = fields["provenance"]
        h = prov["history"]
        tr = [r["train_seconds"] for r in h]
        n_t = split.train.lengths()
        n_targets = int(np.maximum(n_t - 1, 0).sum())
        return {"epochs": prov["epochs_run"][0], "best_epoch": prov["best_epoch"][0],
                "valid_ndcg@10": prov["best_valid"][0],
                "median_epoch_train_seconds": float(np.median(tr)),
                "train_samples_per_second": n_targets / float(np.median(tr)),
                "history": [{k: r[k] for k in ("epoch", "loss", "train_seconds", "metrics")} for r in h]}

    if row == "pop":
        from shiftrec.models.popularity import Popularity

        m, ranks = evaluate(Popularity().fit(split), split, "test")
        out["test"] = _test_metrics(m)
    elif row == "itemknn":
        from shiftrec.models.itemknn import ItemKNN

        m, ranks = evaluate(ItemKNN().fit(split), split, "test")
        out["test"] = _test_metrics(m)
    elif row == "textsim":
        from shiftrec.models.textsim import TextSim, TextSimConfig

        # no training; the decay and the text transform chosen on validation
        model = TextSim(text, "minilm", TextSimConfig(select_transform=parse_transforms(args.text_transforms))).fit(split)
        model.save(row_dir(row + tx_suffix(row, args)))  # for textsim+flows
        m, ranks = evaluate(model, split, "test")
        out["test"] = _test_metrics(m)
        out |= {"valid_ndcg@10": model.valid_ndcg, "decay": model.decay,
                "transform": model.transform.value, "valid_by_choice": model.selection, "epochs": 0}
    elif row == "sasrec":
        from shiftrec.models.sasrec import SASRec, SASRecConfig
        from shiftrec.train.trainer import Phase, TrainConfig

        tc = TrainConfig(phases=(Phase(name="train", epochs=args.epochs, lr=args.lr,
                                       batch_size=args.batch_size, patience=args.patience),),
                         seed=args.seed, threads=args.threads)
        rec = SASRec(SASRecConfig(hidden=64, train=tc), progress=_progress(row)).fit(split)
        rec.save(row_dir(row))  # for the sasrec+flows row
        m, ranks = evaluate(rec, split, "test")
        out["test"] = _test_metrics(m)
        res = rec.result
        out["epochs"] = res.phases[0].epochs_run
        out["best_epoch"] = res.phases[0].best_epoch
        out["valid_ndcg@10"] = res.phases[0].best_metric
        out["median_epoch_train_seconds"] = float(np.median([r["train_seconds"] for r in res.history]))
    elif row in ("scratch", "scratch-trans"):
        mode = Mode.INDUCTIVE if row == "scratch" else Mode.TRANSDUCTIVE
        arch = TransferConfig(hidden=args.hidden, n_experts=args.experts, pop_buckets=args.pop_buckets)
        cfg = FinetuneConfig(mode=mode, model=arch, repeat_gate=args.repeat_gate, **common, **drop)
        net, fields = finetune(None, split, text, "minilm", cfg, row_dir(row),
                               progress=_progress(row))
        out |= hist_of(fields)
        m, ranks = evaluate_net(net, split)
        out["test"] = _test_metrics(m)
    elif row == "pretrain":
        from shiftrec.pipelines.transfer import load_dataset, make_source

        if ds_name not in PRETRAIN_SOURCE:
            raise SystemExit(f"{ds_name} uses the shipped checkpoint; nothing to pretrain")
        srcname = PRETRAIN_SOURCE[ds_name]
        from shiftrec.pipelines.transfer import events_before

        # strictly before the target's first event: Online Retail II's last days (2010-12-01..09)
        # are also in Online Retail I, and those invoices must not leak into pretraining
        cutoff = int(split.train.times.min())
        src_ds = events_before(load_dataset(srcname), cutoff)
        sources = [make_source(src_ds, "minilm", cache_dir=args.cache_dir)]
        arch = TransferConfig(hidden=args.hidden, n_experts=args.experts,
                              objective=args.pretrain_objective, pop_buckets=args.pop_buckets)
        pc = PretrainConfig(model=arch, epochs=args.pretrain_epochs, lr=args.lr,
                            batch_size=args.batch_size, patience=args.patience, seed=args.seed,
                            threads=args.threads, valid_users=2000)
        _, fields = pretrain(sources, "minilm", pc, ck_dir, resume=args.resume,
                             progress=_progress(row))
        prov = fields["provenance"]
        out |= {"note": f"pretrained on {srcname} events before {src_ds.meta['events_before']} "
                        f"({args.pretrain_objective}, "
                        f"{prov['epochs_run'][0]} epochs, best {prov['best_epoch'][0]})",
                "epochs": prov["epochs_run"][0], "valid": prov["best_valid"][0],
                "checkpoint": str(ck_dir)}
    elif row in ("ft-ind", "ft-trans", "ft-adaptor"):
        mode = Mode.TRANSDUCTIVE if row == "ft-trans" else Mode.INDUCTIVE
        freeze = Freeze.ENCODER if row == "ft-adaptor" else Freeze.NONE
        # the recorded rows were fine-tuned before interpolation became finetune's default
        cfg = FinetuneConfig(mode=mode, freeze=freeze, interpolate=args.interpolate,
                             repeat_gate=args.repeat_gate, **common, **drop)
        net, fields = finetune(pre_ck(), split, text, "minilm", cfg,
                               row_dir(row),
                               resume=args.resume, progress=_progress(row))
        out |= hist_of(fields)
        out["pretrained_from"] = str(pre_ck())
        m, ranks = evaluate_net(net, split)
        out["test"] = _test_metrics(m)
    elif row == "zero-shot":
        m, _ = zero_shot(pre_ck(), split, text, "minilm")
        out["test"] = _test_metrics(m)
        out["valid_ndcg@10"] = zero_shot(pre_ck(), split, text, "minilm", "valid")[0]["ndcg@10"]
        out["pretrained_from"] = str(pre_ck())
        out["epochs"] = 0
    elif row.endswith("+text"):
        # the saved net of the base row plus the text-similarity path, its weight and decay
        # chosen on validation (pipelines.transfer.select_text_path); nothing else trains
        from shiftrec.models.transfer import load_checkpoint
        from shiftrec.pipelines.transfer import select_text_path

        base_row = row.removesuffix("+text")
        base_dir = row_dir(base_row)
        if not (base_dir / "manifest.json").exists():
            raise SystemExit(f"run row {base_row} first (no saved model in {base_dir})")
        net, _ = load_checkpoint(base_dir, strict=True)
        choice = select_text_path(net, split, threads=args.threads, transforms=parse_transforms(args.text_transforms))
        m, ranks = evaluate_net(net, split)
        out["test"] = _test_metrics(m)
        out |= {"valid_ndcg@10": choice["valid_ndcg@10"], "text_path": choice, "epochs": 0,
                "base": str(base_dir)}
    elif row.endswith("+flows"):
        # the saved model of the base row, fused with the item-level flows (item-kNN transitions
        # counted on the target's training sequences); the flow weight is chosen on validation
        from shiftrec.evaluate.ranking import evaluate
        from shiftrec.models.fusion import ShiftFusion
        from shiftrec.models.registry import load_model

        base_row = row.removesuffix("+flows")
        base_dir = row_dir(base_row + tx_suffix(row, args))
        if not (base_dir / "manifest.json").exists():
            raise SystemExit(f"run row {base_row} first (no saved model in {base_dir})")
        fused = ShiftFusion(load_model(base_dir), base_fitted=True, n_bins=1).fit(split)
        m, ranks = evaluate(fused, split, "test")
        out["test"] = _test_metrics(m)
        out["valid_ndcg@10"] = fused.selection["valid_ndcg@10_fused"]
        out["fusion"] = {"base": str(base_dir), "flow_weight": fused.bin_weights.tolist(),
                         "smoothing": fused.smoothing, "selection": fused.selection,
                         "note": "wall time covers the flows and the weight selection only; "
                                 "add the base row's wall time"}
        out["epochs"] = 0
    else:
        raise SystemExit(f"unknown row '{row}'; valid rows: {', '.join(ROW_LABELS)}")
    out["wall_seconds"] = time.perf_counter() - t0
    out["peak_rss_mb"] = peak_rss_mb()
    out["threads"] = args.threads
    out["config"] = {k: v for k, v in vars(args).items() if k not in ("rows", "table_only")}
    return out, ranks


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--dataset", choices=("scientific", "online-retail", "online-retail-shuffle"),
                    default="scientific",
                    help="online-retail keeps the file order of an invoice's lines (easier than the "
                         "papers); online-retail-shuffle puts them in a seeded random order like "
                         "UniSRec's released files (comparable with the published rows)")
    ap.add_argument("--rows", default="pop,sasrec,scratch,zero-shot,ft-ind,ft-trans")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--epochs", type=int, default=60)
    ap.add_argument("--patience", type=int, default=5)
    ap.add_argument("--batch-size", type=int, default=2048)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--dropout", type=float, default=None)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--experts", type=int, default=4)
    ap.add_argument("--pop-buckets", type=int, default=0,
                    help="pretrain / scratch rows with the domain-relative popularity feature "
                         "(TransferConfig.pop_buckets); the pretrained folder gets -pop<N>; use --tag")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--pretrain-epochs", type=int, default=10)
    ap.add_argument("--pretrain-objective", default="full_ce")
    ap.add_argument("--checkpoint", default=None,
                    help="pretrained checkpoint folder or shipped name, e.g. amazon-minilm (default: the shipped default)")
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--cache-dir", type=Path,
                    default=Path(os.environ.get("SHIFTREC_CACHE", Path.home() / ".cache/shiftrec"))
                    / "text-cache")
    ap.add_argument("--work-dir", type=Path, default=Path("/tmp/shiftrec-transfer-bench"))
    ap.add_argument("--tag", default=None, help="store rows under '<row>@<tag>' (ablations)")
    ap.add_argument("--repeat-gate", action="store_true",
                    help="the trained text rows (scratch, scratch-trans, ft-ind, ft-trans, ft-adaptor) "
                         "count the repeat/explore gate on the target's training sequences "
                         "(models.repeat); keys and work folders get ~rg, also for their +text / +flows rows")
    ap.add_argument("--interpolate", action="store_true",
                    help="the fine-tuned rows mix their weights back toward the checkpoint's, alpha "
                         "chosen on validation (WiSE-FT, finetune's default since session 18; the "
                         "recorded rows ran without it); keys and work folders get ~wise")
    ap.add_argument("--text-transforms", default="none",
                    help="textsim and the +text rows choose the catalogue transform of the text vectors "
                         "from these on validation (none,centre,whiten: the library's default, keys "
                         "<row>~tx; 'none' keeps the raw cosines the recorded rows used)")
    ap.add_argument("--table-only", action="store_true")
    ap.add_argument("--pairs", default=None,
                    help="paired tests a:b,c:d between stored rows of --dataset (per-user test ranks "
                         "in transfer_table.ranks.npz), written under 'paired' in the JSON")
    args = ap.parse_args(argv)
    from shiftrec.manifest import locked

    if args.pairs:
        with locked(LOCK):
            paired_tests(args.dataset, args.pairs)
        return 0
    if args.table_only:
        with locked(LOCK):
            save_results(load_results())
        return 0
    src = prepare(args.dataset, args.cache_dir)
    args.work_dir.mkdir(parents=True, exist_ok=True)
    for row in [r.strip() for r in args.rows.split(",") if r.strip()]:
        print(f"[{args.dataset}] {row} ...", flush=True)
        r, ranks = run_row(row, args.dataset, src, args, args.work_dir)
        key = row + tx_suffix(row, args) + fit_suffix(row, args) + ("" if args.tag is None else f"@{args.tag}")
        with locked(LOCK):
            if ranks is not None:
                store_ranks(f"{args.dataset}/{key}", ranks)
            res = load_results()
            res["rows"].setdefault(args.dataset, {})[key] = r
            save_results(res)
        t = r.get("test")
        print(f"[{args.dataset}] {key}: " + (" ".join(f"{k}={t[k]:.4f}" for k in METRICS) if t else "")
              + f" ({r['wall_seconds']:.0f}s)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
