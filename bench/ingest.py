"""Ingest benchmark: synthetic events -> read (parquet) -> clean -> leave-one-out split.

Each measured run happens in a fresh subprocess so peak RSS is that of ingest alone.
Writes bench/results/ingest.json. Usage: python bench/ingest.py [--sizes 1e6 3e6 1e7] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
WORK = HERE / "work"


def make_input(n_events: int) -> Path:
    from shiftrec.data.synthetic import StoreConfig, generate

    path = WORK / f"events_{n_events}.parquet"
    if not path.exists():
        WORK.mkdir(parents=True, exist_ok=True)
        n_users = max(1000, n_events // 30)
        store = generate(StoreConfig(n_users=n_users, n_items=max(1200, n_events // 800), seed=1))
        store.events.write_parquet(path)
        store.items.write_parquet(WORK / f"items_{n_events}.parquet")
    return path


def child(path: str, items: str) -> None:
    from shiftrec.data.clean import CleanConfig, clean
    from shiftrec.data.readers import ColumnMap, ItemColumnMap, read_generic
    from shiftrec.data.splits import leave_one_out

    t0 = time.perf_counter()
    read = read_generic(path, ColumnMap(event_type="event_type", value="value", domain="domain"),
                        items, ItemColumnMap(category="category", domain="domain"))
    t1 = time.perf_counter()
    ds, report, _ = clean(read, CleanConfig(kcore_user=5, kcore_item=5))
    t2 = time.perf_counter()
    split = leave_one_out(ds)
    t3 = time.perf_counter()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # MiB on Linux
    print(json.dumps({"rows_in": report["rows_in"], "accepted": report["accepted"],
                      "balanced": report["balanced"], "read_s": t1 - t0, "clean_s": t2 - t1,
                      "split_s": t3 - t2, "total_s": t3 - t0, "peak_rss_mib": rss,
                      "test_users": len(split.test)}))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", nargs="*", type=float, default=[1e6, 3e6, 1e7])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=str(HERE / "results" / "ingest.json"))
    args = ap.parse_args()
    results = []
    for size in args.sizes:
        n = int(size)
        t = time.perf_counter()
        path = make_input(n)
        gen_s = time.perf_counter() - t
        runs = []
        for _ in range(args.repeats):
            out = subprocess.run([sys.executable, __file__, "--child", str(path),
                                  str(path).replace("events_", "items_")],
                                 capture_output=True, text=True, check=True)
            runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
        med = {k: statistics.median(r[k] for r in runs)
               for k in ("read_s", "clean_s", "split_s", "total_s", "peak_rss_mib")}
        rows_in = runs[0]["rows_in"]
        results.append({"target_events": n, "rows_in": rows_in, "accepted": runs[0]["accepted"],
                        "balanced": all(r["balanced"] for r in runs), "repeats": len(runs),
                        "generate_s": round(gen_s, 2),
                        "median": {k: round(v, 3) for k, v in med.items()},
                        "events_per_s": round(rows_in / med["total_s"]),
                        "runs": runs})
        print(f"{rows_in:>11,} events: {rows_in / med['total_s']:,.0f} ev/s end-to-end "
              f"(read {med['read_s']:.2f}s clean {med['clean_s']:.2f}s split {med['split_s']:.2f}s),"
              f" peak RSS {med['peak_rss_mib']:.0f} MiB", flush=True)
    base = results[0]
    for r in results:
        r["seconds_per_million_events"] = round(r["median"]["total_s"] / r["rows_in"] * 1e6, 3)
        r["cost_ratio_vs_smallest"] = round(
            r["seconds_per_million_events"] / base["seconds_per_million_events"], 3)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    import os
    import platform

    Path(args.out).write_text(json.dumps({
        "benchmark": "ingest (read parquet + clean [exact dedup, 5-core] + leave-one-out split)",
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "python": platform.python_version()},
        "note": "medians over repeats; each run in a fresh process; machine shared and noisy",
        "results": results}, indent=2) + "\n")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2], sys.argv[3])
    else:
        main()
