"""Torch threads on a busy machine: the demo's SASRec training, idle and next to a CPU hog.

    python bench/threads.py [--repeats 3] [--timeout 300]  ->  bench/results/threads.json

For each setting (before: a fixed thread count equal to the cores we may use, as torch picks by
default; after: threads 0 = auto, train.threads) the demo's SASRec (pipelines.demo.demo_sasrec,
the exact model `shiftrec demo` trains) is fitted on the demo's split in a fresh child process,
once on the machine as it is ("idle") and once with a competing CPU-bound process
(`python -c 'while True: pass'`) running. Reported per run: wall seconds, the torch threads the
run used, the child's peak RSS, the 1-minute load average before it; per setting the median and
the slowdown busy / idle (goal <= 2x). A run that exceeds --timeout is stopped and reported as
"> timeout". The machine may be shared with other work: the load averages say how busy it was.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "threads.json"


def make_split(out: Path) -> Path:
    """The demo's data: synthetic store -> ingest (5-core) -> leave-one-out split."""
    from shiftrec.data.clean import CleanConfig
    from shiftrec.data.pipeline import ingest
    from shiftrec.data.readers import ColumnMap, ItemColumnMap, read_generic
    from shiftrec.data.schema import Dataset
    from shiftrec.data.splits import leave_one_out
    from shiftrec.data.synthetic import StoreConfig, generate

    raw = generate(StoreConfig()).write(out / "raw", fmt="csv")
    read = read_generic(raw / "events.csv", ColumnMap(event_type="event_type", value="value",
                                                      domain="domain", timestamp_unit="iso"),
                        raw / "items.csv", ItemColumnMap(category="category", brand="brand",
                                                         description="description", price="price",
                                                         domain="domain"))
    ingest(read, CleanConfig(kcore_user=5, kcore_item=5), out / "dataset", "demo-store")
    leave_one_out(Dataset.load(out / "dataset")).save(out / "split")
    return out / "split"


def child(split_dir: str, threads: int, epochs: int) -> None:
    import resource

    from shiftrec.data.splits import SeqSplit
    from shiftrec.pipelines.demo import demo_sasrec

    split = SeqSplit.load(split_dir)
    t0 = time.perf_counter()
    model = demo_sasrec(epochs, threads=threads).fit(split)
    secs = time.perf_counter() - t0
    print(json.dumps({"seconds": round(secs, 2), "threads_used": model.result.threads,
                      "epochs_run": model.result.phases[0].epochs_run,
                      "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}))


def run_once(split_dir: Path, threads: int, epochs: int, timeout: float) -> dict:
    load = os.getloadavg()[0]
    cmd = [sys.executable, __file__, "child", str(split_dir), "--threads", str(threads),
           "--epochs", str(epochs)]
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}  # the library decides
    t0 = time.perf_counter()
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return {"seconds": None, "timed_out_after": timeout, "load_before": round(load, 2)}
    if p.returncode != 0:
        raise RuntimeError(p.stderr[-2000:])
    row = json.loads(p.stdout.strip().splitlines()[-1])
    row["wall_with_start"] = round(time.perf_counter() - t0, 2)
    row["load_before"] = round(load, 2)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd")
    c = sub.add_parser("child")
    c.add_argument("split")
    c.add_argument("--threads", type=int, default=0)
    c.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--timeout", type=float, default=300.0)
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    if args.cmd == "child":
        child(args.split, args.threads, args.epochs)
        return
    from shiftrec.train.threads import available_cores

    cores = available_cores()
    settings = {"before (fixed threads = cores)": cores, "after (auto)": 0}
    rows: dict[str, dict[str, list[dict]]] = {k: {"idle": [], "busy": []} for k in settings}
    with tempfile.TemporaryDirectory() as tmp:
        split_dir = make_split(Path(tmp))
        for rep in range(args.repeats):
            for cond in ("idle", "busy"):
                for name, threads in settings.items():
                    prev = rows[name][cond]
                    if prev and prev[-1].get("seconds") is None:
                        continue  # timed out once: do not spend the budget again
                    hog = None
                    if cond == "busy":
                        hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
                        time.sleep(1.0)
                    try:
                        r = run_once(split_dir, threads, args.epochs, args.timeout)
                    finally:
                        if hog is not None:
                            hog.kill()
                            hog.wait()
                    r["repeat"] = rep
                    prev.append(r)
                    print(f"{name:32s} {cond:4s} rep {rep}: {r}", flush=True)
    summary = {}
    for name, by in rows.items():
        med = {}
        for cond, rs in by.items():
            secs = [r["seconds"] for r in rs if r.get("seconds") is not None]
            med[cond] = statistics.median(secs) if secs and len(secs) == len(rs) else None
        slow = (med["busy"] / med["idle"]) if med["busy"] and med["idle"] else None
        summary[name] = {
            "median_seconds_idle": med["idle"], "median_seconds_busy": med["busy"],
            "busy_timed_out_after": args.timeout if med["busy"] is None else None,
            "slowdown_busy_vs_idle": round(slow, 2) if slow else None,
            "goal_met (<= 2x)": None if slow is None else bool(slow <= 2.0),
            "peak_rss_mb_max": max((r.get("peak_rss_mb") or 0) for rs in by.values() for r in rs),
            "threads_used": sorted({r.get("threads_used") for rs in by.values() for r in rs
                                    if r.get("threads_used") is not None})}
    out = {"what": "demo SASRec training (pipelines.demo.demo_sasrec, 8 epochs max) idle and next "
                   "to one `python -c 'while True: pass'` process",
           "cores_available": cores, "cpu_count": os.cpu_count(), "repeats": args.repeats,
           "summary": summary, "runs": rows,
           "note": "the machine is shared with other jobs: load_before is the 1-minute load "
                   "average before each run"}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
