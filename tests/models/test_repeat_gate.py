"""The transfer model's repeat/explore gate: hand-computed scores, the share counted on training
sequences, the net scoring with it, its checkpoint round trip and the text path chosen under it."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from shiftrec.data.splits import Seqs  # noqa: E402
from shiftrec.errors import ArtifactError, ConfigError  # noqa: E402
from shiftrec.models.repeat import repeat_gate, repeat_share  # noqa: E402
from shiftrec.models.transfer import build_net, load_checkpoint, save_checkpoint  # noqa: E402
from tests.models.test_transfer import TINY, tiny_domain  # noqa: E402, F401

NINF = float("-inf")


def test_gate_gives_the_history_its_share_by_hand():
    s = torch.tensor([[NINF, 3.0, 2.0, 1.0, 0.0], [NINF, 3.0, 2.0, 1.0, 0.0]])
    seq = torch.tensor([[0, 1, 2], [0, 0, 0]])  # row 1: items 1 and 2 seen; row 2: no history
    out = repeat_gate(s, seq, 0.01).numpy()
    lse12, lse34, lse_all = np.log(np.exp(3) + np.exp(2)), np.log(np.exp(1) + 1), np.log(
        np.exp(3) + np.exp(2) + np.exp(1) + 1)
    want = [NINF, np.log(0.01) + 3 - lse12, np.log(0.01) + 2 - lse12,
            np.log(0.99) + 1 - lse34, np.log(0.99) + 0 - lse34]
    assert np.allclose(out[0], want, atol=1e-5) and out[0, 0] == NINF
    # the two seen items now rank last; within each group the order is kept
    assert list(np.argsort(-out[0, 1:]) + 1) == [3, 4, 1, 2]
    # no history: a plain log-softmax (order unchanged), share 0.99 only rescales nothing
    assert np.allclose(out[1, 1:], np.log(0.99) + np.array([3.0, 2, 1, 0]) - lse_all, atol=1e-5)
    # probabilities: the history holds `share` of the mass
    assert np.exp(out[0, 1:3]).sum() == pytest.approx(0.01) and np.exp(out[0, 1:]).sum() == pytest.approx(1.0)
    # a history already excluded (-inf) stays -inf, never NaN
    ex = repeat_gate(torch.tensor([[NINF, NINF, NINF, 1.0, 0.0]]), seq[:1], 0.5).numpy()
    assert not np.isnan(ex).any() and (ex[0, :3] == NINF).all()
    with pytest.raises(ConfigError, match="repeat share"):
        repeat_gate(s, seq, 1.0)


def test_share_counts_next_items_found_in_the_window_before_them():
    seqs = Seqs(np.array([0, 4, 5, 8]), np.array([1, 2, 1, 3, 7, 4, 5, 6]), np.zeros(8, np.int64))
    g = repeat_share(seqs, max_len=50)  # 1, 2, [1], 3 | 7 | 4, 5, 6: one repeat in 5 transitions
    assert (g["repeats"], g["transitions"]) == (1, 5) and g["share"] == pytest.approx(2 / 7)
    g1 = repeat_share([seqs, seqs], max_len=1)  # the 1 came back 2 steps later: out of a 1-window
    assert (g1["repeats"], g1["transitions"]) == (0, 10) and g1["share"] == pytest.approx(1 / 12)


def test_net_scores_with_the_gate_and_a_checkpoint_keeps_it(tmp_path, tiny_domain):  # noqa: F811
    split, text, _ = tiny_domain
    torch.manual_seed(0)
    net = build_net(TINY, text).eval()
    hist = [split.test.history[i][-8:] for i in range(8)]
    seq = torch.from_numpy(np.stack([np.pad(h, (8 - len(h), 0)) for h in hist]))
    with torch.no_grad():
        plain = net.score_all(seq)
        net.repeat_fit = repeat_share(split.train, 8)
        assert net.repeat_fit["repeats"] == 0  # users never come back to an item here
        gated = net.score_all(seq).numpy()
    assert np.allclose(gated, repeat_gate(plain, seq, net.repeat_fit["share"]).numpy())
    share = net.repeat_fit["share"]
    assert share == pytest.approx(1 / (net.repeat_fit["transitions"] + 2))
    for r, h in enumerate(hist):  # the history holds the share of the probability, the rest 1 - it
        assert np.exp(gated[r, np.unique(h)].astype(np.float64)).sum() == pytest.approx(share, rel=1e-4)
        assert np.exp(gated[r, 1:].astype(np.float64)).sum() == pytest.approx(1.0, rel=1e-4)
    save_checkpoint(net, tmp_path / "g", encoder="fake", include_items=True)
    man = json.loads((tmp_path / "g" / "manifest.json").read_text())
    assert man["repeat_gate"] == net.repeat_fit
    again, _ = load_checkpoint(tmp_path / "g", strict=True)
    assert again.repeat_fit == net.repeat_fit
    with torch.no_grad():
        assert np.allclose(again.eval().score_all(seq).numpy(), gated, atol=1e-5)
    net.repeat_fit = None
    save_checkpoint(net, tmp_path / "none", encoder="fake", include_items=True)
    assert "repeat_gate" not in json.loads((tmp_path / "none" / "manifest.json").read_text())
    assert load_checkpoint(tmp_path / "none", strict=True)[0].repeat_fit is None
    # a manifest with a share outside (0, 1) is one clear error
    p = tmp_path / "g" / "manifest.json"
    p.write_text(json.dumps({**man, "repeat_gate": {"share": 1.5}}))
    with pytest.raises(ArtifactError, match="repeat_gate share"):
        load_checkpoint(tmp_path / "g", strict=True)


def test_text_path_is_chosen_with_the_gate_after_it(tiny_domain):  # noqa: F811
    """The gate goes after the text path: the grid's validation NDCG@10 of the chosen cell is
    what the net, path and gate together score on validation, and the net keeps its gate."""
    from shiftrec.pipelines.transfer import evaluate_net, select_text_path

    split, text, _ = tiny_domain
    torch.manual_seed(0)
    net = build_net(TINY, text).eval()
    gate = {"share": 0.2, "repeats": 0, "transitions": 0, "max_len": 8}  # large: the order can change
    net.repeat_fit = dict(gate)
    choice = select_text_path(net, split, weights=(1.0, 5.0), decays=(0.5,), transforms=("none",))
    assert net.repeat_fit == gate
    assert choice["valid_ndcg@10"] == pytest.approx(evaluate_net(net, split, "valid")[0]["ndcg@10"])
    grid = choice["grid"]["none, decay 0.5"]
    net2 = build_net(TINY, text).eval()  # the same weights (seeded), no path: the grid's weight 0
    net2.load_state_dict({k: v for k, v in net.state_dict().items() if not k.startswith("skip_")})
    net2.repeat_fit = dict(gate)
    assert grid["0"] == pytest.approx(evaluate_net(net2, split, "valid")[0]["ndcg@10"])


def test_registry_transfer_model_counts_the_gate_and_keeps_it(tmp_path, tiny_domain):  # noqa: F811
    """`shiftrec train --model transfer --repeat-gate`: the registry's text model counts the
    gate on the split before training, saves it and loads it back."""
    from shiftrec.models.registry import build_model, load_model

    split, text, _ = tiny_domain
    arch = {k: v for k, v in TINY.__dict__.items() if k != "mode"}
    m = build_model("transfer", item_text=text, encoder="fake", repeat_gate=True, **arch,
                    train={"epochs": 1, "batch_size": 64, "threads": 1, "seed": 0})
    m.fit(split)
    assert m.net.repeat_fit == repeat_share(split.train, TINY.max_len)
    m.save(tmp_path / "t")
    again = load_model(tmp_path / "t")
    assert again.repeat_gate and again.net.repeat_fit == m.net.repeat_fit
    h = [split.test.history[i] for i in range(4)]
    assert np.allclose(again.score(h), m.score(h), atol=1e-5)
    plain = build_model("transfer", item_text=text, encoder="fake", **arch,
                        train={"epochs": 1, "batch_size": 64, "threads": 1, "seed": 0}).fit(split)
    assert plain.net.repeat_fit is None


def test_gate_never_gives_nan_when_a_group_is_all_excluded():
    out = repeat_gate(torch.tensor([[NINF, 1.0, 2.0, NINF]]), torch.tensor([[1, 2]]), 0.5).numpy()
    assert not np.isnan(out).any() and out[0, 3] == NINF and out[0, 0] == NINF
    half = repeat_gate(torch.tensor([[NINF, 3.0, 2.0, 1.0]], dtype=torch.bfloat16), torch.tensor([[1]]), 0.1)
    assert half.dtype == torch.float32  # computed in float32: no new ties within a group


def test_text_path_grid_with_the_gate_and_the_history_excluded_matches_the_evaluation(tiny_domain):  # noqa: F811
    """With exclude_seen the grid ranks as the evaluation does: the gate over the full row, then
    the history (all but the target) out. Targets inside the history make the difference."""
    import dataclasses

    from shiftrec.pipelines.transfer import evaluate_net, select_text_path

    split, text, _ = tiny_domain
    v = split.valid
    target = v.target.copy()
    target[::2] = [v.history[i][-1] for i in range(0, len(v), 2)]  # half come back to an item
    split = dataclasses.replace(split, valid=dataclasses.replace(v, target=target))
    torch.manual_seed(0)
    net = build_net(TINY, text).eval()
    net.repeat_fit = {"share": 0.3, "repeats": 0, "transitions": 0, "max_len": 8}
    choice = select_text_path(net, split, weights=(0.0,), decays=(0.5,), exclude_seen=True,
                              transforms=("none",), max_growth=0)
    assert choice["weight"] == 0
    want = evaluate_net(net, split, "valid", exclude_seen=True)[0]["ndcg@10"]
    assert choice["valid_ndcg@10"] == pytest.approx(want)
    net.repeat_fit = None  # without the gate the repeat targets rank differently
    assert evaluate_net(net, split, "valid", exclude_seen=True)[0]["ndcg@10"] != pytest.approx(want)
