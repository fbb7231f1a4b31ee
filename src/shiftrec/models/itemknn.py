"""Item-kNN over co-occurrence in users' training sequences (sequence-aware, recency-weighted).

Pairs (a, b) count when b follows a within `window` positions of one user's training sequence,
weighted by `distance_decay ** (distance - 1)`; the reverse direction (b before a) counts with
weight `backward`. Similarity is the cosine normalisation sim(a, b) = C[a, b] / sqrt(n_a * n_b)
(n = item frequency, shrunk by `shrink`), each row keeps its `top_k` neighbours. A history's
score is sum_j recency_decay ** (age_j) * sim(h_j, .), age 0 = the most recent item.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from shiftrec.config import from_dict, to_dict
from shiftrec.data.splits import SeqSplit
from shiftrec.errors import ArtifactError, ConfigError
from shiftrec.manifest import atomic_write_bytes
from shiftrec.models.artifact import read_model_folder, save_model_folder, split_fields
from shiftrec.models.torch_base import apply_overrides


@dataclass(frozen=True)
class ItemKNNConfig:
    # defaults chosen on Scientific's validation split (bench/sasrec_speed.py notes)
    window: int = 10  # co-occurrence window (positions); 0 = the whole sequence
    distance_decay: float = 0.7
    backward: float = 0.5  # weight of "b came before a" relative to "b came after a"
    shrink: float = 30.0
    alpha: float = 0.9  # sim = C / (n_a^alpha * n_b^(1-alpha) + shrink); 0.5 = cosine
    top_k: int = 100
    recency_decay: float = 0.8
    max_history: int = 50


def cooccurrence(seqs: list[np.ndarray], n_items: int, cfg: ItemKNNConfig) -> Any:
    """Directed co-occurrence C (n_items+1, n_items+1) as scipy CSR (vectorised per offset)."""
    import scipy.sparse as sp

    lens = np.array([len(s) for s in seqs], dtype=np.int64)
    items = np.concatenate(seqs).astype(np.int64) if seqs else np.zeros(0, np.int64)
    seq_end = np.repeat(np.cumsum(lens), lens)
    max_off = int(lens.max() - 1) if len(lens) else 0
    if cfg.window > 0:
        max_off = min(max_off, cfg.window)
    rows, cols, vals = [], [], []
    for d in range(1, max_off + 1):
        a = np.flatnonzero(np.arange(len(items)) + d < seq_end)
        w = cfg.distance_decay ** (d - 1)
        src, dst = items[a], items[a + d]
        rows += [src, dst]
        cols += [dst, src]
        vals += [np.full(len(a), w, np.float32), np.full(len(a), w * cfg.backward, np.float32)]
    n = n_items + 1
    if not rows:
        return sp.csr_matrix((n, n), dtype=np.float32)
    c = sp.coo_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                      shape=(n, n)).tocsr()
    c.setdiag(0)
    c.eliminate_zeros()
    return c


def similarity(c: Any, freq: np.ndarray, cfg: ItemKNNConfig) -> Any:
    """Normalised, top-k pruned item-item similarity (CSR float32)."""
    import scipy.sparse as sp

    c = c.tocoo()
    f = freq.astype(np.float64)
    den = (f[c.row] ** cfg.alpha) * (f[c.col] ** (1 - cfg.alpha)) + cfg.shrink
    s = sp.csr_matrix((c.data / den, (c.row, c.col)), shape=c.shape, dtype=np.float32)
    if cfg.top_k > 0:
        indptr, data, idx = s.indptr, s.data, s.indices
        keep = np.zeros(len(data), dtype=bool)
        for r in range(s.shape[0]):
            a, b = indptr[r], indptr[r + 1]
            if b - a <= cfg.top_k:
                keep[a:b] = True
            else:
                keep[a + np.argpartition(-data[a:b], cfg.top_k - 1)[:cfg.top_k]] = True
        row = np.repeat(np.arange(s.shape[0]), np.diff(indptr))
        counts = np.bincount(row[keep], minlength=s.shape[0])
        s = sp.csr_matrix((data[keep], idx[keep], np.concatenate([[0], np.cumsum(counts)])),
                          shape=s.shape)
    return s


class ItemKNN:
    name = "itemknn"

    def __init__(self, config: ItemKNNConfig | None = None, **overrides: Any) -> None:
        self.config: ItemKNNConfig = apply_overrides(config or ItemKNNConfig(), overrides, "itemknn")
        if not 0 <= self.config.alpha <= 1:
            raise ConfigError(f"itemknn: alpha must be in [0, 1], got {self.config.alpha}")
        self.sim: Any = None
        self.n_items: int | None = None
        self.data_fingerprint: str | None = None
        self.item_keys: str | None = None

    def fit(self, split: SeqSplit) -> ItemKNN:
        seqs = split.train.to_list()
        n = split.n_items
        freq = np.bincount(split.train.items, minlength=n + 1).astype(np.float64)
        self.sim = similarity(cooccurrence(seqs, n, self.config), freq, self.config)
        self.n_items = n
        f = split_fields(split)
        self.data_fingerprint, self.item_keys = f["data_fingerprint"], f["item_keys_hash"]
        return self

    def score(self, histories: list[np.ndarray], times: list[np.ndarray] | None = None) -> np.ndarray:
        import scipy.sparse as sp

        if self.sim is None:
            raise ArtifactError("itemknn model is not fitted")
        cfg = self.config
        n = self.sim.shape[0]
        rows, cols, vals = [], [], []
        for i, h in enumerate(histories):
            h = np.asarray(h, dtype=np.int64)[-cfg.max_history:]
            if len(h):
                age = np.arange(len(h) - 1, -1, -1)
                rows.append(np.full(len(h), i))
                cols.append(h)
                vals.append(cfg.recency_decay ** age)
        if not rows:
            out = np.zeros((len(histories), n), np.float32)
        else:
            q = sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                              shape=(len(histories), n), dtype=np.float32)
            out = np.asarray((q @ self.sim).todense(), dtype=np.float32)
        out[:, 0] = -np.inf
        return out

    def save(self, path: str | Path) -> None:
        import io

        if self.sim is None:
            raise ArtifactError("itemknn model is not fitted: nothing to save")
        s = self.sim.tocsr()
        buf = io.BytesIO()
        np.savez(buf, indptr=s.indptr, indices=s.indices, data=s.data)
        save_model_folder(path, lambda d: atomic_write_bytes(d / "model.npz", buf.getvalue()),
                          model=self.name, n_items=self.n_items, nnz=int(s.nnz),
                          config=to_dict(self.config), data_fingerprint=self.data_fingerprint,
                          item_keys_hash=self.item_keys)

    @classmethod
    def load(cls, path: str | Path) -> ItemKNN:
        import scipy.sparse as sp

        p, man = read_model_folder(path, cls.name)
        z = np.load(p / "model.npz", allow_pickle=False)
        n = int(man["n_items"]) + 1
        if len(z["indptr"]) != n + 1:
            raise ArtifactError(f"manifest n_items={n - 1} but model.npz holds "
                                f"{len(z['indptr']) - 2} items", path=p)
        m = cls(from_dict(ItemKNNConfig, man["config"], where=f"{p}: config"))
        m.sim = sp.csr_matrix((z["data"], z["indices"], z["indptr"]), shape=(n, n))
        m.n_items = n - 1
        m.data_fingerprint = man.get("data_fingerprint")
        m.item_keys = man.get("item_keys_hash")
        return m
