"""Reliability against a real uvicorn process: load (0 5xx, schema-valid answers), kill -9
while events are posted (every acknowledged event stored once and reflected), and fuzzing of
every operation of the OpenAPI schema (no 5xx)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import random
import threading

import pytest

from shiftrec.serve.app import M
from tests.serve.conftest import AUTH, TOKEN, Server


def _load(server: Server, users: list[str], items: list[str], n: int, concurrency: int
          ) -> dict[str, int]:
    import httpx

    rng = random.Random(0)
    plan = []
    for i in range(n):
        x = rng.random()
        if x < 0.6:
            u = rng.choice(users) if rng.random() < 0.9 else f"cold-{i}"
            plan.append(("GET", f"/v1/users/{u}/recommendations?k=10", None, "RecsOut"))
        elif x < 0.75:
            plan.append(("POST", "/v1/recommendations",
                         {"history": rng.sample(items, 5) + ["unknown"], "k": 10}, "RecsOut"))
        elif x < 0.9:
            evs = [{"user_id": rng.choice(users), "item_id": rng.choice(items),
                    "timestamp": 1.7e9 + i, "event_id": f"load-{i}-{j}"} for j in range(5)]
            plan.append(("POST", "/v1/events", {"events": evs}, "EventsOut"))
        else:
            plan.append(("GET", f"/v1/users/{rng.choice(users)}/interests", None, None))
    stats = {"ok": 0, "4xx": 0, "5xx": 0, "invalid": 0}

    async def run() -> None:
        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        async with httpx.AsyncClient(base_url=server.url, headers=AUTH, limits=limits,
                                     timeout=60) as c:
            q: asyncio.Queue = asyncio.Queue()
            for p in plan:
                q.put_nowait(p)

            async def worker() -> None:
                while not q.empty():
                    method, path, body, model = q.get_nowait()
                    r = await c.request(method, path, json=body)
                    if r.status_code >= 500:
                        stats["5xx"] += 1
                    elif r.status_code >= 400:
                        stats["4xx"] += 1
                    else:
                        stats["ok"] += 1
                        try:
                            data = r.json()
                            if model is not None:
                                M[model].model_validate(data)
                        except Exception:  # noqa: BLE001
                            stats["invalid"] += 1

            await asyncio.gather(*(worker() for _ in range(concurrency)))

    # own thread, own event loop: never collides with a loop another test left running
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, run()).result()
    return stats


def _server(run, tmp_path) -> Server:
    return Server(run, f"sqlite:///{tmp_path / 'ev.sqlite'}").start()


def _ids(run):
    from shiftrec.serve.recommender import Recommender

    rec = Recommender.load(run)
    return rec.user_ids()[:200], [str(x) for x in rec.item_ids[1:]]


def test_load_small(knn_run, tmp_path):
    users, items = _ids(knn_run)
    s = _server(knn_run, tmp_path)
    try:
        st = _load(s, users, items, 300, 20)
    finally:
        s.stop()
    assert st == {"ok": 300, "4xx": 0, "5xx": 0, "invalid": 0}


@pytest.mark.slow
def test_load_10k_at_50(knn_run, tmp_path):
    users, items = _ids(knn_run)
    s = _server(knn_run, tmp_path)
    try:
        st = _load(s, users, items, 10_000, 50)
    finally:
        s.stop()
    assert st == {"ok": 10_000, "4xx": 0, "5xx": 0, "invalid": 0}


def test_kill9_while_posting_events(knn_run, tmp_path):
    import httpx

    from shiftrec.serve.store import EventStore

    url = f"sqlite:///{tmp_path / 'ev.sqlite'}"
    s = Server(knn_run, url).start()
    acked: list[list[dict]] = []
    pending: list[list[dict]] = []
    stop = threading.Event()

    def client() -> None:
        i = 0
        with httpx.Client(base_url=s.url, headers=AUTH, timeout=10) as h:
            while not stop.is_set():
                evs = [{"user_id": f"k{i % 3}", "item_id": known[(i * 5 + j) % len(known)],
                        "timestamp": 1.7e9 + i * 10 + j, "event_id": f"kill-{i}-{j}"}
                       for j in range(5)]
                pending[:] = [evs]
                try:
                    r = h.post("/v1/events", json={"events": evs})
                except httpx.HTTPError:
                    return  # the server died mid-request: this batch is unacknowledged
                if r.status_code == 200:
                    acked.append(evs)
                    pending.clear()
                i += 1

    from shiftrec.serve.recommender import Recommender

    rec = Recommender.load(knn_run)
    known = sorted(str(x) for x in rec.item_ids[1:])
    base = {u: len(rec.snapshot(u)[0]) for u in ("k0", "k1", "k2")}
    t = threading.Thread(target=client)
    t.start()
    while len(acked) < 40:
        t.join(0.05)
    s.kill9()
    stop.set()
    t.join()
    s2 = Server(knn_run, url, port=s.port).start()
    try:
        import httpx as hx

        # the client retries its unacknowledged batch with the same event ids
        for evs in pending:
            r = hx.post(s2.url + "/v1/events", json={"events": evs}, headers=AUTH, timeout=10)
            assert r.status_code == 200
            acked.append(evs)
        st = EventStore(url)
        ids = [r[1] for r in st.iter_events()]
        st.close()
        want = {e["event_id"] for b in acked for e in b}
        assert len(ids) == len(set(ids))  # nothing stored twice
        assert set(ids) == want  # every acknowledged event is there (and nothing else)
        for u in ("k0", "k1", "k2"):
            n = sum(1 for b in acked for e in b if e["user_id"] == u)
            got = hx.get(f"{s2.url}/v1/users/{u}/interests").json()["n_events"]
            assert got == base[u] + n
    finally:
        s2.stop()


# ---------------------------------------------------------------- fuzzing from the schema

@pytest.fixture(scope="module")
def fuzz_client(knn_run, tmp_path_factory):
    from fastapi.testclient import TestClient

    from shiftrec.serve.app import Service, create_app

    svc = Service(knn_run, f"sqlite:///{tmp_path_factory.mktemp('fz') / 'ev.sqlite'}",
                  token=TOKEN)
    c = TestClient(create_app(svc), raise_server_exceptions=False)
    yield c, c.get("/openapi.json").json()
    svc.close()


def test_fuzz_every_operation_from_the_openapi_schema(fuzz_client):
    from urllib.parse import quote

    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    client, schema = fuzz_client
    scalars = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70),
                        st.floats(allow_nan=True, allow_infinity=True),
                        st.text(max_size=300), st.sampled_from(["I0000001", "U1", "view",
                                                                "2024-01-01T00:00:00Z"]))
    json_values = st.recursive(scalars, lambda c: st.lists(c, max_size=4)
                               | st.dictionaries(st.text(max_size=10), c, max_size=4),
                               max_leaves=20)
    ops = [(m.upper(), p, op) for p, item in schema["paths"].items() for m, op in item.items()]
    assert {p for _, p, _ in ops} >= {"/v1/events", "/v1/recommendations", "/v1/items",
                                      "/v1/users/{user_id}/recommendations", "/healthz",
                                      "/v1/users/{user_id}/interests", "/v1/migrations"}

    def props(op):
        ref = (op.get("requestBody", {}).get("content", {}).get("application/json", {})
               .get("schema", {}).get("$ref"))
        if not ref:
            return []
        comp = schema["components"]["schemas"][ref.split("/")[-1]]
        return list(comp.get("properties", {}))

    @st.composite
    def request(draw):
        method, path, op = draw(st.sampled_from([o for o in ops if o[1] != "/v1/admin/reload"]))
        for prm in op.get("parameters", []):
            if prm["in"] == "path":
                path = path.replace("{" + prm["name"] + "}", quote(
                                    draw(st.text(st.characters(blacklist_categories=("Cs",),
                                                               blacklist_characters="/?#%"),
                                                 min_size=1, max_size=40)), safe=""))
        query = {prm["name"]: draw(st.one_of(st.integers(-5, 2000).map(str),
                                             st.text(max_size=10)))
                 for prm in op.get("parameters", []) if prm["in"] == "query"
                 and draw(st.booleans())}
        body = None
        if method == "POST":
            keys = props(op)
            shaped = st.fixed_dictionaries({k: json_values for k in keys}) if keys else json_values
            body = draw(st.one_of(json_values, shaped,
                                  st.builds(lambda evs: {"events": evs},
                                            st.lists(st.dictionaries(st.sampled_from(
                                                ["user_id", "item_id", "timestamp",
                                                 "event_type", "value", "event_id", "x"]),
                                                json_values, max_size=6), max_size=5))))
        return method, path, query, body

    @settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
    @given(request())
    def check(req):
        method, path, query, body = req
        content = json.dumps(body, allow_nan=True) if body is not None else None
        r = client.request(method, path, params=query, content=content,
                           headers={**AUTH, "content-type": "application/json"})
        assert r.status_code < 500, (method, path, query, body, r.text[:300])

    check()
