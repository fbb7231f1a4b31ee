"""Serving benchmark -> bench/results/serve.json.

    SHIFTREC_DATA=/work/shared/data python bench/serve.py [--repeats 3] [--duration 10]

1. prep (skipped when out/bench-serve/run exists): Scientific through the CLI: ingest preset,
   prepare (leave-one-out), topics, SASRec (3 epochs: this measures serving, not accuracy),
   ShiftFusion over it (item flows, shift-gated), `shiftrec package` -> a servable run;
2. recommendations with reasons: `shiftrec serve` (one process) and a load generator in
   another process (raw asyncio HTTP/1.1 keep-alive, loopback), 1/10/50 concurrent
   connections, `--duration` s each, req/s and p50/p99 latency, the server's CPU share
   (utime + stime of the server process / wall time; 2 cores = 200%);
3. POST /v1/events in batches of 100 (fresh event ids): durable events/s with SQLite and with
   PostgreSQL (each counted in the store afterwards);
4. 1M-item synthetic catalogue: FAISS IVF-SQ8 candidates (500) + exact re-scoring, in process,
   batch of 1 query: p50/p99 and recall@10 against exact full scoring, per nprobe;
4b. the same THROUGH the product: a synthetic 1M-item run (data.synthetic store with 1M
   catalogue items, a 1-layer SASRec of hidden 64 whose item embeddings are clustered random
   vectors, `write_run`), `shiftrec serve --ann on`, GET recommendations with reasons at 1 and
   10 concurrent; index build time (first start) and cached-index load time (second start);
   recall@10 of the served answers against exact full scoring (the Recommender with ANN off);
5. peak RSS of the server (VmHWM); the load average before and after.

Medians of `--repeats` runs for 2 and 3.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "out" / "bench-serve"
RESULTS = ROOT / "bench" / "results" / "serve.json"
SHIFTREC = [sys.executable, "-m", "shiftrec.cli"]
TOKEN = "bench-token"
PG = os.environ.get("SHIFTREC_BENCH_PG", "postgresql://root@127.0.0.1:5432/test")
SASREC_EPOCHS = 3


def sh(*args: str) -> None:
    print("+", " ".join(args), flush=True)
    subprocess.run([*SHIFTREC, *args], check=True, cwd=ROOT)


def prep() -> Path:
    run = OUT / "run"
    if (run / "_COMPLETE").is_file():
        return run
    sh("ingest", "preset", "scientific", "-o", str(OUT / "scientific"))
    sh("prepare", str(OUT / "scientific"), "-o", str(OUT / "split"))
    sh("topics", str(OUT / "scientific"), "-o", str(OUT / "topics"))
    sh("train", str(OUT / "split"), "--model", "sasrec", "--epochs", str(SASREC_EPOCHS),
       "-o", str(OUT / "sasrec"))
    sh("train", str(OUT / "split"), "--model", "shiftfusion", "--base-model",
       str(OUT / "sasrec"), "--topics", str(OUT / "topics"), "-o", str(OUT / "fused"))
    sh("package", str(OUT / "fused"), "--split", str(OUT / "split"), "--dataset",
       str(OUT / "scientific"), "--topics", str(OUT / "topics"), "-o", str(run))
    return run


def loadavg() -> list[float]:
    return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]


def cpu_ticks(pid: int) -> float:
    f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")


def vm_hwm_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


class Server:
    def __init__(self, run: Path, store: str, extra: tuple[str, ...] = ()) -> None:
        self.port = free_port()
        env = {**os.environ, "SHIFTREC_TOKEN": TOKEN, "OMP_NUM_THREADS": "1"}  # 1 torch thread
        self.proc = subprocess.Popen([*SHIFTREC, "serve", str(run), "--port", str(self.port),
                                      "--store", store, *extra], env=env, cwd=ROOT,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        import httpx

        t0 = time.time()
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(self.proc.stderr.read().decode()[-2000:])
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.time() - t0 > 900:
                raise RuntimeError("server did not start")
            time.sleep(0.3)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)


# ---------------------------------------------------------------------- load generator
async def _generate(port: int, kind: str, concurrency: int, duration: float,
                    users: list[str], items: list[str]) -> dict[str, Any]:
    lat: list[float] = []
    status: dict[int, int] = {}
    no_reason = [0]
    stop = time.perf_counter() + duration
    rng = random.Random(0)
    run_id = uuid.uuid4().hex[:8]
    counter = [0]

    def request() -> bytes:
        if kind == "recs":
            u = rng.choice(users)
            return (f"GET /v1/users/{u}/recommendations?k=10 HTTP/1.1\r\nHost: x\r\n\r\n"
                    ).encode()
        counter[0] += 1
        b = counter[0]
        evs = [{"user_id": rng.choice(users), "item_id": rng.choice(items),
                "timestamp": 1.7e9 + b, "event_id": f"{run_id}-{b}-{j}"} for j in range(100)]
        body = json.dumps({"events": evs}).encode()
        return (f"POST /v1/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
                ).encode() + body

    async def conn() -> None:
        r, w = await asyncio.open_connection("127.0.0.1", port)
        while time.perf_counter() < stop:
            req = request()
            t = time.perf_counter()
            w.write(req)
            await w.drain()
            head = await r.readuntil(b"\r\n\r\n")
            code = int(head[9:12])
            n = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    n = int(line.split(b":")[1])
            body = await r.readexactly(n)
            lat.append(time.perf_counter() - t)
            status[code] = status.get(code, 0) + 1
            if kind == "recs" and code == 200 and b'"reasons":[{' not in body:
                no_reason[0] += 1
        w.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(conn() for _ in range(concurrency)))
    wall = time.perf_counter() - t0
    a = np.asarray(lat) * 1e3
    return {"requests": len(lat), "wall_s": wall, "req_per_s": len(lat) / wall,
            "p50_ms": float(np.percentile(a, 50)), "p99_ms": float(np.percentile(a, 99)),
            "status": {str(k): v for k, v in status.items()},
            "answers_without_reasons": no_reason[0]}


def loadgen(args: argparse.Namespace) -> None:
    ids = json.loads(Path(args.ids).read_text())
    out = asyncio.run(_generate(args.port, args.kind, args.concurrency, args.duration,
                                ids["users"], ids["items"]))
    print(json.dumps(out))


WRK_LUA = """
local users = {%s}
local i = 0
request = function()
  i = i + 1
  return wrk.format("GET", "/v1/users/" .. users[(i %% #users) + 1] .. "/recommendations?k=10")
end
"""


def _ms(text: str) -> float:
    v = float(re.match(r"[\d.]+", text).group())
    return v / 1000 if text.endswith("us") else v * 1000 if text.endswith("s") and \
        not text.endswith("ms") else v


def wrk_recs(server: Server, concurrency: int, duration: float, ids_file: Path) -> dict[str, Any]:
    """GET recommendations with wrk (C, one thread): the load generator's own CPU stays small,
    so the server's share is what the machine leaves it."""
    users = json.loads(ids_file.read_text())["users"]
    rng = random.Random(0)
    lua = ids_file.parent / "recs.lua"
    lua.write_text(WRK_LUA % ",".join(json.dumps(rng.choice(users)) for _ in range(5000)))
    c0, t0 = cpu_ticks(server.proc.pid), time.time()
    p = subprocess.run(["wrk", "-t1", f"-c{concurrency}", f"-d{max(1, round(duration))}s", "--latency",
                        "-s", str(lua), f"http://127.0.0.1:{server.port}"],
                       capture_output=True, text=True, check=True)
    c1, t1 = cpu_ticks(server.proc.pid), time.time()
    txt = p.stdout
    pct = dict(re.findall(r"^\s+(\d+)%\s+(\S+)$", txt, re.M))
    n = int(re.search(r"(\d+) requests in", txt).group(1))
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", txt)
    errs = re.search(r"Socket errors: (.*)", txt)
    return {"requests": n, "req_per_s": float(re.search(r"Requests/sec:\s+([\d.]+)",
                                                        txt).group(1)),
            "p50_ms": _ms(pct["50"]), "p90_ms": _ms(pct["90"]), "p99_ms": _ms(pct["99"]),
            "non_2xx": int(bad.group(1)) if bad else 0,
            "socket_errors": errs.group(1) if errs else None,
            "server_cpu_share": round((c1 - c0) / (t1 - t0), 3), "client": "wrk"}


def reasons_sample(server: Server, ids_file: Path, n: int = 200) -> dict[str, int]:
    """Answers (k=10) checked one by one: every item has at least one reason."""
    import httpx

    users = json.loads(ids_file.read_text())["users"][:n]
    bad = 0
    with httpx.Client(base_url=f"http://127.0.0.1:{server.port}") as c:
        for u in users:
            r = c.get(f"/v1/users/{u}/recommendations", params={"k": 10})
            bad += r.status_code != 200 or any(not it["reasons"] for it in r.json()["items"])
    return {"checked": len(users), "answers_without_reasons": bad}


def run_load(server: Server, kind: str, concurrency: int, duration: float,
             ids_file: Path) -> dict[str, Any]:
    if kind == "recs" and shutil.which("wrk"):
        return wrk_recs(server, concurrency, duration, ids_file)
    c0, t0 = cpu_ticks(server.proc.pid), time.time()
    p = subprocess.run([sys.executable, __file__, "loadgen", "--port", str(server.port),
                        "--kind", kind, "--concurrency", str(concurrency), "--duration",
                        str(duration), "--ids", str(ids_file)], capture_output=True, text=True,
                       check=True, cwd=ROOT)
    c1, t1 = cpu_ticks(server.proc.pid), time.time()
    out = json.loads(p.stdout.strip().splitlines()[-1])
    out["server_cpu_share"] = round((c1 - c0) / (t1 - t0), 3)  # 1.0 = one full core
    return out


def median_of(runs: list[dict[str, Any]]) -> dict[str, Any]:
    keys = ("req_per_s", "p50_ms", "p99_ms", "server_cpu_share")
    out = {k: round(statistics.median(r[k] for r in runs), 3) for k in keys}
    out["runs"] = runs
    return out


# ---------------------------------------------------------------------- phases
def bench_recs(run: Path, ids_file: Path, repeats: int, duration: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as d:
        s = Server(run, f"sqlite:///{d}/events.sqlite")
        try:
            run_load(s, "recs", 10, 2.0, ids_file)  # warm-up
            res = {}
            for c in (1, 10, 50):
                res[str(c)] = median_of([run_load(s, "recs", c, duration, ids_file)
                                         for _ in range(repeats)])
                print(f"recs c={c}: {res[str(c)]['req_per_s']:.0f} req/s, p50 "
                      f"{res[str(c)]['p50_ms']:.1f} ms, p99 {res[str(c)]['p99_ms']:.1f} ms, "
                      f"server cpu {res[str(c)]['server_cpu_share']:.2f}", flush=True)
            res["server_peak_rss_mb"] = round(vm_hwm_mb(s.proc.pid), 1)
            res["reasons_check"] = reasons_sample(s, ids_file)
            res["client"] = "wrk -t1 (C)" if shutil.which("wrk") else "python asyncio"
        finally:
            s.stop()
    return res


def _pg_url() -> tuple[str, str] | None:
    try:
        import psycopg

        schema = "bench_" + uuid.uuid4().hex[:10]
        with psycopg.connect(PG, autocommit=True, connect_timeout=3) as c:
            c.execute(f"CREATE SCHEMA {schema}")
        return f"{PG}?options=-csearch_path%3D{schema}", schema
    except Exception as e:  # noqa: BLE001
        print(f"PostgreSQL unavailable: {e}")
        return None


def bench_events(run: Path, ids_file: Path, repeats: int, duration: float,
                 concurrency: int = 8) -> dict[str, Any]:
    from shiftrec.serve.store import EventStore

    out: dict[str, Any] = {}
    for backend in ("sqlite", "postgresql"):
        runs = []
        for _ in range(repeats):
            with tempfile.TemporaryDirectory() as d:
                schema = None
                if backend == "sqlite":
                    url = f"sqlite:///{d}/events.sqlite"
                else:
                    got = _pg_url()
                    if got is None:
                        out[backend] = {"skipped": "PostgreSQL unreachable"}
                        break
                    url, schema = got
                s = Server(run, url)
                try:
                    r = run_load(s, "events", concurrency, duration, ids_file)
                    rss = vm_hwm_mb(s.proc.pid)
                finally:
                    s.stop()
                st = EventStore(url)
                stored = st.count()
                st.close()
                if schema:
                    import psycopg

                    with psycopg.connect(PG, autocommit=True) as c:
                        c.execute(f"DROP SCHEMA {schema} CASCADE")
                acked = r["status"].get("200", 0) * 100
                runs.append({"durable_events_per_s": stored / r["wall_s"], "stored": stored,
                             "acknowledged": acked, "batches_per_s": r["req_per_s"],
                             "p50_ms": r["p50_ms"], "p99_ms": r["p99_ms"],
                             "server_cpu_share": r["server_cpu_share"],
                             "server_peak_rss_mb": round(rss, 1), "status": r["status"]})
        if runs:
            out[backend] = {"durable_events_per_s": round(statistics.median(
                x["durable_events_per_s"] for x in runs)), "concurrency": concurrency,
                "batch": 100, "runs": runs}
            print(f"events {backend}: {out[backend]['durable_events_per_s']:,} durable events/s",
                  flush=True)
    return out


def bench_ann(n: int = 1_000_000, d: int = 64, n_queries: int = 1000) -> dict[str, Any]:
    from shiftrec.serve.retrieval import AnnConfig, AnnRetriever, exact_topk

    rng = np.random.default_rng(0)
    centers = rng.normal(size=(4096, d)).astype(np.float32)
    items = (centers[rng.integers(0, len(centers), n)] + rng.normal(size=(n, d))).astype(np.float32)
    queries = (centers[rng.integers(0, len(centers), n_queries)]
               + rng.normal(size=(n_queries, d))).astype(np.float32)
    exact = exact_topk(items, queries, 10)
    out: dict[str, Any] = {"items": n, "dim": d, "queries": n_queries,
                           "data": "4,096 gaussian clusters, unit noise; queries drawn alike"}
    t = time.perf_counter()
    ann = AnnRetriever(items, AnnConfig(nlist=1024, nprobe=16, n_candidates=500))
    out["build_s"] = round(time.perf_counter() - t, 2)
    res = {}
    for nprobe in (16, 64, 128, 256):
        ann.index.nprobe = nprobe
        lat, got = [], []
        for i in range(n_queries):
            t = time.perf_counter()
            _, ids = ann.search(queries[i], 10)
            lat.append(time.perf_counter() - t)
            got.append(ids[0])
        recall = float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(got, exact,
                                                                        strict=True)]))
        a = np.asarray(lat) * 1e3
        res[str(nprobe)] = {"recall@10_vs_exact": round(recall, 4),
                            "p50_ms": round(float(np.percentile(a, 50)), 3),
                            "p99_ms": round(float(np.percentile(a, 99)), 3)}
        print(f"ann nprobe={nprobe}: recall@10 {recall:.4f}, p99 {res[str(nprobe)]['p99_ms']} ms",
              flush=True)
    out["by_nprobe"] = res
    t = time.perf_counter()
    for i in range(100):
        exact_topk(items, queries[i:i + 1], 10)
    out["exact_full_scoring_ms_per_query"] = round((time.perf_counter() - t) * 10, 2)
    return out


def prep_1m(n_items: int = 1_000_000, n_users: int = 20_000) -> Path:
    """A servable run over 1M catalogue items (the product's own write_run)."""
    run = OUT / "ann1m-run"
    if (run / "_COMPLETE").is_file():
        return run
    import torch

    from shiftrec.data.clean import clean
    from shiftrec.data.readers._common import finish
    from shiftrec.data.schema import Dataset, conform_items
    from shiftrec.data.splits import leave_one_out
    from shiftrec.data.synthetic import StoreConfig, generate
    from shiftrec.models.registry import build_model
    from shiftrec.models.sasrec import item_map_fingerprint
    from shiftrec.pipelines.run import write_run

    t = time.perf_counter()
    st = generate(StoreConfig(n_users=n_users, n_items=n_items, mean_events=10, min_events=8,
                              seed=0))
    rr = finish(st.events, conform_items(st.items), [], st.events.height, ["synthetic"])
    ds, _, _ = clean(rr, name="synthetic-1m")
    # clean keeps the catalogue rows of items with events; a shop's catalogue is all of them
    ds = Dataset(events=ds.events, items=conform_items(st.items), name=ds.name, meta=ds.meta)
    split = leave_one_out(ds)
    print(f"1M data: {split.n_items:,} items, {ds.events.height:,} events "
          f"({time.perf_counter() - t:.0f} s)", flush=True)
    m = build_model("sasrec", hidden=64, layers=1, heads=2, inner=128, max_len=50,
                    train={"threads": 1})
    m._build(split.n_items)
    rng = np.random.default_rng(0)
    d = 64
    centers = rng.normal(size=(4096, d)).astype(np.float32)
    emb = (centers[rng.integers(0, len(centers), split.n_items + 1)]
           + rng.normal(size=(split.n_items + 1, d))).astype(np.float32) / 8
    emb[0] = 0
    with torch.no_grad():
        m.net.item_emb.weight.copy_(torch.from_numpy(emb))
    m.data_fingerprint = split.meta.get("fingerprint")
    m.item_keys = item_map_fingerprint(split)
    m.save(OUT / "ann1m-model")
    write_run(run, model_dir=OUT / "ann1m-model", split=split, dataset=ds)
    print(f"1M run written ({time.perf_counter() - t:.0f} s)", flush=True)
    return run


def bench_ann_http(duration: float, repeats: int) -> dict[str, Any]:
    import httpx

    from shiftrec.serve.recommender import Query, Recommender
    from shiftrec.serve.retrieval import AnnConfig, index_dir

    run = prep_1m()
    shutil.rmtree(index_dir(run), ignore_errors=True)  # measure a fresh build
    rec = Recommender.load(run, ann=AnnConfig(mode="off"))
    users = rec.user_ids()
    ids_file = OUT / "ann1m-ids.json"
    ids_file.write_text(json.dumps({"users": users[:5000], "items": []}))
    out: dict[str, Any] = {"items": rec.n_items, "users": len(users), "model": "sasrec "
                           "(1 layer, hidden 64, clustered random item vectors)"}
    # exact answers first (full scoring), then the served ones
    sample = users[:300]
    exact = rec.recommend_batch([Query(u, None, 10, True, False) for u in sample])
    del rec
    starts = []
    res: dict[str, Any] = {}
    for attempt in ("first start (index built)", "second start (index from cache)"):
        with tempfile.TemporaryDirectory() as d:
            t = time.perf_counter()
            s = Server(run, f"sqlite:///{d}/events.sqlite", ("--ann", "on"))
            up = time.perf_counter() - t
            try:
                with httpx.Client(base_url=f"http://127.0.0.1:{s.port}", timeout=60) as c:
                    info = c.get("/healthz").json()["ann"]
                    starts.append({"start": attempt, "server_ready_s": round(up, 1), **info})
                    if not res:
                        got = [c.get(f"/v1/users/{u}/recommendations", params={"k": 10}).json()
                               for u in sample]
                        rec_at = [len({i["item_id"] for i in g["items"]} &
                                      {i.item_id for i in e.items}) / max(len(e.items), 1)
                                  for g, e in zip(got, exact, strict=True)]
                        out["recall@10_vs_exact"] = round(float(np.mean(rec_at)), 4)
                        out["recall_users"] = len(sample)
                        out["answers_without_reasons"] = sum(
                            any(not i["reasons"] for i in g["items"]) for g in got)
                        run_load(s, "recs", 10, 2.0, ids_file)  # warm-up
                        for conc in (1, 10):
                            res[str(conc)] = median_of([run_load(s, "recs", conc, duration,
                                                                 ids_file)
                                                        for _ in range(repeats)])
                            print(f"ann http c={conc}: {res[str(conc)]['req_per_s']:.0f} req/s, "
                                  f"p50 {res[str(conc)]['p50_ms']:.1f} ms, p99 "
                                  f"{res[str(conc)]['p99_ms']:.1f} ms", flush=True)
                        out["server_peak_rss_mb"] = round(vm_hwm_mb(s.proc.pid), 1)
            finally:
                s.stop()
    out["starts"] = starts
    out["by_concurrency"] = res
    print(f"ann http: recall@10 {out['recall@10_vs_exact']}, starts {starts}", flush=True)
    return out


def main(args: argparse.Namespace) -> None:
    os.environ.setdefault("SHIFTREC_DATA", "/work/shared/data")
    load0 = loadavg()
    result: dict[str, Any] = {"machine": {"cpus": os.cpu_count(), "loadavg_before": load0}}
    needs_run = not (args.skip_recs and args.skip_events)
    if needs_run:
        run = prep()
        from shiftrec.serve.recommender import Recommender

        rec = Recommender.load(run)
        ids_file = OUT / "ids.json"
        ids_file.write_text(json.dumps({"users": rec.user_ids(),
                                        "items": [str(x) for x in rec.item_ids[1:]]}))
        result["run"] = {
            "dataset": "scientific (UniSRec files)", "model": rec.model_name,
            "base": "sasrec", "sasrec_epochs": SASREC_EPOCHS, "items": rec.n_items,
            "users": rec.n_users, "topics": len(rec.topic_names)}
    result |= {
        "setup": "server = one `shiftrec serve` process (uvicorn, httptools, uvloop when "
                 "installed); load generator = wrk -t1 for recommendations (else and for "
                 "events: raw asyncio HTTP/1.1 keep-alive in another process), loopback; both "
                 "on the same 2 cores, shared with other work (see loadavg); "
                 "server_cpu_share 1.0 = one core",
        "duration_s": args.duration, "repeats": args.repeats}

    def section(key: str, fn: Any) -> None:
        before = loadavg()
        result[key] = fn()
        result[key]["loadavg_before_after"] = [before, loadavg()]

    if not args.skip_recs:
        section("recommendations_with_reasons",
                lambda: bench_recs(run, ids_file, args.repeats, args.duration))
    if not args.skip_events:
        section("events_post_batches_of_100",
                lambda: bench_events(run, ids_file, args.repeats, args.duration))
    if not args.skip_ann:
        section("ann_1m_items", bench_ann)
    if not args.skip_ann_http:
        section("ann_1m_items_http", lambda: bench_ann_http(args.duration, args.repeats))
    result["machine"]["loadavg_after"] = loadavg()
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    old = json.loads(RESULTS.read_text()) if RESULTS.exists() and args.merge else {}
    if "machine" in old:  # keep the earlier sections' machine notes beside this run's
        result["machine"] = {**old["machine"], "latest_run": result["machine"]}
    RESULTS.write_text(json.dumps({**old, **result}, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd")
    lg = sub.add_parser("loadgen")
    lg.add_argument("--port", type=int, required=True)
    lg.add_argument("--kind", choices=["recs", "events"], required=True)
    lg.add_argument("--concurrency", type=int, required=True)
    lg.add_argument("--duration", type=float, required=True)
    lg.add_argument("--ids", required=True)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--duration", type=float, default=10.0)
    ap.add_argument("--skip-recs", action="store_true")
    ap.add_argument("--skip-events", action="store_true")
    ap.add_argument("--skip-ann", action="store_true")
    ap.add_argument("--skip-ann-http", action="store_true")
    ap.add_argument("--merge", action="store_true", help="keep sections of an earlier result")
    a = ap.parse_args()
    if a.cmd == "loadgen":
        loadgen(a)
    else:
        main(a)
