"""Candidate retrieval for large catalogues: a FAISS index over item vectors proposes
`n_candidates` items (scalar-quantised IVF, approximate), which are then re-scored exactly
(float32 dot products with the user vector) and cut to k.

The Recommender uses it for models whose scores are a user vector times item vectors (SASRec,
the transfer models: `query_vectors(histories)` / `item_vectors()`), when the catalogue holds
at least `threshold` items (mode auto) or always (mode on). The index is cached beside the run
folder (`<run>.ann/index.faiss` + `index.json`, written atomically; the JSON holds the item map
and model fingerprints, the index settings and the file's sha256) and rebuilt, with the reason
stated, when any of them no longer matches. bench/serve.py measures it on 1M items.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import numpy as np

from shiftrec.errors import ConfigError

INDEX_FORMAT = 1


class AnnMode(StrEnum):
    AUTO = "auto"  # on when the catalogue holds >= threshold items
    ON = "on"
    OFF = "off"


@dataclass(frozen=True)
class AnnConfig:
    nlist: int = 1024  # IVF cells (at most n_items // 39, so every cell has training points)
    nprobe: int = 256  # cells visited per query (recall@10 0.977 on bench/serve.py's data)
    n_candidates: int = 500  # proposed by the index, re-scored exactly
    train_size: int = 65536  # vectors the quantisers are trained on
    seed: int = 0
    mode: AnnMode = AnnMode.AUTO
    threshold: int = 200_000  # mode auto: catalogue size from which the index is used
    cache: bool = True  # keep the built index beside the run folder

    def __post_init__(self) -> None:
        object.__setattr__(self, "mode", AnnMode(self.mode))
        if self.nlist < 1 or not 1 <= self.nprobe <= self.nlist or self.n_candidates < 1:
            raise ConfigError("ann: need nlist >= 1, 1 <= nprobe <= nlist, n_candidates >= 1")
        if self.threshold < 0 or self.train_size < 1:
            raise ConfigError("ann: need threshold >= 0 and train_size >= 1")

    def wanted(self, n_items: int) -> bool:
        return self.mode == AnnMode.ON or (self.mode == AnnMode.AUTO and
                                           n_items >= self.threshold)

    def index_key(self) -> dict[str, Any]:
        """The settings an index file depends on (nprobe and n_candidates are per query)."""
        return {"nlist": self.nlist, "train_size": self.train_size, "seed": self.seed,
                "type": "IVF-SQ8-IP", "format": INDEX_FORMAT}


def effective_nlist(cfg: AnnConfig, n: int) -> int:
    return max(1, min(cfg.nlist, n // 39))


class AnnRetriever:
    """Inner-product retrieval over item vectors (row i = item i). Row 0 (padding) is
    indexed as a zero vector and never returned by `candidates`/`search`."""

    def __init__(self, items: np.ndarray, cfg: AnnConfig = AnnConfig(),
                 index: Any = None) -> None:
        import faiss

        self.items = np.ascontiguousarray(items, dtype=np.float32)
        self.cfg = cfg
        n, d = self.items.shape
        self.nlist = effective_nlist(cfg, n)
        if index is None:
            quant = faiss.IndexFlatIP(d)
            index = faiss.IndexIVFScalarQuantizer(quant, d, self.nlist,
                                                  faiss.ScalarQuantizer.QT_8bit,
                                                  faiss.METRIC_INNER_PRODUCT)
            self._quant = quant  # the Python wrapper does not let the IVF index own it
            rng = np.random.default_rng(cfg.seed)
            sample = self.items[rng.choice(n, min(cfg.train_size, n), replace=False)]
            index.train(sample)
            index.add(self._indexed(self.items, 0))
        self.index = index
        self.index.nprobe = min(cfg.nprobe, self.nlist)

    @staticmethod
    def _indexed(vecs: np.ndarray, first_row: int) -> np.ndarray:
        if first_row == 0 and len(vecs):
            vecs = vecs.copy()
            vecs[0] = 0.0
        return np.ascontiguousarray(vecs, dtype=np.float32)

    @property
    def n(self) -> int:
        return len(self.items)

    def add(self, vecs: np.ndarray) -> None:
        """Append items (rows n, n+1, ...), e.g. catalogue items added at run time."""
        vecs = np.ascontiguousarray(vecs, dtype=np.float32)
        self.index.add(vecs)
        self.items = np.concatenate([self.items, vecs])

    def candidates(self, queries: np.ndarray, n: int) -> np.ndarray:
        """(batch, <= n) candidate ids per query (-1 = none), padding row excluded later."""
        q = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        return self.index.search(q, min(int(n), self.n))[1]

    def rescore(self, query: np.ndarray, cand: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(ids, exact scores) of one query's valid candidates (no -1, no padding row)."""
        c = cand[cand > 0].astype(np.int64)
        return c, self.items[c] @ np.asarray(query, np.float32)

    def search(self, queries: np.ndarray, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
        """(scores, ids) of the top-k per query: candidates from the index, exact re-scoring."""
        q = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        cand = self.candidates(q, self.cfg.n_candidates)
        out_s = np.full((len(q), k), -np.inf, np.float32)
        out_i = np.full((len(q), k), -1, np.int64)
        for r in range(len(q)):
            c, s = self.rescore(q[r], cand[r])
            top = np.lexsort((c, -s))[:k]
            out_s[r, :len(top)], out_i[r, :len(top)] = s[top], c[top]
        return out_s, out_i

    # ------------------------------------------------------------------ persistence
    def save(self, path: Path, meta: dict[str, Any]) -> None:
        """index.faiss + index.json (meta + the file's sha256), each replaced atomically; the
        JSON goes last, so a crash in between leaves a hash that no longer matches."""
        import faiss

        from shiftrec.manifest import atomic_write_bytes, sha256_file, write_json

        atomic_write_bytes(path / "index.faiss", faiss.serialize_index(self.index).tobytes())
        write_json(path / "index.json", {**meta, "sha256": sha256_file(path / "index.faiss"),
                                         "ntotal": self.index.ntotal, "nlist_used": self.nlist})


def index_dir(run_dir: Path) -> Path:
    """Where a run's index is cached: beside the run folder (the run folder itself is
    written once, atomically, and fingerprinted as a whole)."""
    return run_dir.parent / f"{run_dir.name}.ann"


def open_index(run_dir: Path, items: np.ndarray, cfg: AnnConfig,
               fingerprints: dict[str, Any]) -> tuple[AnnRetriever, dict[str, Any]]:
    """The run's cached index when its fingerprints, settings and hash all match; else a
    fresh build (saved when cfg.cache). Returns (retriever, info) with info["source"]
    "cache" or "built", the build/load seconds and, for a rebuild, the reason."""
    import faiss

    from shiftrec.manifest import sha256_file

    meta = {"item_map": fingerprints.get("item_map"), "model": fingerprints.get("model"),
            "n": int(len(items)), "dim": int(items.shape[1]), **cfg.index_key()}
    d = index_dir(run_dir)
    reason = "no cached index"
    t0 = time.perf_counter()
    if cfg.cache and (d / "index.json").is_file() and (d / "index.faiss").is_file():
        try:
            have = json.loads((d / "index.json").read_text())
        except (OSError, ValueError) as e:
            have, reason = {}, f"unreadable index.json ({e})"
        diff = [k for k in meta if have.get(k) != meta[k]]
        if have and diff:
            k = diff[0]
            reason = f"{k} {have.get(k)} != {meta[k]} (the run changed)"
        elif have and sha256_file(d / "index.faiss") != have.get("sha256"):
            reason = "index.faiss does not match the sha256 in index.json"
        elif have:
            index = faiss.read_index(str(d / "index.faiss"))
            if index.ntotal == len(items) and index.d == items.shape[1]:
                r = AnnRetriever(items, cfg, index=index)
                return r, {"source": "cache", "path": str(d), "load_s":
                           round(time.perf_counter() - t0, 3)}
            reason = f"index holds {index.ntotal} vectors, the run {len(items)}"
    r = AnnRetriever(items, cfg)
    info: dict[str, Any] = {"source": "built", "build_s": round(time.perf_counter() - t0, 3),
                            "rebuilt_because": reason}
    if cfg.cache:
        try:
            r.save(d, meta)
            info["path"] = str(d)
        except OSError as e:  # a read-only place: serve from memory
            info["cache_error"] = str(e)
    return r, info


def exact_topk(items: np.ndarray, queries: np.ndarray, k: int = 10) -> np.ndarray:
    """Exact top-k ids by full scoring (FAISS flat inner product)."""
    import faiss

    idx = faiss.IndexFlatIP(items.shape[1])
    idx.add(np.ascontiguousarray(items, dtype=np.float32))
    return idx.search(np.ascontiguousarray(queries, dtype=np.float32), k)[1]


def config_summary(cfg: AnnConfig) -> dict[str, Any]:
    return {k: (str(v) if isinstance(v, AnnMode) else v) for k, v in asdict(cfg).items()}
