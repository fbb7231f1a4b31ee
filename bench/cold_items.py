"""Cold-item slice on Scientific: every model's test metrics split by how often the target item
occurs in training (evaluate.slices; cold = at most 5 training interactions by default).

    python bench/cold_items.py [--edges 5] [--max-epochs 80] [--models pop,itemknn,sasrec,sasrec+flows]
    python bench/cold_items.py --models ft-ind --metrics-from RUN/metrics.json   # add a saved run
    python bench/cold_items.py --reslice --edges 5,20   # other bins from the stored per-user ranks

Dataset: Scientific, UniSRec's files, leave-one-out (the split of bench/baselines.py and
bench/transfer_table.py). Training interactions = the training sequences (SeqSplit.train).
SASRec: hidden 64, dropout 0.7, lr 1e-3, batch 2048, early stopping on validation NDCG@10
(patience 10), at most --max-epochs epochs (README's Scientific SASRec row, seed 0).
sasrec+flows: that SASRec fused with item-kNN flows (ShiftFusion, weight chosen on validation).
A model's row can also come from a saved run's metrics.json (its per-user ranks): for the text
model, fine-tune with `shiftrec finetune` and pass the run with --metrics-from.

Paired tests (NDCG@10, per user, within each slice) compare each model with item-kNN and with
SASRec (mean_a = the reference, mean_b = the model; t-test p and bootstrap 95% CI of b - a).
Results merge into bench/results/cold_items.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "results" / "cold_items.json"
RANKS = ROOT / "bench" / "results" / "cold_items.ranks.npz"  # per-user test ranks of each model
KEYS = ("recall@10", "ndcg@10", "recall@50", "ndcg@50", "mrr")


def load_split() -> Any:
    from shiftrec.data.clean import clean
    from shiftrec.data.presets import load_preset
    from shiftrec.data.splits import leave_one_out
    from shiftrec.paths import data_root

    if data_root() is None:
        sys.exit("shared data folder not found: set SHIFTREC_DATA")
    read, cfg = load_preset("scientific")
    ds, _, _ = clean(read, cfg, "scientific")
    return leave_one_out(ds)


def fit(name: str, split: Any, args: argparse.Namespace, fitted: dict[str, Any]) -> tuple[Any, dict]:
    from shiftrec.models.itemknn import ItemKNN
    from shiftrec.models.popularity import Popularity

    info: dict[str, Any] = {}
    if name == "pop":
        return Popularity().fit(split), info
    if name == "itemknn":
        return ItemKNN().fit(split), info
    if name == "sasrec":
        import torch

        from shiftrec.models.sasrec import SASRec, SASRecConfig
        from shiftrec.train.trainer import Phase, TrainConfig

        torch.set_num_threads(args.threads)
        tc = TrainConfig(phases=(Phase(name="train", epochs=args.max_epochs, lr=1e-3, batch_size=2048,
                                       patience=10),), seed=args.seed, threads=args.threads)
        m = SASRec(SASRecConfig(hidden=64, dropout=0.7, attn_dropout=0.7, train=tc)).fit(split)
        r = m.result.phases[0]
        info = {"epochs_run": r.epochs_run, "best_epoch": r.best_epoch, "max_epochs": args.max_epochs,
                "valid_ndcg@10": r.best_metric, "settings": "hidden 64, dropout 0.7, lr 1e-3, "
                f"batch 2048, patience 10, seed {args.seed}, {args.threads} thread(s)"}
        return m, info
    if name == "sasrec+flows":
        from shiftrec.models.fusion import ShiftFusion

        if "sasrec" not in fitted:
            sys.exit("sasrec+flows needs the sasrec row in the same run (--models ...,sasrec,sasrec+flows)")
        f = ShiftFusion(fitted["sasrec"], base_fitted=True, n_bins=1).fit(split)
        return f, {"flow_weight": f.bin_weights.tolist(), "smoothing": f.smoothing}
    sys.exit(f"unknown model '{name}' (pop, itemknn, sasrec, sasrec+flows, or a name with --metrics-from)")


def main() -> None:
    from shiftrec.evaluate.metrics import all_metrics
    from shiftrec.evaluate.ranking import evaluate, read_user_ranks
    from shiftrec.evaluate.significance import paired_test
    from shiftrec.evaluate.slices import PopularityBins, popularity_slices, target_train_counts

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="pop,itemknn,sasrec,sasrec+flows")
    ap.add_argument("--edges", default="5", help="comma-separated upper-inclusive bin edges")
    ap.add_argument("--max-epochs", type=int, default=80)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--metrics-from", type=Path, default=None,
                    help="take the (single) model's test ranks from this saved run")
    ap.add_argument("--note", default=None, help="recorded with a --metrics-from row")
    ap.add_argument("--reslice", action="store_true",
                    help="no training: slice the per-user ranks stored by earlier runs with --edges")
    args = ap.parse_args()
    bins = PopularityBins(tuple(int(x) for x in args.edges.split(",")))
    split = load_split()
    es = split.test
    tc = target_train_counts(split, es)
    masks = popularity_slices(tc, bins)
    data = json.loads(OUT.read_text()) if OUT.exists() else {}
    if RANKS.exists():
        with np.load(RANKS, allow_pickle=False) as z:
            data["ranks"] = {k: z[k].astype(np.int64) for k in z.files}
    key = "edges_" + "_".join(map(str, bins.edges))
    if args.reslice and key in data:
        sys.exit(f"{key} holds trained rows already; --reslice is for bins not yet in {OUT.name}")
    res = data.setdefault(key, {"dataset": "scientific (UniSRec files), leave-one-out, test",
                                "bins": bins.describe(), "models": {}})
    res["bins"] = bins.describe()
    res["users_per_bin"] = {k: int(m.sum()) for k, m in masks.items()}
    res["target_items_per_bin"] = {k: int(len(np.unique(es.target[m]))) for k, m in masks.items()}
    ranks_all: dict[str, np.ndarray] = {}
    fitted: dict[str, Any] = {}
    names = [x.strip() for x in args.models.split(",") if x.strip()]
    if args.reslice:
        names = list(data.get("ranks", {}))
    for name in names:
        t = time.perf_counter()
        if args.reslice:
            ranks = np.asarray(data["ranks"][name])
            src = next((v["models"][name] for v in data.values()
                        if isinstance(v, dict) and name in v.get("models", {})), {})
            info = {k: v for k, v in src.items() if k in ("note", "from_run", "epochs_run", "best_epoch",
                                                          "settings", "flow_weight", "smoothing")}
            info["resliced_from_stored_ranks_of"] = src.get("command")
        elif args.metrics_from is not None:
            ur, man = read_user_ranks(args.metrics_from)
            if ur.which != "test" or not np.array_equal(ur.target, es.target):
                sys.exit(f"{args.metrics_from}: not the test ranks of this split")
            ranks, info = ur.rank, {"from_run": str(args.metrics_from), "note": args.note}
        else:
            model, info = fit(name, split, args, fitted)
            fitted[name] = model
            _, ranks = evaluate(model, split, "test")
        ranks_all[name] = ranks
        row = {"all": {k: all_metrics(ranks)[k] for k in KEYS},
               **{b: {k: (all_metrics(ranks[m])[k] if m.any() else None) for k in KEYS}
                  for b, m in masks.items()},
               "wall_seconds": round(time.perf_counter() - t, 1), **info,
               "command": "SHIFTREC_DATA=/work/shared/data OMP_NUM_THREADS=1 nice -n 15 python "
                          + shlex.join(["bench/cold_items.py", *sys.argv[1:]])}
        res["models"][name] = row
        print(name, {b: round(row[b]["ndcg@10"] or 0, 4) for b in ["all", *masks]}, flush=True)
    # per-user test ranks of every model (this run's and earlier ones'), for paired tests
    # within each slice against item-kNN and SASRec
    stored = data.setdefault("ranks", {})
    for name, r in ranks_all.items():
        stored[name] = np.asarray(r, dtype=np.int64)
    refs = [x for x in ("itemknn", "sasrec") if x in stored]
    for name in res["models"]:
        if name not in stored:
            continue
        r = np.asarray(stored[name])
        for ref_name in refs:
            if ref_name == name:
                continue
            ref = np.asarray(stored[ref_name])
            res["models"][name][f"paired_vs_{ref_name}_ndcg@10"] = {
                b: {k: v for k, v in paired_test(ref[m], r[m], k=10).items()
                    if k in ("mean_a", "mean_b", "diff", "t_test_p", "ci95_low", "ci95_high", "n_users")}
                for b, m in {"all": np.ones(len(r), bool), **masks}.items() if m.any()}
    data[key] = res
    data.pop("command", None)
    data["machine"] = {"load_avg_1_5_15": list(os.getloadavg()), "cpus": os.cpu_count(),
                       "shared_with_other_agents": True}
    OUT.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(RANKS, **{k: np.asarray(v, dtype=np.int32) for k, v in data.pop("ranks").items()})
    data["ranks_file"] = RANKS.name + " (per-user test ranks in evaluation order, one array per model)"
    OUT.write_text(json.dumps(data, indent=1) + "\n")


if __name__ == "__main__":
    main()
