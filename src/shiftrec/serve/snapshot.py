"""Snapshots of the service's live user state, so a restart replays only the events stored
after the snapshot instead of the whole store.

A snapshot folder (written with `atomic_dir`, never pickle) holds

- ``live.npz``: per user touched by live events, the events appended after the run's own
  history: ``user_ids`` (unicode), ``indptr``, ``items`` (item indices), ``times`` (unix s);
- ``manifest.json``: ``seq`` (every stored event up to it is in the snapshot), the event id
  stored at that seq (so a snapshot of another store is never used), the run's item-map and
  model fingerprints and its item count (items added at run time included).

A snapshot that does not match the run or the store is ignored (one line on stderr) and the
service replays every event, as without one.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np

from shiftrec.manifest import atomic_dir, read_json, write_json

SNAPSHOT_KIND = "shiftrec-serve-snapshot"


def _run_ids(rec: Any) -> dict[str, Any]:
    fps = rec.manifest.get("fingerprints") or {}
    return {"item_map": fps.get("item_map"), "model": fps.get("model"),
            "run_created": rec.manifest.get("created"), "n_items": int(rec.n_items)}


def write_snapshot(path: str | Path, rec: Any, store: Any, seq: int) -> Path:
    """Write the live part of every user's history as of `seq` (the caller holds the lock
    that keeps events from being applied meanwhile)."""
    uids: list[str] = []
    indptr = [0]
    items: list[int] = []
    times: list[int] = []
    with rec._lock:
        for user_id, u in rec._users.items():
            base = rec._base.get(user_id)
            n0 = 0 if base is None else len(base[0])
            if len(u.items) > n0:
                uids.append(user_id)
                items.extend(u.items[n0:])
                times.extend(u.times[n0:])
                indptr.append(len(items))
    with atomic_dir(path) as tmp:
        np.savez(tmp / "live.npz", user_ids=np.asarray(uids, dtype=np.str_),
                 indptr=np.asarray(indptr, np.int64), items=np.asarray(items, np.int64),
                 times=np.asarray(times, np.int64))
        write_json(tmp / "manifest.json", {
            "kind": SNAPSHOT_KIND, "seq": int(seq),
            "event_id_at_seq": store.event_id_at(seq) if seq > 0 else None,
            "users": len(uids), "live_events": len(items), **_run_ids(rec)})
    return Path(path)


def load_snapshot(path: str | Path, rec: Any, store: Any) -> dict[str, Any] | None:
    """Apply a matching snapshot to `rec` (fresh from `Recommender.load`, run-time items
    added); its manifest, or None (nothing applied) when absent or not for this run/store."""
    p = Path(path)
    if not (p / "_COMPLETE").is_file():
        return None
    try:
        man = read_json(p / "manifest.json")
        why = None
        if man.get("kind") != SNAPSHOT_KIND:
            why = "not a serve snapshot"
        elif {k: man.get(k) for k in _run_ids(rec)} != _run_ids(rec):
            why = "written for another run (fingerprints or item count differ)"
        elif man["seq"] > 0 and store.event_id_at(man["seq"]) != man.get("event_id_at_seq"):
            why = "written for another event store"
        if why is not None:
            print(f"snapshot {p} ignored: {why}; replaying every stored event", file=sys.stderr)
            return None
        z = np.load(p / "live.npz", allow_pickle=False)
        uids, indptr, items, times = (z["user_ids"].tolist(), z["indptr"], z["items"],
                                      z["times"])
    except (OSError, ValueError, KeyError) as e:
        print(f"snapshot {p} ignored: unreadable ({e}); replaying every stored event",
              file=sys.stderr)
        return None
    if len(items) and (items.min() < 1 or items.max() > rec.n_items):
        print(f"snapshot {p} ignored: item index out of range", file=sys.stderr)
        return None
    events = [(str(u), int(items[j]), int(times[j])) for i, u in enumerate(uids)
              for j in range(int(indptr[i]), int(indptr[i + 1]))]
    rec.observe(events)
    return man
