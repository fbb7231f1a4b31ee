"""The HTTP service in-process (TestClient): answers, live events moving the recommendations,
auth, bad input, idempotency, restart, new items, reload, metrics."""

from __future__ import annotations

import json

import numpy as np
import pytest
from fastapi.testclient import TestClient

from shiftrec.serve.app import M, Service, create_app
from tests.serve.conftest import AUTH, TOKEN, FakeEncoder


@pytest.fixture
def svc(knn_run, tmp_path):
    s = Service(knn_run, f"sqlite:///{tmp_path / 'ev.sqlite'}", token=TOKEN)
    yield s
    s.close()


@pytest.fixture
def client(svc):
    return TestClient(create_app(svc))


def _user(svc):
    return svc.rec.user_ids()[0]


def test_recommendations_schema_and_reasons(client, svc):
    r = client.get(f"/v1/users/{_user(svc)}/recommendations", params={"k": 5})
    assert r.status_code == 200
    body = M["RecsOut"].model_validate(r.json())
    assert len(body.items) == 5 and all(it.reasons for it in body.items)
    assert set(r.json()["shift"]) == {"shifted", "from", "to", "at"}
    anon = client.post("/v1/recommendations", json={"history": ["I0000001", "nope"], "k": 3})
    assert anon.status_code == 200 and anon.json()["ignored_items"] == ["nope"]
    assert client.get("/openapi.json").status_code == 200
    assert client.get("/healthz").json()["status"] == "ok"
    assert client.get("/v1/migrations").json()["topics"]
    assert client.get(f"/v1/users/{_user(svc)}/interests").json()["profile"]


def _topic_events(svc, user, topic, n, t0):
    rec = svc.rec
    items = [rec.item_ids[i] for i in range(1, rec.n_items + 1) if rec.item_topic[i] == topic]
    return [{"user_id": user, "item_id": items[j % len(items)], "timestamp": t0 + 60 * j,
             "event_type": "purchase"} for j in range(n)]


def test_events_of_a_new_topic_shift_the_user_and_move_the_recommendations(client, svc):
    rec = svc.rec
    user = "live-user-1"
    sizes = np.bincount(rec.item_topic[rec.item_topic >= 0])
    a, b = (int(t) for t in np.argsort(-sizes)[:2])
    r = client.post("/v1/events", json={"events": _topic_events(svc, user, a, 30, 1.71e9)},
                    headers=AUTH)
    assert r.status_code == 200 and r.json()["stored"] == 30
    before = client.get(f"/v1/users/{user}/recommendations", params={"k": 10}).json()
    assert not before["shift"]["shifted"]
    tb = [rec.item_topic[rec.resolve(it["item_id"])] for it in before["items"]]
    r = client.post("/v1/events", json={"events": _topic_events(svc, user, b, 8, 1.72e9)},
                    headers=AUTH)
    assert r.json()["stored"] == 8
    after = client.get(f"/v1/users/{user}/recommendations", params={"k": 10}).json()
    assert after["shift"]["shifted"] and rec.topic_names[b] in after["shift"]["to"]
    ta = [rec.item_topic[rec.resolve(it["item_id"])] for it in after["items"]]
    assert ta.count(b) > tb.count(b)
    assert any(x["kind"] == "shift" for it in after["items"] for x in it["reasons"])
    inter = client.get(f"/v1/users/{user}/interests").json()
    assert inter["n_events"] == 38 and inter["shifts"] and inter["profile"][0]["topic"] == \
        rec.topic_names[b]


def test_writes_need_the_token_and_store_nothing_without_it(client, svc):
    ev = {"events": [{"user_id": "u", "item_id": "I0000001", "timestamp": 1.7e9}]}
    for h in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN},
              {"Authorization": "Basic " + TOKEN}):
        r = client.post("/v1/events", json=ev, headers=h)
        assert r.status_code == 401 and "Authorization" in r.json()["error"]
    assert client.post("/v1/admin/reload", headers={}).status_code == 401
    assert svc.store.count() == 0


BAD = [
    (b"{not json", "body"),
    (json.dumps({"events": "x"}).encode(), "events"),
    (json.dumps({"events": [], "extra": 1}).encode(), "events"),
    (json.dumps({"evnts": []}).encode(), "evnts"),
    (b'{"events": NaN}', "events"),
]


@pytest.mark.parametrize("body,field", BAD)
def test_bad_requests_are_4xx_naming_the_field(client, svc, body, field):
    r = client.post("/v1/events", content=body,
                    headers={**AUTH, "content-type": "application/json"})
    assert 400 <= r.status_code < 500
    assert field in r.json()["error"]
    assert svc.store.count() == 0


def test_bad_events_are_rejected_by_index_and_good_ones_stored(client, svc):
    good = {"user_id": "u1", "item_id": "I0000001", "timestamp": 1.7e9}
    evs = [good,
           {**good, "timestamp": 1e12},  # out of range
           {**good, "timestamp": "not a date"},
           {**good, "user_id": 5},  # wrong type
           {**good, "colour": "red"},  # unknown field
           {**good, "item_id": "no-such-item"},
           {**good, "user_id": "x" * 300},  # too long
           {**good, "event_type": "teleport"},
           {**good, "value": float("inf")},
           "not an object",
           {**good, "timestamp": "2024-05-01T10:00:00Z", "event_id": "ok-2"}]
    body = json.dumps({"events": evs}).replace("Infinity", "Infinity")
    r = client.post("/v1/events", content=body, headers={**AUTH,
                                                          "content-type": "application/json"})
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["accepted"] == 2 and out["stored"] == 2
    fields = {x["index"]: x["field"] for x in out["rejected"]}
    assert fields == {1: "events[1].timestamp", 2: "events[2].timestamp",
                      3: "events[3].user_id", 4: "events[4].colour", 5: "events[5].item_id",
                      6: "events[6].user_id", 7: "events[7].event_type", 8: "events[8].value",
                      9: "events[9]"}
    assert svc.store.count() == 2


def test_oversized_bodies_get_413_and_store_nothing(client, svc):
    big = {"events": [{"user_id": "u", "item_id": "I0000001", "timestamp": 1.7e9,
                       "session_id": "s" * (1 << 20)}]}
    r = client.post("/v1/events", json=big, headers=AUTH)
    assert r.status_code == 413 and "body" in r.json()["error"]

    def chunks():  # no Content-Length: counted while read
        yield b'{"events": [{"user_id": "'
        for _ in range(20):
            yield b"u" * 65536
        yield b'"}]}'

    r = client.post("/v1/events", content=chunks(), headers={**AUTH,
                                                             "content-type": "application/json"})
    assert r.status_code == 413
    assert svc.store.count() == 0
    # a long string within the body limit is a 422 naming the field
    r = client.post("/v1/recommendations", json={"history": ["x" * 5000]})
    assert r.status_code == 422 and "history[0]" in r.json()["error"]


def test_idempotent_retries_are_stored_once(client, svc):
    evs = {"events": [{"user_id": "r", "item_id": "I0000001", "timestamp": 1.7e9},
                      {"user_id": "r", "item_id": "I0000002", "timestamp": 1.7e9 + 1}]}
    h = {**AUTH, "Idempotency-Key": "batch-42"}
    first = client.post("/v1/events", json=evs, headers=h).json()
    again = client.post("/v1/events", json=evs, headers=h).json()
    assert (first["stored"], again["stored"], again["duplicates"]) == (2, 0, 2)
    one = {"events": [{"user_id": "r", "item_id": "I0000003", "timestamp": 1.7e9,
                       "event_id": "e-1"}]}
    assert client.post("/v1/events", json=one, headers=AUTH).json()["stored"] == 1
    assert client.post("/v1/events", json=one, headers=AUTH).json()["stored"] == 0
    assert svc.store.count() == 3
    assert client.get("/v1/users/r/interests").json()["n_events"] == 3  # reflected once


def test_restart_rebuilds_state_and_gives_the_same_recommendations(knn_run, tmp_path):
    url = f"sqlite:///{tmp_path / 'ev.sqlite'}"
    s1 = Service(knn_run, url, token=TOKEN)
    c1 = TestClient(create_app(s1))
    user = s1.rec.user_ids()[5]
    evs = _topic_events(s1, user, 1, 12, 1.75e9) + _topic_events(s1, "brand-new", 2, 5, 1.75e9)
    assert c1.post("/v1/events", json={"events": evs}, headers=AUTH).json()["stored"] == 17
    want = {u: c1.get(f"/v1/users/{u}/recommendations").json() for u in (user, "brand-new")}
    s1.close()
    s2 = Service(knn_run, url, token=TOKEN)
    c2 = TestClient(create_app(s2))
    for u, w in want.items():
        assert c2.get(f"/v1/users/{u}/recommendations").json() == w
    s2.close()


def test_id_only_models_refuse_new_items(client):
    r = client.post("/v1/items", json={"items": [{"item_id": "new-1", "title": "A new lamp"}]},
                    headers=AUTH)
    assert r.status_code == 409 and "retraining" in r.json()["error"]


def test_text_model_embeds_new_items_at_once(text_run, tmp_path):
    url = f"sqlite:///{tmp_path / 'ev.sqlite'}"
    s = Service(text_run, url, token=TOKEN, encoder=FakeEncoder())
    c = TestClient(create_app(s))
    n0 = s.rec.n_items
    r = c.post("/v1/items", json={"items": [{"item_id": "new-1", "title": "A brand new lamp",
                                             "price": 12.5}]}, headers=AUTH)
    assert r.status_code == 200 and r.json()["added"] == ["new-1"]
    assert s.rec.n_items == n0 + 1
    scores = s.rec.score([1, 2, 3], [0, 1, 2])
    assert len(scores) == n0 + 2 and np.isfinite(scores[-1])  # scored by the model
    r = c.post("/v1/events", json={"events": [{"user_id": "u", "item_id": "new-1",
                                               "timestamp": 1.7e9}]}, headers=AUTH)
    assert r.json()["stored"] == 1
    s.close()
    s2 = Service(text_run, url, token=TOKEN, encoder=FakeEncoder())  # items survive a restart
    assert s2.rec.resolve("new-1") == n0 + 1
    assert s2.rec.snapshot("u")[0] == [n0 + 1]
    s2.close()


def test_catch_up_adds_items_another_replica_added_reading_them_once(text_run, tmp_path):
    """Events naming items another replica added: catch_up adds those items and applies the
    events, reading the items table once however many stored events name unknown items."""
    from shiftrec.serve.store import StoredEvent

    url = f"sqlite:///{tmp_path / 'ev.sqlite'}"
    a = Service(text_run, url, token=TOKEN, encoder=FakeEncoder())
    b = Service(text_run, url, token=TOKEN, encoder=FakeEncoder())
    try:
        ca = TestClient(create_app(a))
        items = [{"item_id": f"new-{j}", "title": f"A new lamp {j}"} for j in range(3)]
        assert ca.post("/v1/items", json={"items": items}, headers=AUTH).status_code == 200
        evs = [{"user_id": "u", "item_id": f"new-{j % 3}", "timestamp": 1.7e9 + j}
               for j in range(6)]
        assert ca.post("/v1/events", json={"events": evs}, headers=AUTH).json()["stored"] == 6
        # events of items no run knows (as after a reload onto another catalogue)
        a.store.append([StoredEvent(f"gone-{j}", "u", f"gone-{j}", None, int(1.8e15) + j,
                                    "view") for j in range(4)])
        reads = []
        items_of = b.store.items
        b.store.items = lambda: reads.append(1) or items_of()
        assert b.catch_up() == 6
        assert len(reads) == 1
        assert b.rec.snapshot("u")[0] == a.rec.snapshot("u")[0]
        assert [b.rec.item_ids[i] for i in b.rec.snapshot("u")[0]] == \
            [f"new-{j % 3}" for j in range(6)]
    finally:
        a.close()
        b.close()


def test_reload_swaps_the_run_and_keeps_live_events(client, svc, text_run):
    client.post("/v1/events", json={"events": [{"user_id": "z", "item_id": "I0000001",
                                                "timestamp": 1.7e9}]}, headers=AUTH)
    r = client.post("/v1/admin/reload", json={"run_dir": str(text_run)}, headers=AUTH)
    assert r.status_code == 200 and r.json()["model"] == "transfer"
    assert client.get("/healthz").json()["model"] == "transfer"
    assert client.get("/v1/users/z/interests").json()["n_events"] == 1


def test_metrics_are_prometheus_text(client, svc):
    client.get(f"/v1/users/{_user(svc)}/recommendations")
    client.post("/v1/events", json={"events": [{"user_id": "m", "item_id": "I0000001",
                                                "timestamp": 1.7e9}]}, headers=AUTH)
    text = client.get("/metrics").text
    assert 'shiftrec_requests_total{method="GET",route="/v1/users/{user_id}/recommendations",' \
           'status="200"} 1' in text
    assert "shiftrec_events_stored_total 1" in text
    assert "shiftrec_request_seconds_bucket" in text


def test_export_events_closes_the_loop(client, svc, tmp_path):
    from shiftrec.data.schema import Dataset
    from shiftrec.serve.store import export_events

    evs = _topic_events(svc, "exp", 0, 4, 1.7e9)
    client.post("/v1/events", json={"events": evs}, headers=AUTH)
    ds = Dataset.load(export_events(svc.store, tmp_path / "exported"))
    assert ds.events.height == 4 and ds.events["user_id"].unique().to_list() == ["exp"]
    assert ds.events["domain"].to_list() == ["store"] * 4
    assert ds.events["event_type"].cast(str).to_list() == ["purchase"] * 4


@pytest.mark.parametrize("qs", ["", "?k=3", "?k=7&explain=false", "?exclude_seen=0&k=2",
                                "?k=4&explain=YES"])
def test_fast_recommendation_route_answers_like_the_fastapi_route(client, svc, qs):
    """The hot GET route is answered before FastAPI; the same query through the full stack
    (reads tokened, which turns the fast path off) gives the same body."""
    from shiftrec.serve.app import _fast_recs_query

    u = _user(svc)
    assert _fast_recs_query(f"/v1/users/{u}/recommendations", qs[1:].encode()) is not None
    fast = client.get(f"/v1/users/{u}/recommendations{qs}")
    svc.auth_reads = True
    slow = client.get(f"/v1/users/{u}/recommendations{qs}", headers=AUTH)
    svc.auth_reads = False
    assert fast.status_code == slow.status_code == 200 and fast.json() == slow.json()
    assert fast.headers["content-type"] == "application/json"


@pytest.mark.parametrize("qs", ["k=0", "k=1001", "k=abc", "k=3&k=4", "foo=1", "explain=maybe",
                                "k=%20", "k"])
def test_odd_recommendation_queries_take_the_validating_route(client, svc, qs):
    from shiftrec.serve.app import _fast_recs_query

    u = _user(svc)
    assert _fast_recs_query(f"/v1/users/{u}/recommendations", qs.encode()) is None
    r = client.get(f"/v1/users/{u}/recommendations?{qs}")
    assert r.status_code in (200, 422), r.text  # FastAPI's answer (unknown params are ignored)
    if qs.startswith(("k=0", "k=1001", "k=abc", "explain")):
        assert r.status_code == 422 and r.json()["detail"][0]["field"] in ("k", "explain")


def test_restart_from_a_snapshot_replays_only_later_events_and_answers_the_same(knn_run,
                                                                                tmp_path):
    url = f"sqlite:///{tmp_path / 'ev.sqlite'}"
    snap = tmp_path / "snap"
    s1 = Service(knn_run, url, token=TOKEN, snapshot_dir=snap)
    c1 = TestClient(create_app(s1))
    user = s1.rec.user_ids()[5]
    evs = _topic_events(s1, user, 1, 12, 1.75e9) + _topic_events(s1, "snap-new", 2, 5, 1.75e9)
    assert c1.post("/v1/events", json={"events": evs}, headers=AUTH).json()["stored"] == 17
    s1.close()  # writes the snapshot
    assert (snap / "_COMPLETE").is_file()
    s2 = Service(knn_run, url, token=TOKEN)  # events after the snapshot, no snapshot kept
    later = _topic_events(s2, user, 3, 4, 1.76e9) + _topic_events(s2, "snap-later", 0, 3, 1.76e9)
    assert TestClient(create_app(s2)).post("/v1/events", json={"events": later},
                                           headers=AUTH).json()["stored"] == 7
    s2.close()
    with_snap = Service(knn_run, url, token=TOKEN, snapshot_dir=snap)
    full = Service(knn_run, url, token=TOKEN)
    try:
        assert with_snap.snapshot_loaded is not None and with_snap.events_replayed == 7
        assert full.snapshot_loaded is None and full.events_replayed == 24
        cs, cf = TestClient(create_app(with_snap)), TestClient(create_app(full))
        for u in (user, "snap-new", "snap-later", with_snap.rec.user_ids()[0]):
            for q in ("recommendations?k=20", "interests"):
                a, b = cs.get(f"/v1/users/{u}/{q}").json(), cf.get(f"/v1/users/{u}/{q}").json()
                assert a == b
        assert cs.get(f"/v1/users/{user}/interests").json()["n_events"] == \
            len(full.rec._base[user][0]) + 16
    finally:
        with_snap.close(snapshot=False)
        full.close()


def test_a_snapshot_of_another_store_is_ignored(knn_run, tmp_path):
    snap = tmp_path / "snap"
    s1 = Service(knn_run, f"sqlite:///{tmp_path / 'a.sqlite'}", token=TOKEN, snapshot_dir=snap)
    TestClient(create_app(s1)).post("/v1/events", json={"events": _topic_events(
        s1, "x", 1, 3, 1.75e9)}, headers=AUTH)
    s1.close()
    s2 = Service(knn_run, f"sqlite:///{tmp_path / 'b.sqlite'}", token=TOKEN, snapshot_dir=snap)
    try:
        assert s2.snapshot_loaded is None and not s2.rec.has_user("x")
    finally:
        s2.close(snapshot=False)
