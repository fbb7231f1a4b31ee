"""ShiftFusion: the shift statistic, flow probabilities, weight selection on validation."""

from __future__ import annotations

import numpy as np
import pytest

from shiftrec.errors import ArtifactError, ConfigError
from shiftrec.models.fusion import (
    FusionConfig,
    ShiftFusion,
    flow_logp,
    log_softmax,
    shift_statistic,
)
from shiftrec.models.popularity import Popularity
from shiftrec.models.registry import build_model
from tests.models.cyclic import cyclic_split


def test_shift_statistic_known_values():
    topic = np.array([-1, 0, 0, 1, 1])  # items 1, 2 in topic 0; 3, 4 in topic 1
    stable = np.array([1, 2] * 10)
    moved = np.array([1, 2] * 9 + [3, 4])
    s = shift_statistic([stable, moved, np.zeros(0, np.int64)], topic, 2.0, 20.0)
    # one topic throughout: the profiles agree up to their smoothing; the recent events that
    # left topic 0 make the fast and the slow profile disagree
    assert s[0] < 0.05 < 0.1 < s[1]
    assert s[2] == 0.0


def test_flow_logp_is_a_distribution():
    raw = np.array([[-np.inf, 3.0, 1.0, 0.0], [-np.inf, 0.0, 0.0, 0.0]], np.float32)
    lp = flow_logp(raw, 0.1)
    p = np.exp(lp[:, 1:].astype(np.float64))
    assert np.allclose(p.sum(1), 1.0)
    assert p[0, 0] == pytest.approx(0.9 * 0.75 + 0.1 / 3)
    assert np.allclose(p[1], 1 / 3)  # no flow evidence: uniform
    assert lp[0, 0] == 0.0


def test_log_softmax_keeps_minus_inf():
    x = np.array([[-np.inf, 1.0, 2.0]])
    y = log_softmax(x)
    assert y[0, 0] == -np.inf and np.exp(y[0, 1:]).sum() == pytest.approx(1.0)


class LogPopularity(Popularity):
    """Popularity with log-count scores (logits on the scale the fusion expects)."""

    def score(self, histories, times=None):
        s = super().score(histories, times)
        s[:, 1:] = np.log1p(np.maximum(s[:, 1:], 0))
        return s


def test_flows_rescue_a_base_that_knows_nothing():
    """Popularity alone cannot rank the cycle's next item; the fused flows can, and the weight
    that says so is chosen on validation."""
    split = cyclic_split(n_users=60, n_items=12, popular=5)
    pop_only = LogPopularity().fit(split)
    es = split.test
    hist = [es.history[i] for i in range(len(es))]
    from shiftrec.evaluate.metrics import ranks_from_scores

    r0 = ranks_from_scores(pop_only.score(hist), es.target)
    m = ShiftFusion(LogPopularity(), item_topic=np.r_[-1, np.arange(split.n_items) % 3]).fit(split)
    r1 = ranks_from_scores(m.score(hist), es.target)
    assert np.mean(r1 <= 3) > 0.8 > 0.5 > np.mean(r0 <= 3)
    assert m.bin_weights is not None and m.bin_weights.max() > 0
    assert m.selection["on"] == "validation"
    ex = m.explain(hist[:4])
    assert set(ex) == {"shift_statistic", "bin", "flow_weight"}


def test_bad_config_and_unfitted():
    with pytest.raises(ConfigError):
        FusionConfig(n_bins=0)
    with pytest.raises(ConfigError):
        build_model("shiftfusion", base="shiftfusion")
    with pytest.raises(ArtifactError):
        ShiftFusion(Popularity()).score([np.array([1])])


def test_grid_grows_when_the_top_weight_wins():
    """The flows are the whole answer on the cycle: with a grid that stops at 0.1 the chosen
    weight sits at the top, so the grid grows until validation stops improving."""
    split = cyclic_split(n_users=60, n_items=12, popular=5)
    m = ShiftFusion(LogPopularity(), weights=(0.0, 0.05, 0.1), n_bins=1, min_bin_users=1,
                    grow_factor=2.0, max_grow=6).fit(split)
    tried = m.selection["weights_tried"]
    assert m.selection["grid_grown"] >= 1 and tried[:3] == [0.0, 0.05, 0.1]
    assert tried[3] == pytest.approx(0.2)  # each step multiplies the top by grow_factor
    assert m.bin_weights is not None and m.bin_weights.max() > 0.1
    again = ShiftFusion(LogPopularity(), weights=(0.0, 0.05, 0.1), n_bins=1, min_bin_users=1,
                        max_grow=0).fit(split)
    assert again.selection["grid_grown"] == 0 and again.bin_weights.max() == pytest.approx(0.1)
    v = m.selection
    assert v["valid_ndcg@10_fused"] >= again.selection["valid_ndcg@10_fused"]


def test_grid_growth_reuses_the_first_pass_scores(monkeypatch):
    """The growth pass ranks on the first validation pass's base and flow scores (kept when they
    fit in memory): the base scores each validation user once; past the memory limit they are
    scored again, with the same choice."""
    import shiftrec.models.fusion as fusion

    class Counting(LogPopularity):
        rows = 0

        def score(self, histories, times=None):
            Counting.rows += len(histories)
            return super().score(histories, times)

    split = cyclic_split(n_users=60, n_items=12, popular=5)
    kw = dict(weights=(0.0, 0.05, 0.1), n_bins=1, min_bin_users=1, grow_factor=2.0,
              max_grow=6, batch_size=16)
    kept = ShiftFusion(Counting(), **kw).fit(split)
    assert kept.selection["grid_grown"] >= 1
    assert Counting.rows == 1 + len(split.valid)  # the width check, then one validation pass
    Counting.rows = 0
    monkeypatch.setattr(fusion, "_KEEP_PARTS_BYTES", 0)
    again = ShiftFusion(Counting(), **kw).fit(split)
    assert Counting.rows == 1 + 2 * len(split.valid)
    assert again.selection == kept.selection
    assert np.array_equal(again.bin_weights, kept.bin_weights)


def test_selection_metric_is_a_choice():
    split = cyclic_split(n_users=60, n_items=12, popular=5)
    m = ShiftFusion(LogPopularity(), select_metric="recall@50", n_bins=1).fit(split)
    assert m.selection["metric"] == "recall@50" and "valid_recall@50_fused" in m.selection
    with pytest.raises(ConfigError, match="unknown metric"):
        FusionConfig(select_metric="ndgc@10")
    with pytest.raises(ConfigError):
        FusionConfig(grow_factor=1.0)
