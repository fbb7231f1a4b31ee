"""ShiftAware: shapes, use of times, causal training = prefix scoring, artifacts, warm start,
and known answers on planted shifts (a platform-wide season jump; per-user topic jumps)."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from shiftrec.data.splits import EvalSet, IdMap, Seqs, SeqSplit  # noqa: E402
from shiftrec.errors import ArtifactError, ConfigError, InputError  # noqa: E402
from shiftrec.models.base import pad_left  # noqa: E402
from shiftrec.models.shiftaware import (  # noqa: E402
    ShiftAware,
    ShiftAwareConfig,
    time_buckets,
    topic_index,
    trend_tables,
    warm_start,
)
from shiftrec.train.batches import CausalBatches  # noqa: E402
from tests.models.cyclic import cyclic_split  # noqa: E402

DAY = 86400
T0 = 1_600_000_000
TSTAR = T0 + 100 * DAY
PER = 6  # items per topic
OFF = {"gap_emb": False, "time_bias": False, "trend_prior": False, "topic_prior": False}
TINY = {"hidden": 16, "inner": 32, "heads": 2, "dropout": 0.1, "attn_dropout": 0.1, "max_len": 12}
FAST = {"seed": 0, "device": "cpu", "threads": 1,
        "phases": [{"name": "train", "epochs": 3, "lr": 0.01, "batch_size": 128, "patience": 0}]}


def season_split(n_users: int = 80, seed: int = 0) -> tuple[SeqSplit, np.ndarray]:
    """Topics 0-2 are ordinary interests, topic 3 a 'season': before TSTAR nobody buys it; after
    TSTAR every active user moves to it (a planted platform-wide jump)."""
    rng = np.random.default_rng(seed)
    seqs, times = [], []
    for u in range(n_users):
        a = int(rng.integers(3))
        n = int(rng.integers(5, 9))
        t = T0 + np.sort(rng.integers(0, 90 * DAY, n))
        tp = np.full(n, a)
        if u % 2:  # active again after TSTAR: one more event of the old interest, then the season
            k = int(rng.integers(3, 5))
            o = TSTAR + int(rng.integers(0, 20)) * DAY
            tp = np.r_[tp, a, np.full(k, 3)]
            t = np.r_[t, o + np.arange(k + 1) * DAY]
        seqs.append(tp * PER + rng.integers(0, PER, len(tp)) + 1)
        times.append(t.astype(np.int64))
    train = Seqs.from_lists([s[:-2] for s in seqs], [t[:-2] for t in times])

    def es(cut: int) -> EvalSet:
        h = Seqs.from_lists([s[:len(s) - cut] for s in seqs], [t[:len(t) - cut] for t in times])
        return EvalSet(np.arange(n_users), h, np.array([s[len(s) - cut] for s in seqs]),
                       np.array([t[len(t) - cut] for t in times]))

    keys = np.array(["<pad>", *[f"d/{i}" for i in range(1, 4 * PER + 1)]], dtype=object)
    item_topic = np.r_[-1, np.repeat(np.arange(4), PER)]
    split = SeqSplit("season", "leave_one_out", IdMap(keys),
                     np.array([f"u{u}" for u in range(n_users)], dtype=object), train, es(2), es(1),
                     meta={"fingerprint": f"season-{seed}"})
    return split, item_topic


@pytest.fixture(scope="module")
def season():
    return season_split()


@pytest.fixture(scope="module")
def fitted(season):
    split, it = season
    return ShiftAware(item_topic=it, train=FAST, **TINY).fit(split)


def _hist(split, n=None):
    es = split.test
    n = len(es) if n is None else n
    return [es.history[i] for i in range(n)], [es.history.times_of(i) for i in range(n)]


def test_config_is_validated():
    with pytest.raises(ConfigError):
        ShiftAwareConfig(hidden=10, heads=3)
    with pytest.raises(ConfigError):
        ShiftAware(not_a_field=1)
    with pytest.raises(ConfigError):
        ShiftAwareConfig(trend_half_lives_days=())
    assert ShiftAware(gate="fixed").config.gate.value == "fixed"


def test_time_buckets_known_values():
    b = time_buckets(np.array([0, 1, 3600, 3 * 3600, 10 ** 9, 10 ** 12, -5]), 24, 3600.0)
    assert b.tolist() == [1, 2, 3, 4, 20, 22, 1]  # 0 s -> 1; log2 buckets; capped at n - 2


def test_trend_tables_use_only_earlier_buckets():
    cfg = ShiftAwareConfig(trend_half_lives_days=(5.0,), trend_smoothing=1.0)
    items = np.array([1, 1, 1, 2, 2, 2, 2])
    times = np.array([0, 1, 2, 10 * DAY, 10 * DAY + 5, 11 * DAY, 11 * DAY + 3]) + T0
    tab, t0, bsec = trend_tables(items, times, 3, cfg)
    assert t0 == T0 and bsec == DAY and tab.shape == (1, 13, 4)
    # row 0: global popularity; row k: buckets < k. Day 10's row has not seen item 2 yet.
    assert tab[0, 1, 1] > tab[0, 1, 2]
    assert tab[0, 10, 1] > tab[0, 10, 2]
    assert tab[0, 12, 2] > tab[0, 12, 1]  # after day 11, item 2 is the trend
    np.testing.assert_allclose(np.exp(tab[0, :, 1:]).sum(1), 1.0, rtol=1e-4)


def test_topic_index_maps_missing_topics_to_an_extra_one():
    it, T = topic_index(np.array([-1, 0, 0, -1, 1]))
    assert T == 3 and it.tolist() == [2, 0, 0, 2, 1]


def test_score_shape_dtype_and_optional_times(fitted, season):
    split, _ = season
    hist, times = _hist(split, 5)
    s = fitted.score(hist + [np.zeros(0, np.int64)], times + [np.zeros(0, np.int64)])
    assert s.shape == (6, split.n_items + 1) and s.dtype == np.float32
    assert np.isneginf(s[:, 0]).all() and np.isfinite(s[:, 1:]).all()
    assert fitted.score(hist, None).shape == (5, split.n_items + 1)
    with pytest.raises(InputError):
        fitted.score(hist, times[:2])


def test_scores_depend_on_times(fitted, season):
    split, _ = season
    hist, times = _hist(split, 8)
    a = fitted.score(hist, times)
    later = [t + 30 * DAY * np.arange(len(t)) for t in times]  # same items, other intervals
    assert not np.allclose(a, fitted.score(hist, later))
    assert not np.allclose(a, fitted.score(hist, None))


def test_unfitted_is_a_clear_error():
    with pytest.raises(ArtifactError):
        ShiftAware().score([np.array([1, 2])])
    with pytest.raises(ArtifactError):
        ShiftAware().save("/nonexistent")


def test_item_topic_must_match_split(season):
    split, it = season
    with pytest.raises(InputError):
        ShiftAware(item_topic=it[:-1], train=FAST, **TINY).fit(split)


def test_causal_pass_equals_prefix_scoring(fitted, season):
    """The training pass (all prefixes at once, times included) gives at position p the
    scores of the prefix of length p + 1 scored alone, priors and gate included."""
    split, _ = season
    net = fitted.net.eval()
    seq = np.array([3, 7, 1, 20, 4, 4, 12, 22])
    t = T0 + np.cumsum([0, 3600, 0, 5 * DAY, 60, 90 * DAY, 1, 7200])
    with torch.no_grad():
        s, tt = torch.from_numpy(seq[None]), torch.from_numpy(t[None])
        h = net.encode(s, tt)
        m = torch.ones_like(s, dtype=torch.bool)
        full = h[m] @ net.item_emb.weight[1:].T
        prior, _, _ = net.prior_logits(s, tt, h[m], m, full, full=False)
        full = full + prior
        for p in range(len(seq)):
            alone = net.score_all(torch.from_numpy(pad_left([seq[:p + 1]], 12)),
                                  torch.from_numpy(pad_left([t[:p + 1]], 12)))[0]
            assert torch.allclose(full[p], alone[1:], atol=1e-4), p


def test_training_batches_carry_times(season):
    split, _ = season
    batch = next(iter(CausalBatches(split.train, 12, with_times=True)(1, np.random.default_rng(0), 64)))
    assert {"seq", "labels", "times"} <= set(batch)


def test_save_load_identical_scores(fitted, season, tmp_path):
    split, _ = season
    fitted.save(tmp_path / "m")
    again = ShiftAware.load(tmp_path / "m")
    hist, times = _hist(split, 20)
    assert np.array_equal(fitted.score(hist, times), again.score(hist, times))
    assert np.array_equal(fitted.score(hist, None), again.score(hist, None))
    man = json.loads((tmp_path / "m" / "manifest.json").read_text())
    assert man["model"] == "shiftaware" and man["priors"] == ["trend_3d", "trend_90d", "recent_topic"]


def test_load_is_strict(fitted, tmp_path):
    fitted.save(tmp_path / "m")
    p = tmp_path / "m" / "manifest.json"
    man = json.loads(p.read_text())
    man["n_items"] += 1
    p.write_text(json.dumps(man))
    with pytest.raises(ArtifactError, match="item embedding"):
        ShiftAware.load(tmp_path / "m")
    man["n_items"] -= 1
    man["config"]["gap_emb"] = False  # weights hold gap_emb: the layout no longer matches
    p.write_text(json.dumps(man))
    with pytest.raises(ArtifactError, match="unexpected"):
        ShiftAware.load(tmp_path / "m")
    man["model"] = "sasrec"
    p.write_text(json.dumps(man))
    with pytest.raises(ArtifactError, match="not 'shiftaware'"):
        ShiftAware.load(tmp_path / "m")


def test_warm_start_from_sasrec_reproduces_it(tmp_path):
    """With every signal off, a warm-started model is exactly the SASRec it starts from."""
    from shiftrec.models.sasrec import SASRec

    split = cyclic_split(n_users=30, n_items=10)
    sas = SASRec(hidden=16, inner=32, dropout=0.1, attn_dropout=0.1, max_len=12,
                 train={**FAST, "phases": [{**FAST["phases"][0], "epochs": 2}]}).fit(split)
    sas.save(tmp_path / "sas")
    ours = ShiftAware(max_len=12, hidden=16, inner=32, **OFF)
    net = ours._build(split.n_items, 1, 1)
    copied = warm_start(net, tmp_path / "sas")
    assert "item_emb.weight" in copied and "blocks.0.qkv.weight" in copied
    hist, times = _hist(split, 10)
    assert np.allclose(ours.score(hist, times), sas.score(hist, times), atol=1e-5)
    with pytest.raises(ArtifactError):
        warm_start(ShiftAware(**TINY)._build(split.n_items + 3, 1, 1), tmp_path / "sas")


def test_season_jump_known_answer(season):
    """Planted platform-wide jump: with the same item history, a late history (after TSTAR)
    gets the season's items ranked higher than an early one, and higher than a time-blind
    model ranks them; the time-blind model cannot tell the two apart."""
    split, it = season
    blind = ShiftAware(item_topic=it, train=FAST, **TINY, **OFF).fit(split)
    ours = ShiftAware(item_topic=it, train=FAST, **TINY,
                      **{**OFF, "trend_prior": True}, trend_half_lives_days=(10.0,),
                      trend_smoothing=1.0).fit(split)
    rng = np.random.default_rng(3)
    hist = [rng.integers(0, PER, 5) + 1 + PER * (i % 3) for i in range(30)]
    early = [T0 + 30 * DAY + np.arange(5) * DAY for _ in hist]
    late = [TSTAR + 25 * DAY + np.arange(5) * DAY for _ in hist]
    season_items = np.flatnonzero(it == 3)

    def mean_rank(model, times):
        s = model.score(hist, times)[:, 1:]
        ranks = (-s).argsort(1).argsort(1) + 1  # rank of every item
        return ranks[:, season_items - 1].mean()

    assert np.array_equal(blind.score(hist, early), blind.score(hist, late))
    assert mean_rank(ours, late) < mean_rank(ours, early) - 5  # 6 of 24 items: best is 3.5
    assert mean_rank(ours, late) < mean_rank(blind, late) - 1.5


def test_gate_features_react_to_a_planted_jump(small_store):
    """On the synthetic store's planted jumps, the detector feature the gate reads (JSD between
    the fast and slow topic profiles) rises right after the jump; stable users stay low."""
    import polars as pl

    ev = small_store.events.sort("user_id", "timestamp")
    cats = sorted(small_store.items["category"].unique().to_list())
    topic_of = dict(zip(small_store.items["item_id"].to_list(),
                        [cats.index(c) for c in small_store.items["category"].to_list()], strict=True))
    ids = {k: i + 1 for i, k in enumerate(sorted(topic_of))}
    it = np.r_[-1, [topic_of[k] for k in sorted(topic_of)]]
    model = ShiftAware(item_topic=it, **TINY)
    net = model._build(len(ids), len(cats) + 1, 1)
    net.item_topic.copy_(torch.from_numpy(np.where(it < 0, len(cats), it)))
    users = small_store.users.filter(pl.col("kind") != "drift")
    before, after, stable = [], [], []
    for u, kind, at in users.select("user_id", "kind", "shift_index").iter_rows():
        seq = np.array([ids[i] for i in ev.filter(pl.col("user_id") == u)["item_id"].to_list()])
        cut = at + 3 if kind == "jump" else len(seq) // 2 + 3

        def jsd(hist):
            s = torch.from_numpy(hist[-12:][None])
            fast, slow = net.profiles(s)
            return float(net.features(s, None, fast, slow)[0, -1, 0])

        if kind == "jump":
            before.append(jsd(seq[:at]))
            after.append(jsd(seq[:cut]))
        else:
            stable.append(jsd(seq[:cut]))
    before, after, stable = map(np.array, (before, after, stable))
    assert np.mean(after > before) > 0.8
    assert np.median(after) > 2 * np.median(stable)


def test_flow_table_counts_transitions_within_users():
    from shiftrec.models.shiftaware import flow_table

    train = Seqs.from_lists([np.array([1, 2, 2]), np.array([3, 1])])
    it = np.array([2, 0, 1, 1])  # item 1 -> topic 0, items 2, 3 -> topic 1; padding -> extra 2
    lp = np.exp(flow_table(train, it, 3, alpha=1e-9))
    # transitions: 0->1, 1->1 (user 1), 1->0 (user 2); none across the two users (1 -> 3)
    np.testing.assert_allclose(lp[0], [0, 1, 0], atol=1e-6)
    np.testing.assert_allclose(lp[1], [0.5, 0.5, 0], atol=1e-6)


def test_flow_prior_trains_and_round_trips(season, tmp_path):
    split, it = season
    m = ShiftAware(item_topic=it, train=FAST, **TINY, **{**OFF, "flow_prior": True}).fit(split)
    hist, times = _hist(split, 6)
    m.save(tmp_path / "f")
    assert np.array_equal(m.score(hist, times), ShiftAware.load(tmp_path / "f").score(hist, times))
    assert list(m.explain_gate(hist, times)["prior_names"]) == ["topic_flow"]


def test_shift_weighted_objective_marks_out_of_profile_targets(season):
    split, it = season
    m = ShiftAware(item_topic=it, shift_weight=3.0, **TINY)
    net = m.build_for(split)
    seq = torch.tensor([[1, 2, 3, 19, 20, 0]])  # topic 0 x3, then the season (topic 3)
    labels = torch.tensor([[2, 3, 19, 20, 7, 0]])
    shifted = net.shifted_targets(seq, labels)[0, :5].tolist()
    assert shifted == [False, False, True, False, True]  # 19 leaves topic 0; 7 is topic 1
    batch = next(iter(CausalBatches(split.train, 12, with_times=True)(1, np.random.default_rng(0), 64)))
    loss = net.training_loss({k: torch.from_numpy(v) for k, v in batch.items()})
    assert torch.isfinite(loss)
