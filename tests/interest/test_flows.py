from __future__ import annotations

import json
from datetime import UTC, datetime

import numpy as np
import pytest

from shiftrec.errors import ConfigError
from shiftrec.interest.events import InterestEvents
from shiftrec.interest.flows import FlowConfig, compute_flows
from shiftrec.report.plots import plot_flows


def _ts(s):
    return int(datetime.fromisoformat(s).replace(tzinfo=UTC).timestamp())


def _three_users():
    # A: Jan topic 0 (x2), Feb topic 1 -> moved 0 -> 1
    # B: Jan topic 0, Feb topic 0 (and one topic 1: still dominant 0) -> stayed
    # C: Jan topic 1 only -> not in both windows
    rows = {"A": [(0, "2024-01-03"), (0, "2024-01-20"), (1, "2024-02-10")],
            "B": [(0, "2024-01-05"), (0, "2024-02-02"), (0, "2024-02-03"), (1, "2024-02-04")],
            "C": [(1, "2024-01-09")]}
    users, indptr, topic, time = [], [0], [], []
    for u, evs in rows.items():
        users.append(u)
        for k, d in evs:
            topic.append(k)
            time.append(_ts(d))
        indptr.append(len(topic))
    return InterestEvents.from_arrays(np.array(users, dtype=object), np.array(indptr), np.array(topic),
                                      np.array(time), 2)


def test_flow_matrix_three_users(tmp_path):
    ev = _three_users()
    rep = compute_flows(ev, ["toys", "garden"], FlowConfig(every="1mo", start="2024-01-01", end="2024-03-01"))
    assert rep.windows == [("2024-01-01", "2024-02-01"), ("2024-02-01", "2024-03-01")]
    (p,) = rep.pairs
    assert p.matrix.tolist() == [[1, 1], [0, 0]]
    assert (p.users_a, p.users_b, p.users_both, p.moved) == (3, 2, 2, 1)
    mig = rep.largest_migrations()
    assert mig == [{"from": "toys", "to": "garden", "total": 1, "counts": [1], "rates": [0.5],
                    "change_last": None}]
    j = rep.to_json()
    json.dumps(j)
    assert j["pairs"][0]["top_migrations"][0]["count"] == 1
    out = plot_flows(rep, tmp_path / "f.png")
    assert out.stat().st_size > 1000


def test_empty_window_gives_empty_flow_with_message(tmp_path):
    ev = _three_users()
    rep = compute_flows(ev, ["toys", "garden"], FlowConfig(every="1mo", start="2024-01-01", end="2024-05-01"))
    assert len(rep.pairs) == 3
    assert rep.pairs[0].message == ""
    assert "2024-03-01..2024-04-01 has no events" in rep.pairs[1].message
    assert rep.pairs[2].matrix.sum() == 0 and rep.pairs[2].empty
    assert "2 of 3 window pairs are empty" in rep.message
    plot_flows(rep, tmp_path / "f.png")


def test_no_events_and_bad_window():
    ev = InterestEvents.from_arrays(np.array([], dtype=object), np.array([0]), np.array([], np.int64),
                                    np.array([], np.int64), 2)
    rep = compute_flows(ev, ["a", "b"])
    assert rep.pairs == [] and "no events" in rep.message
    with pytest.raises(ConfigError):
        compute_flows(_three_users(), ["a", "b"], FlowConfig(every="fortnight"))
