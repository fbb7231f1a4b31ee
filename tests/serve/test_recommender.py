"""Recommender: every model servable from a run, fingerprints checked, and each reason kind
present when, and only when, its signal is."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from shiftrec.errors import ArtifactError
from shiftrec.serve.recommender import Recommender
from tests.serve.conftest import make_run

_SASREC = {"hidden": 16, "inner": 32, "train": {"seed": 0, "device": "cpu", "threads": 1,
           "phases": [{"name": "train", "epochs": 1, "lr": 0.01, "batch_size": 256}]}}


def _models(split):
    from shiftrec.interest.profiles import TopicProfile
    from shiftrec.interest.topics import category_topics
    from shiftrec.models.registry import build_model

    return split, {"popularity": lambda ds: build_model("popularity"),
                   "itemknn": lambda ds: build_model("itemknn"),
                   "sasrec": lambda ds: build_model("sasrec", **_SASREC),
                   "shiftfusion": lambda ds: build_model(
                       "shiftfusion", base="sasrec", base_options=_SASREC,
                       item_topic=category_topics(ds.items).aligned(split.item_map)),
                   "topic_profile": lambda ds: TopicProfile(
                       category_topics(ds.items).aligned(split.item_map),
                       category_topics(ds.items).names)}


@pytest.mark.parametrize("name", ["popularity", "itemknn", "sasrec", "shiftfusion",
                                  "topic_profile"])
def test_every_model_is_servable(tmp_path, store_data, name):
    ds, split = store_data
    _, makers = _models(split)
    run = make_run(tmp_path, makers[name](ds).fit(split), ds, split, name)
    rec = Recommender.load(run)
    user = str(split.user_ids[3])
    r = rec.recommend(user, k=7)
    assert r.model == name and len(r.items) == 7 and not r.cold
    hist = set(rec.snapshot(user)[0])
    ids = [it.item_id for it in r.items]
    assert len(set(ids)) == 7 and not {rec.resolve(i) for i in ids} & hist  # seen excluded
    assert all(it.reasons for it in r.items)
    assert [it.score for it in r.items] == sorted((it.score for it in r.items), reverse=True)
    # the run's answer is the model's own ranking
    model = rec.model
    h, t, _ = rec.snapshot(user)
    s = np.asarray(model.score([np.asarray(h)], [np.asarray(t)]))[0]
    s[0] = -np.inf
    s[h] = -np.inf
    assert rec.resolve(ids[0]) == int(np.argmax(s))


def test_text_model_is_servable(text_run):
    rec = Recommender.load(text_run)
    assert rec.model_name == "transfer" and rec.can_add_items
    assert len(rec.recommend(rec.user_ids()[0], k=5).items) == 5


def test_textsim_is_servable_and_takes_new_items_at_once(tmp_path, store_data):
    """TextSim learns nothing, so a new catalogue item is recommendable at once: an anonymous
    history of one new item gets its same-titled twin first."""
    from shiftrec.models.textsim import TextSim
    from tests.serve.conftest import FakeEncoder

    ds, split = store_data
    text = np.random.default_rng(0).normal(size=(split.n_items + 1, 8)).astype(np.float32)
    text[0] = 0
    run = make_run(tmp_path, TextSim(text, "fake").fit(split), ds, split, "ts")
    rec = Recommender.load(run)
    assert rec.model_name == "textsim" and rec.can_add_items
    assert len(rec.recommend(rec.user_ids()[0], k=5).items) == 5
    rec.encoder = FakeEncoder()
    n0 = rec.n_items
    assert rec.add_items([{"item_id": "lamp-a", "title": "A brass desk lamp"},
                          {"item_id": "lamp-b", "title": "A brass desk lamp"}]) == ["lamp-a", "lamp-b"]
    assert rec.n_items == n0 + 2
    r = rec.recommend(history=["lamp-a"], k=3)
    assert r.items[0].item_id == "lamp-b"


def test_model_of_other_data_is_refused_naming_both_fingerprints(tmp_path, store_data):
    from shiftrec.data.clean import clean
    from shiftrec.data.readers._common import finish
    from shiftrec.data.schema import conform_items
    from shiftrec.data.splits import leave_one_out
    from shiftrec.data.synthetic import StoreConfig, generate
    from shiftrec.models.itemknn import ItemKNN
    from shiftrec.pipelines.run import write_run

    ds, split = store_data
    st = generate(StoreConfig(n_users=300, n_items=240, mean_events=20, seed=8))
    ds2, _, _ = clean(finish(st.events, conform_items(st.items), [], st.events.height, ["s"]))
    other = leave_one_out(ds2)
    ItemKNN().fit(other).save(tmp_path / "m")
    with pytest.raises(ArtifactError) as e:
        write_run(tmp_path / "run", model_dir=tmp_path / "m", split=split, dataset=ds)
    msg = str(e.value)
    assert ds2.fingerprint() in msg and ds.fingerprint() in msg and "\n" not in msg


def test_tampered_item_map_is_refused_naming_both_fingerprints(tmp_path, knn_run):
    from shiftrec.pipelines.run import item_map_fingerprint

    run = tmp_path / "run"
    shutil.copytree(knn_run, run)
    keys = np.load(run / "item_map.npz")["keys"]
    keys[[1, 2]] = keys[[2, 1]]
    np.savez(run / "item_map.npz", keys=keys)
    with pytest.raises(ArtifactError) as e:
        Recommender.load(run)
    import json

    want = json.loads((run / "manifest.json").read_text())["fingerprints"]["item_map"]
    assert item_map_fingerprint(keys) in str(e.value) and want in str(e.value)


def test_incomplete_run_is_refused(tmp_path, knn_run):
    run = tmp_path / "run"
    shutil.copytree(knn_run, run)
    (run / "_COMPLETE").unlink()
    with pytest.raises(ArtifactError, match="incomplete"):
        Recommender.load(run)


# ---------------------------------------------------------------- reasons: when and only when

def _topic_items(rec, topic):
    return [i for i in range(1, rec.n_items + 1) if rec.item_topic[i] == topic]


def test_cold_reason_only_for_cold_users(knn_run):
    rec = Recommender.load(knn_run)
    cold = rec.recommend("nobody-ever", k=10)
    assert cold.cold and all([r.kind for r in it.reasons] == ["popular"] for it in cold.items)
    top = np.argsort(-rec.popularity[1:], kind="stable")[:3] + 1
    assert [rec.resolve(it.item_id) for it in cold.items[:3]] == top.tolist()
    warm = rec.recommend(rec.user_ids()[0], k=10)
    assert not warm.cold and not any(r.kind == "popular" for it in warm.items for r in it.reasons)
    # an anonymous history of only unknown items is cold, and the ids are reported
    anon = rec.recommend(["no-such-item", "nor-this"], k=3)
    assert anon.cold and anon.ignored == ["no-such-item", "nor-this"]


def test_flow_reason_iff_a_history_item_flows_to_the_item(knn_run):
    rec = Recommender.load(knn_run)
    sim = rec.item_flows.sim.tocsr()
    n_with = n_without = 0
    for user in rec.user_ids()[:5]:
        r = rec.recommend(user, k=rec.n_items)
        h = rec.snapshot(user)[0][-rec.item_flows.config.max_history:]
        for it in r.items:
            y = rec.resolve(it.item_id)
            flows = any(sim[x, y] > 0 for x in h)
            kinds = [x.kind for x in it.reasons]
            assert ("flow" in kinds) == flows, (user, it.item_id)
            n_with += flows
            n_without += not flows
            if flows:
                text = next(x.text for x in it.reasons if x.kind == "flow")
                src = [x for x in h if sim[x, y] > 0]
                assert any(rec.titles[x] in text for x in src) and rec.titles[y] in text
    assert n_with > 0 and n_without > 0  # both sides of the "iff" were exercised


def test_sequence_models_have_no_flow_reason(tmp_path, store_data):
    """SASRec alone does not use item flows, so it never gives that reason."""
    from shiftrec.models.registry import build_model

    ds, split = store_data
    run = make_run(tmp_path, build_model("sasrec", **_SASREC).fit(split), ds, split, "s")
    rec = Recommender.load(run)
    for u in rec.user_ids()[:10]:
        kinds = {r.kind for it in rec.recommend(u, k=20).items for r in it.reasons}
        assert "flow" not in kinds and "popular" not in kinds


def test_sequence_reason_iff_the_model_score_is_the_only_signal(tmp_path, store_data, knn_run):
    from shiftrec.models.registry import build_model

    ds, split = store_data
    run = make_run(tmp_path, build_model("sasrec", **_SASREC).fit(split), ds, split, "s")
    rec = Recommender.load(run)
    n_seq = n_other = 0
    for u in rec.user_ids()[:30]:
        for it in rec.recommend(u, k=20).items:
            kinds = [r.kind for r in it.reasons]
            assert kinds, "every item has a reason"
            if "sequence" in kinds:
                n_seq += 1
                assert kinds == ["sequence"]  # only when no shift/topic signal holds
                assert "(sasrec)" in it.reasons[0].text and "follows from your last" in \
                    it.reasons[0].text
            else:
                n_other += 1
                assert set(kinds) <= {"shift", "topic"}
    assert n_seq > 0 and n_other > 0  # both sides exercised
    knn = Recommender.load(knn_run)  # not a sequence model: never this reason
    assert all(r.kind != "sequence" for u in knn.user_ids()[:30]
               for it in knn.recommend(u, k=20).items for r in it.reasons)


def test_topic_and_shift_reasons_follow_their_signals(knn_run):
    rec = Recommender.load(knn_run)
    sizes = np.bincount(rec.item_topic[rec.item_topic >= 0])
    a, b = (int(t) for t in np.argsort(-sizes)[:2])
    A, B = _topic_items(rec, a), _topic_items(rec, b)
    # stable: 40 events in topic A -> topic reason on A items only, no shift anywhere
    stable = [rec.item_ids[A[i % len(A)]] for i in range(40)]
    r = rec.recommend(stable, k=40, exclude_seen=False)
    assert not r.shift["shifted"]
    for it in r.items:
        kinds = [x.kind for x in it.reasons]
        assert "shift" not in kinds
        assert ("topic" in kinds) == (rec.item_topic[rec.resolve(it.item_id)] == a)
    # shifted: 30 events in A then 10 in B -> the detector fires, shift reason on B items only
    moved = stable[:30] + [rec.item_ids[B[i % len(B)]] for i in range(10)]
    r = rec.recommend(moved, k=60, exclude_seen=False)
    assert r.shift["shifted"] and rec.topic_names[b] in r.shift["to"]
    assert r.shift["from"] == [rec.topic_names[a]]
    seen_shift = False
    for it in r.items:
        kinds = [x.kind for x in it.reasons]
        in_b = rec.item_topic[rec.resolve(it.item_id)] == b
        assert ("shift" in kinds) == in_b
        if in_b:
            seen_shift = True
            text = next(x.text for x in it.reasons if x.kind == "shift")
            assert text.startswith(f"you recently moved from {rec.topic_names[a]}")
            assert rec.topic_names[b] in text and "around " in text
    assert seen_shift


def test_recommend_many_matches_single(knn_run):
    rec = Recommender.load(knn_run)
    users = rec.user_ids()[:5]
    df = rec.recommend_many(users, k=4)
    for u in users:
        one = [it.item_id for it in rec.recommend(u, k=4, explain=False).items]
        assert df.filter(df["user_id"] == u).sort("rank")["item_id"].to_list() == one
