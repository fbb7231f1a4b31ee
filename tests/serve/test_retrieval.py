"""FAISS candidates + exact re-scoring: exact when every cell is probed, close otherwise."""

from __future__ import annotations

import numpy as np

from shiftrec.serve.retrieval import AnnConfig, AnnRetriever, exact_topk


def test_ann_matches_exact_scoring():
    rng = np.random.default_rng(0)
    items = rng.normal(size=(5000, 16)).astype(np.float32)
    q = rng.normal(size=(50, 16)).astype(np.float32)
    exact = exact_topk(items, q, 10)
    full = AnnRetriever(items, AnnConfig(nlist=16, nprobe=16, n_candidates=100, train_size=5000))
    scores, ids = full.search(q, 10)
    assert (ids == exact).mean() > 0.98  # SQ8 candidates, exact re-scoring: ties aside, exact
    np.testing.assert_allclose(scores, np.take_along_axis(q @ items.T, ids, 1), rtol=1e-5)
    part = AnnRetriever(items, AnnConfig(nlist=16, nprobe=2, n_candidates=100, train_size=5000))
    _, ids2 = part.search(q, 10)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(ids2, exact, strict=True)])
    assert 0.2 < recall < 1.0  # probing 2 of 16 cells misses some neighbours
