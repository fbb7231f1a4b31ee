"""A tiny catalogue with a known answer: every user walks the cycle 1 -> 2 -> ... -> n -> 1."""

from __future__ import annotations

import numpy as np

from shiftrec.data.splits import EvalSet, IdMap, Seqs, SeqSplit


def cyclic_split(n_users: int = 60, n_items: int = 12, min_len: int = 6, max_len: int = 14,
                 seed: int = 0, popular: int | None = None) -> SeqSplit:
    """Users start at a random item and follow the cycle; the last item is test, the one before
    valid. With `popular`, that item is inserted as an extra event at the start of every second
    user's sequence (so it is the most frequent training item)."""
    rng = np.random.default_rng(seed)
    seqs, times = [], []
    for u in range(n_users):
        n = int(rng.integers(min_len, max_len + 1))
        s = (int(rng.integers(0, n_items)) + np.arange(n)) % n_items + 1
        if popular is not None and u % 2 == 0:
            s = np.concatenate([[popular], s])
        seqs.append(s.astype(np.int64))
        times.append(1_600_000_000 + 3600 * np.arange(len(s), dtype=np.int64))
    train = Seqs.from_lists([s[:-2] for s in seqs], [t[:-2] for t in times])
    users = np.arange(n_users)

    def es(cut: int) -> EvalSet:
        hist = Seqs.from_lists([s[:len(s) - cut] for s in seqs], [t[:len(t) - cut] for t in times])
        return EvalSet(users, hist, np.array([s[len(s) - cut] for s in seqs]),
                       np.array([t[len(t) - cut] for t in times]))

    keys = np.array(["<pad>", *[f"d/{i}" for i in range(1, n_items + 1)]], dtype=object)
    return SeqSplit("cyclic", "leave_one_out", IdMap(keys), np.array([f"u{u}" for u in users], dtype=object),
                    train, es(2), es(1), meta={"max_len": 50, "fingerprint": f"cyclic-{seed}"})
