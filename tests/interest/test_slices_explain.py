from __future__ import annotations

import numpy as np

from shiftrec.data.splits import EvalSet, Seqs
from shiftrec.evaluate.ranking import sliced
from shiftrec.interest.explain import Explainer, explain, unknown_user_explanation
from shiftrec.interest.profiles import DecayUnit, ItemTopicMode, ProfileConfig, TopicProfile
from shiftrec.interest.shifts import ShiftDetector
from shiftrec.interest.slices import SliceConfig, dominant_mask, shift_slices


def test_dominant_mask_coverage_and_cap():
    mass = np.array([[6.0, 3.0, 1.0, 0.0],  # 0.6, 0.9 -> two topics cover 80%
                     [9.0, 1.0, 0.0, 0.0],  # 0.9 -> one topic
                     [1.0, 1.0, 1.0, 1.0]])  # needs 4, capped at 3
    d = dominant_mask(mass, SliceConfig(coverage=0.8, max_topics=3))
    assert d.tolist() == [[True, True, False, False], [True, False, False, False],
                          [True, True, True, False]]


def test_shift_slices_on_handmade_evalset():
    item_topic = np.array([-1, 0, 0, 1, 2])  # item 4 is topic 2
    hist = Seqs.from_lists([np.array([1, 2, 1]), np.array([1, 3]), np.array([3, 3])],
                           [np.zeros(3), np.zeros(2), np.zeros(2)])
    es = EvalSet(np.arange(3), hist, np.array([2, 4, 3]), np.zeros(3, np.int64))
    m = shift_slices(es, item_topic, SliceConfig(decay_unit=DecayUnit.EVENTS, half_life=100))
    assert m["stable"].tolist() == [True, False, True]
    assert m["shifted"].tolist() == [False, True, False]
    out = sliced(np.array([1, 50, 3]), m, ks=(10,))
    assert out["shifted"]["recall@10"] == 0.0 and out["stable"]["recall@10"] == 1.0


def _model():
    class S:
        n_items = 6

        class train:  # noqa: N801
            items = np.array([1, 2, 3, 4, 5, 6])
            times = np.zeros(6, np.int64)
            indptr = np.array([0, 6])

    names = ["garden", "kitchen", "toys"]
    return TopicProfile(np.array([-1, 0, 0, 1, 1, 2, 2]), names,
                        ProfileConfig(item_topic=ItemTopicMode.HARD, decay_unit=DecayUnit.EVENTS,
                                      half_life=5)).fit(S)


def test_explanation_mentions_topic_and_shift():
    m = _model()
    day = 86400
    hist = np.array([1, 2] * 6 + [3, 4, 3, 4, 3, 4])  # garden x12, then kitchen x6
    times = np.arange(len(hist)) * day
    ex = Explainer(m, np.array(["u1"]), [hist], [times], ShiftDetector(3))
    e = ex.explain("u1", 3)
    assert e.known and e.contributions[0][0] == "kitchen"
    assert e.shift_driven and "shift" in e.sentence and "garden" in e.sentence
    e2 = ex.explain("u1", 1)  # a garden item: not driven by the shift to kitchen
    assert not e2.shift_driven and "did not drive" in e2.sentence
    assert ex.recommend("u1", 2) is not None and ex.recommend("zz") is None
    u = ex.explain("nobody", 3)
    assert not u.known and "Unknown user 'nobody'" in u.sentence
    assert unknown_user_explanation("x").to_dict()["known"] is False


def test_explanation_low_confidence():
    m = _model()
    e = explain(m, np.array([3]), None, 3, user="u")
    assert e.low_confidence and "weak signal" in e.sentence and not e.shift_driven
