"""How cost grows (issue 12, part 4) -> bench/results/scale.json + bench/results/scale.png.

    nice -n 15 .venv/bin/python bench/scale.py [--texts 600] [--users 3000] [--epochs 2]

- ingest: time and peak RSS against events, read from bench/results/ingest_scale.json
  (bench/ingest_scale.py: `shiftrec ingest` per size and engine under /usr/bin/time -v);
- encoding: MiniLM texts/s on real Scientific titles (or synthetic titles without SHIFTREC_DATA):
  one process, then `RayEncoder` with 1 and 2 actors on a local Ray (1 torch thread each); the
  Ray start and each actor's model load are inside the timing except `ray_init_s`;
- training: SASRec (hidden 64) s/epoch on a synthetic split through the CLI, one process vs
  `torchrun --nproc-per-node 2` (gloo, 1 thread each), same global batch.
Every section records the load average: the 2 cores are shared with other agents.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RES = ROOT / "bench" / "results"


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def ingest_section() -> dict[str, Any]:
    p = RES / "ingest_scale.json"
    if not p.exists():
        return {"missing": "run bench/ingest_scale.py first"}
    d = json.loads(p.read_text())
    rows = [{k: r.get(k) for k in ("target_events", "engine", "rows_in", "wall_s", "cpu_s",
                                   "events_per_s", "events_per_cpu_s", "peak_rss_mib",
                                   "loadavg_before")} for r in d["results"]]
    return {"source": "bench/results/ingest_scale.json (bench/ingest_scale.py)", "rows": rows}


def titles(n: int) -> list[str]:
    from shiftrec.paths import data_root

    root = data_root()
    f = root / "unisrec-scientific" / "Scientific.text" if root else None
    if f is not None and f.exists():
        lines = f.read_text(encoding="utf-8").splitlines()[1:n + 1]
        return [ln.split("\t", 1)[1] for ln in lines]
    rng = np.random.default_rng(0)
    words = "lab glass tube rack microscope slide pipette beaker safety goggles coat hose".split()
    return [" ".join(rng.choice(words, int(rng.integers(3, 30)))) for _ in range(n)]


def encode_section(n: int) -> dict[str, Any]:
    import ray

    from shiftrec.text import load_encoder
    from shiftrec.text.ray_encode import RayEncoder

    texts = titles(n)
    out: dict[str, Any] = {"texts": len(texts), "encoder": "minilm", "batch_size": 64,
                           "threads_per_worker": 1, "runs": []}
    t = time.perf_counter()
    enc = load_encoder("minilm", device="cpu", threads=1)
    ref = enc.encode(texts, batch_size=64)
    s = time.perf_counter() - t
    out["runs"].append({"engine": "single", "workers": 1, "seconds": round(s, 2),
                        "texts_per_s": round(len(texts) / s, 1), "loadavg": load()})
    t = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=200 * 2**20,
             log_to_driver=False)
    out["ray_init_s"] = round(time.perf_counter() - t, 2)
    try:
        for w in (1, 2):
            renc = RayEncoder("minilm", workers=w, threads=1)
            t = time.perf_counter()
            vec = renc.encode(texts, batch_size=64)
            s = time.perf_counter() - t
            out["runs"].append({"engine": "ray", "workers": w, "seconds": round(s, 2),
                                "texts_per_s": round(len(texts) / s, 1),
                                "max_abs_diff_vs_single": float(np.abs(vec - ref).max()),
                                "loadavg": load()})
    finally:
        ray.shutdown()
    return out


def train_section(users: int, epochs: int) -> dict[str, Any]:
    from shiftrec.data.synthetic import cyclic_split

    work = Path(tempfile.mkdtemp(prefix="scale-train-"))
    split = cyclic_split(n_users=users, n_items=500, min_len=5, max_len=60).save(work / "split")
    cfg = work / "s.yaml"
    cfg.write_text(f"hidden: 64\ntrain:\n  device: cpu\n  phases: [{{epochs: {epochs}, lr: 0.001, "
                   "batch_size: 2048, patience: 0}]\n")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    for k in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    out: dict[str, Any] = {"model": "sasrec hidden 64, batch 2048 targets", "users": users,
                           "items": 500, "epochs": epochs, "threads_per_process": 1, "runs": []}
    for n in (1, 2):
        args = ["train", str(split), "--model", "sasrec", "--config", str(cfg), "--seed", "0",
                "--threads", "1", "-o", str(work / f"p{n}")]
        cmd = ([sys.executable, "-m", "shiftrec.cli"] if n == 1 else
               [sys.executable, "-m", "torch.distributed.run", "--standalone",
                f"--nproc_per_node={n}", "-m", "shiftrec.cli"]) + args
        la = load()
        t = time.perf_counter()
        r = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True)
        wall = time.perf_counter() - t
        if r.returncode != 0:
            raise SystemExit(r.stderr[-2000:])
        h = json.loads((work / f"p{n}" / "trainer" / "checkpoint.json").read_text())["history"]
        secs = [x["train_seconds"] for x in h]
        out["runs"].append({"processes": n, "epoch_train_seconds": [round(x, 2) for x in secs],
                            "s_per_epoch": round(float(np.median(secs)), 2),
                            "steps_per_epoch": h[0]["steps"], "wall_s": round(wall, 1),
                            "command": " ".join(["torchrun --nproc-per-node 2 -m shiftrec.cli"
                                                 if n == 2 else "shiftrec", *args]),
                            "loadavg_before": la, "loadavg_after": load()})
    return out


def extrapolate(res: dict[str, Any]) -> dict[str, Any]:
    rows = [r for r in res["ingest"].get("rows", []) if r["engine"] == "streaming"]
    big = max(rows, key=lambda r: r["target_events"]) if rows else None
    ex: dict[str, Any] = {"events": 1_000_000_000, "assumptions": [
        "ingest (streaming engine): time linear in events at the largest measured size's "
        "events per CPU-second (map, per-bucket dedup and k-core passes are O(events); the "
        "k-core pass count is taken as at that size); peak RSS bounded by one bucket (bucket "
        "count grows with events) plus the driver's k-core code arrays (at most ~16 bytes/event "
        "for user+item codes if held at once; an upper bound, not measured at 1B)",
        "encoding: 1B events carry at most ~10M distinct items in a large catalogue; texts/s per "
        "worker as measured with 1 actor on 1 core, workers add linearly only with free cores",
        "training: SASRec s/epoch linear in supervised targets (~events); DDP on this 2-core "
        "box cannot go faster than one process using both cores"]}
    if big:
        eps = big["events_per_cpu_s"] or big["events_per_s"]
        ex["ingest_cpu_hours_at_1B"] = round(1e9 / eps / 3600, 2)
        ex["ingest_wall_hours_at_1B_if_2_cores_were_idle"] = round(1e9 / eps / 3600 / 2, 2)
        ex["ingest_upper_bound_code_arrays_gib_at_1B"] = round(1e9 * 16 / 2**30, 1)
        ex["ingest_basis"] = f"{big['target_events']:,} events streaming: {eps:,} events/CPU-s, " \
                             f"peak RSS {big['peak_rss_mib']} MiB"
    enc = [r for r in res["encode"]["runs"] if r["engine"] == "ray" and r["workers"] == 1]
    if enc:
        tps = enc[0]["texts_per_s"]
        ex["encode_10M_items_hours_per_worker"] = round(1e7 / tps / 3600, 1)
    tr = [r for r in res["train"]["runs"] if r["processes"] == 1]
    if tr:
        per_target = tr[0]["s_per_epoch"] / res["train"]["targets"]
        ex["train_sasrec_h64_s_per_epoch_at_1B_targets_one_core"] = round(per_target * 1e9)
        ex["train_basis"] = f"{per_target * 1e6:.1f} s per 1M targets per epoch (1 process, 1 thread)"
    return ex


def plot(res: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 3, figsize=(14, 4))
    rows = res["ingest"].get("rows", [])
    for eng, mk in (("memory", "s"), ("streaming", "o")):
        r = sorted((x for x in rows if x["engine"] == eng), key=lambda x: x["target_events"])
        if r:
            ev = [x["target_events"] / 1e6 for x in r]
            ax[0].plot(ev, [x["wall_s"] for x in r], mk + "-", label=f"{eng}: wall s")
            ax2 = ax[0].twinx() if eng == "memory" else ax2  # noqa: F821
            ax2.plot(ev, [x["peak_rss_mib"] / 1024 for x in r], mk + "--", color="tab:red",
                     label=f"{eng}: peak RSS GiB")
    ax[0].set_xlabel("events (M)")
    ax[0].set_ylabel("wall seconds")
    ax[0].set_title("ingest (solid: time, dashed: peak RSS GiB)")
    ax[0].legend(loc="center left", fontsize=7)
    if rows:
        ax2.set_ylabel("peak RSS GiB", color="tab:red")
        ax2.legend(loc="center right", fontsize=7)
    runs = res["encode"]["runs"]
    ax[1].bar([f"{r['engine']}\n{r['workers']} w" for r in runs], [r["texts_per_s"] for r in runs])
    ax[1].set_ylabel("texts / s (MiniLM, incl. model load)")
    ax[1].set_title(f"encoding {res['encode']['texts']} titles")
    tr = res["train"]["runs"]
    ax[2].bar([f"{r['processes']} proc" for r in tr], [r["s_per_epoch"] for r in tr])
    ax[2].set_ylabel("s / epoch")
    ax[2].set_title(f"SASRec h64, {res['train']['users']} users")
    fig.suptitle(f"2 shared cores, load average {res['loadavg_start']} at start")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--texts", type=int, default=600)
    ap.add_argument("--users", type=int, default=3000)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--plot-only", action="store_true", help="re-read ingest_scale.json, redraw from scale.json")
    args = ap.parse_args()
    if args.plot_only:
        res = json.loads((RES / "scale.json").read_text())
        res["ingest"] = ingest_section()  # picks up sizes bench/ingest_scale.py added since
        res["extrapolation_1B_events"] = extrapolate(res)
        (RES / "scale.json").write_text(json.dumps(res, indent=2) + "\n")
        plot(res, RES / "scale.png")
        return
    res: dict[str, Any] = {"machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
                           "loadavg_start": load(), "command": "nice -n 15 .venv/bin/python "
                           f"bench/scale.py --texts {args.texts} --users {args.users} "
                           f"--epochs {args.epochs}"}
    res["ingest"] = ingest_section()
    res["encode"] = encode_section(args.texts)
    res["train"] = train_section(args.users, args.epochs)
    from shiftrec.data.splits import SeqSplit  # noqa: F401  (targets of the same split)
    from shiftrec.data.synthetic import cyclic_split
    from shiftrec.train.batches import CausalBatches

    sp = cyclic_split(n_users=args.users, n_items=500, min_len=5, max_len=60)
    res["train"]["targets"] = int(CausalBatches(sp.train, 50, 10, True).n_targets)
    res["bounds"] = {
        "ingest": "CPU (one core per file/bucket task; streaming keeps RSS flat at the bucket "
                  "size), then disk for the spill and the output",
        "encode": "CPU (MiniLM matmuls); a second Ray actor helps only with a free core, and "
                  "each actor pays its own model load (~2-5 s)",
        "train": "CPU; 2 gloo processes on 2 shared cores split each batch but add an "
                 "all-reduce per step and compete with the other agents' load"}
    res["extrapolation_1B_events"] = extrapolate(res)
    res["loadavg_end"] = load()
    (RES / "scale.json").write_text(json.dumps(res, indent=2) + "\n")
    plot(res, RES / "scale.png")
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
