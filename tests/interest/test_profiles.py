from __future__ import annotations

import numpy as np
import pytest

from shiftrec.errors import ArtifactError, ConfigError
from shiftrec.evaluate.ranking import evaluate
from shiftrec.interest.profiles import (
    DecayUnit,
    ItemTopicMode,
    ProfileConfig,
    TopicProfile,
    next_topic_metrics,
    topic_distribution,
    topic_mass,
    unknown_user,
    user_profile,
)
from shiftrec.interest.topics import category_topics
from shiftrec.models.base import Recommender


def test_two_topic_profile_known_probabilities():
    # events (topic): 0, 0, 1 ; half-life 1 event -> weights 0.25, 0.5, 1
    cfg = ProfileConfig(half_life=1.0, decay_unit=DecayUnit.EVENTS, alpha=0.0)
    mass, n = topic_mass(np.array([0, 3]), np.array([0, 0, 1]), None, 2, cfg)
    assert np.allclose(mass, [[0.75, 1.0]]) and n.tolist() == [3]
    p = topic_distribution(mass, np.array([0.5, 0.5]), 0.0)
    assert np.allclose(p, [[0.75 / 1.75, 1.0 / 1.75]])
    # smoothing: alpha pseudo-events of the prior
    p2 = topic_distribution(mass, np.array([0.5, 0.5]), 1.0)
    assert np.allclose(p2, [[(0.75 + 0.5) / 2.75, (1.0 + 0.5) / 2.75]])


def test_time_decay_in_days():
    cfg = ProfileConfig(half_life=10.0, decay_unit=DecayUnit.DAYS, alpha=0.0)
    day = 86400
    mass, _ = topic_mass(np.array([0, 2]), np.array([0, 1]), np.array([0, 10 * day]), 2, cfg)
    assert np.allclose(mass, [[0.5, 1.0]])


def test_interest_score_is_sum_over_topics():
    # items 1, 2 in topic 0; item 3 in topic 1; hard P(i|t) from train counts + beta
    class S:  # minimal split stand-in
        n_items = 3

        class train:  # noqa: N801
            items = np.array([1, 1, 2, 3])
            times = np.zeros(4, np.int64)
            indptr = np.array([0, 4])

    m = TopicProfile(np.array([-1, 0, 0, 1]), ["A", "B"],
                     ProfileConfig(item_topic=ItemTopicMode.HARD, beta=0.0, alpha=0.0,
                                   decay_unit=DecayUnit.EVENTS, half_life=1e9)).fit(S)
    assert np.allclose(m.p_item_topic[0], [0, 2 / 3, 1 / 3, 0])
    assert np.allclose(m.p_item_topic[1], [0, 0, 0, 1])
    s = m.score([np.array([1, 3])])  # P(A|u) = P(B|u) = 1/2
    assert np.isneginf(s[0, 0])
    assert np.allclose(s[0, 1:], [1 / 3, 1 / 6, 1 / 2])
    c = m.contributions(np.array([1, 3]), None, 3)
    assert np.allclose(c, [0, 0.5])


def test_topic_profile_protocol_on_small_split(small_store, small_split, tmp_path):
    tp = category_topics(small_store.items)
    it = tp.aligned(small_split.item_map)
    assert (it[1:] >= 0).all()
    m = TopicProfile(it, tp.names).fit(small_split)
    assert isinstance(m, Recommender)
    met, ranks = evaluate(m, small_split)
    assert met["n_users"] == len(small_split.test) and 0 <= met["ndcg@10"] <= 1
    m.save(tmp_path / "m")
    back = TopicProfile.load(tmp_path / "m")
    h = [small_split.test.history[0]]
    assert np.allclose(back.score(h), m.score(h))
    with pytest.raises(ArtifactError):
        TopicProfile(it, tp.names).score(h)


def test_next_topic_metrics_known_answer():
    r = next_topic_metrics(np.array([0, 0, 1, 1]), np.array([0, 1, 1, 1]), 3)
    assert r["accuracy"] == 0.75
    # topic 0: precision 1/2, recall 1; topic 1: precision 1, recall 2/3
    assert r["macro_precision"] == pytest.approx(0.75)
    assert r["macro_recall"] == pytest.approx((1 + 2 / 3) / 2)


def test_unknown_user_and_low_confidence():
    u = unknown_user("nobody")
    assert not u.known and "unknown user" in u.message
    p = user_profile("u1", np.array([0, 1]), None, 3, cfg=ProfileConfig(min_events=3))
    assert p.known and p.low_confidence and "low confidence" in p.message
    assert p.topic_probs.sum() == pytest.approx(1.0)
    with pytest.raises(ConfigError):
        ProfileConfig(half_life=0)


def test_profile_of_known_and_unknown_users(small_store):
    from shiftrec.interest.events import InterestEvents
    from shiftrec.interest.profiles import profile_of

    tp = category_topics(small_store.items)
    ev = InterestEvents.from_frame(small_store.events, tp)
    p = profile_of(ev, ev.user_ids[0])
    assert p.known and p.topic_probs.shape == (tp.n_topics,) and not p.low_confidence
    assert len(p.top(tp.names, 2)) == 2
    q = profile_of(ev, "no-such-user")
    assert not q.known and "unknown user 'no-such-user'" in q.message
