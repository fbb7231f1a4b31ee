"""SASRec on Scientific (UniSRec files, leave-one-out): speed and accuracy.

  python bench/sasrec_speed.py speed [--hidden 64 300] [--epochs 3]
      per hidden size: training samples (supervised prefixes) per second and seconds per epoch
      (median over >= 3 epochs of the real trainer, no validation inside the timing), full-ranking
      evaluation users/s on the 8442 validation users (and, in "eval_speed_same_run", the
      pre-issue-11 ranking path and the current one timed alternately on the same trained net,
      wall and CPU seconds, ranks checked identical), peak RSS; plus the same network trained
      RecBole's way (every prefix as its own sample, padded to 50, batch 2048) timed over a few
      steps and extrapolated to an epoch, on the same machine at the same time.
  python bench/sasrec_speed.py converge --hidden 64 --dropout 0.5 --lr 0.001 [--no-bucket]
      trains to convergence with early stopping on validation NDCG@10 and reports test metrics.

  python bench/sasrec_speed.py recbole [--hidden 64] [--threads 1] [--recbole-epochs 1]
      RecBole 1.2.1 itself, in its own venv made on first use (RECBOLE_VENV, default
      /tmp/recbole-venv; skipped with the reason when it cannot be installed), timed beside our
      trainer in the same run: same files, sizes, batch and threads; the s/epoch ratio.

Results are merged into bench/results/sasrec_speed.json. "recbole_stated" holds the RecBole
figures stated in issue 3 (60-77 s/epoch at hidden 64, about 280 s at hidden 300); the
"recbole_threads<N>" entries are RecBole runs measured by the recbole command. The machine is shared
with other agents, so every timing carries the load average and a matmul GFLOPS calibration.
With the machine oversubscribed (load average > 2 on 2 cores), one torch thread is several times
faster than two (every OpenMP barrier waits for a descheduled thread), so --threads defaults to 1.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "results" / "sasrec_speed.json"
RECBOLE_STATED = {"64": {"s_per_epoch": [60, 77]}, "300": {"s_per_epoch": [280, 280]}}
PUBLISHED_SASREC = {"recall@10": 0.1080, "ndcg@10": 0.0553, "recall@50": 0.2042, "ndcg@50": 0.0760}


def load_split() -> Any:
    from shiftrec.data.clean import CleanConfig, clean
    from shiftrec.data.readers import read_unisrec
    from shiftrec.data.splits import leave_one_out
    from shiftrec.paths import data_root

    root = data_root()
    if root is None:
        sys.exit("shared data not found: set SHIFTREC_DATA")
    ds, _, _ = clean(read_unisrec(root / "unisrec-scientific"), CleanConfig(dedup="none"), "scientific")
    return leave_one_out(ds)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def machine() -> dict[str, Any]:
    import torch

    a = torch.randn(2048, 64)
    b = torch.randn(64, 4385)
    a @ b
    t = time.perf_counter()
    for _ in range(10):
        a @ b
    dt = (time.perf_counter() - t) / 10
    return {"load_avg_1_5_15": list(os.getloadavg()), "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "cpu": platform.processor() or platform.machine(),
            "matmul_gflops_2048x64x4385": round(2 * 2048 * 64 * 4385 / dt / 1e9, 2),
            "shared_with_other_agents": True}


def merge(key: str, value: Any) -> None:
    data = json.loads(OUT.read_text()) if OUT.exists() else {}
    data[key] = {**data.get(key, {}), **value} if isinstance(value, dict) else value
    data["notes"] = (
        "Timings on a 2-core CPU shared with other agents (see load_avg and matmul GFLOPS beside "
        "each figure): they are under contention. 'recbole_stated' are the figures stated in "
        "issue 3; 'recbole_threads<N>' are RecBole 1.2.1 itself measured by `sasrec_speed.py "
        "recbole` beside our trainer in the same run. 'recbole_style_same_net' is our network "
        "trained RecBole's way (one padded sample per prefix) timed on the same machine.")
    data["recbole_stated"] = RECBOLE_STATED
    data["published_sasrec_scientific"] = PUBLISHED_SASREC
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(data, indent=2) + "\n")


def prefix_step_seconds(net: Any, split: Any, batch: int, steps: int, lr: float) -> list[float]:
    """RecBole's schedule with our network: each prefix is a sample padded to 50, output at the
    last real position, full CE. Times `steps` optimiser steps after one warm-up step."""
    import torch

    from shiftrec.models.torch_base import full_softmax_ce

    seqs, tgts = [], []
    for u in range(len(split.train)):
        s = split.train[u]
        for t in range(1, len(s)):
            seqs.append(s[max(0, t - 50):t])
            tgts.append(s[t])
    rng = np.random.default_rng(0)
    order = rng.permutation(len(seqs))
    opt = torch.optim.AdamW(net.parameters(), lr=lr, fused=True)
    net.train()
    times = []
    for i in range(steps + 1):
        idx = order[i * batch:(i + 1) * batch]
        x = np.zeros((len(idx), 50), np.int64)
        lens = np.array([len(seqs[j]) for j in idx])
        for r, j in enumerate(idx):
            x[r, :lens[r]] = seqs[j]
        y = torch.from_numpy(np.array([tgts[j] for j in idx]))
        t0 = time.perf_counter()
        opt.zero_grad()
        h = net.encode(torch.from_numpy(x))
        last = h[torch.arange(len(idx)), torch.from_numpy(lens - 1)]
        loss = full_softmax_ce(last, net.item_emb.weight[1:], y - 1)
        loss.backward()
        opt.step()
        if i:
            times.append(time.perf_counter() - t0)
    return times


def reference_rank_targets(model: Any, evalset: Any, batch_size: int = 1024,
                           max_len: int = 50) -> np.ndarray:
    """The full-ranking path before issue 11, verbatim (users in evaluation order, a NaN pass,
    and greater/equal counts over the s[:, 1:] view), kept to time it beside the current one."""
    ranks = np.empty(len(evalset), dtype=np.int64)
    for a in range(0, len(evalset), batch_size):
        b = min(a + batch_size, len(evalset))
        hist = [evalset.history[i][-max_len:] for i in range(a, b)]
        times = [evalset.history.times_of(i)[-max_len:] for i in range(a, b)]
        s = np.asarray(model.score(hist, times), dtype=np.float32)[:, 1:]
        if s.dtype.kind == "f" and np.isnan(s).any():
            s = np.where(np.isnan(s), -np.inf, s)
        tg = evalset.target[a:b]
        t = s[np.arange(len(tg)), tg - 1][:, None]
        ranks[a:b] = ((s > t).sum(axis=1) + (s == t).sum(axis=1) - 1 + 1).astype(np.int64)
    return ranks


def eval_speed(net: Any, split: Any, repeats: int) -> dict[str, Any]:
    """Full-ranking evaluation of the 8442 validation users, the reference (pre-issue-11) path
    and the current evaluate.ranking.rank_targets alternately, `repeats` times each, scoring
    through the same trainer.ModuleScorer; the ranks must be identical. Wall and CPU seconds
    (CPU time is what contention from other processes does not inflate)."""
    from shiftrec.evaluate.metrics import all_metrics
    from shiftrec.evaluate.ranking import rank_targets
    from shiftrec.train.trainer import ModuleScorer

    net.eval()
    scorer = ModuleScorer(net, "cpu", 50, False, threads=None)
    es = split.valid
    runs: dict[str, list[tuple[float, float]]] = {"reference": [], "current": []}
    ranks: dict[str, np.ndarray] = {}
    for _ in range(repeats):
        for name, fn in (("reference", lambda: reference_rank_targets(scorer, es, 1024)),
                         ("current", lambda: rank_targets(scorer, es, batch_size=1024))):
            w, c = time.perf_counter(), time.process_time()
            ranks[name] = fn()
            runs[name].append((time.perf_counter() - w, time.process_time() - c))
    if not np.array_equal(ranks["reference"], ranks["current"]):
        raise SystemExit("current ranking differs from the reference path")
    out: dict[str, Any] = {"users": len(es), "repeats": repeats, "ranks_identical": True,
                           "metrics_identical": all_metrics(ranks["reference"]) == all_metrics(ranks["current"])}
    for name, r in runs.items():
        w = statistics.median(x for x, _ in r)
        c = statistics.median(x for _, x in r)
        out[name] = {"wall_s": [round(x, 3) for x, _ in r], "cpu_s": [round(x, 3) for _, x in r],
                     "users_per_s_median_wall": round(len(es) / w), "users_per_cpu_s_median": round(len(es) / c)}
    out["speedup_wall"] = round(out["current"]["users_per_s_median_wall"]
                                / out["reference"]["users_per_s_median_wall"], 2)
    out["speedup_cpu"] = round(out["current"]["users_per_cpu_s_median"]
                               / out["reference"]["users_per_cpu_s_median"], 2)
    return out


def cmd_speed(args: argparse.Namespace) -> None:
    import torch

    from shiftrec.models.sasrec import SASRecConfig, build_net
    from shiftrec.train.batches import CausalBatches
    from shiftrec.train.trainer import Phase, TrainConfig, evaluate_module, seed_everything, train

    torch.set_num_threads(args.threads)
    split = load_split()
    out: dict[str, Any] = {"torch_threads": args.threads, "dataset": "scientific (UniSRec files), leave-one-out",
                           "n_users": len(split.user_ids), "n_items": split.n_items}
    for hidden in args.hidden:
        m0 = machine()
        cfg = SASRecConfig(hidden=hidden, bucket=not args.no_bucket)
        seed_everything(0)
        net = build_net(split.n_items, cfg)
        src = CausalBatches(split.train, cfg.max_len, cfg.stride, cfg.bucket)
        tcfg = TrainConfig(phases=(Phase(epochs=args.epochs, lr=1e-3, batch_size=args.batch,
                                         patience=0),), seed=0, device="cpu",
                           threads=args.threads)
        res = train(net, tcfg, src, None)
        ep = [h["train_seconds"] for h in res.history]
        med = statistics.median(ep)
        t = time.perf_counter()
        met = evaluate_module(net, split.valid, "cpu", 50, 1024)
        ev_s = time.perf_counter() - t
        ev_cmp = eval_speed(net, split, args.eval_repeats)
        rss_ours = peak_rss_mb()
        pre = prefix_step_seconds(net, split, args.batch, args.prefix_steps, 1e-3)
        n_steps = -(-src.n_targets // args.batch)
        pre_epoch = statistics.median(pre) * n_steps
        lo, hi = RECBOLE_STATED[str(hidden)]["s_per_epoch"] if str(hidden) in RECBOLE_STATED else (None, None)
        out[f"hidden_{hidden}"] = {
            "config": {"layers": cfg.layers, "heads": cfg.heads, "inner": cfg.inner, "max_len": 50,
                       "batch_targets": args.batch, "bucket": cfg.bucket, "stride": cfg.stride,
                       "loss": "full softmax CE over all 4385 items"},
            "supervised_prefixes_per_epoch": src.n_targets,
            "steps_per_epoch": res.history[0]["steps"],
            "epoch_seconds": [round(x, 2) for x in ep],
            "median_epoch_seconds": round(med, 2),
            "train_samples_per_s": round(src.n_targets / med, 1),
            "eval_users": len(split.valid), "eval_seconds": round(ev_s, 2),
            "eval_users_per_s": round(len(split.valid) / ev_s, 1),
            "eval_speed_same_run": ev_cmp,
            "valid_ndcg@10_after_epochs": {str(args.epochs): round(met["ndcg@10"], 4)},
            "recbole_style_same_net": {"steps_timed": len(pre), "median_step_s": round(statistics.median(pre), 3),
                                       "steps_per_epoch": n_steps,
                                       "extrapolated_epoch_s": round(pre_epoch, 1),
                                       "our_speedup": round(pre_epoch / med, 2)},
            "vs_recbole_stated": None if lo is None else {
                "recbole_s_per_epoch": [lo, hi], "speedup_range": [round(lo / med, 2), round(hi / med, 2)],
                "note": "RecBole not re-run here; stated numbers from issue 3"},
            "peak_rss_mb_ours": round(rss_ours, 1),
            "peak_rss_mb_after_recbole_style": round(peak_rss_mb(), 1),
            "machine_before": m0, "machine_after": machine(),
        }
        print(json.dumps(out[f"hidden_{hidden}"], indent=1), flush=True)
        merge(f"speed_threads{args.threads}" + ("_nobucket" if args.no_bucket else ""), out)


# ------------------------------------------------------------------------------ RecBole 1.2.1

RECBOLE_VENV = Path(os.environ.get("RECBOLE_VENV", "/tmp/recbole-venv"))
# RecBole 1.2.1 needs numpy < 2 (np.float_ etc.) and an older pandas. Its declared dependencies
# also pull a CUDA torch (GBs) and ray; neither is needed to train: the venv gets RecBole and the
# light dependencies it imports (--no-deps, pinned), and runs on THIS interpreter's torch build
# (a .pth file appends its site-packages after the venv's own, so numpy 1.26 wins), so both
# sides use the same torch kernels and the comparison is of the training code.
RECBOLE_PKGS = ["recbole==1.2.1", "numpy==1.26.4", "pandas==2.1.4", "scipy==1.11.4",
                "scikit-learn==1.3.2", "colorlog==4.7.2", "colorama==0.4.4", "tqdm", "pyyaml",
                "tabulate", "texttable", "psutil", "thop", "tensorboard", "protobuf>=5.28", "absl-py",
                "markdown", "werkzeug", "markupsafe", "packaging", "python-dateutil", "pytz", "tzdata",
                "joblib", "threadpoolctl", "six"]
RECBOLE_IMPORTS = ("from recbole.config import Config; from recbole.data import create_dataset, "
                   "data_preparation; from recbole.model.sequential_recommender import SASRec; "
                   "from recbole.trainer import Trainer")

RECBOLE_CHILD = r'''
import json, statistics, sys, time
import torch
args = json.loads(sys.argv[1])
torch.set_num_threads(args["threads"])
from recbole.config import Config
from recbole.data import create_dataset, data_preparation
from recbole.model.sequential_recommender import SASRec
from recbole.trainer import Trainer
from recbole.utils import init_seed
cfg = {"data_path": args["data_path"], "benchmark_filename": ["train", "valid", "test"],
       "alias_of_item_id": ["item_id_list"], "load_col": {"inter": ["user_id", "item_id_list", "item_id"]},
       "MAX_ITEM_LIST_LENGTH": 50, "n_layers": 2, "n_heads": 2, "hidden_size": args["hidden"],
       "inner_size": 256, "hidden_dropout_prob": 0.5, "attn_dropout_prob": 0.5, "hidden_act": "gelu",
       "layer_norm_eps": 1e-12, "initializer_range": 0.02, "loss_type": "CE",
       "train_neg_sample_args": None, "train_batch_size": args["batch"], "learning_rate": 0.001,
       "epochs": args["epochs"], "eval_step": 1000, "seed": 0, "reproducibility": True,
       "device": "cpu", "use_gpu": False, "show_progress": False, "checkpoint_dir": args["work"],
       "log_wandb": False, "worker": 0, "eval_args": {"order": "TO", "mode": "full"}}
t = time.perf_counter()
config = Config(model="SASRec", dataset="Scientific", config_dict=cfg)
init_seed(config["seed"], config["reproducibility"])
torch.set_num_threads(args["threads"])
ds = create_dataset(config)
train_data, valid_data, test_data = data_preparation(config, ds)
prep = time.perf_counter() - t
model = SASRec(config, train_data.dataset).to("cpu")
trainer = Trainer(config, model)
ep, losses = [], []
for e in range(args["epochs"]):
    t = time.perf_counter()
    loss = trainer._train_epoch(train_data, e, show_progress=False)
    ep.append(time.perf_counter() - t)
    losses.append(float(sum(loss)) if isinstance(loss, tuple) else float(loss))
    print("recbole epoch", e + 1, round(ep[-1], 1), "s", file=sys.stderr, flush=True)
print(json.dumps({"recbole_version": __import__("recbole").__version__, "torch": torch.__version__,
                  "numpy": __import__("numpy").__version__, "threads": torch.get_num_threads(),
                  "train_samples": len(train_data.dataset), "n_items": ds.item_num,
                  "data_prep_seconds": round(prep, 1), "epoch_seconds": [round(x, 2) for x in ep],
                  "epoch_loss_sum": [round(x, 2) for x in losses],
                  "median_epoch_seconds": round(statistics.median(ep), 2)}))
'''


def recbole_python() -> tuple[Path | None, str]:
    """The RecBole venv's python (made on first use), or None and why it cannot be had."""
    import subprocess

    import torch

    py = RECBOLE_VENV / "bin" / "python"

    def importable() -> tuple[bool, str]:
        r = subprocess.run([str(py), "-c", RECBOLE_IMPORTS], capture_output=True, text=True)
        return r.returncode == 0, (r.stderr.strip().splitlines() or [""])[-1]

    if py.exists() and importable()[0]:
        return py, "existing venv"
    try:
        subprocess.run([sys.executable, "-m", "venv", str(RECBOLE_VENV)], check=True)
        r = subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-deps", *RECBOLE_PKGS],
                           capture_output=True, text=True)
        if r.returncode != 0:
            return None, "pip install failed: " + (r.stderr.strip().splitlines() or ["?"])[-1]
        site = next((RECBOLE_VENV / "lib").glob("python*/site-packages"))
        (site / "zz_shiftrec_torch.pth").write_text(str(Path(torch.__file__).parents[1]) + "\n")
    except (OSError, subprocess.CalledProcessError, StopIteration) as e:
        return None, f"cannot make {RECBOLE_VENV}: {e}"
    ok, why = importable()
    return (py, "made by this run") if ok else (None, f"recbole does not import: {why}")


def cmd_recbole(args: argparse.Namespace) -> None:
    """Our trainer and RecBole 1.2.1's, same data (UniSRec's Scientific files), same network
    sizes (2 layers, 2 heads, inner 256, dropout 0.5, full CE, batch 2048), same thread count,
    in one run: ours for --epochs epochs, RecBole for --recbole-epochs, ours again; the ratio
    is RecBole's median seconds per epoch over ours (median of both of our blocks)."""
    import subprocess
    import tempfile

    import torch

    from shiftrec.models.sasrec import SASRecConfig, build_net
    from shiftrec.paths import data_root
    from shiftrec.train.batches import CausalBatches
    from shiftrec.train.trainer import Phase, TrainConfig, seed_everything, train

    py, how = recbole_python()
    if py is None:
        print(f"RecBole 1.2.1 skipped: {how}", flush=True)
        merge(f"recbole_threads{args.threads}", {"skipped": how})
        return
    torch.set_num_threads(args.threads)
    split = load_split()
    root = data_root()
    work = Path(tempfile.mkdtemp(prefix="recbole-"))
    (work / "data").mkdir()
    (work / "data" / "Scientific").symlink_to((root / "unisrec-scientific").resolve())

    def ours(hidden: int) -> list[float]:
        cfg = SASRecConfig(hidden=hidden)
        seed_everything(0)
        net = build_net(split.n_items, cfg)
        src = CausalBatches(split.train, cfg.max_len, cfg.stride, cfg.bucket)
        tcfg = TrainConfig(phases=(Phase(epochs=args.epochs, lr=1e-3, batch_size=args.batch, patience=0),),
                           seed=0, device="cpu", threads=args.threads)
        return [h["train_seconds"] for h in train(net, tcfg, src, None).history]

    out: dict[str, Any] = {"python": str(py), "venv": how, "threads_each": args.threads,
                           "dataset": "scientific (UniSRec files): RecBole reads the .inter files "
                                      "(benchmark_filename train/valid/test), ours the same files"}
    for hidden in args.hidden:
        m0 = machine()
        a = ours(hidden)
        env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
        child = work / "child.py"
        child.write_text(RECBOLE_CHILD)
        spec = {"threads": args.threads, "hidden": hidden, "epochs": args.recbole_epochs,
                "batch": args.batch, "data_path": str(work / "data"), "work": str(work / "saved")}
        t = time.perf_counter()
        r = subprocess.run([str(py), str(child), json.dumps(spec)], capture_output=True, text=True,
                           cwd=work, env=env)
        if r.returncode != 0:
            tail = (r.stderr.strip().splitlines() or ["?"])[-1]
            print(f"RecBole run failed: {tail}", flush=True)
            out[f"hidden_{hidden}"] = {"failed": tail}
            continue
        rb = json.loads(r.stdout.strip().splitlines()[-1])
        rb["wall_seconds"] = round(time.perf_counter() - t, 1)
        b = ours(hidden)
        med = statistics.median(a + b)
        out[f"hidden_{hidden}"] = {
            "recbole": rb,
            "ours": {"epoch_seconds_before": [round(x, 2) for x in a],
                     "epoch_seconds_after": [round(x, 2) for x in b], "median_epoch_seconds": round(med, 2),
                     "train_samples": int(CausalBatches(split.train, 50, 10, True).n_targets)},
            "ratio_recbole_over_ours_s_per_epoch": round(rb["median_epoch_seconds"] / med, 2),
            "machine_before": m0, "machine_after": machine()}
        print(json.dumps(out[f"hidden_{hidden}"], indent=1), flush=True)
        # every run is kept (timings under contention vary); the top level shows the latest
        key = f"recbole_threads{args.threads}"
        prev = json.loads(OUT.read_text()).get(key, {}) if OUT.exists() else {}
        runs = [*prev.get("runs", []), {"hidden": hidden, **out[f"hidden_{hidden}"]}]
        ratios = [r["ratio_recbole_over_ours_s_per_epoch"] for r in runs if r.get("hidden") == hidden]
        merge(key, {**out, "runs": runs,
                    f"ratio_range_hidden_{hidden}": [min(ratios), max(ratios)]})


def cmd_converge(args: argparse.Namespace) -> None:
    import torch

    from shiftrec.evaluate.ranking import evaluate
    from shiftrec.models.sasrec import SASRec
    from shiftrec.train.trainer import Phase, TrainConfig

    torch.set_num_threads(args.threads)
    split = load_split()
    m0 = machine()
    tcfg = TrainConfig(phases=(Phase(epochs=args.max_epochs, lr=args.lr, batch_size=args.batch,
                                     patience=args.patience, weight_decay=args.wd),),
                       seed=args.seed, device="cpu", threads=args.threads)
    log = []

    def prog(ev: Any) -> None:
        if ev.kind == "epoch":
            log.append((ev.epoch, round(ev.loss, 4), round(ev.metrics.get("ndcg@10", float("nan")), 4),
                        round(ev.seconds, 1)))
            print(*log[-1], flush=True)

    ck = Path(args.checkpoint_dir) if args.checkpoint_dir else None
    model = SASRec(hidden=args.hidden, dropout=args.dropout, attn_dropout=args.dropout,
                   bucket=not args.no_bucket, train=tcfg, checkpoint_dir=ck, resume=args.resume,
                   progress=prog)
    t = time.perf_counter()
    model.fit(split)
    wall = time.perf_counter() - t
    valid, _ = evaluate(model, split, "valid")
    test, _ = evaluate(model, split, "test")
    keys = ("recall@10", "ndcg@10", "recall@50", "ndcg@50")
    r = model.result
    row = {"hidden": args.hidden, "dropout": args.dropout, "lr": args.lr, "weight_decay": args.wd,
           "batch_targets": args.batch, "bucket": not args.no_bucket, "seed": args.seed,
           "patience": args.patience, "threads": args.threads, "epochs_run": r.phases[0].epochs_run,
           "best_epoch": r.phases[0].best_epoch, "wall_seconds": round(wall, 1),
           "train_seconds_per_epoch_median": round(statistics.median(h["train_seconds"] for h in r.history), 2),
           "valid": {k: round(valid[k], 4) for k in keys}, "test": {k: round(test[k], 4) for k in keys},
           "published_sasrec_test": PUBLISHED_SASREC,
           "valid_curve": [(e, v) for e, _, v, _ in log], "machine_before": m0,
           "machine_after": machine(), "peak_rss_mb": round(peak_rss_mb(), 1)}
    print(json.dumps(row, indent=1))
    data = json.loads(OUT.read_text()) if OUT.exists() else {}
    runs = [x for x in data.get("converge", []) if not (
        x["hidden"] == row["hidden"] and x["dropout"] == row["dropout"] and x["lr"] == row["lr"]
        and x["bucket"] == row["bucket"] and x["seed"] == row["seed"]
        and x.get("weight_decay") == row["weight_decay"])]
    merge("converge", [*runs, row])
    select()
    if args.save:
        model.save(args.save)


def select() -> None:
    """The run chosen on validation NDCG@10 only (bucketed schedule), reported against the paper."""
    data = json.loads(OUT.read_text())
    runs = [r for r in data.get("converge", []) if r["bucket"]]
    if not runs:
        return
    best = max(runs, key=lambda r: r["valid"]["ndcg@10"])
    merge("selected_on_valid", {
        "rule": "highest validation NDCG@10 among converge runs with the bucketed schedule",
        "hidden": best["hidden"], "dropout": best["dropout"], "lr": best["lr"], "seed": best["seed"],
        "wall_seconds": best["wall_seconds"], "valid": best["valid"], "test": best["test"],
        "published_sasrec_test": PUBLISHED_SASREC,
        "test_minus_published": {k: round(best["test"][k] - v, 4) for k, v in PUBLISHED_SASREC.items()}})


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("speed")
    s.add_argument("--hidden", type=int, nargs="+", default=[64, 300])
    s.add_argument("--epochs", type=int, default=3)
    s.add_argument("--batch", type=int, default=2048)
    s.add_argument("--prefix-steps", type=int, default=3)
    s.add_argument("--no-bucket", action="store_true")
    s.add_argument("--threads", type=int, default=1)
    s.add_argument("--eval-repeats", type=int, default=5)
    c = sub.add_parser("converge")
    c.add_argument("--hidden", type=int, default=64)
    c.add_argument("--dropout", type=float, default=0.5)
    c.add_argument("--lr", type=float, default=1e-3)
    c.add_argument("--wd", type=float, default=0.0)
    c.add_argument("--batch", type=int, default=2048)
    c.add_argument("--patience", type=int, default=10)
    c.add_argument("--max-epochs", type=int, default=300)
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--no-bucket", action="store_true")
    c.add_argument("--threads", type=int, default=1)
    c.add_argument("--checkpoint-dir")
    c.add_argument("--resume", action="store_true")
    c.add_argument("--save")
    sub.add_parser("select")
    r = sub.add_parser("recbole", help="RecBole 1.2.1 itself beside ours, in one run")
    r.add_argument("--hidden", type=int, nargs="+", default=[64])
    r.add_argument("--epochs", type=int, default=3, help="our epochs before and after RecBole's")
    r.add_argument("--recbole-epochs", type=int, default=1)
    r.add_argument("--batch", type=int, default=2048)
    r.add_argument("--threads", type=int, default=1)
    a = p.parse_args()
    {"speed": cmd_speed, "converge": cmd_converge, "select": lambda _: select(),
     "recbole": cmd_recbole}[a.cmd](a)


if __name__ == "__main__":
    main()
