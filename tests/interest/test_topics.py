from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from shiftrec.data.splits import IdMap
from shiftrec.errors import ArtifactError, ConfigError, InputError
from shiftrec.interest.topics import (
    UNCATEGORISED,
    TopicConfig,
    Topics,
    TopicSource,
    build_topics,
    category_topics,
    distinctive_terms,
    kmeans,
    tfidf_svd,
    tokenize,
)


def _items(titles, cats=None):
    n = len(titles)
    return pl.DataFrame({"item_id": [f"i{j}" for j in range(n)], "domain": ["d"] * n,
                         "title": titles, "category": cats if cats is not None else [None] * n},
                        schema={"item_id": pl.String, "domain": pl.String, "title": pl.String,
                                "category": pl.String})


def test_category_topics_depth_and_missing():
    items = _items(["a", "b", "c", "d"], ["Home > Kitchen > Pans", "Home > Garden", None, "Home > Kitchen"])
    t1 = category_topics(items, depth=1)
    assert t1.names == ["Home", UNCATEGORISED]
    assert t1.topic.tolist() == [0, 0, 1, 0]
    t2 = category_topics(items, depth=2)
    assert t2.names == ["Home > Garden", "Home > Kitchen", UNCATEGORISED]
    assert t2.topic.tolist() == [1, 0, 2, 1]


def test_tokenize_drops_stopwords_numbers_and_entities():
    assert tokenize("The Red &amp; Blue 25 Pcs Tea-Set &quot;x&quot;") == ["red", "blue", "tea-set"]


def _two_clusters():
    titles = ([f"red wooden toy train {i}" for i in range(6)]
              + [f"garden hose spray nozzle {i}" for i in range(6)])
    emb = np.zeros((12, 3), np.float32)
    emb[:6, 0] = 1
    emb[6:, 1] = 1
    emb += np.random.default_rng(0).normal(0, 0.01, emb.shape).astype(np.float32)
    return _items(titles), emb


def test_learned_topics_pick_k_and_name_by_distinctive_terms():
    items, emb = _two_clusters()
    tp = build_topics(items, TopicConfig(source=TopicSource.LEARNED, k_grid=(2, 3, 4)), emb)
    assert tp.n_topics == 2 and tp.meta["k"] == 2
    assert len(set(tp.topic[:6])) == 1 and len(set(tp.topic[6:])) == 1
    assert tp.topic[0] != tp.topic[6]
    names = {tp.names[tp.topic[0]], tp.names[tp.topic[6]]}
    assert any("train" in n or "wooden" in n for n in names)
    assert any("hose" in n or "garden" in n for n in names)


def test_auto_uses_categories_else_needs_embeddings():
    items, emb = _two_clusters()
    with pytest.raises(ConfigError):
        build_topics(items)  # no categories, no embeddings
    cat = items.with_columns(pl.lit("A > B").alias("category"))
    assert build_topics(cat).source == "category"
    with pytest.raises(InputError):
        build_topics(items, TopicConfig(source=TopicSource.LEARNED), emb[:5])


def test_save_load_roundtrip_and_alignment(tmp_path):
    items = _items(["a", "b", "c"], ["X", "Y", "X"])
    tp = category_topics(items)
    tp.save(tmp_path / "t")
    back = Topics.load(tmp_path / "t")
    assert back.names == tp.names and back.topic.tolist() == tp.topic.tolist()
    assert (tmp_path / "t" / "topics.parquet").exists()
    im = IdMap(np.array(["<pad>", "d/i2", "d/zz", "d/i0"], dtype=object))
    assert back.aligned(im).tolist() == [-1, 0, -1, 0]
    with pytest.raises(ArtifactError):
        Topics.load(tmp_path / "missing")


def test_kmeans_tfidf_and_terms_deterministic():
    texts = ["red apple pie", "green apple tart", "red apple crumble", "blue denim jacket",
             "black denim jeans", "blue denim shirt"]
    x = tfidf_svd(texts, dim=3, min_df=1)
    assert x.shape == (6, 3)
    l1, _, _ = kmeans(x, 2, seed=1)
    l2, _, _ = kmeans(x, 2, seed=1)
    assert l1.tolist() == l2.tolist()
    labels = np.array([0, 0, 0, 1, 1, 1])
    terms = distinctive_terms(texts, labels, 2, 2)
    assert terms[0][0] == "apple" and terms[1][0] == "denim"
