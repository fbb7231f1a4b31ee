"""Artifact folders are written atomically, carry a completion marker, and verify their files."""

from __future__ import annotations

import numpy as np
import pytest

from shiftrec.errors import ArtifactError
from shiftrec.interest.topics import Topics
from shiftrec.manifest import COMPLETE, atomic_dir, read_json, require_complete
from shiftrec.text.features import FEATURES_FILE, ItemEmbeddings


def _emb(n: int = 4) -> ItemEmbeddings:
    keys = np.array(["<pad>"] + [f"d/{i}" for i in range(n)], dtype=object)
    vec = np.vstack([np.zeros(3), np.random.default_rng(0).normal(size=(n, 3))]).astype(np.float32)
    return ItemEmbeddings(keys, vec, "fake", "fp")


def test_rerun_leaves_no_stale_file(tmp_path):
    out = tmp_path / "o"
    with atomic_dir(out) as t:
        (t / "old.parquet").write_text("x")
    with atomic_dir(out) as t:
        (t / "new.parquet").write_text("y")
    assert sorted(p.name for p in out.iterdir()) == [COMPLETE, "new.parquet"]


def test_failed_write_keeps_the_earlier_folder(tmp_path):
    out = tmp_path / "o"
    with atomic_dir(out) as t:
        (t / "a").write_text("1")
    with pytest.raises(RuntimeError), atomic_dir(out) as t:
        (t / "b").write_text("2")
        raise RuntimeError("crash mid-write")
    assert sorted(p.name for p in out.iterdir()) == [COMPLETE, "a"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp left


def test_output_below_a_regular_file_is_one_line(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(ArtifactError, match="a parent is a regular file"), \
            atomic_dir(tmp_path / "file" / "out"):
        pass


def test_incomplete_folder_is_refused(tmp_path):
    p = _emb().save(tmp_path / "emb")
    assert ItemEmbeddings.load(p).n_items == 4
    (p / COMPLETE).unlink()
    with pytest.raises(ArtifactError, match="incomplete"):
        ItemEmbeddings.load(p)
    with pytest.raises(ArtifactError, match="not found"):
        require_complete(tmp_path / "nope")


def test_tampered_embeddings_are_refused(tmp_path):
    p = _emb().save(tmp_path / "emb")
    assert len(read_json(p / "manifest.json")["sha256"]) == 64
    other = _emb(4)
    other.vectors[1, 0] += 1.0
    q = other.save(tmp_path / "other")
    (p / FEATURES_FILE).write_bytes((q / FEATURES_FILE).read_bytes())  # swapped from another run
    with pytest.raises(ArtifactError, match="SHA-256"):
        ItemEmbeddings.load(p)


def test_corrupt_manifest_is_one_line(tmp_path):
    p = _emb().save(tmp_path / "emb")
    (p / "manifest.json").write_text("{not json")
    with pytest.raises(ArtifactError, match="not valid JSON"):
        ItemEmbeddings.load(p)


def test_topics_folder_atomic(tmp_path):
    keys = np.array(["d/0", "d/1", "d/2"], dtype=object)
    tp = Topics(keys, np.array([0, 1, 1]), ["a", "b"], [["a"], ["b"]], "categories", {})
    tp.save(tmp_path / "t")
    assert Topics.load(tmp_path / "t").names == ["a", "b"]
    (tmp_path / "t" / COMPLETE).unlink()
    with pytest.raises(ArtifactError, match="incomplete"):
        Topics.load(tmp_path / "t")
