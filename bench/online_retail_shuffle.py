"""Online Retail I on a protocol comparable with the published rows: UniSRec's recipe with the
items inside an invoice in a seeded random order (as UniSRec's released files effectively have
them), leave-one-out, full ranking; popularity, item-kNN and our SASRec through the CLI.

    python bench/online_retail_shuffle.py [--max-epochs 12] [--threads 1] [--work /tmp/or-shuffle]
        [--tie-order shuffle|file] [--models popularity,itemknn,sasrec]

Runs, and records verbatim, these commands:
    shiftrec ingest online-retail online_retail_I.parquet --recipe unisrec --tie-order shuffle \
        --seed 0 --kcore 5 -o WORK/dataset
    shiftrec prepare WORK/dataset -o WORK/split
    shiftrec train WORK/split --model popularity|itemknn -o WORK/<model>
    shiftrec train WORK/split --model sasrec --config WORK/sasrec.yaml --seed 0 -o WORK/sasrec
SASRec settings are those of README's Online Retail table (bench/transfer_table.py's sasrec row:
hidden 64, dropout 0.5, lr 0.002, batch 4096, patience 2, at most 12 epochs, seed 0), except the
thread count (--threads) and the epoch cap (--max-epochs), both recorded.
Results merge into bench/results/online_retail_shuffle.json under the tie order.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "results" / "online_retail_shuffle.json"
KEYS = ("recall@10", "ndcg@10", "recall@50", "ndcg@50", "mrr")
PUBLISHED = {"SASRec (UniSRec paper, KDD'22)": {"recall@10": 0.1460, "ndcg@10": 0.0675,
                                                "recall@50": 0.3872, "ndcg@50": 0.1201},
             "published SASRec range (NDCG@10)": [0.0675, 0.0699],
             "VQ-Rec (KDD'23)": {"recall@10": 0.1557, "ndcg@10": 0.0730,
                                 "recall@50": 0.3994, "ndcg@50": 0.1263},
             "TedRec (CIKM'24)": {"recall@10": 0.2234, "ndcg@10": 0.1316}}


def shiftrec() -> str:
    exe = Path(sys.executable).with_name("shiftrec")
    return str(exe) if exe.exists() else "shiftrec"


def run(cmd: list[str], log: list[dict[str, Any]]) -> float:
    print("$", " ".join(cmd), flush=True)
    t = time.perf_counter()
    subprocess.run(cmd, check=True)
    dt = time.perf_counter() - t
    log.append({"command": " ".join(["shiftrec", *cmd[1:]]), "wall_seconds": round(dt, 1)})
    return dt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=Path("/tmp/or-shuffle"))
    ap.add_argument("--tie-order", default="shuffle", choices=("shuffle", "file"))
    ap.add_argument("--seed", type=int, default=0, help="tie-order seed and training seed")
    ap.add_argument("--max-epochs", type=int, default=12)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--models", default="popularity,itemknn,sasrec")
    ap.add_argument("--data", type=Path, default=None, help="online_retail_I.parquet "
                    "(default: $SHIFTREC_DATA/online-retail/online_retail_I.parquet)")
    args = ap.parse_args()
    data = args.data or Path(os.environ.get("SHIFTREC_DATA", "../shared/data")) / "online-retail" / "online_retail_I.parquet"
    if not data.exists():
        sys.exit(f"{data} not found: set SHIFTREC_DATA or --data")
    w = args.work
    w.mkdir(parents=True, exist_ok=True)
    log: list[dict[str, Any]] = []
    exe = shiftrec()
    ingest = [exe, "ingest", "online-retail", str(data), "--recipe", "unisrec", "--tie-order",
              args.tie_order, "--kcore", "5", "-o", str(w / "dataset")]
    if args.tie_order == "shuffle":
        ingest[ingest.index("--kcore"):ingest.index("--kcore")] = ["--seed", str(args.seed)]
    run(ingest, log)
    run([exe, "prepare", str(w / "dataset"), "-o", str(w / "split")], log)
    report = json.loads((w / "dataset" / "ingest_report.json").read_text())
    res: dict[str, Any] = {"tie_order": args.tie_order, "tie_seed": args.seed if args.tie_order == "shuffle" else None,
                           "dataset_counts": {k: report.get("summary", {}).get(k)
                                              for k in ("users", "items", "events")},
                           "models": {}}
    for model in [m.strip() for m in args.models.split(",") if m.strip()]:
        cmd = [exe, "train", str(w / "split"), "--model", model, "-o", str(w / model)]
        info: dict[str, Any] = {}
        if model == "sasrec":
            cfg = w / "sasrec.yaml"
            cfg.write_text("hidden: 64\ndropout: 0.5\nattn_dropout: 0.5\ntrain:\n  device: cpu\n"
                           f"  threads: {args.threads}\n"
                           f"  phases: [{{epochs: {args.max_epochs}, lr: 0.002, batch_size: 4096, patience: 2}}]\n")
            cmd += ["--config", str(cfg), "--seed", str(args.seed), "--threads", str(args.threads)]
            info["config_yaml"] = cfg.read_text()
        dt = run(cmd, log)
        met = json.loads((w / model / "metrics.json").read_text())
        row = {"test": {k: met[k] for k in KEYS}, "wall_seconds": round(dt, 1), **info,
               "command": log[-1]["command"],
               "bench_command": "SHIFTREC_DATA=/work/shared/data OMP_NUM_THREADS=1 nice -n 15 python "
                                + shlex.join(["bench/online_retail_shuffle.py", *sys.argv[1:]])}
        if "slices" in met:
            row["slices_ndcg@10"] = {k: v["ndcg@10"] for k, v in met["slices"].items()}
            row["slices_n_users"] = {k: v["n_users"] for k, v in met["slices"].items()}
        if model == "sasrec":
            man = json.loads((w / model / "manifest.json").read_text())
            tr = man.get("training") or {}
            ph = (tr.get("phases") or [{}])[0]
            row["epochs_run"], row["best_epoch"] = ph.get("epochs_run"), ph.get("best_epoch")
            row["max_epochs"] = args.max_epochs
            row["epoch_train_seconds"] = [round(h.get("train_seconds", 0), 1) for h in tr.get("history", [])]
            row["valid_ndcg@10_curve"] = [round(h.get("metrics", {}).get("ndcg@10", float("nan")), 4)
                                          for h in tr.get("history", [])]
        res["models"][model] = row
        print(model, {k: round(v, 4) for k, v in row["test"].items()}, flush=True)
    res["commands"] = log[:2]  # ingest and prepare; each model row holds its own command
    res["machine"] = {"load_avg_1_5_15": list(os.getloadavg()), "cpus": os.cpu_count(),
                      "nice": os.nice(0), "shared_with_other_agents": True}
    all_res = json.loads(OUT.read_text()) if OUT.exists() else {}
    all_res["published"] = PUBLISHED
    prev = all_res.get(args.tie_order, {}).get("models", {})
    res["models"] = {**prev, **res["models"]}
    all_res[args.tie_order] = res
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(all_res, indent=1) + "\n")


if __name__ == "__main__":
    main()
