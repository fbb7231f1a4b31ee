from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from shiftrec.errors import ArtifactError, ConfigError  # noqa: E402
from shiftrec.models.base import pad_left  # noqa: E402
from shiftrec.models.sasrec import SASRec, SASRecConfig, build_net  # noqa: E402
from shiftrec.models.torch_base import full_softmax_ce  # noqa: E402
from shiftrec.train.batches import CausalBatches  # noqa: E402
from tests.models.cyclic import cyclic_split  # noqa: E402


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    n = build_net(30, SASRecConfig(hidden=16, inner=32, dropout=0.3, attn_dropout=0.3, max_len=8))
    return n.eval()


def test_causal_pass_equals_separate_prefix_scoring(net):
    """One causal pass over a window gives, at position p, exactly the scores of the prefix
    of length p + 1 scored alone (right-aligned with padding, as evaluation does)."""
    seq = np.array([3, 7, 1, 29, 4, 4, 12])
    with torch.no_grad():
        h = net.encode(torch.from_numpy(seq[None]))[0]
        full = h @ net.item_emb.weight.T
        for p in range(len(seq)):
            alone = net.score_all(torch.from_numpy(pad_left([seq[:p + 1]], 8)))[0]
            assert torch.allclose(full[p, 1:], alone[1:], atol=1e-5)


def test_padding_width_does_not_change_scores(net):
    hist = [np.array([5, 6, 7]), np.array([1]), np.array([2, 3, 4, 5, 6, 7, 8, 9, 10, 11])]
    with torch.no_grad():
        a = net.score_all(torch.from_numpy(pad_left(hist, 8)))
        b = net.score_all(torch.from_numpy(pad_left(hist, 20)))  # longer than max_len: cut
        c = net.score_all(torch.from_numpy(pad_left([h[-8:] for h in hist], 8)))
    assert torch.allclose(a, b) and torch.allclose(a, c)
    assert torch.isinf(a[:, 0]).all()


def test_training_loss_is_mean_ce_over_supervised_prefixes(net):
    split = cyclic_split(n_users=10, n_items=30)
    batch = next(iter(CausalBatches(split.train, max_len=8)(1, np.random.default_rng(0), 10_000)))
    tb = {k: torch.from_numpy(v) for k, v in batch.items()}
    with torch.no_grad():
        loss = net.training_loss(tb)
        h = net.encode(tb["seq"])
        m = tb["labels"] > 0
        ref = torch.nn.functional.cross_entropy(h[m] @ net.item_emb.weight[1:].T, tb["labels"][m] - 1)
    assert float(loss) == pytest.approx(float(ref), rel=1e-5)


def test_full_softmax_ce_matches_cross_entropy():
    torch.manual_seed(1)
    h = torch.randn(13, 6, requires_grad=True)
    w = torch.randn(40, 6, requires_grad=True)
    y = torch.randint(0, 40, (13,))
    ref = torch.nn.functional.cross_entropy(h @ w.T, y)
    g_ref = torch.autograd.grad(ref, [h, w])
    got = full_softmax_ce(h, w, y)
    g = torch.autograd.grad(got, [h, w])
    assert torch.allclose(got, ref, atol=1e-6)
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(g, g_ref, strict=True))


def _tiny_fitted(tmp_path=None):
    split = cyclic_split(n_users=20, n_items=9)
    m = SASRec(hidden=8, inner=16, train={"seed": 0, "device": "cpu", "threads": 1, "phases": [
        {"epochs": 2, "lr": 0.01, "batch_size": 64, "patience": 0}]})
    return split, m.fit(split)


def test_load_rejects_mismatches(tmp_path):
    split, m = _tiny_fitted()
    m.save(tmp_path / "m")
    man_path = tmp_path / "m" / "manifest.json"
    man = json.loads(man_path.read_text())

    bad = dict(man, hidden=16)
    man_path.write_text(json.dumps(bad))
    with pytest.raises(ArtifactError, match="hidden=16.*hidden=8"):
        SASRec.load(tmp_path / "m")

    bad = dict(man, n_items=50)
    man_path.write_text(json.dumps(bad))
    with pytest.raises(ArtifactError, match=r"\(51, 8\).*\(10, 8\)"):
        SASRec.load(tmp_path / "m")

    man_path.write_text(json.dumps(dict(man, model="itemknn")))
    with pytest.raises(ArtifactError, match="'itemknn' model, not 'sasrec'"):
        SASRec.load(tmp_path / "m")

    man_path.write_text(json.dumps(man))
    again = SASRec.load(tmp_path / "m")
    again.check_split(split)
    with pytest.raises(ArtifactError, match="9 items but split 'cyclic' has 12"):
        again.check_split(cyclic_split(n_items=12))


def test_bad_config():
    with pytest.raises(ConfigError, match="divisible"):
        build_net(10, SASRecConfig(hidden=10, heads=3))
    with pytest.raises(ConfigError, match="hiden"):
        SASRec(hiden=3)
    with pytest.raises(ArtifactError, match="not fitted"):
        SASRec().save("/nonexistent")


def test_fit_with_checkpoint_and_resume(tmp_path):
    split = cyclic_split(n_users=20, n_items=9)
    kw = {"hidden": 8, "inner": 16, "train": {"seed": 0, "device": "cpu", "threads": 1, "phases": [
        {"epochs": 2, "lr": 0.01, "batch_size": 64, "patience": 0}]}}
    a = SASRec(checkpoint_dir=tmp_path / "ck", **kw).fit(split)
    # resuming a finished run changes nothing
    b = SASRec(checkpoint_dir=tmp_path / "ck", resume=True, **kw).fit(split)
    h = [split.test.history[i] for i in range(5)]
    assert np.array_equal(a.score(h), b.score(h))


def test_repeat_gate_is_counted_before_training_and_saved(tmp_path):
    """SASRec(repeat_gate=True) counts the share on the training sequences before training (so
    early stopping ranks as the model will), scores through it, and saves and reloads it; a
    manifest that disagrees with the config is refused."""
    import json

    import torch

    from shiftrec.models.repeat import repeat_gate, repeat_share

    split = cyclic_split(n_users=20, n_items=9)
    m = SASRec(hidden=8, inner=16, repeat_gate=True, train={"seed": 0, "device": "cpu", "threads": 1,
                                                            "phases": [{"epochs": 1, "lr": 0.01,
                                                                        "batch_size": 64, "patience": 0}]})
    m.fit(split)
    assert m.net.repeat_fit == repeat_share(split.train, m.config.max_len)
    hist = [split.test.history[i] for i in range(5)]
    gated = m.score(hist)
    m.net.repeat_fit, gate = None, m.net.repeat_fit
    plain = m.score(hist)
    m.net.repeat_fit = gate
    seq = torch.from_numpy(np.stack([np.pad(h[-m.config.max_len:], (m.config.max_len - len(h[-m.config.max_len:]), 0))
                                     for h in hist]))
    np.testing.assert_allclose(gated, repeat_gate(torch.from_numpy(plain), seq, gate["share"]).numpy(),
                               atol=1e-5)
    m.save(tmp_path / "g")
    again = SASRec.load(tmp_path / "g")
    assert again.net.repeat_fit == gate
    np.testing.assert_allclose(again.score(hist), gated, atol=1e-5)
    man = json.loads((tmp_path / "g" / "manifest.json").read_text())
    (tmp_path / "g" / "manifest.json").write_text(json.dumps({**man, "repeat_gate": None}))
    with pytest.raises(ArtifactError, match="repeat_gate"):
        SASRec.load(tmp_path / "g")
