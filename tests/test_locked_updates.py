"""Locked read-modify-write of result files (shiftrec.manifest): jobs that run side by side
must not lose each other's updates."""

import multiprocessing as mp

import numpy as np

from shiftrec.manifest import read_json, read_npz, update_json, update_npz


def _bump(path: str, n: int) -> None:
    def upd(d: dict) -> None:
        d["count"] = d.get("count", 0) + 1

    for _ in range(n):
        update_json(path, upd)


def test_update_json_creates_merges_and_returns(tmp_path):
    p = tmp_path / "res.json"
    out = update_json(p, lambda d: d.setdefault("rows", {}).update(a=1))
    assert out == {"rows": {"a": 1}} == read_json(p)
    update_json(p, lambda d: d["rows"].update(b=2))
    assert read_json(p) == {"rows": {"a": 1, "b": 2}}
    assert (tmp_path / ".res.json.lock").exists()


def test_concurrent_updates_are_not_lost(tmp_path):
    p = str(tmp_path / "count.json")
    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=_bump, args=(p, 40)) for _ in range(3)]
    for q in procs:
        q.start()
    for q in procs:
        q.join()
    assert all(q.exitcode == 0 for q in procs)
    assert read_json(p)["count"] == 120


def test_update_npz_merges_and_replaces(tmp_path):
    p = tmp_path / "ranks.npz"
    update_npz(p, {"a": np.array([1, 2])}, lock_file=tmp_path / "lk")
    update_npz(p, {"b": np.array([3]), "a": np.array([9])}, lock_file=tmp_path / "lk")
    got = read_npz(p)
    assert sorted(got) == ["a", "b"]
    np.testing.assert_array_equal(got["a"], [9])
    np.testing.assert_array_equal(got["b"], [3])
