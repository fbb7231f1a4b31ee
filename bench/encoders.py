"""Encoder throughput: titles per second for the packaged text encoders.

Each encoder runs in its own subprocess (so peak RSS is its own): load, one warm-up batch, then
`--runs` timed passes over the same titles; the median is reported. Titles are the first N
non-empty titles of ../shared/data/amazon/toys/items.csv.gz, or synthetic titles when the shared
data is absent.

    .venv/bin/python bench/encoders.py                  # both encoders, 2,000 titles, batch 64
    .venv/bin/python bench/encoders.py --n 500 --runs 3 --batch-size 128
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "results" / "encoders.json"


def load_titles(n: int) -> tuple[list[str], str]:
    import polars as pl

    from shiftrec.paths import data_root

    root = data_root()
    path = root / "amazon" / "toys" / "items.csv.gz" if root else None
    if path is not None and path.exists():
        df = pl.read_csv(path, infer_schema=False)
        titles = [t for t in df["title"].to_list() if t and t.strip()][:n]
        return titles, str(path.relative_to(root.parent))
    import random

    rng = random.Random(0)
    adj = ["wireless", "wooden", "kids", "deluxe", "mini", "remote control", "educational", "plush"]
    noun = ["race car", "puzzle 1000 pieces", "building blocks set", "doll house", "drone",
            "board game", "train set", "art kit"]
    brand = ["Lego", "Hasbro", "Mattel", "Melissa & Doug", "Ravensburger", "VTech"]
    titles = [f"{rng.choice(brand)} {rng.choice(adj)} {rng.choice(noun)} for ages "
              f"{rng.randint(3, 12)}+" for _ in range(n)]
    return titles, "synthetic"


def one(name: str, n: int, runs: int, batch_size: int, threads: int) -> dict:
    import torch

    torch.set_num_threads(threads)
    from shiftrec.text import load_encoder

    titles, source = load_titles(n)
    t0 = time.perf_counter()
    enc = load_encoder(name, threads=threads)
    enc.encode(titles[:batch_size], batch_size=batch_size)  # loads weights + warm-up
    load_s = time.perf_counter() - t0
    times, cpu = [], []
    for _ in range(runs):
        t, c = time.perf_counter(), time.process_time()
        x = enc.encode(titles, batch_size=batch_size)
        times.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    med = statistics.median(times)
    return {
        "encoder": name, "dim": int(x.shape[1]), "titles": len(titles), "source": source,
        "batch_size": batch_size, "runs": runs, "seconds": [round(s, 3) for s in times],
        "median_seconds": round(med, 3), "titles_per_second": round(len(titles) / med, 1),
        "cpu_seconds": [round(s, 3) for s in cpu],
        "titles_per_cpu_second": round(len(titles) / statistics.median(cpu), 1),
        "load_and_warmup_seconds": round(load_s, 2),
        "mean_title_chars": round(sum(map(len, titles)) / len(titles), 1),
        "device": getattr(enc, "device", "cpu"), "threads": threads,
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--encoders", default="minilm,use-multilingual")
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--threads", default="1,2",
                    help="comma-separated thread counts to measure (torch threads for minilm, "
                         "BLAS threads for use-multilingual)")
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--one", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.one:
        print(json.dumps(one(a.one, a.n, a.runs, a.batch_size, int(a.threads))))
        return
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    load_start = [round(x, 2) for x in os.getloadavg()]
    rows = []
    for name, threads in [(e, t) for e in a.encoders.split(",") for t in a.threads.split(",")]:
        cmd = [sys.executable, __file__, "--one", name, "--n", str(a.n), "--runs", str(a.runs),
               "--batch-size", str(a.batch_size), "--threads", threads]
        res = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
        row = json.loads(res.stdout.strip().splitlines()[-1])
        rows.append(row)
        print(f"{name:18s} threads {threads}: {row['titles_per_second']:8.1f} titles/s, "
              f"{row['titles_per_cpu_second']:8.1f} per CPU-s (median of {row['runs']}, "
              f"batch {row['batch_size']}, {row['titles']} titles, peak RSS "
              f"{row['peak_rss_mib']} MiB, load {row['load_and_warmup_seconds']} s)")
    result = {
        "benchmark": "encoder throughput (titles per second)",
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "python": platform.python_version(),
                    "load_average_at_start": load_start,
                    "load_average_at_end": [round(x, 2) for x in os.getloadavg()]},
        "results": rows,
    }
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
