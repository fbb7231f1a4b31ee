"""Zero-shot on the whole of Online Retail I (comparable protocol: the lines of an invoice in a
seeded random order) against popularity: the Online Retail II checkpoint with nothing trained on
Online Retail I, plain, with the text path (weight, decay and transform chosen on validation),
with the checkpoint's repeat gate (counted on its own Online Retail II training sequences), and
both; every item ranked, and with each user's history excluded (what `shiftrec serve` does).

    python bench/online_retail_zero_shot.py [--work-dir out/ortt] [--cache-dir DIR]

Needs the Online Retail II checkpoint of bench/transfer_table.py (`--dataset
online-retail-shuffle ... --work-dir out/ortt --rows pretrain --pretrain-epochs 2 --epochs 2`);
the gate is added to a copy of it (`pipelines.transfer.add_repeat_gate`, the weights byte for
byte the same), from the source split the checkpoint records. Writes
bench/results/online_retail_zero_shot.json.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "results" / "online_retail_zero_shot.json"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work-dir", type=Path, default=Path("out/ortt"),
                    help="bench/transfer_table.py's work folder holding online-retail-shuffle-pretrained")
    ap.add_argument("--cache-dir", type=Path,
                    default=Path(os.environ.get("SHIFTREC_CACHE", Path.home() / ".cache/shiftrec"))
                    / "text-cache")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)

    import torch

    from shiftrec.evaluate.ranking import evaluate
    from shiftrec.evaluate.significance import paired_test
    from shiftrec.models.popularity import Popularity
    from shiftrec.pipelines.transfer import (
        add_repeat_gate,
        evaluate_net,
        events_before,
        load_dataset,
        make_source,
        select_text_path,
        zero_shot_net,
    )
    from shiftrec.text.transform import parse_transforms

    torch.set_num_threads(args.threads)
    ck = args.work_dir / "online-retail-shuffle-pretrained"
    if not (ck / "manifest.json").exists():
        sys.exit(f"no Online Retail II checkpoint in {ck}: run bench/transfer_table.py --dataset "
                 "online-retail-shuffle ... --rows pretrain first (see this script's docstring)")
    t0 = time.perf_counter()
    # the target as bench/transfer_table.py prepares it (the same split, the same text cache)
    src = make_source(load_dataset("online-retail-shuffle"), "minilm", cache_dir=args.cache_dir)
    split, text = src.split, src.text
    # the checkpoint's own sources: Online Retail II before Online Retail I's first event
    src_ds = events_before(load_dataset("online-retail-ii-shuffle"), int(split.train.times.min()))
    sources = [make_source(src_ds, "minilm", cache_dir=args.cache_dir)]
    gated = args.work_dir / "online-retail-shuffle-pretrained-gated"
    gate = add_repeat_gate(ck, [s.split for s in sources], gated)
    pop = Popularity().fit(split)
    rows: dict[str, Any] = {}
    for ex in (False, True):
        pm, pr = evaluate(pop, split, "test", exclude_history=ex)
        rows[f"popularity{'~unseen' if ex else ''}"] = {"ndcg@10": float(pm["ndcg@10"]),
                                                         "recall@10": float(pm["recall@10"])}
        for with_gate in (False, True):
            for with_text in (False, True):
                net = zero_shot_net(gated, split, text, "minilm", repeat_gate=with_gate)
                choice = (select_text_path(net, split, threads=args.threads, exclude_seen=ex,
                                           transforms=parse_transforms("none,centre,whiten"))
                          if with_text else None)
                m, r = evaluate_net(net, split, "test", threads=args.threads, exclude_seen=ex)
                key = ("zs" + ("+text" if with_text else "") + ("~rg" if with_gate else "")
                       + ("~unseen" if ex else ""))
                test = paired_test(np.asarray(pr), np.asarray(r))
                rows[key] = {"ndcg@10": float(m["ndcg@10"]), "recall@10": float(m["recall@10"]),
                             "x_popularity": float(m["ndcg@10"] / pm["ndcg@10"]),
                             "p_vs_popularity": float(test["t_test_p"])}
                if choice is not None:
                    rows[key]["text_path"] = {k: choice[k] for k in ("weight", "decay", "transform",
                                                                      "valid_ndcg@10") if k in choice}
                print(f"{key:24s} NDCG@10 {m['ndcg@10']:.4f}  {m['ndcg@10'] / pm['ndcg@10']:.2f}x "
                      f"popularity {pm['ndcg@10']:.4f} (p = {test['t_test_p']:.2g})", flush=True)
    res = {"dataset": "online-retail-shuffle (whole: users, items and splits of bench/transfer_table.py)",
           "users": len(split.user_ids), "items": split.n_items,
           "checkpoint": str(ck), "repeat_gate": gate, "rows": rows,
           "command": "python " + " ".join(["bench/online_retail_zero_shot.py", *sys.argv[1:]]),
           "wall_seconds": round(time.perf_counter() - t0, 1),
           "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(res, indent=1))
    print(f"wrote {OUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
