"""The event store, the same suite over SQLite and PostgreSQL; two service processes writing
to one PostgreSQL at once."""

from __future__ import annotations

import threading

import pytest

from shiftrec.errors import ConfigError
from shiftrec.serve.store import EventStore, StoredEvent, parse_url
from tests.serve.conftest import AUTH, Server, drop_schema, pg_available, pg_schema_url


def _ev(i: int, user: str = "u") -> StoredEvent:
    return StoredEvent(f"e{i}", user, f"I{i:07d}", "store", 1_700_000_000_000_000 + i, "view")


def test_append_is_idempotent_and_ordered(store_url):
    s = EventStore(store_url)
    try:
        assert s.append([_ev(i) for i in range(5)]) == [True] * 5
        assert s.append([_ev(3), _ev(5), _ev(5)]) == [False, True, False]
        rows = list(s.iter_events())
        assert [r[1] for r in rows] == ["e0", "e1", "e2", "e3", "e4", "e5"]
        assert [r[0] for r in rows] == sorted(r[0] for r in rows)
        assert s.count() == 6
        assert s.add_items([{"item_id": "n1", "title": "t"}]) == [True]
        assert s.add_items([{"item_id": "n1", "title": "t"}]) == [False]
        assert [i["item_id"] for i in s.items()] == ["n1"]
    finally:
        s.close()
    s2 = EventStore(store_url)  # durable across a reopen
    try:
        assert s2.count() == 6
    finally:
        s2.close()


def test_concurrent_appends_group_commit(store_url):
    s = EventStore(store_url)
    try:
        def work(t: int) -> None:
            for b in range(10):
                s.append([_ev(t * 1000 + b * 10 + j, f"u{t}") for j in range(10)])

        th = [threading.Thread(target=work, args=(t,)) for t in range(8)]
        for x in th:
            x.start()
        for x in th:
            x.join()
        assert s.count() == 800
        assert s.commits <= 80  # at most one commit per append, usually fewer
    finally:
        s.close()


def test_bad_urls_are_one_line_errors():
    for url in ("mysql://x", "sqlite:///", "sqlite:///:memory:"):
        with pytest.raises(ConfigError):
            parse_url(url)
    with pytest.raises(ConfigError, match="cannot connect"):
        EventStore("postgresql://nobody@127.0.0.1:1/none?connect_timeout=1")


def test_sqlite_is_wal_and_synchronous_full(tmp_path):
    s = EventStore(f"sqlite:///{tmp_path / 'e.sqlite'}")
    try:
        assert s._con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert s._con.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    finally:
        s.close()


def test_two_service_processes_write_to_one_postgresql(knn_run):
    if not pg_available():
        pytest.skip("PostgreSQL not reachable at 127.0.0.1:5432")
    import httpx

    url, schema = pg_schema_url()
    servers = [Server(knn_run, url), Server(knn_run, url)]
    try:
        for s in servers:
            s.start()
        acked: list[str] = []
        lock = threading.Lock()

        def client(si: int, c: int) -> None:
            with httpx.Client(base_url=servers[si].url, headers=AUTH, timeout=30) as h:
                for b in range(15):
                    # both processes get the same ids for half the events (a retry that lands
                    # on the other replica): each must be stored once
                    evs = [{"user_id": f"pg{c}", "item_id": "I0000001",
                            "timestamp": 1.7e9 + b * 10 + j,
                            "event_id": f"c{c}-b{b}-j{j}" if j % 2 else f"s{si}c{c}-b{b}-j{j}"}
                           for j in range(10)]
                    r = h.post("/v1/events", json={"events": evs})
                    assert r.status_code == 200
                    with lock:
                        acked.extend(e["event_id"] for e in evs)

        th = [threading.Thread(target=client, args=(si, c)) for si in (0, 1) for c in range(3)]
        for x in th:
            x.start()
        for x in th:
            x.join()
        s = EventStore(url)
        try:
            ids = [r[1] for r in s.iter_events()]
        finally:
            s.close()
        assert len(ids) == len(set(ids)) == len(set(acked))
        assert set(ids) == set(acked)
    finally:
        for s in servers:
            s.stop()
        drop_schema(schema)


def test_a_service_catches_up_on_events_another_replica_stored(knn_run, store_url):
    """Two services on one store: events posted to A reach B's user state with catch_up
    (what `shiftrec serve` runs every --sync-interval), in store order, once."""
    from fastapi.testclient import TestClient

    from shiftrec.serve.app import Service, create_app
    from tests.serve.conftest import TOKEN

    a = Service(knn_run, store_url, token=TOKEN)
    b = Service(knn_run, store_url, token=TOKEN)
    try:
        ca, cb = TestClient(create_app(a)), TestClient(create_app(b))
        user = a.rec.user_ids()[3]
        ids = [a.rec.item_ids[i] for i in range(1, 9)]
        evs = [{"user_id": user, "item_id": x, "timestamp": 1.8e9 + j, "event_id": f"r{j}"}
               for j, x in enumerate(ids)] + \
              [{"user_id": "rep-new", "item_id": ids[0], "timestamp": 1.8e9}]
        n0 = cb.get(f"/v1/users/{user}/interests").json()["n_events"]
        assert ca.post("/v1/events", json={"events": evs}, headers=AUTH).json()["stored"] == 9
        assert cb.get(f"/v1/users/{user}/interests").json()["n_events"] == n0  # not yet
        assert b.catch_up() == 9
        assert b.catch_up() == 0  # once
        for u in (user, "rep-new"):
            assert cb.get(f"/v1/users/{u}/interests").json() == \
                ca.get(f"/v1/users/{u}/interests").json()
            assert cb.get(f"/v1/users/{u}/recommendations").json() == \
                ca.get(f"/v1/users/{u}/recommendations").json()
        # B's own write lands after A's in the store: both apply it in that order
        one = [{"user_id": user, "item_id": ids[1], "timestamp": 1.8e9 + 99}]
        assert cb.post("/v1/events", json={"events": one}, headers=AUTH).json()["stored"] == 1
        a.catch_up()
        assert a.rec.snapshot(user)[0] == b.rec.snapshot(user)[0]
        assert b.applied_seq == a.applied_seq
    finally:
        a.close()
        b.close()


def test_two_serve_processes_on_postgresql_see_each_others_events(knn_run):
    if not pg_available():
        pytest.skip("PostgreSQL not reachable at 127.0.0.1:5432")
    import time

    import httpx

    url, schema = pg_schema_url()
    a = Server(knn_run, url, args=("--sync-interval", "0.2"))
    b = Server(knn_run, url, args=("--sync-interval", "0.2"))
    try:
        a.start()
        b.start()
        items = [f"I{i:07d}" for i in range(1, 13)]
        evs = [{"user_id": "pg-replica-user", "item_id": x, "timestamp": 1.8e9 + 60 * j}
               for j, x in enumerate(items)]
        r = httpx.post(a.url + "/v1/events", json={"events": evs}, headers=AUTH, timeout=30)
        assert r.status_code == 200 and r.json()["stored"] == len(evs)
        want = httpx.get(a.url + "/v1/users/pg-replica-user/recommendations").json()
        assert not want["cold"]
        deadline = time.time() + 20
        while True:
            got = httpx.get(b.url + "/v1/users/pg-replica-user/interests").json()
            if got["n_events"] == len(evs) or time.time() > deadline:
                break
            time.sleep(0.1)
        assert got["n_events"] == len(evs)
        assert got == httpx.get(a.url + "/v1/users/pg-replica-user/interests").json()
        assert httpx.get(b.url + "/v1/users/pg-replica-user/recommendations").json() == want
        assert "shiftrec_events_caught_up_total 12" in httpx.get(b.url + "/metrics").text
    finally:
        a.stop()
        b.stop()
        drop_schema(schema)
