from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from shiftrec.errors import ConfigError, InputError
from shiftrec.interest.events import InterestEvents
from shiftrec.interest.profiles import DecayUnit
from shiftrec.interest.shifts import (
    ShiftConfig,
    ShiftDetector,
    ShiftEvents,
    ShiftMethod,
    evaluate_detection,
    truth_arrays,
)
from shiftrec.interest.topics import category_topics

T = 12
DAY = 86400


def _run(det, topics):
    st = det.init_state()
    out = []
    for i, k in enumerate(topics):
        st, ev = det.update(st, k, i * DAY)
        if ev is not None:
            out.append(ev)
    return st, out


def test_switch_at_event_10_detected_within_3_events():
    det = ShiftDetector(T)
    _, evs = _run(det, [2] * 10 + [7] * 10)
    assert len(evs) == 1
    ev = evs[0]
    assert 10 <= ev.event_index <= 13
    assert 7 in ev.topics_entered and 2 in ev.topics_left
    assert 0 < ev.confidence <= 1 and 0 < ev.magnitude <= 1


def test_stable_user_with_a_secondary_interest_never_shifts():
    det = ShiftDetector(T)
    seq = [3 if i % 5 == 4 else 1 for i in range(60)]  # 80% topic 1, 20% topic 3
    _, evs = _run(det, seq)
    assert evs == []


def test_too_few_events_low_confidence_never_a_shift():
    det = ShiftDetector(T)
    st, evs = _run(det, [0, 0, 5, 5, 5, 5, 5])  # an abrupt change, but only 7 events
    assert evs == [] and det.is_low_confidence(st.n)
    with pytest.raises(InputError):
        det.update(st, T, 0)


def test_streaming_batch_and_microbatch_agree(small_store):
    tp = category_topics(small_store.items)
    ev = InterestEvents.from_frame(small_store.events, tp)
    for cfg in (ShiftConfig(), ShiftConfig(decay_unit=DecayUnit.DAYS, slow_half_life=60,
                                           fast_half_life=5),
                ShiftConfig(method=ShiftMethod.JSD, threshold=0.4)):
        det = ShiftDetector(tp.n_topics, cfg)
        batch = det.detect(ev)
        stream = []
        for u in range(len(ev)):
            st = det.init_state()
            tps, ts, pos = ev.of(u)
            for k, t, p in zip(tps.tolist(), ts.tolist(), pos.tolist(), strict=True):
                st, e = det.update(st, k, t)
                if e is not None:
                    stream.append((u, p, round(e.magnitude, 9), e.topics_entered, e.topics_left))
        got = [(int(batch.user[i]), int(batch.event_index[i]), round(float(batch.magnitude[i]), 9),
                tuple(np.flatnonzero(batch.entered[i]).tolist()),
                tuple(np.flatnonzero(batch.left[i]).tolist())) for i in range(len(batch))]
        assert got == stream and len(got) > 0
        # micro-batches of interleaved users (global time order)
        table = det.init_table(len(ev))
        users = np.repeat(np.arange(len(ev)), ev.lengths())
        order = np.argsort(ev.time, kind="stable")
        parts = [det.update_many(table, users[o], ev.topic[o], ev.time[o])
                 for o in np.array_split(order, 7)]
        mb = ShiftEvents.concat(parts, tp.n_topics)
        assert sorted(zip(mb.user.tolist(), mb.event_index.tolist(), strict=True)) == \
            sorted((g[0], g[1]) for g in got)
        # the same micro-batches with every batch's users split across 3 threads
        det.min_thread_users = 0
        det3 = ShiftDetector(tp.n_topics, replace(cfg, stream_threads=3))
        det3.min_thread_users = 0
        t1, t3 = det.init_table(len(ev)), det3.init_table(len(ev))
        for o in np.array_split(order, 7):
            a = det.update_many(t1, users[o], ev.topic[o], ev.time[o])
            b = det3.update_many(t3, users[o], ev.topic[o], ev.time[o])
            ka = np.lexsort((a.event_index, a.user))
            kb = np.lexsort((b.event_index, b.user))
            for f in ("user", "event_index", "time", "topic_entered", "entered", "left", "magnitude",
                      "confidence", "statistic"):
                assert np.array_equal(getattr(a, f)[ka], getattr(b, f)[kb]), f
        assert np.array_equal(t1.state, t3.state) and np.array_equal(t1.n, t3.n)
        assert np.array_equal(t1.ring_topic, t3.ring_topic) and np.array_equal(t1.cooldown, t3.cooldown)


def test_detection_on_planted_truth_is_good(small_store):
    tp = category_topics(small_store.items)
    ev = InterestEvents.from_frame(small_store.events, tp)
    tr = truth_arrays(ev, small_store.users)
    res = ShiftDetector(tp.n_topics).detect(ev)
    m = evaluate_detection(res.user, res.event_index, tr["truth_user"], tr["truth_index"],
                           tr["stable_users"])
    assert m["recall"] > 0.7 and m["precision"] > 0.7
    assert m["false_alarm_rate_stable_users"] < 0.15
    frame = res.to_frame(ev.user_ids, tp.names)
    assert frame.columns[:4] == ["user_id", "event_index", "time", "topic_entered"]
    assert frame.height == len(res)


def test_evaluate_detection_known_answer():
    # truth: user 0 shifts at 10, user 1 at 20; user 2, 3 stable
    m = evaluate_detection(det_user=np.array([0, 0, 1, 2]), det_index=np.array([12, 30, 19, 5]),
                           truth_user=np.array([0, 1]), truth_index=np.array([10, 20]),
                           stable_users=np.array([2, 3]), tolerance=10)
    # user 0 @12 matches (delay 2); @30 late; user 1 @19 is before the shift; user 2 false alarm
    assert m["matched"] == 1 and m["precision"] == 0.25 and m["recall"] == 0.5
    assert m["median_delay_events"] == 2.0
    assert m["false_alarm_rate_stable_users"] == 0.5


def test_config_validation():
    with pytest.raises(ConfigError):
        ShiftConfig(rho=1.5)
    with pytest.raises(ConfigError):
        ShiftConfig(lag=5, min_history=4)
    with pytest.raises(ConfigError):
        ShiftDetector(1)
