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
