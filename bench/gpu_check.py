"""GPU check (issue 12, part 3): the one prepared script to run when a GPU machine is lent.

    SHIFTREC_DATA=/work/shared/data .venv/bin/python bench/gpu_check.py [--epochs 3] [--cpu-epochs 1]

Without CUDA it prints why and exits 0 having written nothing (marked `gpu`: never part of the
default test run). With CUDA, on Scientific (UniSRec files, leave-one-out), through the CLI:
  1. SASRec (hidden 64, README settings) : s/epoch on CUDA with mixed precision vs on CPU;
  2. MiniLM item encoding on CUDA, then the transfer model (text only): s/epoch CUDA+AMP vs CPU;
  3. with more than one GPU: SASRec under `torchrun --nproc-per-node 2` (NCCL), s/epoch.
Timings are the trainer's per-epoch `train_seconds` (no validation inside), from
OUT/trainer/checkpoint.json. Results go to bench/results/gpu_check.json with the device named.
Budget: about 5-8 minutes on one H200 (CPU epochs dominate; lower --cpu-epochs to 1).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "results" / "gpu_check.json"
SHIFTREC = [sys.executable, "-m", "shiftrec.cli"]


def cli(args: list[str], env: dict[str, str] | None = None, torchrun: int = 0) -> float:
    cmd = ([sys.executable, "-m", "torch.distributed.run", "--standalone",
            f"--nproc_per_node={torchrun}", "-m", "shiftrec.cli"] if torchrun else SHIFTREC) + args
    print("$", " ".join(cmd), flush=True)
    t = time.perf_counter()
    r = subprocess.run(cmd, cwd=ROOT, env=env or os.environ.copy(), capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"failed ({r.returncode}): {r.stderr[-2000:]}")
    return time.perf_counter() - t


def epochs_of(out: Path) -> dict[str, Any]:
    h = json.loads((out / "trainer" / "checkpoint.json").read_text())["history"]
    secs = [r["train_seconds"] for r in h]
    m = json.loads((out / "metrics.json").read_text()) if (out / "metrics.json").exists() else {}
    return {"epoch_train_seconds": [round(s, 3) for s in secs],
            "median_s_per_epoch": round(statistics.median(secs[1:] or secs), 3),
            "test_ndcg@10": m.get("ndcg@10")}


def config(path: Path, device: str, epochs: int, amp: bool, extra: str = "") -> Path:
    path.write_text(f"{extra}train:\n  device: {device}\n  amp: {str(amp).lower()}\n"
                    f"  phases: [{{epochs: {epochs}, patience: 0}}]\n")
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--cpu-epochs", type=int, default=1)
    args = ap.parse_args()
    try:
        import torch
    except ImportError:
        print("gpu_check: torch is not installed: skipping")
        return
    if not torch.cuda.is_available():
        print("gpu_check: no CUDA device here: skipping (run it on a machine with a GPU; "
              "nothing was written)")
        return
    from shiftrec.paths import data_root

    root = data_root()
    if root is None or not (root / "unisrec-scientific").exists():
        print("gpu_check: Scientific not found (set SHIFTREC_DATA): skipping")
        return
    from shiftrec.data.clean import CleanConfig, clean
    from shiftrec.data.readers import read_unisrec
    from shiftrec.data.splits import leave_one_out

    n_gpu = torch.cuda.device_count()
    res: dict[str, Any] = {
        "device": torch.cuda.get_device_name(0), "gpus": n_gpu, "torch": torch.__version__,
        "cuda": torch.version.cuda, "bf16": torch.cuda.is_bf16_supported(),
        "cpus": os.cpu_count(), "platform": platform.platform(),
        "load_avg_before": list(os.getloadavg()), "epochs_gpu": args.epochs,
        "epochs_cpu": args.cpu_epochs,
        "note": "s/epoch = the trainer's train_seconds per epoch (median, first epoch excluded "
                "when there are more); CPU runs use every core (--threads 0 = auto)"}
    work = Path(tempfile.mkdtemp(prefix="gpu-check-"))
    try:
        ds, _, _ = clean(read_unisrec(root / "unisrec-scientific"), CleanConfig(dedup="none"),
                         "scientific")
        ds.save(work / "ds")
        split = work / "split"
        leave_one_out(ds).save(split)
        sas = "hidden: 64\n"
        for dev, ep, amp in (("cuda", args.epochs, True), ("cpu", args.cpu_epochs, False)):
            out = work / f"sasrec-{dev}"
            wall = cli(["train", str(split), "--model", "sasrec", "--config",
                        str(config(work / f"sas-{dev}.yaml", dev, ep, amp, sas)), "-o", str(out)])
            res[f"sasrec_{dev}"] = epochs_of(out) | {"amp": amp, "wall_s": round(wall, 1)}
        t = cli(["encode", str(work / "ds"), "--encoder", "minilm", "--split", str(split),
                 "--device", "cuda", "--batch-size", "256", "-o", str(work / "emb")])
        res["encode_minilm_cuda"] = {"wall_s_with_model_load": round(t, 1)}
        for dev, ep, amp in (("cuda", args.epochs, True), ("cpu", args.cpu_epochs, False)):
            out = work / f"transfer-{dev}"
            wall = cli(["train", str(split), "--model", "transfer", "--item-text",
                        str(work / "emb"), "--config",
                        str(config(work / f"tr-{dev}.yaml", dev, ep, amp)), "-o", str(out)])
            res[f"transfer_{dev}"] = epochs_of(out) | {"amp": amp, "wall_s": round(wall, 1)}
        for m in ("sasrec", "transfer"):
            res[f"{m}_cpu_over_cuda_s_per_epoch"] = round(
                res[f"{m}_cpu"]["median_s_per_epoch"] / res[f"{m}_cuda"]["median_s_per_epoch"], 1)
        if n_gpu > 1:
            out = work / "sasrec-ddp2"
            wall = cli(["train", str(split), "--model", "sasrec", "--config",
                        str(config(work / "sas-ddp.yaml", "cuda", args.epochs, True, sas)),
                        "-o", str(out)], torchrun=2)
            res["sasrec_cuda_ddp2"] = epochs_of(out) | {"amp": True, "wall_s": round(wall, 1)}
        else:
            res["sasrec_cuda_ddp2"] = {"skipped": f"{n_gpu} GPU: 2-process DDP needs 2"}
        res["load_avg_after"] = list(os.getloadavg())
    finally:
        shutil.rmtree(work, ignore_errors=True)
    OUT.write_text(json.dumps(res, indent=2) + "\n")
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
