"""Ingest every named dataset in the shared data folder; write each ingest report.

Usage: python bench/ingest_real.py [--data-root DIR]  -> bench/results/ingest_real.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from shiftrec.data.pipeline import ingest
from shiftrec.data.presets import PRESETS, load_preset
from shiftrec.paths import data_root

HERE = Path(__file__).resolve().parent


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data-root", default=None)
    args = ap.parse_args()
    root = data_root(args.data_root)
    if root is None:
        sys.exit("shared data folder not found: set SHIFTREC_DATA or pass --data-root")
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in PRESETS:
            t = time.perf_counter()
            read, cfg = load_preset(name, root)
            rep = ingest(read, cfg, Path(tmp) / name, name)
            secs = time.perf_counter() - t
            out[name] = {k: rep[k] for k in ("sources", "rows_in", "accepted", "quarantined",
                                             "filtered_by_rule", "balanced", "quarantine_reasons",
                                             "catalogue", "summary")} | {"seconds": round(secs, 2)}
            s = rep["summary"]
            print(f"{name:26s} in {rep['rows_in']:>8,} = acc {rep['accepted']:>8,} + q {rep['quarantined']:>5,}"
                  f" + filt {rep['filtered_total']:>7,}  users {s['users']:>6,} items {s['items']:>6,}"
                  f"  {'ok' if rep['balanced'] else 'UNBALANCED'}", flush=True)
    dest = HERE / "results" / "ingest_real.json"
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(json.dumps(out, indent=2, default=str) + "\n")


if __name__ == "__main__":
    main()
