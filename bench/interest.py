"""Interest-migration benchmarks: throughput + memory at 1M users / 10M events, shift-detection
quality against planted truth (calibrate on one seed, report on another), migration flows on real
data, and shifted/stable slices for popularity and the topic-profile model.

  python bench/interest.py perf        # -> bench/results/interest.json
  python bench/interest.py detection   # -> bench/results/interest_detection.json
  python bench/interest.py flows       # -> bench/results/flows_{online_retail,amazon_toys}.{json,png}
  python bench/interest.py slices      # -> bench/results/interest_slices.json
  python bench/interest.py all

Peak RSS is measured per phase in a fresh subprocess (resource.getrusage ru_maxrss), so each
number covers that phase's own arrays. Timings are medians of repeats where stated.
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
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"


def peak_rss_mb() -> float:
    """Peak resident memory of this process (MB): getrusage ru_maxrss."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def hwm_mb() -> float:
    """Peak resident memory of this process image (VmHWM). Unlike ru_maxrss, which Linux carries
    over from the parent across fork + exec, this starts fresh in each phase subprocess."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return peak_rss_mb()


def machine() -> dict[str, Any]:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(),
            "numpy": np.__version__, "load_average_1_5_15": [round(x, 2) for x in os.getloadavg()],
            "note": "shared machine: other jobs ran concurrently, so throughputs are pessimistic"}


def write(name: str, obj: dict[str, Any]) -> Path:
    from shiftrec.manifest import make_manifest, write_json

    RESULTS.mkdir(parents=True, exist_ok=True)
    p = RESULTS / name
    write_json(p, make_manifest("bench", bench=name.removesuffix(".json"), machine=machine(), **obj))
    print(f"wrote {p}")
    return p


CPU: dict[str, list[float]] = {}


def median_time(fn: Any, repeats: int, key: str = "last") -> tuple[float, list[float], Any]:
    """Median wall seconds over repeats (CPU seconds of this process kept in CPU[key])."""
    times, cpu, out = [], [], None
    for _ in range(repeats):
        t, c = time.perf_counter(), time.process_time()
        out = fn()
        times.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    CPU[key] = cpu
    return statistics.median(times), times, out


# ---------------------------------------------------------------- perf

PERF_STORE = dict(n_users=1_000_000, mean_events=7.0, min_events=5, frac_jump=0.2, frac_drift=0.05,
                  seed=11)


def perf_phase(phase: str, folder: str, repeats: int) -> dict[str, Any]:
    """One measured phase on the arrays saved by `perf` (runs in its own process)."""
    from shiftrec.interest.events import InterestEvents
    from shiftrec.interest.flows import FlowConfig, compute_flows
    from shiftrec.interest.profiles import ProfileConfig, topic_distribution, topic_mass
    from shiftrec.interest.shifts import ShiftDetector

    z = np.load(Path(folder) / "arrays.npz", allow_pickle=False)
    indptr, topic, times, T = z["indptr"], z["topic"], z["time"], int(z["n_topics"])
    N, U = int(indptr[-1]), len(indptr) - 1
    out: dict[str, Any] = {"phase": phase, "events": N, "users": U, "rss_after_load_mb": round(hwm_mb(), 1)}
    det = ShiftDetector(T)
    if phase == "profiles":
        cfg = ProfileConfig(half_life=30.0)
        prior = np.bincount(topic, minlength=T) / N

        def run() -> Any:
            mass, _ = topic_mass(indptr, topic, times, T, cfg)
            return topic_distribution(mass, prior, cfg.alpha)
        med, all_t, _ = median_time(run, repeats)
        out |= {"what": "P(topic|user) for every user, 30-day half-life (batch, numpy)",
                "seconds_median": med, "seconds": all_t, "events_per_s": N / med}
    elif phase == "detect":
        med, all_t, res = median_time(lambda: det.detect_arrays(indptr, topic, times), repeats)
        out |= {"what": "shift detection, batch path (all users in lockstep by event position)",
                "seconds_median": med, "seconds": all_t, "events_per_s": N / med, "shifts": len(res)}
    elif phase == "microbatch":
        users = np.repeat(np.arange(U, dtype=np.int64), np.diff(indptr))
        t0 = time.perf_counter()
        order = np.argsort(times, kind="stable")  # the live stream: events in global time order
        t_order = time.perf_counter() - t0
        bs = 200_000

        def run() -> Any:
            table = det.init_table(U)
            n = 0
            for a in range(0, N, bs):
                o = order[a:a + bs]
                n += len(det.update_many(table, users[o], topic[o], times[o]))
            return n
        med, all_t, n = median_time(run, repeats)
        out |= {"what": f"streaming in micro-batches of {bs:,} events (global time order; "
                        "update_many, same results as per-event updates)",
                "batch_events": bs, "seconds_median": med, "seconds": all_t, "events_per_s": N / med,
                "shifts": n, "sort_into_time_order_s": t_order}
    elif phase == "stream":
        n_ev = min(N, 300_000)
        k = int(np.searchsorted(indptr, n_ev))
        tl, ml = topic[: indptr[k]].tolist(), times[: indptr[k]].tolist()
        bounds = indptr[: k + 1].tolist()

        def run() -> Any:
            fired = 0
            for u in range(k):
                st = det.init_state()
                for j in range(bounds[u], bounds[u + 1]):
                    st, e = det.update(st, tl[j], ml[j])
                    fired += e is not None
            return fired
        med, all_t, fired = median_time(run, repeats)
        out |= {"what": "per-event streaming API ShiftDetector.update (pure Python, one call per event)",
                "events_timed": int(indptr[k]), "seconds_median": med, "seconds": all_t,
                "events_per_s": int(indptr[k]) / med, "shifts": fired}
    elif phase == "flows":
        ev = InterestEvents.from_arrays(np.arange(U).astype(str).astype(object), indptr, topic, times, T)
        names = [f"t{i}" for i in range(T)]
        med, all_t, rep = median_time(lambda: compute_flows(ev, names, FlowConfig(every="1mo")), repeats)
        out |= {"what": "migration flows, monthly windows, all consecutive pairs",
                "seconds_median": med, "seconds": all_t, "window_pairs": len(rep.pairs),
                "events_per_s": N / med}
    else:
        raise SystemExit(f"unknown phase {phase}")
    cpu = statistics.median(CPU["last"])
    out["cpu_seconds_median"] = cpu
    out["events_per_cpu_s"] = N / cpu if phase != "stream" else out["events_timed"] / cpu
    out["peak_rss_mb"] = round(hwm_mb(), 1)
    return out


def perf(args: argparse.Namespace) -> None:
    import polars as pl

    from shiftrec.data.synthetic import StoreConfig, generate
    from shiftrec.interest.events import InterestEvents
    from shiftrec.interest.topics import category_topics

    cfg = StoreConfig(**{**PERF_STORE, "n_users": args.users})
    t0 = time.perf_counter()
    st = generate(cfg)
    t_gen = time.perf_counter() - t0
    tp = category_topics(st.items)
    t0 = time.perf_counter()
    ev = InterestEvents.from_frame(st.events, tp)
    t_prep = time.perf_counter() - t0
    del st
    tmp = Path(tempfile.mkdtemp(prefix="shiftrec-bench-"))
    np.savez(tmp / "arrays.npz", indptr=ev.indptr, topic=ev.topic, time=ev.time, n_topics=tp.n_topics)
    print(f"{len(ev):,} users, {ev.n_events:,} events, {tp.n_topics} topics; generate {t_gen:.1f}s, "
          f"frame -> arrays {t_prep:.1f}s", flush=True)
    phases = {}
    for ph, rep in (("profiles", 3), ("detect", 3), ("microbatch", 3), ("stream", 3), ("flows", 3)):
        r = subprocess.run([sys.executable, __file__, "_phase", ph, str(tmp), str(rep)],
                           capture_output=True, text=True, check=True)
        phases[ph] = json.loads(r.stdout.strip().splitlines()[-1])
        print(f"  {ph}: {phases[ph]['events_per_s']:,.0f} events/s wall "
              f"({phases[ph]['events_per_cpu_s']:,.0f} per CPU-s), {phases[ph]['seconds_median']:.2f}s, "
              f"peak RSS {phases[ph]['peak_rss_mb']:.0f} MB", flush=True)
    for f in tmp.iterdir():
        f.unlink()
    tmp.rmdir()
    target = 1_000_000
    write("interest.json", {
        "store": {**PERF_STORE, "n_users": args.users}, "users": len(ev), "events": ev.n_events,
        "n_topics": tp.n_topics, "generate_s": t_gen, "events_frame_to_arrays_s": t_prep,
        "peak_rss_mb_generate_and_prepare": round(peak_rss_mb(), 1),
        "rss_note": "phase peak_rss_mb = VmHWM of a fresh subprocess that loads the arrays and runs the phase",
        "phases": phases,
        "targets": {
            "streaming_update_events_per_s": target,
            "batch_detect_meets": phases["detect"]["events_per_s"] >= target,
            "microbatch_stream_meets": phases["microbatch"]["events_per_s"] >= target,
            "per_event_api_meets": phases["stream"]["events_per_s"] >= target,
            "flows_under_60s": phases["flows"]["seconds_median"] < 60},
        "polars": pl.__version__})


# ---------------------------------------------------------------- detection quality

CAL_GRID = {"threshold": [6.0, 7.0, 8.0, 9.0, 10.0], "lag": [2, 3, 4], "alpha": [2.0, 4.0],
            "dominant_keep": [0.1, 0.3, 1.0], "min_history": [8, 10]}
JSD_GRID = {"threshold": [0.25, 0.3, 0.35, 0.4, 0.5], "fast_half_life": [1.0, 2.0, 3.0],
            "lag": [0, 2, 4], "min_history": [8, 10]}


def _store_events(seed: int, n_users: int) -> tuple[Any, Any, Any, Any]:
    from shiftrec.data.synthetic import StoreConfig, generate
    from shiftrec.interest.events import InterestEvents
    from shiftrec.interest.shifts import truth_arrays
    from shiftrec.interest.topics import category_topics

    st = generate(StoreConfig(n_users=n_users, seed=seed))
    tp = category_topics(st.items)
    ev = InterestEvents.from_frame(st.events, tp)
    return st, tp, ev, truth_arrays(ev, st.users)


def _report(ev: Any, tr: dict[str, np.ndarray], cfg: Any, tol: int) -> dict[str, Any]:
    from shiftrec.config import to_dict
    from shiftrec.interest.shifts import ShiftDetector, evaluate_detection

    res = ShiftDetector(ev.n_topics, cfg).detect(ev)
    out = evaluate_detection(res.user, res.event_index, tr["truth_user"], tr["truth_index"],
                             tr["stable_users"], tol)
    by_kind = {}
    for kind in np.unique(tr["truth_kind"]):
        sel = tr["truth_kind"] == kind
        users = tr["truth_user"][sel]
        keep = np.isin(res.user, users)
        by_kind[str(kind)] = evaluate_detection(res.user[keep], res.event_index[keep], users,
                                                tr["truth_index"][sel], np.zeros(0, np.int64), tol)
    # matched delays histogram
    idx = dict(zip(tr["truth_user"].tolist(), tr["truth_index"].tolist(), strict=True))
    delays: dict[int, int] = {}
    seen = set()
    for u, d in sorted(zip(res.user.tolist(), res.event_index.tolist(), strict=True)):
        s = idx.get(u)
        if s is not None and u not in seen and s <= d <= s + tol:
            delays[d - s] = delays.get(d - s, 0) + 1
            seen.add(u)
    low = int((ev.lengths() < cfg.min_history).sum())
    return {"config": to_dict(cfg), **out, "by_kind": by_kind,
            "delay_histogram": {str(k): v for k, v in sorted(delays.items())},
            "low_confidence_users": low}


def detection(args: argparse.Namespace) -> None:
    from shiftrec.interest.shifts import ShiftConfig, ShiftMethod, calibrate

    tol = 10
    t0 = time.perf_counter()
    _, _, ev_c, tr_c = _store_events(args.cal_seed, args.det_users)
    cusum_cfg, cusum_table = calibrate(ev_c, tr_c, CAL_GRID, ShiftConfig(), tolerance=tol)
    jsd_cfg, jsd_table = calibrate(ev_c, tr_c, JSD_GRID, ShiftConfig(method=ShiftMethod.JSD), tolerance=tol)
    t_cal = time.perf_counter() - t0
    print(f"calibrated on seed {args.cal_seed} in {t_cal:.0f}s", flush=True)
    reports: dict[str, Any] = {}
    for seed in args.report_seeds:
        _, _, ev_r, tr_r = _store_events(seed, args.det_users)
        reports[str(seed)] = {
            "cusum_calibrated": _report(ev_r, tr_r, cusum_cfg, tol),
            "cusum_default": _report(ev_r, tr_r, ShiftConfig(), tol),
            "jsd_calibrated": _report(ev_r, tr_r, jsd_cfg, tol),
        }
        r = reports[str(seed)]["cusum_calibrated"]
        print(f"seed {seed}: F1 {r['f1']:.3f} P {r['precision']:.3f} R {r['recall']:.3f} "
              f"median delay {r['median_delay_events']} FA {r['false_alarm_rate_stable_users']:.3f}",
              flush=True)
    main = reports[str(args.report_seeds[0])]["cusum_calibrated"]
    targets = {"f1": 0.9, "median_delay_events": 3, "false_alarm_rate_stable_users": 0.05}
    write("interest_detection.json", {
        "protocol": (f"calibrate on synthetic store seed {args.cal_seed} ({args.det_users:,} users), "
                     f"report on seeds {args.report_seeds} (no tuning there). A detection at event d "
                     f"matches a planted shift at event s (first event of the new interest) when "
                     f"s <= d <= s + {tol}; delay = d - s; extra detections are false positives; "
                     f"false-alarm rate = share of stable users with any detection."),
        "calibration_seconds": t_cal, "calibration_seed": args.cal_seed,
        "targets": targets,
        "targets_met_on_first_report_seed": {
            "f1": main["f1"] >= 0.9, "median_delay": main["median_delay_events"] <= 3,
            "false_alarms": main["false_alarm_rate_stable_users"] <= 0.05},
        "reports": reports,
        "calibration_top10_cusum": sorted(cusum_table, key=lambda r: -r["f1"])[:10],
        "calibration_top5_jsd": sorted(jsd_table, key=lambda r: -r["f1"])[:5],
    })


# ---------------------------------------------------------------- real data

def _topics_learned(items: Any, encoder: str, cache: str) -> Any:
    from shiftrec.interest.topics import TopicConfig, TopicSource, build_topics, embed_items

    t0 = time.perf_counter()
    emb, enc = embed_items(items, encoder, cache_dir=cache)
    t_emb = time.perf_counter() - t0
    tp = build_topics(items, TopicConfig(source=TopicSource.LEARNED), emb, encoder=enc)
    tp.meta |= {"embed_seconds": round(t_emb, 1), "cluster_seconds": round(time.perf_counter() - t0 - t_emb, 1)}
    return tp


def _online_retail_i_ii() -> Any:
    from shiftrec.data.clean import CleanConfig, clean
    from shiftrec.data.readers import read_online_retail
    from shiftrec.data.readers._common import ReadResult
    from shiftrec.paths import data_root

    root = data_root()
    rr = ReadResult.concat([read_online_retail(root / "online-retail/online_retail_II_2009-2010.parquet"),
                            read_online_retail(root / "online-retail/online_retail_I.parquet")])
    ds, rep, _ = clean(rr, CleanConfig(), "online-retail-I+II")
    return ds, rep


def _toys() -> Any:
    from shiftrec.data.clean import CleanConfig, clean
    from shiftrec.data.readers import read_amazon_csv
    from shiftrec.paths import data_root

    ds, rep, _ = clean(read_amazon_csv(data_root() / "amazon/toys"), CleanConfig(dedup="none"), "amazon-toys")
    return ds, rep


def flows(args: argparse.Namespace) -> None:
    from shiftrec.interest.events import InterestEvents
    from shiftrec.interest.flows import FlowConfig, compute_flows
    from shiftrec.report.plots import plot_flows

    jobs = [("online_retail", _online_retail_i_ii,
             FlowConfig(every="3mo", start="2009-12-01", end="2011-12-01"),
             "Online Retail I+II (UK store, customers): where dominant interest moved, by season"),
            ("amazon_toys", _toys, FlowConfig(every="6mo", start="2011-01-01", end="2014-07-01"),
             "Amazon Toys & Games (reviewers): where dominant interest moved, by half-year")]
    for name, load, fcfg, title in jobs:
        ds, rep = load()
        tp = _topics_learned(ds.items, args.encoder, args.cache_dir)
        ev = InterestEvents.from_frame(ds.events, tp)
        t0 = time.perf_counter()
        fr = compute_flows(ev, tp.names, fcfg)
        t_flow = time.perf_counter() - t0
        png = RESULTS / f"flows_{name}.png"
        plot_flows(fr, png, title=title)
        write(f"flows_{name}.json", {
            "dataset": ds.name, "users": len(ev), "events": ev.n_events, "summary": rep["summary"],
            "topic_model": {"source": tp.source, "encoder": tp.meta.get("encoder"), "k": tp.meta.get("k"),
                       "silhouette": tp.meta.get("silhouette"), "names": tp.names,
                       "sizes": tp.sizes().tolist(), "embed_seconds": tp.meta.get("embed_seconds")},
            "flow_seconds": t_flow, "plot": str(png.relative_to(ROOT)), **fr.to_json()})


def slices(args: argparse.Namespace) -> None:
    from shiftrec.data.clean import UNISREC_CLEAN, CleanConfig, clean
    from shiftrec.data.readers import UNISREC_RECIPE, read_online_retail
    from shiftrec.data.splits import leave_one_out, temporal
    from shiftrec.evaluate.ranking import evaluate, sliced
    from shiftrec.interest.profiles import (
        DecayUnit,
        ProfileConfig,
        TopicProfile,
        evaluate_next_topic,
    )
    from shiftrec.interest.slices import SliceConfig, shift_slices, slice_summary
    from shiftrec.models.popularity import Popularity
    from shiftrec.paths import data_root

    root = data_root()
    ks = (10, 20)

    def or_invoice() -> Any:
        return clean(read_online_retail(root / "online-retail/online_retail_I.parquet", UNISREC_RECIPE),
                     UNISREC_CLEAN, "online-retail-I (invoice, UniSRec recipe)")[0]

    def or_customer() -> Any:
        return clean(read_online_retail(root / "online-retail/online_retail_I.parquet"),
                     CleanConfig(kcore_user=5, kcore_item=5), "online-retail-I (customer, 5-core)")[0]

    def toys() -> Any:
        return _toys()[0]

    grid = [(7.0, DecayUnit.DAYS), (30.0, DecayUnit.DAYS), (180.0, DecayUnit.DAYS),
            (5.0, DecayUnit.EVENTS), (20.0, DecayUnit.EVENTS)]
    rows: list[dict[str, Any]] = []
    details: dict[str, Any] = {}
    for dname, load, kinds in (("online-retail-I/invoice", or_invoice, ("loo",)),
                               ("online-retail-I/customer", or_customer, ("loo", "temporal")),
                               ("amazon-toys", toys, ("loo", "temporal"))):
        ds = load()
        tp = _topics_learned(ds.items, args.encoder, args.cache_dir)
        for kind in kinds:
            split = leave_one_out(ds) if kind == "loo" else temporal(ds, 0.9, 0.8)
            it = tp.aligned(split.item_map)
            # half-life chosen on the validation set (NDCG@10), then fixed for test
            best, best_v, sel = None, -1.0, {}
            for hl, unit in grid:
                m = TopicProfile(it, tp.names, ProfileConfig(half_life=hl, decay_unit=unit)).fit(split)
                v = evaluate(m, split, "valid", ks=ks)[0]["ndcg@10"]
                sel[f"{hl:g} {unit.value}"] = round(v, 5)
                if v > best_v:
                    best, best_v = m, v
            masks = shift_slices(split.test, it, SliceConfig())
            key = f"{dname}/{kind}"
            details[key] = {"users": len(split.user_ids), "items": split.n_items, "test_users": len(split.test),
                            "slices": slice_summary(masks), "topics": tp.n_topics,
                            "topic_profile_valid_ndcg10_by_half_life": sel,
                            "topic_profile_config": {"half_life": best.cfg.half_life,
                                                     "decay_unit": best.cfg.decay_unit.value,
                                                     "item_topic": best.cfg.item_topic.value},
                            "next_topic": evaluate_next_topic(best, split.test)}
            for mname, model in (("popularity", Popularity().fit(split)), ("topic_profile", best)):
                met, ranks = evaluate(model, split, "test", ks=ks)
                per = {"all": met, **sliced(ranks, masks, ks)}
                for sname, mm in per.items():
                    rows.append({"dataset": dname, "split": kind, "model": mname, "slice": sname,
                                 "ndcg@10": mm["ndcg@10"], "recall@10": mm["recall@10"],
                                 "ndcg@20": mm["ndcg@20"], "recall@20": mm["recall@20"],
                                 "n_users": mm["n_users"]})
                print(f"{key} {mname}: " + ", ".join(
                    f"{s} ndcg@10 {v['ndcg@10']:.4f}" for s, v in per.items()), flush=True)
    write("interest_slices.json", {
        "definition": ("shifted: the test item's topic is not among the user's dominant history "
                       "topics = the smallest set of top topics covering >= 80% of the "
                       "30-day-half-life decayed topic mass, at most 3; stable: all other users "
                       "whose test item and history have a topic. Full ranking over all items."),
        "topics": f"learned from item titles ({args.encoder} embeddings, k-means, k by silhouette)",
        "rows": rows, "details": details,
        "note": "SASRec and the neural model rows are added by the lead (part 5)."})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["perf", "detection", "flows", "slices", "all", "_phase"])
    ap.add_argument("rest", nargs="*")
    ap.add_argument("--users", type=int, default=PERF_STORE["n_users"])
    ap.add_argument("--det-users", type=int, default=20_000)
    ap.add_argument("--cal-seed", type=int, default=0)
    ap.add_argument("--report-seeds", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--encoder", default="minilm", help="tfidf or a shiftrec.text encoder")
    ap.add_argument("--cache-dir", default=str(Path(tempfile.gettempdir()) / "shiftrec-bench-emb"))
    args = ap.parse_args()
    if args.what == "_phase":
        ph, folder, rep = args.rest
        print(json.dumps(perf_phase(ph, folder, int(rep))))
        return
    try:
        import torch

        torch.set_num_threads(2)
    except ImportError:
        pass
    for name, fn in (("perf", perf), ("detection", detection), ("flows", flows), ("slices", slices)):
        if args.what in (name, "all"):
            fn(args)


if __name__ == "__main__":
    main()
