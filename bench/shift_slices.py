"""Recommendations that follow the shift: NDCG@10 / Recall@10 on the shifted and stable slices.

Datasets and splits (full ranking over all items, histories cut to the last 50 events):
  online-retail/loo                 UCI Online Retail I, UniSRec recipe (user = invoice), leave-one-out
  online-retail/temporal            same data, global temporal split: no invoice spans the cut, so
                                    the test set is empty (recorded as not applicable)
  online-retail-customers/temporal  Online Retail I keyed by customer (store rules), temporal split
  amazon-toys/loo, amazon-toys/temporal

Slices (shiftrec.interest.slices): shifted = the test item's topic is not among the user's
dominant history topics; stable = the others. Topics are learned from item title embeddings
(minilm, k-means with k chosen by silhouette, shiftrec.interest.topics).

Models: popularity, topic_profile (half-life chosen on validation), sasrec, shiftaware (ours:
signals chosen by the validation ablation, warm-started from the SASRec run of the same seed),
shiftaware-none (control: the same warm start and fine-tuning with every shift signal off).
Model selection and early stopping use validation only (a fixed subset of `--valid-users`).

Every run is resumable: a finished run writes out/shift_slices/<data>/runs/<model>-s<seed>/
row.json (+ ranks.npz); training checkpoints every epoch and resumes. `report` merges the rows
into bench/results/shift_slices.json and shift_slices.md (paired test ours vs SASRec).

  python bench/shift_slices.py prep
  python bench/shift_slices.py run --data amazon-toys/loo --model sasrec
  python bench/shift_slices.py ablate --data amazon-toys/loo
  python bench/shift_slices.py run --data amazon-toys/loo --model shiftaware
  python bench/shift_slices.py report
  python bench/shift_slices.py run --data amazon-toys/temporal --seed 1 --model sasrec ...
  python bench/shift_slices.py seeds [--seed 0 --seed 1 --seed 2]   # mean ± std over seeds
  python bench/shift_slices.py run --data amazon-toys/temporal --seed 1 --model sasrec-p10 \
      --model shiftfusion:sasrec-p10     # SASRec with early-stopping patience 10 (a fairer check)

`seeds` writes bench/results/shift_slices_seeds.{json,md} (the seed-0 table stays as `report`
wrote it) and keeps every run's per-user test ranks in shift_slices_seeds.ranks.npz, so the
paired tests can be re-run without the work folders. Seeds > 0 use the variant chosen on seed 0's
validation (out/shift_slices/chosen.json, or the setting's ablation.json).

The variants table, the per-setting budgets and the selection rule are the library's
(shiftrec.models.presets, shiftrec.evaluate.selection); `shiftrec shift-slices SPLIT --topics
TOPICS --setting DATA` runs one setting's column from the CLI with the same tables and rule.
Run with the installed package (`pip install -e .`); this script does not touch sys.path.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import re
import resource
import time
from pathlib import Path
from typing import Any

import numpy as np

from shiftrec.evaluate.selection import (
    SELECTION,
    SHIFT_FIRST,
    select_shift_aware,
    select_shift_first,
    select_topic_profile,
    slice_metrics,
    slice_scores,
)
from shiftrec.models import presets

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
WORK = ROOT / "out" / "shift_slices"

DATA = {  # key -> (preset, split kind)
    "online-retail/loo": ("online-retail", "loo"),
    "online-retail/temporal": ("online-retail", "temporal"),
    "online-retail-customers/temporal": ("online-retail-customers", "temporal"),
    "amazon-toys/loo": ("amazon-toys", "loo"),
    "amazon-toys/temporal": ("amazon-toys", "temporal"),
}
SASREC_PATIENCE = re.compile(r"sasrec-p\d+")  # SASRec with another early-stopping patience
TEMPORAL = (0.9, 0.8)  # test_start, valid_start as time quantiles
KS = (10, 20)

# training budget per dataset (epochs cap; early stopping on validation with patience) and the
# ablation variants of ours: the library's tables (shiftrec.models.presets)
EPOCHS = {k: st.sasrec_epochs for k, st in presets.SETTINGS.items()}
FT_EPOCHS = {k: st.finetune_epochs for k, st in presets.SETTINGS.items()}
VARIANTS = {k: dict(v) for k, v in presets.VARIANTS.items()}  # keyword overrides of ShiftAwareConfig
DEFAULT_VARIANTS = {k: list(st.variants) for k, st in presets.SETTINGS.items()}
OURS_TEXT = (
    "Ours = shiftrec.models.shiftaware.ShiftAware: SASRec's transformer (same layout, hidden 64) "
    "warm-started from the SASRec row of the same seed and fine-tuned with shift signals: `time` = "
    "bucketised log time-interval embeddings + a per-head attention bias on the elapsed time "
    "between events; `trend` = log P(item | platform popularity in the days before the user's "
    "last event, half-lives 3 and 90 days); `topic` = log P(topic(item) | recent topic profile) "
    "with a signed weight; `flow` = log P(topic(item) | topic migration matrix); the prior weights "
    "come from an interest gate fed by the shift-detector features (JSD of fast vs slow topic "
    "profiles, entropies, length, last gap, how much of the transformer's prediction stays in "
    "the user's topics) and the transformer state (`fixed-gate`: constant weights); "
    "`shift-loss` = training targets outside the prefix's dominant topics weigh x1.5/2/3 in the "
    "cross-entropy. `none` = the same warm start and fine-tuning with every signal off (control "
    "for the extra epochs). Variants are compared on validation only. "
    "`ours + item flows, gated` = shiftrec.models.fusion.ShiftFusion over a saved model of this "
    "table (SASRec, or ours with the chosen signals): score = log softmax(model) + w[bin] * log "
    "p_flow, with p_flow = where users who had the history's recent items went next (item-to-item "
    "transitions counted on the training sequences, recency-weighted: the item-level migration "
    "flows) and the interest gate = 3 bins of the shift statistic (JSD of the fast- vs slow-decay "
    "topic profile), one weight per bin, all chosen on validation.")
# the signals used by "shiftaware" per dataset, filled from the ablation (see ablation.json)
CHOSEN_DEFAULT = "all"


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def dkey(data: str) -> str:
    return data.replace("/", "_")


def ddir(data: str) -> Path:
    return WORK / dkey(data)


def write_json(path: Path, obj: Any) -> None:
    from shiftrec.manifest import write_json as wj

    wj(path, obj)


# ----------------------------------------------------------------------------- prep


def prep_one(data: str, cache_dir: str) -> dict[str, Any]:
    from shiftrec.data.clean import clean
    from shiftrec.data.presets import load_preset
    from shiftrec.data.splits import leave_one_out, temporal
    from shiftrec.interest.topics import TopicConfig, TopicSource, build_topics
    from shiftrec.text.features import encode_items

    d = ddir(data)
    if (d / "prep.json").exists():
        return json.loads((d / "prep.json").read_text())
    preset, kind = DATA[data]
    t0 = time.perf_counter()
    rr, cc = load_preset(preset)
    ds, _, _ = clean(rr, cc, preset)
    split = leave_one_out(ds) if kind == "loo" else temporal(ds, *TEMPORAL)
    info: dict[str, Any] = {"data": data, "preset": preset, "split": kind,
                            "users": len(split.user_ids), "items": split.n_items,
                            "events": ds.events.height, "train_events": int(len(split.train.items)),
                            "valid_users": len(split.valid), "test_users": len(split.test),
                            "split_meta": split.meta}
    if len(split.test) == 0:
        info["not_applicable"] = ("the split has no test user: with user = invoice every event of "
                                  "a user shares one timestamp, so no user has events on both "
                                  "sides of the temporal cut; see online-retail-customers/temporal")
    else:
        split.save(d / "split")
        emb = encode_items(ds.items, split.item_map, "minilm", cache_dir=cache_dir, threads=1)
        fr = split.item_map.frame().join(ds.items, on=["domain", "item_id"], how="left",
                                         maintain_order="left")
        tp = build_topics(fr, TopicConfig(source=TopicSource.LEARNED), embeddings=emb[1:],
                          encoder="minilm")
        tp.save(d / "topics")
        info["topics"] = {"n": tp.n_topics, "source": tp.source, "encoder": "minilm",
                          "silhouette": tp.meta.get("silhouette")}
    info["prep_seconds"] = time.perf_counter() - t0
    d.mkdir(parents=True, exist_ok=True)
    write_json(d / "prep.json", info)
    return info


def load_data(data: str) -> tuple[Any, np.ndarray, list[str], dict[str, np.ndarray]]:
    from shiftrec.data.splits import SeqSplit
    from shiftrec.interest.slices import SliceConfig, shift_slices
    from shiftrec.interest.topics import Topics

    d = ddir(data)
    split = SeqSplit.load(d / "split")
    tp = Topics.load(d / "topics")
    it = tp.aligned(split.item_map)
    masks = shift_slices(split.test, it, SliceConfig())
    return split, it, tp.names, masks


# ----------------------------------------------------------------------------- runs


def budget(args: argparse.Namespace) -> presets.Budget:
    return presets.Budget(lr=args.lr, patience=args.patience, finetune_patience=args.ft_patience,
                          valid_max_users=args.valid_users, threads=args.threads)


def _progress(tag: str) -> Any:
    def prog(ev: Any) -> None:
        if ev.kind == "epoch":
            print(f"[{tag}] epoch {ev.epoch} loss {ev.loss:.4f} valid ndcg@10 "
                  f"{ev.metrics.get('ndcg@10', float('nan')):.5f} ({ev.seconds:.0f}s)"
                  f"{' *' if ev.improved else ''}", flush=True)
    return prog


def build_model(name: str, data: str, split: Any, it: np.ndarray, names: list[str], seed: int,
                args: argparse.Namespace, run_dir: Path) -> tuple[Any, dict[str, Any]]:
    """An unfitted (or, for topic_profile, fitted) model and its settings."""
    from shiftrec.models.popularity import Popularity

    if name == "popularity":
        return Popularity(), {}
    if name == "itemknn":  # the item-level flows alone (what the fusion adds to a model)
        from shiftrec.models.itemknn import ItemKNN

        return ItemKNN(), {}
    if name == "topic_profile":
        return select_topic_profile(split, it, names)
    if name == "sasrec" or SASREC_PATIENCE.fullmatch(name):
        # sasrec-p<N>: the same baseline with early-stopping patience N (a check that a longer
        # patience does not change the comparison; ours still warm-starts from `sasrec`)
        b = budget(args) if name == "sasrec" else dataclasses.replace(
            budget(args), patience=int(name.removeprefix("sasrec-p")))
        return presets.sasrec(EPOCHS[data], seed, b, **presets.checkpointing(
            run_dir / "ckpt"), progress=_progress(f"{data} {name}")), {
            "epochs_cap": EPOCHS[data], "patience": b.patience}
    if name.startswith("shiftaware"):
        variant = name.split(":", 1)[1]
        warm = WORK / dkey(data) / "runs" / f"sasrec-s{seed}" / "model"
        if not (warm / "manifest.json").exists():
            raise SystemExit(f"run sasrec (seed {seed}) on {data} first: ours warm-starts from it")
        m = presets.shiftaware_variant(variant, it, warm, FT_EPOCHS[data], seed, budget(args),
                                       **presets.checkpointing(run_dir / "ckpt"),
                                       progress=_progress(f"{data} {name}"))
        return m, {"variant": variant, "overrides": VARIANTS[variant],
                   "warm_start": str(warm.relative_to(ROOT)), "epochs_cap": FT_EPOCHS[data]}
    if name.startswith("shiftfusion:"):
        from shiftrec.models.fusion import ShiftFusion
        from shiftrec.models.registry import load_model

        base = name.split(":", 1)[1]
        src = WORK / dkey(data) / "runs" / f"{base.replace(':', '=')}-s{seed}" / "model"
        if not (src / "manifest.json").exists():
            raise SystemExit(f"run {base} (seed {seed}) on {data} first: the fusion starts from it")
        return ShiftFusion(load_model(src), item_topic=it, base_fitted=True), {
            "base": base, "base_model": str(src.relative_to(ROOT))}
    raise SystemExit(f"unknown model {name}")


def chosen_variant(data: str, key: str = "chosen") -> str:
    p = ddir(data) / "ablation.json"
    if p.exists():
        return json.loads(p.read_text())[key]
    p = WORK / "chosen.json"  # a variant chosen on another dataset's validation
    if p.exists():
        return json.loads(p.read_text()).get(data, json.loads(p.read_text()).get("*", CHOSEN_DEFAULT))
    return CHOSEN_DEFAULT


def run(data: str, model: str, seed: int, args: argparse.Namespace, test: bool = True) -> dict[str, Any]:
    """Fit one model, evaluate validation (+ test with slices); cached in the run folder."""
    import torch

    from shiftrec.evaluate.metrics import all_metrics
    from shiftrec.evaluate.ranking import rank_targets, sliced

    if model == "shiftaware":
        model = f"shiftaware:{chosen_variant(data)}"
    elif model == "shiftaware-shift-first":
        model = f"shiftaware:{chosen_variant(data, 'chosen_shift_first')}"
    elif model == "shiftaware-none":
        model = "shiftaware:none"
    elif model == "shiftfusion:shiftaware":
        model = f"shiftfusion:shiftaware:{chosen_variant(data)}"
    run_dir = ddir(data) / "runs" / f"{model.replace(':', '=')}-s{seed}"
    row_path = run_dir / "row.json"
    old = json.loads(row_path.read_text()) if row_path.exists() else None
    if old is not None and (not test or old.get("test")):
        return old
    torch.set_num_threads(args.threads)
    split, it, names, masks = load_data(data)
    t0 = time.perf_counter()
    if old is not None and (run_dir / "model" / "manifest.json").exists():
        # validated earlier (ablation): evaluate the saved model on test, keep its fit time
        from shiftrec.models.registry import load_model

        m = load_model(run_dir / "model")
        settings = old["settings"]
        fit_s = float(old["fit_seconds"])
    else:
        m, settings = build_model(model, data, split, it, names, seed, args, run_dir)
        if model != "topic_profile":
            m.fit(split)
        fit_s = time.perf_counter() - t0
    run_dir.mkdir(parents=True, exist_ok=True)
    if (hasattr(m, "net") or model.startswith("shiftfusion")) \
            and not (run_dir / "model" / "manifest.json").exists():
        m.save(run_dir / "model")
    if model.startswith("shiftfusion"):
        settings = {**settings, "smoothing": m.smoothing, "bin_edges": m.edges.tolist(),
                    "bin_weights": m.bin_weights.tolist(), "selection": m.selection}
    t1 = time.perf_counter()
    vr = rank_targets(m, split.valid, batch_size=512)
    row: dict[str, Any] = {"data": data, "model": model, "seed": seed, "settings": settings,
                           "fit_seconds": round(fit_s, 1), "valid": all_metrics(vr, KS)}
    res = getattr(m, "result", None)
    if res is not None:
        ph = res.phases[-1]
        row["training"] = {"epochs_run": ph.epochs_run, "best_epoch": ph.best_epoch,
                           "best_valid_subset_ndcg@10": ph.best_metric,
                           "stopped_early": ph.stopped_early, "train_seconds": round(res.seconds, 1),
                           "resumed_from": res.resumed_from}
    elif old is not None and old.get("training"):
        row["training"] = old["training"]
    if test:
        tr = rank_targets(m, split.test, batch_size=512)
        row["test"] = {"all": all_metrics(tr, KS), **sliced(tr, masks, KS)}
        if hasattr(m, "explain_gate") and m.config.n_priors:
            row["gate_on_test"] = gate_summary(m, split.test, masks)
        np.savez_compressed(run_dir / "ranks.npz", test=tr, valid=vr)
    else:
        np.savez_compressed(run_dir / "ranks.npz", valid=vr)
    row["eval_seconds"] = round(time.perf_counter() - t1, 1)
    row["wall_seconds"] = round(fit_s + row["eval_seconds"], 1)
    row["peak_rss_mb"] = round(peak_rss_mb(), 1)
    row["machine"] = machine()
    write_json(row_path, row)
    if (run_dir / "ckpt").exists():  # the saved model is the result; drop per-epoch checkpoints
        import shutil

        shutil.rmtree(run_dir / "ckpt")
    msg = f"{data} {model} s{seed}: valid ndcg@10 {row['valid']['ndcg@10']:.4f}"
    if test:
        msg += " | test " + ", ".join(f"{k} {v['ndcg@10']:.4f}" for k, v in row["test"].items())
    print(msg + f" ({row['wall_seconds']:.0f}s)", flush=True)
    return row


def gate_summary(m: Any, es: Any, masks: dict[str, np.ndarray]) -> dict[str, Any]:
    """Mean gate weight per prior on each slice, and how well each weight separates shifted
    from stable users (AUC; 0.5 = the gate does not react to shifts)."""
    from scipy.stats import rankdata

    ws = []
    for a in range(0, len(es), 512):
        rows = range(a, min(len(es), a + 512))
        g = m.explain_gate([es.history[i][-50:] for i in rows],
                           [es.history.times_of(i)[-50:] for i in rows])
        ws.append(g["weights"])
    w = np.concatenate(ws)
    out: dict[str, Any] = {}
    sh, st = masks["shifted"], masks["stable"]
    for k, name in enumerate(g["prior_names"].tolist()):
        x = w[:, k]
        r = rankdata(np.r_[x[sh], x[st]])
        n1, n0 = int(sh.sum()), int(st.sum())
        auc = (r[:n1].sum() - n1 * (n1 + 1) / 2) / max(n1 * n0, 1)
        out[name] = {"mean_shifted": float(x[sh].mean()), "mean_stable": float(x[st].mean()),
                     "auc_shifted_vs_stable": float(auc)}
    return out


def machine() -> dict[str, Any]:
    import os

    return {"cpus": os.cpu_count(), "load_avg": [round(x, 2) for x in os.getloadavg()],
            "python": platform.python_version(), "shared_with_other_agents": True}


def ablate(data: str, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    """Every variant of ours, evaluated on validation only; then `select`."""
    for v in args.variants or DEFAULT_VARIANTS.get(data, ["none", "all"]):
        run(data, f"shiftaware:{v}", seed, args, test=False)
    run(data, "sasrec", seed, args, test=True)
    return select(data, seed)


def _valid_slices(run_dir: Path, vm: dict[str, np.ndarray]) -> dict[str, Any]:
    """Validation metrics of a finished run (its ranks.npz), overall and per slice mask."""
    r = np.load(run_dir / "ranks.npz", allow_pickle=False)["valid"]
    return slice_metrics(r, vm, KS)


def _choose(cands: dict[str, dict[str, Any]], base: dict[str, Any]) -> str:
    """SELECTION (shiftrec.evaluate.selection) over validation slice metrics, against SASRec's."""
    return select_shift_aware({c: slice_scores(m) for c, m in cands.items()}, slice_scores(base)).chosen


def _valid_masks(data: str) -> dict[str, np.ndarray]:
    from shiftrec.interest.slices import shift_slices

    split, it, _, _ = load_data(data)
    return shift_slices(split.valid, it)


def select(data: str, seed: int) -> dict[str, Any]:
    """Choose our variant from the validation ranks of every finished variant run."""
    vm = _valid_masks(data)
    runs = ddir(data) / "runs"
    base = _valid_slices(runs / f"sasrec-s{seed}", vm)
    rows: dict[str, Any] = {}
    for p in sorted(runs.glob(f"shiftaware=*-s{seed}")):
        if not (p / "row.json").exists():
            continue
        r = json.loads((p / "row.json").read_text())
        v = r["model"].split(":", 1)[1]
        rows[v] = {"valid": _valid_slices(p, vm), "training": r.get("training"),
                   "wall_seconds": r["wall_seconds"]}
    chosen = _choose({v: r["valid"] for v, r in rows.items()}, base)
    shift_first = select_shift_first({v: slice_scores(r["valid"]) for v, r in rows.items()}).chosen
    out = {"data": data, "seed": seed, "selection": SELECTION, "sasrec_valid": base,
           "valid_slices": {k: int(m.sum()) for k, m in vm.items()},
           "variants": rows, "overrides": {v: VARIANTS[v] for v in rows}, "chosen": chosen,
           "chosen_shift_first": shift_first,
           "shift_first_selection": SHIFT_FIRST}
    write_json(ddir(data) / "ablation.json", out)
    print(f"{data}: chosen variant '{chosen}'", flush=True)
    return out


def select_fusion(data: str, seed: int) -> dict[str, Any] | None:
    """Choose among the finished shiftfusion runs by SELECTION, on validation ranks only."""
    runs = ddir(data) / "runs"
    cands = [p for p in sorted(runs.glob(f"shiftfusion=*-s{seed}")) if (p / "ranks.npz").exists()]
    if not cands or not (runs / f"sasrec-s{seed}" / "ranks.npz").exists():
        return None
    vm = _valid_masks(data)
    base = _valid_slices(runs / f"sasrec-s{seed}", vm)
    rows = {json.loads((p / "row.json").read_text())["model"]: _valid_slices(p, vm) for p in cands}
    out = {"data": data, "seed": seed, "selection": SELECTION, "sasrec_valid": base,
           "candidates": rows, "chosen": _choose(rows, base)}
    write_json(ddir(data) / "fusion_selection.json", out)
    return out


# ----------------------------------------------------------------------------- report


def report(args: argparse.Namespace) -> None:
    from shiftrec.evaluate.significance import paired_test

    datasets, rows, tests, ablations, gates = {}, [], {}, {}, {}
    for data in DATA:
        d = ddir(data)
        if not (d / "prep.json").exists():
            continue
        info = json.loads((d / "prep.json").read_text())
        datasets[data] = info
        if info.get("not_applicable"):
            continue
        _, _, _, masks = load_data(data)
        from shiftrec.interest.slices import slice_summary

        info["slices"] = slice_summary(masks)
        if (d / "ablation.json").exists():
            ablations[data] = json.loads((d / "ablation.json").read_text())
        fsel = select_fusion(data, 0)
        if fsel is not None:
            ablations.setdefault(data, {})["fusion_chosen"] = fsel["chosen"]
            ablations[data]["fusion_valid"] = {
                m: {sl: x[sl]["ndcg@10"] for sl in ("shifted", "stable", "all")}
                for m, x in fsel["candidates"].items()}
        runs = sorted((d / "runs").glob("*/row.json")) if (d / "runs").exists() else []
        by: dict[tuple[str, int], tuple[dict[str, Any], Path]] = {}
        for p in runs:
            r = json.loads(p.read_text())
            if "test" not in r:
                continue
            by[(r["model"], r["seed"])] = (r, p.parent)
            if r.get("gate_on_test"):
                gates[f"{data}|{r['model']}|s{r['seed']}"] = r["gate_on_test"]
            for sl in ("all", "shifted", "stable"):
                t = r["test"][sl]
                rows.append({"data": data, "model": r["model"], "variant": r["settings"].get("variant"),
                             "seed": r["seed"], "slice": sl, "n_users": t["n_users"],
                             "ndcg@10": t["ndcg@10"], "recall@10": t["recall@10"],
                             "ndcg@20": t["ndcg@20"], "recall@20": t["recall@20"],
                             "wall_seconds": r["wall_seconds"],
                             "epochs": (r.get("training") or {}).get("epochs_run"),
                             "best_epoch": (r.get("training") or {}).get("best_epoch")})
        for (mname, seed), (_r, p) in by.items():
            if mname == "sasrec" or ("sasrec", seed) not in by:
                continue
            if not mname.startswith(("shiftaware", "shiftfusion")):
                continue
            a = np.load(by[("sasrec", seed)][1] / "ranks.npz", allow_pickle=False)["test"]
            b = np.load(p / "ranks.npz", allow_pickle=False)["test"]
            res = {}
            for sl in ("shifted", "stable"):
                res[sl] = paired_test(a[masks[sl]], b[masks[sl]], k=10, seed=seed)
                ma, mb = res[sl]["mean_a"], res[sl]["mean_b"]
                res[sl]["relative_change"] = (mb - ma) / ma if ma > 0 else None
            tests[f"{data}|{mname}|s{seed}"] = {"a": "sasrec", "b": mname, **res}
    out = {"definition": ("shifted: the test item's topic is not among the user's dominant "
                          "history topics (smallest set of top topics covering >= 80% of the "
                          "30-day-half-life decayed topic mass, at most 3; "
                          "shiftrec.interest.slices); stable: all other users. Topics learned "
                          "from minilm title embeddings (k-means, k by silhouette). Full ranking "
                          "over all items; leave-one-out histories = last 50 events."),
           "target": "ours >= +15% NDCG@10 over SASRec on the shifted slice, no loss on stable",
           "ours": OURS_TEXT, "variants": VARIANTS,
           "datasets": datasets, "rows": rows, "paired_tests": tests, "ablations": ablations,
           "gates_on_test": gates,
           "budget": {"epochs_cap": EPOCHS, "finetune_epochs_cap": FT_EPOCHS,
                      "lr": args.lr, "patience": args.patience, "ft_patience": args.ft_patience,
                      "valid_users_for_early_stopping": args.valid_users, "hidden": 64,
                      "threads": args.threads},
           "machine": machine()}
    RESULTS.mkdir(parents=True, exist_ok=True)
    write_json(RESULTS / "shift_slices.json", out)
    (RESULTS / "shift_slices.md").write_text(markdown(out))
    print(markdown(out))


def markdown(out: dict[str, Any]) -> str:
    lines = ["# Shifted / stable slices", "", out["definition"], "",
             f"Target: {out['target']}.", "", out["ours"], ""]
    for data, info in out["datasets"].items():
        lines.append(f"## {data}")
        if info.get("not_applicable"):
            lines += ["", f"Not applicable: {info['not_applicable']}.", ""]
            continue
        sl = info.get("slices", {})
        lines += ["", f"{info['users']} users, {info['items']} items, {info['test_users']} test users "
                  f"(shifted {sl.get('shifted')}, stable {sl.get('stable')}); "
                  f"{info.get('topics', {}).get('n')} learned topics.", "",
                  "| model | seed | NDCG@10 shifted | R@10 shifted | NDCG@10 stable | R@10 stable "
                  "| NDCG@10 all | R@10 all | epochs (best) | wall s |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        rs = [r for r in out["rows"] if r["data"] == data]
        ab = out["ablations"].get(data, {})
        order = ["popularity", "topic_profile", "itemknn", "sasrec", "shiftaware:none",
                 f"shiftaware:{ab.get('chosen')}"]
        keys = sorted({(r["model"], r["seed"]) for r in rs},
                      key=lambda k: (order.index(k[0]) if k[0] in order else 99, k[0], k[1]))
        for mname, seed in keys:
            got = {r["slice"]: r for r in rs if r["model"] == mname and r["seed"] == seed}
            any_r = next(iter(got.values()))
            label = mname
            if mname.startswith("shiftaware:"):
                v = mname.split(":", 1)[1]
                tags = [t for t, ok in (("chosen", v == ab.get("chosen")),
                                        ("shifted-first", v == ab.get("chosen_shift_first")),
                                        ("control: no signal", v == "none")) if ok]
                label = f"ours [{v}]" + (f" ({', '.join(tags)})" if tags else "")
            elif mname.startswith("shiftfusion:"):
                b = mname.split(":", 1)[1]
                fc = ab.get("fusion_chosen")
                label = f"ours + item flows, gated [base {b}]" + (" (chosen)" if mname == fc else "")
            ep = "" if any_r["epochs"] is None else f"{any_r['epochs']} ({any_r['best_epoch']})"
            lines.append(
                f"| {label} | {seed} | {got['shifted']['ndcg@10']:.4f} | {got['shifted']['recall@10']:.4f} "
                f"| {got['stable']['ndcg@10']:.4f} | {got['stable']['recall@10']:.4f} "
                f"| {got['all']['ndcg@10']:.4f} | {got['all']['recall@10']:.4f} | {ep} "
                f"| {any_r['wall_seconds']:.0f} |")
        for key, t in out["paired_tests"].items():
            if key.startswith(data + "|"):
                for sl in ("shifted", "stable"):
                    x = t[sl]
                    rel = "n/a" if x["relative_change"] is None else f"{100 * x['relative_change']:+.1f}%"
                    lines.append("")
                    lines.append(f"{t['b']} vs sasrec, {sl}: NDCG@10 {x['mean_a']:.4f} -> "
                                 f"{x['mean_b']:.4f} ({rel}), paired t p={x['t_test_p']:.3g}, "
                                 f"Wilcoxon p={x['wilcoxon_p']:.3g}, 95% CI of diff "
                                 f"[{x['ci95_low']:.4f}, {x['ci95_high']:.4f}], n={x['n_users']}")
        for key, g in out.get("gates_on_test", {}).items():
            if key.startswith(data + "|"):
                lines += ["", f"Gate of {key.split('|')[1]} on test users (mean weight shifted / "
                          "stable; AUC of the weight for telling shifted from stable): " + "; ".join(
                              f"{k} {v['mean_shifted']:+.3f} / {v['mean_stable']:+.3f}, AUC "
                              f"{v['auc_shifted_vs_stable']:.3f}" for k, v in g.items())]
        if ab.get("fusion_valid"):
            lines += ["", "Fusion candidates on validation (NDCG@10 shifted / stable / all): " + "; ".join(
                f"{m} {v['shifted']:.4f} / {v['stable']:.4f} / {v['all']:.4f}"
                for m, v in ab["fusion_valid"].items()) + f"; chosen: **{ab['fusion_chosen']}** "
                "(same rule as the variants)."]
        if ab.get("variants"):
            sv = ab["sasrec_valid"]
            lines += ["", f"Ablation on validation ({ab.get('valid_slices')}); selection {ab['selection']}. "
                      f"Chosen: **{ab['chosen']}**; shifted-first: **{ab.get('chosen_shift_first')}**.", "",
                      "| variant | NDCG@10 shifted | NDCG@10 stable | NDCG@10 all | R@10 all "
                      "| epochs (best) | wall s |", "|---|---|---|---|---|---|---|",
                      f"| sasrec (warm start) | {sv['shifted']['ndcg@10']:.4f} | "
                      f"{sv['stable']['ndcg@10']:.4f} | {sv['all']['ndcg@10']:.4f} | "
                      f"{sv['all']['recall@10']:.4f} | | |"]
            for v, r in ab["variants"].items():
                tr = r.get("training") or {}
                x = r["valid"]
                lines.append(f"| {v} | {x['shifted']['ndcg@10']:.4f} | {x['stable']['ndcg@10']:.4f} "
                             f"| {x['all']['ndcg@10']:.4f} | {x['all']['recall@10']:.4f} "
                             f"| {tr.get('epochs_run')} ({tr.get('best_epoch')}) "
                             f"| {r['wall_seconds']:.0f} |")
        lines.append("")
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- seeds

SEEDS_JSON = RESULTS / "shift_slices_seeds.json"
SEEDS_RANKS = RESULTS / "shift_slices_seeds.ranks.npz"
SEED_FREE = ("popularity", "topic_profile", "itemknn")
SLICES = ("shifted", "stable", "all")


def _seed_rows(data: str, kept: dict[str, np.ndarray], earlier: dict[str, Any]
               ) -> dict[tuple[str, int], dict[str, Any]]:
    """Test metrics per (model, seed) of one setting: the finished runs under out/ (their test
    ranks are added to `kept`), else the rows of the earlier seeds table (`earlier`: its entry for
    this setting; their ranks are in `kept` already), else the seed-0 rows of the published table."""
    got: dict[tuple[str, int], dict[str, Any]] = {}
    for r in json.loads((RESULTS / "shift_slices.json").read_text())["rows"]:
        if r["data"] == data:
            got.setdefault((r["model"], r["seed"]), {"source": "shift_slices.json"})[r["slice"]] = {
                "ndcg@10": r["ndcg@10"], "recall@10": r["recall@10"], "n_users": r["n_users"]}
    for m, row in earlier.get("rows", {}).items():
        for s, r in row["per_seed"].items():
            got[(m, int(s))] = {k: v for k, v in r.items() if k != "has_ranks"}
    runs = ddir(data) / "runs"
    for p in sorted(runs.glob("*/row.json")) if runs.exists() else []:
        r = json.loads(p.read_text())
        if "test" not in r:
            continue
        key = (r["model"], r["seed"])
        row = {"source": "run", **{sl: {m: r["test"][sl][m] for m in ("ndcg@10", "recall@10", "n_users")}
                                   for sl in SLICES}}
        if key in got:  # the same seed measured again: the published value, to check it repeats
            row["published_ndcg@10_all"] = got[key]["all"]["ndcg@10"]
        got[key] = row
        kept[f"{data}|{r['model']}|s{r['seed']}"] = np.load(p.parent / "ranks.npz")["test"].astype(np.int32)
    for (m, s), row in got.items():
        row["has_ranks"] = f"{data}|{m}|s{s}" in kept
    return got


def _ranks(kept: dict[str, np.ndarray], data: str, model: str, seed: int) -> np.ndarray | None:
    """A kept run's per-user test ranks (None when not kept); seed-free models have seed 0 only."""
    return kept.get(f"{data}|{model}|s{0 if model in SEED_FREE else seed}")


def _pair_over_seeds(kept: dict[str, np.ndarray], data: str, a: str, b: str, seeds: list[int],
                     mask: np.ndarray) -> dict[str, Any]:
    """Paired tests of model b against model a on the users of `mask`: on every seed where both
    have kept ranks, and on the per-user NDCG@10 averaged over those seeds (when more than one)."""
    from shiftrec.evaluate.significance import seed_averaged_test

    runs = {s: (_ranks(kept, data, a, s), _ranks(kept, data, b, s)) for s in seeds}
    with_ranks = [s for s, (x, y) in runs.items() if x is not None and y is not None]
    averaged = None
    if len(with_ranks) > 1:
        averaged = seed_averaged_test([runs[s][0] for s in with_ranks],
                                      [runs[s][1] for s in with_ranks], mask=mask)
    return {"per_seed": {str(s): seed_averaged_test([runs[s][0]], [runs[s][1]], mask=mask, seed=s)
                         for s in with_ranks},
            "seed_averaged": averaged, "seeds_with_ranks": with_ranks}


def seeds_summary(seeds: list[int], earlier: dict[str, Any]) -> dict[str, Any]:
    """Mean ± std over training seeds of every row of the slice table, and per slice the paired
    test between the best and the runner-up (by mean NDCG@10), on each seed whose per-user ranks
    are kept and on the per-user NDCG@10 averaged over those seeds."""
    from shiftrec.manifest import read_npz, write_npz

    kept = read_npz(SEEDS_RANKS)
    out: dict[str, Any] = {}
    for data in DATA:
        if not (ddir(data) / "prep.json").exists():
            continue
        got = _seed_rows(data, kept, earlier.get(data, {}))
        if not any(s > 0 for _, s in got):
            continue
        _, _, _, masks = load_data(data)
        masks = {**masks, "all": np.ones_like(masks["shifted"])}
        rows: dict[str, Any] = {}
        for m in sorted({m for m, _ in got}):
            ss = [0] if m in SEED_FREE else [s for s in seeds if (m, s) in got]
            if not ss:
                continue
            vals = {sl: np.array([got[(m, s)][sl]["ndcg@10"] for s in ss]) for sl in SLICES}
            rows[m] = {"seeds": ss, "seed_free": m in SEED_FREE,
                       "per_seed": {str(s): got[(m, s)] for s in ss},
                       "mean": {sl: float(v.mean()) for sl, v in vals.items()},
                       "std": {sl: float(v.std(ddof=1)) if len(v) > 1 else None
                               for sl, v in vals.items()},
                       "recall@10_all_mean": float(np.mean([got[(m, s)]["all"]["recall@10"] for s in ss]))}
        full = [m for m in rows if rows[m]["seed_free"] or rows[m]["seeds"] == seeds]
        tests: dict[str, Any] = {}
        for sl in SLICES:
            order = sorted(full, key=lambda m: -rows[m]["mean"][sl])
            if len(order) < 2:
                continue
            best, second = order[0], order[1]
            tests[sl] = {"best": best, "runner_up": second,
                         **_pair_over_seeds(kept, data, second, best, seeds, masks[sl])}
        # the table's target: ours (each trained row of ours) against SASRec on each slice, per
        # user averaged over the seeds where both have kept ranks
        # (and against SASRec run with a longer early-stopping patience, sasrec-p<N>, when run)
        vs: dict[str, dict[str, Any]] = {}
        for base in ["sasrec"] + sorted(m for m in rows if SASREC_PATIENCE.fullmatch(m)):
            for m in rows:
                if not m.startswith(("shiftaware", "shiftfusion")):
                    continue
                for sl in ("shifted", "stable"):
                    t = _pair_over_seeds(kept, data, base, m, seeds, masks[sl])
                    if t["seeds_with_ranks"] == seeds and t["seed_averaged"] is not None:
                        vs.setdefault(base, {}).setdefault(m, {})[sl] = t["seed_averaged"]
        out[data] = {"rows": rows, "best_vs_runner_up": tests,
                     "vs_sasrec_seed_averaged": vs.pop("sasrec", {}),
                     "vs_sasrec_patience_seed_averaged": vs}
    if kept:
        write_npz(SEEDS_RANKS, kept)
    return {"seeds": seeds, "std": "sample standard deviation (ddof=1) over the seeds",
            "note": ("trained rows over the training seeds (the same split, topics and selection "
                     "as the seed-0 table; ours = the variant chosen on seed 0's validation); "
                     "popularity, topic_profile and itemknn are seed-free. Paired tests: diff = "
                     "best - runner-up, per user on the slice, on every seed whose ranks are kept "
                     "and on the per-user NDCG@10 averaged over those seeds."),
            "settings": out, "machine": machine()}


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:+.1f}%"


def seeds_markdown(res: dict[str, Any]) -> str:
    lines = ["# Shifted / stable slices over training seeds", "", res["note"], "",
             f"Seeds {res['seeds']}; mean ± std ({res['std']}).", ""]
    for data, d in res["settings"].items():
        lines += [f"## {data}", "", "| model | seeds | NDCG@10 shifted | NDCG@10 stable | NDCG@10 all "
                  "| R@10 all (mean) |", "|---|---|---|---|---|---|"]
        for m, r in sorted(d["rows"].items(), key=lambda kv: -kv[1]["mean"]["all"]):
            def cell(sl: str, r: dict[str, Any] = r) -> str:
                sd = r["std"][sl]
                return f"{r['mean'][sl]:.4f}" + ("" if sd is None else f" ± {sd:.4f}")
            seeds = "seed-free" if r["seed_free"] else ",".join(map(str, r["seeds"]))
            lines.append(f"| {m} | {seeds} | {cell('shifted')} | {cell('stable')} | {cell('all')} "
                         f"| {r['recall@10_all_mean']:.4f} |")
        lines.append("")
        for sl, t in d["best_vs_runner_up"].items():
            ps = "; ".join(f"seed {s}: {x['mean_a']:.4f} -> {x['mean_b']:.4f}, p = {x['t_test_p']:.2g}"
                           for s, x in t["per_seed"].items())
            pooled = t["seed_averaged"]
            pl = "" if pooled is None else (
                f"; averaged over seeds {t['seeds_with_ranks']}: {pooled['mean_a']:.4f} -> "
                f"{pooled['mean_b']:.4f} ({_pct(pooled['relative_change'])}), "
                f"p = {pooled['t_test_p']:.2g}, 95% CI of diff [{pooled['ci95_low']:.4f}, "
                f"{pooled['ci95_high']:.4f}], n = {pooled['n_users']}")
            lines.append(f"- {sl}: best **{t['best']}**, runner-up {t['runner_up']}: {ps or 'no ranks kept'}{pl}")
        against = {"SASRec": d.get("vs_sasrec_seed_averaged") or {}} | {
            f"{b} (SASRec with early-stopping patience {b.removeprefix('sasrec-p')})": v
            for b, v in (d.get("vs_sasrec_patience_seed_averaged") or {}).items()}
        for base, vs in against.items():
            if not vs:
                continue
            lines += ["", f"Against {base}, per-user NDCG@10 averaged over the seeds (paired t-test):", ""]
            for m, v in vs.items():
                lines.append(f"- {m}: " + "; ".join(
                    f"{sl} {x['mean_a']:.4f} -> {x['mean_b']:.4f} ({_pct(x['relative_change'])}), "
                    f"p = {x['t_test_p']:.2g}" for sl, x in v.items()))
        lines.append("")
    return "\n".join(lines) + "\n"


def seeds_report(seeds: list[int]) -> None:
    """Write the seeds table; settings without work folders here keep their earlier entry, and
    runs not here keep their earlier rows (and kept ranks)."""
    earlier = json.loads(SEEDS_JSON.read_text())["settings"] if SEEDS_JSON.exists() else {}
    res = seeds_summary(seeds, earlier)  # `earlier`: the settings of the seeds table written before
    res["settings"] = {**earlier, **res["settings"]}
    if not res["settings"]:
        raise SystemExit(f"no seed runs under {WORK}: run `run --seed S` first; nothing written")
    write_json(SEEDS_JSON, res)
    (RESULTS / "shift_slices_seeds.md").write_text(seeds_markdown(res))
    print(seeds_markdown(res))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["prep", "run", "ablate", "select", "report", "seeds"])
    ap.add_argument("--data", action="append", help="data key(s); default: all")
    ap.add_argument("--model", action="append", help="popularity, topic_profile, itemknn, sasrec, "
                    "sasrec-p<N> (patience N), shiftaware, shiftaware-none, shiftaware:<variant>, "
                    "shiftfusion:<base>")
    ap.add_argument("--variants", nargs="*", help="ablation variants (default: all)")
    ap.add_argument("--seed", type=int, action="append")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--patience", type=int, default=3)
    ap.add_argument("--ft-patience", type=int, default=2)
    ap.add_argument("--valid-users", type=int, default=3000)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--cache-dir", default="/tmp/shiftaware/emb")
    args = ap.parse_args()
    datas = args.data or list(DATA)
    seeds = args.seed or [0]
    if args.what == "prep":
        for d in datas:
            info = prep_one(d, args.cache_dir)
            print(d, {k: v for k, v in info.items() if k != "split_meta"}, flush=True)
    elif args.what == "run":
        for d in datas:
            for s in seeds:
                for m in args.model or ["popularity", "topic_profile", "sasrec", "shiftaware-none",
                                        "shiftaware"]:
                    run(d, m, s, args)
    elif args.what == "ablate":
        for d in datas:
            ablate(d, seeds[0], args)
    elif args.what == "select":
        for d in datas:
            select(d, seeds[0])
    elif args.what == "seeds":
        seeds_report(sorted(args.seed or [0, 1, 2]))
    else:
        report(args)


if __name__ == "__main__":
    main()
