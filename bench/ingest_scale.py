"""Out-of-core ingest at scale: events/s and peak RSS of `shiftrec ingest generic DIR`.

Synthetic events are generated in chunks of 5M rows to partitioned Parquet under bench/work/scale
(gitignored; the files are reused between runs). Each measured run is the real CLI in a fresh
process under `/usr/bin/time -v` (peak RSS of that process), at `nice -n 15`. Cleaning: exact
dedup (0.2% of each partition repeats rows of the previous partition: duplicates across files),
5-core on users and items, quarantine (0.01% rows without a user).

Writes bench/results/ingest_scale.json. Usage:
  python bench/ingest_scale.py [--sizes 1e7 3e7 1e8] [--engines streaming] [--keep-output]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
WORK = HERE / "work" / "scale"
CHUNK = 5_000_000
T0_US = 1_672_531_200_000_000  # 2023-01-01 UTC


def generate(n_events: int) -> Path:
    """`n_events` synthetic events in Parquet partitions of CHUNK rows (written once)."""
    import numpy as np
    import polars as pl

    folder = WORK / f"events_{n_events}"
    if (folder / "_DONE").exists():
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    # users: ~30 events each, plus a tail of users with ~2 events (3% of events); items: Zipf over
    # n_events / 50 ids, so rare items exist: the 5-core cuts users and items for several passes
    n_users, n_items = max(1000, n_events // 30), max(2000, n_events // 50)
    carry = None
    for k, start in enumerate(range(0, n_events, CHUNK)):
        m = min(CHUNK, n_events - start)
        rng = np.random.default_rng(k)
        df = pl.DataFrame({
            "u": np.where(rng.random(m) < 0.03, n_users + rng.integers(0, n_users // 2, m),
                          rng.integers(0, n_users, m)),
            "i": rng.zipf(1.3, m) % n_items,
            "t": T0_US + rng.integers(0, 365 * 86400, m) * 1_000_000,
            "e": rng.choice(np.array(["view", "cart", "purchase"]), m, p=[0.8, 0.15, 0.05]),
        }).select(
            pl.when(pl.int_range(pl.len()) % 10_000 == 17).then(None)
            .otherwise(pl.format("u{}", pl.col("u"))).alias("user_id"),
            pl.format("i{}", pl.col("i")).alias("item_id"),
            pl.col("t").cast(pl.Datetime("us", "UTC")).alias("timestamp"),
            pl.col("e").alias("event_type"), pl.lit(1.0).alias("value"),
            pl.lit("store").alias("domain"))
        if carry is not None:  # exact duplicates of the previous partition's rows
            df = pl.concat([carry, df.slice(carry.height)])
        carry = df.filter(pl.col("user_id").is_not_null()).sample(m // 500, seed=k)
        df.write_parquet(folder / f"part-{k:05d}.parquet")
        print(f"  generated partition {k} ({start + m:,}/{n_events:,})", flush=True)
    (folder / "_DONE").write_text("")
    return folder


def tree_rss_kb(root: int) -> int:
    """Summed VmRSS (kB) of `root` and all its descendants, from /proc."""
    parent: dict[int, int] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    parent[int(d)] = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    tree, grew = {root}, True
    while grew:
        new = {p for p, pp in parent.items() if pp in tree and p not in tree}
        tree |= new
        grew = bool(new)
    total = 0
    for pid in tree:
        try:
            with open(f"/proc/{pid}/status") as f:
                total += next((int(line.split()[1]) for line in f if line.startswith("VmRSS:")), 0)
        except OSError:
            continue
    return total


def measure(folder: Path, engine: str, out: Path) -> dict:
    exe = Path(sys.executable).with_name("shiftrec")
    cmd = ["nice", "-n", "15", "/usr/bin/time", "-v", str(exe), "ingest", "generic", str(folder),
           "--engine", engine, "--kcore", "5", "--map", "event_type=event_type",
           "--map", "value=value", "--map", "domain=domain", "-o", str(out)]
    load0 = os.getloadavg()
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    tree_peak_kb = 0
    while proc.poll() is None:  # the ingest and its worker processes, summed, every 0.2 s
        tree_peak_kb = max(tree_peak_kb, tree_rss_kb(proc.pid))
        time.sleep(0.2)
    stdout, stderr = proc.communicate()
    wall = time.perf_counter() - t
    load1 = os.getloadavg()
    if proc.returncode:
        raise SystemExit(f"ingest failed ({proc.returncode}):\n{stdout}\n{stderr[-3000:]}")
    rss_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", stderr).group(1))
    user = float(re.search(r"User time \(seconds\): ([\d.]+)", stderr).group(1))
    system = float(re.search(r"System time \(seconds\): ([\d.]+)", stderr).group(1))
    rep = json.loads((out / "ingest_report.json").read_text())
    return {"engine": engine, "rows_in": rep["rows_in"], "accepted": rep["accepted"],
            "quarantined": rep["quarantined"], "filtered_by_rule": rep["filtered_by_rule"],
            "kcore_iterations": rep["kcore_iterations"], "balanced": rep["balanced"],
            "wall_s": round(wall, 2), "cpu_s": round(user + system, 2),
            "events_per_s": round(rep["rows_in"] / wall),
            "events_per_cpu_s": round(rep["rows_in"] / (user + system)),
            "peak_rss_mib": round(rss_kb / 1024, 1),
            "peak_rss_all_processes_mib": round(tree_peak_kb / 1024, 1),
            "phases_s": rep.get("engine", {}).get("seconds"),
            "buckets": rep.get("engine", {}).get("buckets"),
            "workers": rep.get("engine", {}).get("workers"),
            "loadavg_before": [round(x, 2) for x in load0], "loadavg_after": [round(x, 2) for x in load1],
            "command": " ".join(cmd[3:])}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", nargs="*", type=float, default=[1e7, 3e7, 1e8])
    ap.add_argument("--engines", nargs="*", default=["streaming"])
    ap.add_argument("--out", default=str(HERE / "results" / "ingest_scale.json"))
    ap.add_argument("--keep-output", action="store_true")
    args = ap.parse_args()
    out_path = Path(args.out)
    prev = json.loads(out_path.read_text()) if out_path.exists() else {}
    old = prev.get("results", [])
    results = {(r["target_events"], r["engine"]): r for r in old}
    for size in args.sizes:
        n = int(size)
        t = time.perf_counter()
        folder = generate(n)
        gen_s = time.perf_counter() - t
        for engine in args.engines:
            out = WORK / f"out_{n}_{engine}"
            r = {"target_events": n, **measure(folder, engine, out)}
            r["input_bytes"] = sum(f.stat().st_size for f in folder.glob("*.parquet"))
            r["output_bytes"] = sum(f.stat().st_size for f in out.glob("*.parquet"))
            r["generate_s"] = round(gen_s, 1)
            if not args.keep_output:
                shutil.rmtree(out)
            results[(n, engine)] = r
            print(f"{engine:9s} {r['rows_in']:>12,} events: {r['wall_s']:7.1f}s wall, "
                  f"{r['events_per_s']:>10,} ev/s ({r['events_per_cpu_s']:,} per CPU-s), peak RSS "
                  f"{r['peak_rss_mib']:,.0f} MiB (all processes {r['peak_rss_all_processes_mib']:,.0f}), load {r['loadavg_before'][0]}->{r['loadavg_after'][0]}",
                  flush=True)
            out_path.parent.mkdir(parents=True, exist_ok=True)
            out_path.write_text(json.dumps({
                "benchmark": "shiftrec ingest generic FOLDER (Parquet partitions of 5M rows): map, "
                             "exact dedup, 5-core, write dataset folder",
                "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                            "python": platform.python_version(),
                            "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
                                                / 2**30, 1)},
                "note": "one run per size and engine, each a fresh `shiftrec` process under "
                        "/usr/bin/time -v at nice 15; peak_rss_mib: the largest single process "
                        "(time -v); peak_rss_all_processes_mib: the ingest and its worker "
                        "processes summed (sampled every 0.2 s from /proc); the machine is shared "
                        "with other agents (see loadavg), so wall-clock events/s is a lower bound",
                "results": sorted(results.values(), key=lambda r: (r["target_events"], r["engine"])),
                **({"earlier_runs": prev["earlier_runs"]} if "earlier_runs" in prev else {}),
            }, indent=2) + "\n")


if __name__ == "__main__":
    main()
