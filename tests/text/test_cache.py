from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from shiftrec.data.splits import IdMap
from shiftrec.errors import ArtifactError
from shiftrec.manifest import read_json
from shiftrec.text import (
    EmbeddingCache,
    ItemEmbeddings,
    TextConfig,
    embed_items,
    encode_items,
    encode_texts,
    load_encoder,
    split_item_embeddings,
)

from .conftest import CountingEncoder


def _items(titles: list[str]) -> tuple[pl.DataFrame, IdMap]:
    df = pl.DataFrame({"item_id": [str(i) for i in range(len(titles))],
                       "domain": ["d"] * len(titles), "title": titles})
    return df, IdMap.from_frame(df)


TITLES = ["red kite", "blue kite", "garden hose", "red kite", "lego castle"]


def test_matrix_shape_row0_and_duplicates_encoded_once(counting_encoder):
    items, imap = _items(TITLES)
    m = encode_items(items, imap, counting_encoder)
    assert m.shape == (6, 8) and m.dtype == np.float32
    assert not m[0].any()
    np.testing.assert_allclose(np.linalg.norm(m[1:], axis=1), 1.0, atol=1e-6)
    np.testing.assert_array_equal(m[1], m[4])  # same text, same vector
    assert counting_encoder.encoded == 4


def test_cache_reencodes_only_new_or_changed(tmp_path, counting_encoder):
    cache = tmp_path / "cache"
    items, imap = _items(TITLES)
    first = encode_items(items, imap, counting_encoder, cache_dir=cache)
    assert counting_encoder.encoded == 4
    again, stats = embed_items(items, imap, counting_encoder, cache_dir=cache)
    assert counting_encoder.encoded == 4 and stats.encoded == 0 and stats.cached == 4
    np.testing.assert_array_equal(again.vectors, first)

    changed = TITLES[:2] + ["garden hose 50 ft"] + TITLES[3:] + ["new drone"]
    items2, imap2 = _items(changed)
    m2, stats = embed_items(items2, imap2, counting_encoder, cache_dir=cache)
    assert counting_encoder.calls[-1] == ["garden hose 50 ft", "new drone"]
    assert (stats.unique, stats.cached, stats.encoded) == (5, 3, 2)
    np.testing.assert_array_equal(m2.vectors, encode_items(items2, imap2, CountingEncoder()))

    man = read_json(cache / "manifest.json")
    assert (man["kind"], man["encoder"], man["dim"], man["count"]) == ("embedding-cache", "fake", 8, 6)
    assert "versions" in man
    assert sorted(p.name for p in cache.iterdir()) == ["embeddings.npz", "manifest.json"]


def test_changed_text_config_reuses_what_it_can(tmp_path, counting_encoder):
    items, imap = _items(TITLES)
    encode_items(items, imap, counting_encoder, cache_dir=tmp_path)
    encode_items(items, imap, counting_encoder, TextConfig(lowercase=True), cache_dir=tmp_path)
    assert counting_encoder.encoded == 4  # lower-case titles are the same texts


def test_cache_mismatch_names_both_encoders(tmp_path):
    items, imap = _items(TITLES)
    encode_items(items, imap, CountingEncoder("fake-a", 8), cache_dir=tmp_path)
    with pytest.raises(ArtifactError) as e:
        encode_items(items, imap, CountingEncoder("fake-b", 8), cache_dir=tmp_path)
    assert "fake-a@f0" in str(e.value) and "fake-b@f0" in str(e.value)
    with pytest.raises(ArtifactError, match=r"dim 8.*dim 16"):
        EmbeddingCache(tmp_path, "fake-a", "f0", 16)
    with pytest.raises(ArtifactError, match="f0.*f1"):
        encode_items(items, imap, CountingEncoder("fake-a", 8, "f1"), cache_dir=tmp_path)


def test_cache_file_from_another_encoder_is_refused(tmp_path):
    EmbeddingCache(tmp_path, "a", "f0", 4)  # empty
    c = EmbeddingCache(tmp_path, "a", "f0", 4)
    c.add(["h1"], np.ones((1, 4), np.float32))
    c.save()
    man = read_json(tmp_path / "manifest.json")
    man["encoder"] = "b"
    (tmp_path / "manifest.json").write_text(__import__("json").dumps(man))
    with pytest.raises(ArtifactError, match="'a@f0'.*'b@f0'"):
        EmbeddingCache(tmp_path, "b", "f0", 4)


def test_cache_with_real_encoder(tmp_path, minilm):
    items, imap = _items(TITLES)
    m1, s1 = embed_items(items, imap, minilm, cache_dir=tmp_path)
    assert s1.encoded == 4
    # a fresh encoder object: everything cached, so its weights are never loaded
    fresh = load_encoder("minilm", device="cpu")
    m2, s2 = embed_items(items, imap, fresh, cache_dir=tmp_path)
    assert s2.encoded == 0 and fresh._model is None
    np.testing.assert_array_equal(m1.vectors, m2.vectors)
    items3, imap3 = _items(TITLES + ["wireless earbuds"])
    m3, s3 = embed_items(items3, imap3, minilm, cache_dir=tmp_path)
    assert (s3.cached, s3.encoded) == (4, 1)
    np.testing.assert_allclose(m3.vectors, encode_items(items3, imap3, minilm), atol=1e-6)


def test_encode_texts_progress_and_empty(counting_encoder):
    seen = []
    x, st = encode_texts([], counting_encoder, progress=lambda d, t: seen.append((d, t)))
    assert x.shape == (0, 8) and st.texts == 0
    assert seen == [(0, 0)]  # nothing to encode still reports completion


def test_item_embeddings_roundtrip_and_alignment(tmp_path, counting_encoder):
    items, imap = _items(TITLES)
    emb, _ = embed_items(items, imap, counting_encoder)
    emb.save(tmp_path / "emb")
    back = ItemEmbeddings.load(tmp_path / "emb", encoder="fake", dim=8)
    np.testing.assert_array_equal(back.vectors, emb.vectors)
    assert back.meta["text_config"]["fields"] == ["title", "category", "brand"]
    perm = IdMap(np.array(["<pad>", "d/4", "d/0"], dtype=object))
    al = back.aligned(perm)
    np.testing.assert_array_equal(al[1:], emb.vectors[[5, 1]])
    assert not al[0].any()
    with pytest.raises(ArtifactError, match="'fake'.*'minilm'"):
        ItemEmbeddings.load(tmp_path / "emb", encoder="minilm")
    with pytest.raises(ArtifactError, match="no embedding"):
        back.aligned(IdMap(np.array(["<pad>", "d/99"], dtype=object)))


def test_split_item_embeddings(small_store, small_split, counting_encoder):
    m = split_item_embeddings(small_store.items, small_split, encoder=counting_encoder)
    assert m.shape == (small_split.n_items + 1, 8)
    assert not m[0].any()
    np.testing.assert_allclose(np.linalg.norm(m[1:], axis=1), 1.0, atol=1e-6)
