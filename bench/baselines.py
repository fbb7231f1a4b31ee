"""Non-neural baselines on the shared benchmarks: popularity and item-kNN (full ranking).

Usage: python bench/baselines.py  -> bench/results/baselines.json
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from shiftrec.data.clean import clean
from shiftrec.data.presets import load_preset
from shiftrec.data.splits import leave_one_out
from shiftrec.evaluate.ranking import evaluate
from shiftrec.models.itemknn import ItemKNN
from shiftrec.models.popularity import Popularity
from shiftrec.paths import data_root

KEYS = ("recall@10", "ndcg@10", "recall@50", "ndcg@50", "mrr")


def main() -> None:
    if data_root() is None:
        sys.exit("shared data folder not found: set SHIFTREC_DATA")
    out = {}
    for name in ("scientific", "online-retail"):
        read, cfg = load_preset(name)
        ds, _, _ = clean(read, cfg, name)
        split = leave_one_out(ds)
        for model_name, make in (("popularity", Popularity), ("itemknn", ItemKNN)):
            t = time.perf_counter()
            model = make().fit(split)
            fit_s = time.perf_counter() - t
            valid, _ = evaluate(model, split, "valid")
            test, _ = evaluate(model, split, "test")
            out[f"{name}/{model_name}"] = {"fit_seconds": round(fit_s, 2),
                                           "valid": {k: valid[k] for k in KEYS},
                                           "test": {k: test[k] for k in KEYS}}
            print(name, model_name, {k: round(test[k], 4) for k in KEYS}, flush=True)
    dest = Path(__file__).resolve().parent / "results" / "baselines.json"
    dest.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
