"""FAISS candidates + exact re-scoring: exact when every cell is probed, close otherwise; the
Recommender's ANN path gives the full-scoring answer; the cached index follows the run."""

from __future__ import annotations

import json

import numpy as np
import pytest

from shiftrec.errors import ConfigError
from shiftrec.serve.retrieval import AnnConfig, AnnMode, AnnRetriever, exact_topk, open_index


def _clustered(n: int, d: int, n_q: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(max(n // 250, 4), d)).astype(np.float32)
    items = (centers[rng.integers(0, len(centers), n)] + rng.normal(size=(n, d))).astype(np.float32)
    items[0] = 0  # padding row
    q = (centers[rng.integers(0, len(centers), n_q)] + rng.normal(size=(n_q, d))).astype(np.float32)
    return items, q


def _recall(got: np.ndarray, exact: np.ndarray) -> float:
    return float(np.mean([len(set(a) & set(b)) / len(b) for a, b in zip(got, exact, strict=True)]))


def test_ann_matches_exact_scoring():
    rng = np.random.default_rng(0)
    items = rng.normal(size=(5000, 16)).astype(np.float32)
    items[0] = 0
    q = rng.normal(size=(50, 16)).astype(np.float32)
    exact = exact_topk(items, q, 10)
    full = AnnRetriever(items, AnnConfig(nlist=16, nprobe=16, n_candidates=100, train_size=5000))
    scores, ids = full.search(q, 10)
    assert (ids == exact).mean() > 0.98  # SQ8 candidates, exact re-scoring: ties aside, exact
    np.testing.assert_allclose(scores, np.take_along_axis(q @ items.T, ids, 1), rtol=1e-5)
    part = AnnRetriever(items, AnnConfig(nlist=16, nprobe=2, n_candidates=100, train_size=5000))
    _, ids2 = part.search(q, 10)
    assert 0.2 < _recall(ids2, exact) < 1.0  # probing 2 of 16 cells misses some neighbours


def test_recall_at_default_settings_on_20k_items():
    items, q = _clustered(20_000, 32, 200)
    exact = exact_topk(items, q, 10)
    ann = AnnRetriever(items, AnnConfig())
    _, ids = ann.search(q, 10)
    assert ann.nlist == 20_000 // 39  # every cell has training points
    assert _recall(ids, exact) >= 0.95
    assert (ids != 0).all()  # the padding row is never returned


def test_index_is_cached_and_rebuilt_when_the_item_map_changes(tmp_path):
    items, _ = _clustered(3000, 8, 1)
    run = tmp_path / "run"
    run.mkdir()
    cfg = AnnConfig(nlist=16, nprobe=4)
    fps = {"item_map": "a" * 32, "model": "m" * 32}
    r1, i1 = open_index(run, items, cfg, fps)
    assert i1["source"] == "built" and i1["rebuilt_because"] == "no cached index"
    meta = json.loads((tmp_path / "run.ann" / "index.json").read_text())
    assert meta["item_map"] == "a" * 32 and meta["ntotal"] == 3000
    r2, i2 = open_index(run, items, cfg, fps)
    assert i2["source"] == "cache"
    q = items[1:20]
    assert (r1.search(q, 5)[1] == r2.search(q, 5)[1]).all()
    _, i3 = open_index(run, items, cfg, {**fps, "item_map": "b" * 32})
    assert i3["source"] == "built" and i3["rebuilt_because"].startswith("item_map ")
    assert json.loads((tmp_path / "run.ann" / "index.json").read_text())["item_map"] == "b" * 32
    with open(tmp_path / "run.ann" / "index.faiss", "r+b") as f:  # damaged file: refused
        f.seek(100)
        f.write(b"\x00\x01\x02\x03")
    _, i4 = open_index(run, items, cfg, {**fps, "item_map": "b" * 32})
    assert i4["source"] == "built" and "sha256" in i4["rebuilt_because"]
    _, i5 = open_index(run, items, AnnConfig(nlist=32, nprobe=4), {**fps, "item_map": "b" * 32})
    assert i5["source"] == "built" and i5["rebuilt_because"].startswith("nlist ")


def test_config_checks():
    with pytest.raises(ConfigError):
        AnnConfig(nlist=4, nprobe=8)
    assert AnnConfig(mode="on").mode is AnnMode.ON
    assert AnnConfig().wanted(200_000) and not AnnConfig().wanted(199_999)
    assert not AnnConfig(mode="off").wanted(10**9) and AnnConfig(mode="on").wanted(1)


# ---------------------------------------------------------------------- in the Recommender
@pytest.fixture(scope="module")
def sasrec_run(tmp_path_factory, store_data):
    from shiftrec.models.registry import build_model

    from .conftest import make_run

    ds, split = store_data
    m = build_model("sasrec", hidden=16, layers=1, heads=2, inner=32, max_len=20,
               train={"epochs": 1, "batch_size": 128, "seed": 0, "threads": 1})
    return make_run(tmp_path_factory.mktemp("sasrec"), m.fit(split), ds, split, "sasrec")


def _exact_ann() -> AnnConfig:  # every cell probed, every item a candidate: exact
    return AnnConfig(mode="on", nlist=1024, nprobe=1024, n_candidates=500)


@pytest.mark.parametrize("which", ["sasrec_run", "text_run"])
def test_model_vectors_factor_the_scores(request, which, store_data):
    from shiftrec.serve.recommender import Recommender

    rec = Recommender.load(request.getfixturevalue(which), ann=AnnConfig(mode="off"))
    _, split = store_data
    hist = [split.train[i][-10:] for i in range(5)]
    full = rec.model.score(hist)
    fact = rec.model.query_vectors(hist) @ rec.model.item_vectors().T
    np.testing.assert_allclose(fact[:, 1:], full[:, 1:], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("which", ["sasrec_run", "text_run"])
def test_ann_on_and_off_give_the_same_answers(request, which):
    from shiftrec.serve.recommender import Query, Recommender

    run = request.getfixturevalue(which)
    off = Recommender.load(run, ann=AnnConfig(mode="off"))
    on = Recommender.load(run, ann=_exact_ann())
    assert on.ann_info["active"] and not off.ann_info["active"]
    assert on.ann_info["nprobe"] == on.ann_info["nlist"]
    users = off.user_ids()[:40]
    qs = [Query(u, None, 10) for u in users] + [Query(None, off.item_ids[1:6], 10)] + \
        [Query(users[0], None, 10, exclude_seen=False), Query("nobody", None, 10)]
    for a, b in zip(off.recommend_batch(qs), on.recommend_batch(qs), strict=True):
        assert [i.item_id for i in a.items] == [i.item_id for i in b.items]
        np.testing.assert_allclose([i.score for i in a.items], [i.score for i in b.items],
                                   rtol=1e-4, atol=1e-4)
        assert [[r.kind for r in i.reasons] for i in a.items] == \
            [[r.kind for r in i.reasons] for i in b.items]
    seen = set(on.snapshot(users[0])[0])
    assert not seen & {on.resolve(i.item_id) for i in on.recommend(users[0], 50).items}
    many_on = on.recommend_many(users, 5)
    many_off = off.recommend_many(users, 5)
    assert many_on["item_id"].to_list() == many_off["item_id"].to_list()


def test_ann_mode_choice(knn_run, sasrec_run):
    from shiftrec.serve.recommender import Recommender

    auto = Recommender.load(sasrec_run)  # 240 items < 200,000: full scoring
    assert not auto.ann_info["active"] and "threshold" in auto.ann_info["reason"]
    knn = Recommender.load(knn_run, ann=AnnConfig(mode="auto", threshold=0))
    assert not knn.ann_info["active"] and "factorisation" in knn.ann_info["reason"]
    with pytest.raises(ConfigError, match="does not score items by a user vector"):
        Recommender.load(knn_run, ann=AnnConfig(mode="on"))
    on = Recommender.load(sasrec_run, ann=AnnConfig(mode="auto", threshold=100))
    assert on.ann_info["active"]
    again = Recommender.load(sasrec_run, ann=AnnConfig(mode="auto", threshold=100))
    assert again.ann_info["source"] == "cache"


def test_added_items_enter_the_index(text_run):
    from shiftrec.serve.recommender import Recommender

    from .conftest import FakeEncoder

    on = Recommender.load(text_run, encoder=FakeEncoder(), ann=_exact_ann())
    off = Recommender.load(text_run, encoder=FakeEncoder(), ann=AnnConfig(mode="off"))
    n0 = on.ann.n
    new = [{"item_id": f"new{j}", "title": f"brand new thing {j}", "category": "Gadgets"}
           for j in range(30)]
    assert on.add_items(new) == off.add_items(new)
    assert on.ann.n == n0 + 30 and on.ann.index.ntotal == n0 + 30
    hist = [str(x) for x in off.item_ids[1:4]] + ["new3"]
    a, b = off.recommend(hist, 20), on.recommend(hist, 20)
    assert [i.item_id for i in a.items] == [i.item_id for i in b.items]
    assert any(i.item_id.startswith("new") for i in b.items)  # new items are candidates
    np.testing.assert_allclose(on.ann.items[n0:], on.model.item_vectors()[n0:], rtol=1e-5,
                               atol=1e-6)


@pytest.fixture(scope="module")
def sasrec_gated_run(tmp_path_factory, store_data):
    from shiftrec.models.registry import build_model

    from .conftest import make_run

    ds, split = store_data
    m = build_model("sasrec", hidden=16, layers=1, heads=2, inner=32, max_len=20, repeat_gate=True,
                    train={"epochs": 1, "batch_size": 128, "seed": 0, "threads": 1})
    return make_run(tmp_path_factory.mktemp("sasrec-gated"), m.fit(split), ds, split, "sasrec")


def test_a_repeat_gated_model_ranks_alike_with_the_index_on_and_off(sasrec_gated_run):
    """The repeat gate (models.repeat) moves only the history against the rest: with the history
    left out the index's candidates rank as the full scores do; a query that keeps its history
    is scored in full even with the index on, so the gate's order holds there too."""
    from shiftrec.serve.recommender import Query, Recommender

    off = Recommender.load(sasrec_gated_run, ann=AnnConfig(mode="off"))
    on = Recommender.load(sasrec_gated_run, ann=_exact_ann())
    assert on.ann_info["active"] and off.model.net.repeat_fit is not None
    users = off.user_ids()[:20]
    for keep in (False, True):
        qs = [Query(u, None, 10, exclude_seen=not keep) for u in users]
        for a, b in zip(off.recommend_batch(qs), on.recommend_batch(qs), strict=True):
            assert [i.item_id for i in a.items] == [i.item_id for i in b.items]
            if keep:  # both scored in full, through the gate
                np.testing.assert_allclose([i.score for i in a.items], [i.score for i in b.items],
                                           rtol=1e-5, atol=1e-5)
