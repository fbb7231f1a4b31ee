"""Pretrain on two tiny synthetic source domains -> zero-shot and fine-tune on an unseen target.

Item text comes from a fake deterministic "encoder" (topic directions shared by all domains plus
noise), so the test is fast and needs no language model.
"""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

pytest.importorskip("torch")

from shiftrec.data.splits import leave_one_out  # noqa: E402
from shiftrec.errors import ArtifactError, ConfigError, InputError  # noqa: E402
from shiftrec.models.transfer import Freeze, Mode, Objective, TransferConfig  # noqa: E402
from shiftrec.pipelines.transfer import (  # noqa: E402
    FinetuneConfig,
    PretrainConfig,
    Source,
    evaluate_net,
    finetune,
    pretrain,
    zero_shot,
)
from tests.models.test_transfer import aligned_text, topic_domain, topic_vectors  # noqa: E402

ARCH = TransferConfig(hidden=16, n_layers=1, n_heads=2, inner=32, n_experts=2, max_len=8,
                      dropout=0.0, attn_dropout=0.0, adaptor_dropout=0.0, gate_noise=False,
                      temperature=0.1, objective=Objective.CONTRASTIVE, seq_weight=0.1)


def _domain(name: str, topics: np.ndarray, seed: int, **kw):
    ds, tb = topic_domain(name, topics, seed=seed, **kw)
    split = leave_one_out(ds, max_len=8)
    return split, aligned_text(ds, split, tb)


@pytest.fixture(scope="module")
def world():
    topics = topic_vectors(5, 12, seed=3)
    sources = [Source(n, *_domain(n, topics, seed)) for n, seed in (("books", 11), ("toys", 12))]
    target = _domain("garden", topics, 13, per_topic=5, seq_len=5, n_users=60)
    return sources, target


@pytest.fixture(scope="module")
def pretrained(world, tmp_path_factory):
    sources, _ = world
    out = tmp_path_factory.mktemp("pre") / "ck"
    cfg = PretrainConfig(model=ARCH, epochs=12, lr=5e-3, batch_size=96, patience=0, valid_users=40,
                         threads=1)
    pretrain(sources, "fake-enc", cfg, out)
    return out


def test_pretrain_writes_checkpoint_with_provenance(pretrained):
    man = json.loads((pretrained / "manifest.json").read_text())
    assert man["encoder"] == "fake-enc" and man["text_dim"] == 12
    assert man["dims"]["hidden"] == 16
    assert set(man["data_fingerprints"]) == {"books", "toys"}
    prov = man["provenance"]
    for key in ("data", "seed", "hardware", "wall_seconds", "epochs_run"):
        assert key in prov
    assert prov["epochs_run"] == [12]
    assert (pretrained / "model.safetensors").exists()
    assert not (pretrained / "item_text.safetensors").exists()  # domain-agnostic


def test_pretrain_one_domain_per_batch(world, tmp_path, monkeypatch):
    """same_domain: every pretraining batch holds one source's items only (with uniform negatives
    from that domain too), and the model still learns the shared topics (zero-shot on the unseen
    domain beats chance)."""
    import shiftrec.models.transfer_net as tn

    sources, (split, text) = world
    bounds = np.cumsum([0] + [s.split.n_items for s in sources])
    seen: list[int] = []
    orig = tn.TransferNet.contrastive_loss

    def spy(self, seq, tgt):
        dom = np.searchsorted(bounds, seq[seq > 0].numpy(), side="left") - 1
        seen.append(len(set(dom.tolist())))
        return orig(self, seq, tgt)

    monkeypatch.setattr(tn.TransferNet, "contrastive_loss", spy)
    cfg = PretrainConfig(epochs=12, lr=5e-3, batch_size=96, patience=0, valid_users=40,
                         threads=1, same_domain=True,
                         model=replace(ARCH, uniform_negatives=64))
    pretrain(sources, "fake-enc", cfg, tmp_path / "ck")
    assert seen and set(seen) == {1}
    man = json.loads((tmp_path / "ck" / "manifest.json").read_text())
    assert man["pretrain_config"]["same_domain"] is True
    assert man["pretrain_config"]["model"]["uniform_negatives"] == 64
    m, _ = zero_shot(tmp_path / "ck", split, text, "fake-enc")
    assert m["recall@5"] > 0.5


def test_zero_shot_on_unseen_domain_beats_chance(world, pretrained):
    _, (split, text) = world
    m, ranks = zero_shot(pretrained, split, text, "fake-enc")
    assert len(ranks) == len(split.test)
    # 25 items, 5 per topic: a model that learned "stay in the topic" puts the target in the top 5
    assert m["recall@5"] > 0.5


def test_finetune_modes_and_freeze(world, pretrained, tmp_path):
    _, (split, text) = world
    for mode, freeze in ((Mode.INDUCTIVE, Freeze.ENCODER), (Mode.TRANSDUCTIVE, Freeze.NONE)):
        cfg = FinetuneConfig(mode=mode, freeze=freeze, epochs=3, lr=5e-3, batch_size=64,
                             patience=0, threads=1)
        out = tmp_path / f"{mode}-{freeze}"
        net, fields = finetune(pretrained, split, text, "fake-enc", cfg, out)
        m, _ = evaluate_net(net, split)
        assert np.isfinite(m["ndcg@10"]) and m["recall@10"] > 0.3
        assert fields["stage"] == "finetune"
        man = json.loads((out / "manifest.json").read_text())
        assert man["mode"] == mode.value and man["n_items"] == split.n_items
        assert man["provenance"]["data"][0]["items"] == split.n_items


def test_finetune_mode_auto_keeps_the_better_on_validation(world, pretrained, tmp_path, monkeypatch):
    """mode auto fine-tunes both modes, keeps the one with the higher validation NDCG@10 (the
    inductive one on a tie), records both in the manifest and removes its candidates; an
    interrupted run resumes from the candidate that finished."""
    from shiftrec.models.transfer import load_checkpoint
    from shiftrec.models.transfer_fit import FitMode
    from shiftrec.pipelines import transfer as tp

    _, (split, text) = world
    # without interpolation: the tie below is forced on the training's best validation
    cfg = FinetuneConfig(mode=FitMode.AUTO, epochs=2, lr=5e-3, batch_size=64, patience=0, threads=1,
                         interpolate=False)
    out = tmp_path / "auto"
    net, fields = finetune(pretrained, split, text, "fake-enc", cfg, out)
    sel = fields["mode_selection"]
    v = sel["valid_ndcg@10"]
    assert set(v) == {"inductive", "transductive"}
    want = "inductive" if v["inductive"] >= v["transductive"] else "transductive"
    assert sel["chosen"] == want and net.cfg.mode == want
    man = json.loads((out / "manifest.json").read_text())
    assert man["mode"] == want and man["mode_selection"] == sel
    assert man["finetune_config"]["mode"] == want
    assert not (out / tp.CANDIDATES).exists()
    # a finished candidate is read back through _FIT_FIELDS: it must name every field finetune returns
    _, one = finetune(pretrained, split, text, "fake-enc", replace(cfg, mode=FitMode.INDUCTIVE, epochs=1))
    assert set(one) <= set(tp._FIT_FIELDS)
    again, _ = load_checkpoint(out, strict=True)
    m1, _ = evaluate_net(net, split, "valid")
    m2, _ = evaluate_net(again, split, "valid")
    assert m1["ndcg@10"] == pytest.approx(v[want]) == pytest.approx(m2["ndcg@10"])

    # a tie keeps the inductive model; the run resumes past a finished candidate
    real = tp.finetune
    calls: list[str] = []

    def fake(ck, sp, tx, enc, c, out_dir=None, **kw):
        if c.mode == FitMode.TRANSDUCTIVE:
            raise KeyboardInterrupt  # interrupted after the inductive candidate was saved
        return real(ck, sp, tx, enc, c, out_dir, **kw)

    monkeypatch.setattr(tp, "finetune", fake)
    out2 = tmp_path / "auto2"
    with pytest.raises(KeyboardInterrupt):
        tp.finetune_either_mode(pretrained, split, text, "fake-enc", cfg, out2)
    assert (out2 / tp.CANDIDATES / "inductive" / "manifest.json").exists()
    with pytest.raises(ConfigError, match="without interpolation"):  # the other setting: refused
        tp.finetune_either_mode(pretrained, split, text, "fake-enc", replace(cfg, interpolate=True),
                                out2, resume=True)
    with pytest.raises(ArtifactError, match="no interrupted run"):
        tp.finetune_either_mode(pretrained, split, text, "fake-enc", cfg, tmp_path / "none", resume=True)

    def fake2(ck, sp, tx, enc, c, out_dir=None, **kw):
        calls.append(str(c.mode))
        n, f = real(ck, sp, tx, enc, c, out_dir, **kw)
        f["provenance"]["best_valid"] = [float(json.loads(
            (out2 / tp.CANDIDATES / "inductive" / "manifest.json").read_text())
            ["provenance"]["best_valid"][0])]
        return n, f

    monkeypatch.setattr(tp, "finetune", fake2)
    calls.clear()
    _, f2 = tp.finetune_either_mode(pretrained, split, text, "fake-enc", cfg, out2, resume=True)
    assert calls == ["transductive"]  # the finished inductive candidate was read back, not retrained
    assert f2["mode_selection"]["chosen"] == "inductive"  # equal validation: the inductive one


def test_finetune_resume_continues(world, pretrained, tmp_path):
    _, (split, text) = world
    cfg = FinetuneConfig(epochs=2, lr=5e-3, batch_size=64, patience=0, threads=1)
    finetune(pretrained, split, text, "fake-enc", cfg, tmp_path / "r")
    cfg4 = FinetuneConfig(epochs=4, lr=5e-3, batch_size=64, patience=0, threads=1)
    _, fields = finetune(pretrained, split, text, "fake-enc", cfg4, tmp_path / "r", resume=True)
    assert [r["epoch"] for r in fields["provenance"]["history"]] == [1, 2, 3, 4]


def test_default_learning_rate_depends_on_the_start(world, pretrained, tmp_path):
    """lr None: 5e-4 when fine-tuning a checkpoint, 2e-3 from scratch; an explicit lr wins; the
    manifest and the trainer's phase record the rate actually used."""
    from shiftrec.models.transfer_fit import FINETUNE_LR, SCRATCH_LR

    assert (FINETUNE_LR, SCRATCH_LR) == (5e-4, 2e-3)
    d = FinetuneConfig()
    assert d.lr is None and d.patience == 10 and d.epochs == 100
    assert d.learning_rate(True) == 5e-4 and d.learning_rate(False) == 2e-3
    assert FinetuneConfig(lr=1e-3).learning_rate(True) == 1e-3
    assert d.train_config(50, pretrained=True).phases[0].lr == 5e-4
    assert d.train_config(50).phases[0].lr == 2e-3
    _, (split, text) = world
    cfg = FinetuneConfig(epochs=1, batch_size=64, patience=0, threads=1)
    _, ft = finetune(pretrained, split, text, "fake-enc", cfg, tmp_path / "ft")
    _, sc = finetune(None, split, text, "fake-enc", cfg, tmp_path / "sc")
    assert ft["finetune_config"]["lr"] == 5e-4 and sc["finetune_config"]["lr"] == 2e-3
    man = json.loads((tmp_path / "ft" / "manifest.json").read_text())
    assert man["finetune_config"]["lr"] == 5e-4


def test_wrong_encoder_and_empty_target(world, pretrained):
    _, (split, text) = world
    with pytest.raises(ArtifactError, match="fake-enc.*minilm|minilm.*fake-enc"):
        zero_shot(pretrained, split, text, "minilm")
    with pytest.raises(ArtifactError, match="12-d.*20|20.*12-d"):
        zero_shot(pretrained, split, np.ones((split.n_items + 1, 20), np.float32), "fake-enc")
    from shiftrec.data.splits import EvalSet, Seqs

    empty = EvalSet(np.zeros(0, np.int64), Seqs.from_lists([]), np.zeros(0, np.int64),
                    np.zeros(0, np.int64))
    import dataclasses

    no_test = dataclasses.replace(split, valid=empty, test=empty)
    with pytest.raises(InputError, match="no validation/test users"):
        finetune(pretrained, no_test, text, "fake-enc", FinetuneConfig(epochs=1, threads=1))
    with pytest.raises(InputError, match="no test users"):
        zero_shot(pretrained, no_test, text, "fake-enc")


def test_finetune_interpolate_mixes_back_toward_the_pretrained_weights(world, pretrained, tmp_path):
    """interpolate (WiSE-FT): the saved weights are alpha * fine-tuned + (1 - alpha) * pretrained
    for the alpha best on validation; a tensor the checkpoint did not store (the transductive
    item-ID table) keeps its fine-tuned value; mode auto compares the interpolated nets; it is
    the default, and training from scratch (nothing to mix with) skips it."""
    import torch

    from shiftrec.models.transfer import load_checkpoint
    from shiftrec.models.transfer_fit import FitMode
    from shiftrec.pipelines.transfer import _overrides, interpolate_weights, pretrained_state

    _, (split, text) = world
    assert FinetuneConfig().interpolate is True
    cfg = FinetuneConfig(epochs=3, lr=5e-3, batch_size=64, patience=0, threads=1,
                         mode=FitMode.TRANSDUCTIVE, interpolate=False)
    plain, no_mix = finetune(pretrained, split, text, "fake-enc", cfg)
    assert "interpolation" not in no_mix
    mixed, fields = finetune(pretrained, split, text, "fake-enc", replace(cfg, interpolate=True),
                             tmp_path / "wise")
    mix = fields["interpolation"]
    by = {float(a): v for a, v in mix["valid_by_alpha"].items()}
    assert set(by) == {i / 10 for i in range(11)}
    assert mix["alpha"] == max(by, key=lambda a: (by[a], a)) and mix["valid_ndcg@10"] == by[mix["alpha"]]
    pre, _ = load_checkpoint(pretrained, text, encoder="fake-enc", overrides=_overrides(cfg))
    a = mix["alpha"]
    p_sd, t_sd, m_sd = pre.state_dict(), plain.state_dict(), mixed.state_dict()
    start = pretrained_state(pre, pretrained)
    assert "item_id.weight" in t_sd and "item_id.weight" not in start
    assert torch.equal(m_sd["item_id.weight"], t_sd["item_id.weight"])
    for k in start:
        assert torch.allclose(m_sd[k], a * t_sd[k] + (1 - a) * p_sd[k], atol=1e-6), k
    # the saved model is the interpolated one, and its validation is the one recorded
    again, man = load_checkpoint(tmp_path / "wise", strict=True)
    assert man["interpolation"] == mix and man["finetune_config"]["interpolate"] is True
    assert evaluate_net(again, split, "valid")[0]["ndcg@10"] == pytest.approx(mix["valid_ndcg@10"])
    # alpha 0 is the pretrained net itself (its item-ID table aside), alpha 1 the fine-tuned one
    net, _ = finetune(pretrained, split, text, "fake-enc", cfg)
    got = interpolate_weights(net, start, split, alphas=(0.0,), threads=1)
    assert got["alpha"] == 0.0
    assert all(torch.equal(net.state_dict()[k], p_sd[k]) for k in start)
    net, _ = finetune(pretrained, split, text, "fake-enc", cfg)
    interpolate_weights(net, start, split, alphas=(1.0,), threads=1)
    assert all(torch.equal(net.state_dict()[k], t_sd[k]) for k in t_sd)
    with pytest.raises(ConfigError, match=r"\[0, 1\]"):
        interpolate_weights(net, start, split, alphas=(1.5,))
    # mode auto keeps the mode better after interpolation
    _, auto = finetune(pretrained, split, text, "fake-enc",
                       replace(cfg, mode=FitMode.AUTO, interpolate=True))
    v = auto["mode_selection"]["valid_ndcg@10"]
    assert auto["interpolation"]["valid_ndcg@10"] == pytest.approx(v[auto["mode_selection"]["chosen"]])
    _, scratch = finetune(None, split, text, "fake-enc", replace(cfg, interpolate=True))
    assert "interpolation" not in scratch and scratch["stage"] == "scratch"
    assert scratch["finetune_config"]["interpolate"] is False  # what was done, not what was asked
    assert fields["finetune_config"]["interpolate"] is True
    # pretrained tensors of another dtype are brought to the net's
    net, _ = finetune(pretrained, split, text, "fake-enc", cfg)
    interpolate_weights(net, {k: v.double() for k, v in start.items()}, split, alphas=(0.0,), threads=1)
    assert all(net.state_dict()[k].dtype == torch.float32 for k in start)
    assert all(torch.allclose(net.state_dict()[k], p_sd[k]) for k in start)


@pytest.mark.gpu
def test_finetune_interpolate_on_the_gpu(world, pretrained):
    """Training moves the net to CUDA after the pretrained weights were copied on the CPU: the
    interpolation must mix on the net's device."""
    import torch

    from shiftrec.train.trainer import Device

    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    _, (split, text) = world
    cfg = FinetuneConfig(epochs=1, batch_size=64, patience=0, threads=1, device=Device.CUDA)
    net, fields = finetune(pretrained, split, text, "fake-enc", cfg)
    assert "interpolation" in fields and next(net.parameters()).device.type == "cuda"


def test_repeat_gate_counted_on_sources_kept_by_zero_shot_and_recounted_by_finetune(world, tmp_path,
                                                                                    monkeypatch):
    """pretrain(repeat_gate) stores the share counted on the sources' training sequences;
    zero-shot uses it only when asked (and refuses a checkpoint without one); finetune counts the
    target's own; add_repeat_gate adds one to an existing checkpoint without touching its
    weights, and only from the splits it was pretrained on."""
    from shiftrec.data.splits import Seqs
    from shiftrec.models.repeat import repeat_share
    from shiftrec.pipelines.transfer import add_repeat_gate, zero_shot_net

    sources, (split, text) = world
    cfg = PretrainConfig(model=ARCH, epochs=1, lr=5e-3, batch_size=96, patience=0, valid_users=40,
                         threads=1, repeat_gate=True)
    # a repeat planted in one source: 1, 2, 1
    planted = Seqs(np.array([0, 3]), np.array([1, 2, 1]), np.zeros(3, np.int64))
    rep = Source("again", replace(sources[0].split, train=planted), sources[0].text)
    net, fields = pretrain([*sources, rep], "fake-enc", cfg, tmp_path / "pre")
    want = repeat_share([s.split.train for s in (*sources, rep)], ARCH.max_len)
    assert want["repeats"] == 1 and net.repeat_fit == want
    assert json.loads((tmp_path / "pre" / "manifest.json").read_text())["repeat_gate"] == want
    assert zero_shot_net(tmp_path / "pre", split, text, "fake-enc").repeat_fit is None
    assert zero_shot_net(tmp_path / "pre", split, text, "fake-enc", repeat_gate=True).repeat_fit == want
    import torch

    from shiftrec.models.repeat import repeat_gate

    hist = [split.test.history[i][-ARCH.max_len:] for i in range(6)]
    seq = torch.from_numpy(np.stack([np.pad(h, (ARCH.max_len - len(h), 0)) for h in hist]))
    with torch.no_grad():
        on = zero_shot_net(tmp_path / "pre", split, text, "fake-enc", repeat_gate=True).eval()
        off = zero_shot_net(tmp_path / "pre", split, text, "fake-enc").eval()
        assert np.allclose(on.score_all(seq).numpy(),
                           repeat_gate(off.score_all(seq), seq, want["share"]).numpy(), atol=1e-5)
    gated, _ = zero_shot(tmp_path / "pre", split, text, "fake-enc", repeat_gate=True)
    assert gated["ndcg@10"] == pytest.approx(evaluate_net(on, split)[0]["ndcg@10"])
    ft_cfg = FinetuneConfig(epochs=1, batch_size=64, patience=0, threads=1, repeat_gate=True)
    ft, _ = finetune(tmp_path / "pre", split, text, "fake-enc", ft_cfg, tmp_path / "ft")
    assert ft.repeat_fit == repeat_share(split.train, ARCH.max_len)  # the target's, not the sources'
    # `shiftrec evaluate` without --zero-shot: a fine-tuned model keeps its gate, a pretrained one
    # scores without its sources' gate
    from shiftrec.pipelines.transfer import checkpoint_net

    assert checkpoint_net(tmp_path / "ft", split, text, "fake-enc").repeat_fit == ft.repeat_fit
    assert checkpoint_net(tmp_path / "pre", split, text, "fake-enc").repeat_fit is None
    off, _ = finetune(tmp_path / "pre", split, text, "fake-enc", replace(ft_cfg, repeat_gate=False))
    assert off.repeat_fit is None
    # mode auto counts the target's gate once and both candidates carry it
    from shiftrec.models.transfer_fit import FitMode
    from shiftrec.pipelines import transfer as tp

    counts: list[int] = []

    def counting(seqs, max_len):
        counts.append(max_len)
        return repeat_share(seqs, max_len)

    monkeypatch.setattr(tp, "repeat_share", counting)
    auto, fields = finetune(tmp_path / "pre", split, text, "fake-enc", replace(ft_cfg, mode=FitMode.AUTO))
    assert counts == [ARCH.max_len] and auto.repeat_fit == ft.repeat_fit
    assert set(fields["mode_selection"]["valid_ndcg@10"]) == {"inductive", "transductive"}
    monkeypatch.undo()
    # a checkpoint pretrained without a gate: zero-shot refuses to invent one; add_repeat_gate
    # counts it on the sources it names, the weights copied byte for byte
    plain = tmp_path / "plain"
    pretrain(sources, "fake-enc", replace(cfg, repeat_gate=False), plain)
    assert "repeat_gate" not in json.loads((plain / "manifest.json").read_text())
    with pytest.raises(ConfigError, match="carries no repeat gate"):
        zero_shot_net(plain, split, text, "fake-enc", repeat_gate=True)
    with pytest.raises(InputError, match="not the sources"):
        add_repeat_gate(plain, [split], tmp_path / "bad")
    weights = (plain / "model.safetensors").read_bytes()
    g = add_repeat_gate(plain, [s.split for s in sources], plain)  # in place
    assert g == repeat_share([s.split.train for s in sources], ARCH.max_len)
    man = json.loads((plain / "manifest.json").read_text())
    assert man["repeat_gate"] == g and man["stage"] == "pretrain"
    assert zero_shot_net(plain, split, text, "fake-enc", repeat_gate=True).repeat_fit == g
    assert (plain / "model.safetensors").read_bytes() == weights
    assert sorted(p.name for p in plain.iterdir()) == ["_COMPLETE", "manifest.json", "model.safetensors",
                                                       "trainer"]  # the run's resumable state stays
    # to another folder: the gated checkpoint alone
    assert add_repeat_gate(plain, [s.split for s in sources], tmp_path / "copy") == g
    assert sorted(p.name for p in (tmp_path / "copy").iterdir()) == ["_COMPLETE", "manifest.json",
                                                                     "model.safetensors"]
    assert (tmp_path / "copy" / "model.safetensors").read_bytes() == weights


# ----------------------------------------------------------------------------------------- CLI


def _cli():
    import typer

    from shiftrec.cli.transfer import register

    app = typer.Typer()
    register(app)
    return app


def test_cli_unknown_dataset_lists_valid_ones(tmp_path):
    from typer.testing import CliRunner


    res = CliRunner().invoke(_cli(), ["pretrain", "no-such-data", "-o", str(tmp_path / "x")])
    assert res.exit_code != 0
    assert isinstance(res.exception, ConfigError)
    msg = str(res.exception)
    assert "no-such-data" in msg and "scientific" in msg and "online-retail" in msg


def test_cli_finetune_rejects_bad_mode(tmp_path, pretrained):
    from typer.testing import CliRunner


    res = CliRunner().invoke(_cli(), ["finetune", "scientific", "--checkpoint", str(pretrained),
                                      "--mode", "sideways", "-o", str(tmp_path / "f")])
    assert res.exit_code != 0 and isinstance(res.exception, ConfigError)
    assert "inductive" in str(res.exception) and "transductive" in str(res.exception)
    res = CliRunner().invoke(_cli(), ["evaluate", "scientific", "--checkpoint", str(pretrained),
                                      "--repeat-gate"])
    assert isinstance(res.exception, ConfigError) and "--zero-shot" in str(res.exception)
    res = CliRunner().invoke(_cli(), ["finetune", "no-such-split", "--scratch", "--interpolate"])
    assert isinstance(res.exception, ConfigError) and "--scratch" in str(res.exception)


@pytest.mark.slow
def test_cli_pretrain_finetune_evaluate_with_minilm(tmp_path):
    """End to end through the CLI with the packaged minilm encoder on a tiny prepared dataset."""
    import polars as pl
    from typer.testing import CliRunner

    from shiftrec.data.schema import Dataset, conform_events, conform_items

    words = ["red apple fruit", "green garden hose", "blue denim jacket", "steel wrench tool"]
    rows, items = [], []
    rng = np.random.default_rng(0)
    for dom in ("alpha", "beta"):
        for t, w in enumerate(words):
            items += [(dom, f"{dom}{t}-{j}", f"{w} model {j}") for j in range(4)]
        for u in range(40):
            t = u % len(words)
            for k, j in enumerate(rng.permutation(4)):
                rows.append((f"{dom}-u{u}", f"{dom}{t}-{j}", 1_600_000_000 + 86400 * k, dom))
    ev = pl.DataFrame(rows, schema=["user_id", "item_id", "ts", "domain"], orient="row").select(
        "user_id", "item_id", pl.from_epoch("ts", "s").dt.replace_time_zone("UTC").alias("timestamp"),
        "domain")
    ev = conform_events(ev).collect().sort("user_id", "timestamp")
    it = conform_items(pl.DataFrame(items, schema=["domain", "item_id", "title"], orient="row"))
    for dom in ("alpha", "beta"):
        Dataset(ev.filter(pl.col("domain") == dom), it.filter(pl.col("domain") == dom),
                name=dom).save(tmp_path / dom)
    cfg = tmp_path / "pre.yaml"
    cfg.write_text("model: {hidden: 16, n_layers: 1, n_experts: 2, inner: 32}\n"
                   "batch_size: 64\nvalid_users: 20\nthreads: 1\n")
    run = CliRunner()
    cache = str(tmp_path / "cache")
    r = run.invoke(_cli(), ["pretrain", str(tmp_path / "alpha"), "--epochs", "2", "--config",
                            str(cfg), "-o", str(tmp_path / "pre"), "--cache-dir", cache])
    assert r.exit_code == 0, r.output
    man = json.loads((tmp_path / "pre" / "manifest.json").read_text())
    assert man["encoder"] == "minilm" and man["text_dim"] == 384
    r = run.invoke(_cli(), ["evaluate", str(tmp_path / "beta"), "--checkpoint", str(tmp_path / "pre"),
                            "--zero-shot", "-o", str(tmp_path / "zs.json"), "--cache-dir", cache])
    assert r.exit_code == 0, r.output
    zs = json.loads((tmp_path / "zs.json").read_text())
    assert "ndcg@10" in zs and zs["split"] == "test" and zs["per_user"]["file"] == "zs.ranks.npz"
    assert (tmp_path / "zs.ranks.npz").exists()
    # --text-path with --zero-shot: two numbers chosen on validation, recorded, nothing trained
    r = run.invoke(_cli(), ["evaluate", str(tmp_path / "beta"), "--checkpoint", str(tmp_path / "pre"),
                            "--zero-shot", "--text-path", "-o", str(tmp_path / "zst.json"),
                            "--cache-dir", cache])
    assert r.exit_code == 0, r.output
    zst = json.loads((tmp_path / "zst.json").read_text())
    tp = zst["text_path"]
    assert f"text path: weight {tp['weight']:g}" in r.output and "zero-shot + text path test" in r.output
    assert tp["valid_ndcg@10"] >= tp["valid_ndcg@10_without"]
    if tp["weight"] > 0:  # the catalogue transform of the text vectors, chosen with the rest
        assert tp["transform"] in ("none", "centre", "whiten")
        assert f"text transform {tp['transform']}" in r.output
    if tp["weight"] == 0:  # no path chosen: the zero-shot scores themselves
        assert zst["ndcg@10"] == pytest.approx(zs["ndcg@10"])
    assert zst["seen_items"] == "ranked" and tp["exclude_seen"] is False
    # --exclude-seen: each target ranked among the items outside its user's history, the text
    # path chosen the same way; never a worse rank than ranking every item
    r = run.invoke(_cli(), ["evaluate", str(tmp_path / "beta"), "--checkpoint", str(tmp_path / "pre"),
                            "--zero-shot", "--text-path", "--exclude-seen", "-o",
                            str(tmp_path / "zsx.json"), "--cache-dir", cache])
    assert r.exit_code == 0, r.output
    zsx = json.loads((tmp_path / "zsx.json").read_text())
    assert zsx["seen_items"] == "excluded" and zsx["text_path"]["exclude_seen"] is True
    assert "(seen items excluded)" in r.output
    r = run.invoke(_cli(), ["evaluate", str(tmp_path / "beta"), "--checkpoint", str(tmp_path / "pre"),
                            "--zero-shot", "--exclude-seen", "-o", str(tmp_path / "zsx0.json"),
                            "--cache-dir", cache])
    assert r.exit_code == 0, r.output
    plain = np.load(tmp_path / "zs.ranks.npz")["rank"]
    seen_out = np.load(tmp_path / "zsx0.ranks.npz")["rank"]
    assert json.loads((tmp_path / "zsx0.json").read_text())["seen_items"] == "excluded"
    # histories of 5 items from a topic whose items read alike: the text model ranks some of them
    # above the target, so excluding them must move some ranks up
    assert (seen_out <= plain).all() and (seen_out < plain).any()
    from shiftrec.evaluate.significance import compare_runs

    with pytest.raises(ArtifactError, match="seen items"):
        compare_runs(tmp_path / "zs.json", tmp_path / "zsx0.json")
    r = run.invoke(_cli(), ["evaluate", str(tmp_path / "beta"), "--checkpoint", str(tmp_path / "pre"),
                            "--text-path", "--cache-dir", cache])
    assert r.exit_code != 0 and isinstance(r.exception, ConfigError)
    assert "--text-path goes with --zero-shot" in str(r.exception)
    ft = tmp_path / "ft.yaml"
    ft.write_text("batch_size: 64\nthreads: 1\npatience: 0\n")
    r = run.invoke(_cli(), ["finetune", str(tmp_path / "beta"), "--checkpoint", str(tmp_path / "pre"),
                            "--mode", "transductive", "--epochs", "2", "--config", str(ft),
                            "-o", str(tmp_path / "ft"), "--cache-dir", cache])
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "ft" / "metrics.json").read_text())["n_users"] == 40
    # --text-path: the text-similarity path chosen on validation after training, saved with the model
    r = run.invoke(_cli(), ["finetune", str(tmp_path / "beta"), "--checkpoint", str(tmp_path / "pre"),
                            "--epochs", "1", "--config", str(ft), "--text-path",
                            "-o", str(tmp_path / "ftt"), "--cache-dir", cache])
    assert r.exit_code == 0, r.output
    assert "text path: weight" in r.output
    tp = json.loads((tmp_path / "ftt" / "manifest.json").read_text())["text_path"]
    assert f"text path: weight {tp['weight']:g}" in r.output
    # --interpolate: WiSE-FT's alpha chosen on validation, printed and saved with the model
    r = run.invoke(_cli(), ["finetune", str(tmp_path / "beta"), "--checkpoint", str(tmp_path / "pre"),
                            "--epochs", "1", "--config", str(ft), "--interpolate",
                            "-o", str(tmp_path / "ftw"), "--cache-dir", cache])
    assert r.exit_code == 0, r.output
    mix = json.loads((tmp_path / "ftw" / "manifest.json").read_text())["interpolation"]
    assert f"interpolated: {mix['alpha']:g} × fine-tuned" in r.output.replace("\n", " ")
    from shiftrec.evaluate.significance import compare_runs

    res = compare_runs(tmp_path / "zs.json", tmp_path / "ft")  # same users, same data
    assert res["n_users"] == 40 and 0.0 <= res["t_test_p"] <= 1.0
    r = run.invoke(_cli(), ["evaluate", str(tmp_path / "beta"), "--checkpoint", str(tmp_path / "ft"),
                            "--cache-dir", cache])
    assert r.exit_code == 0, r.output


def test_default_checkpoint_never_saw_the_held_out_targets():
    """The leave-domains-out claim of the default checkpoint, checked on its own provenance:
    five Amazon source domains, none of them a target of bench/leave_domains_out.py."""
    from shiftrec.models.transfer_fit import DEFAULT_PRETRAINED, PRETRAINED_DIR, pretrained_path

    if not (PRETRAINED_DIR / DEFAULT_PRETRAINED / "manifest.json").exists():
        pytest.skip("no pretrained checkpoint shipped in this checkout")
    man = json.loads((pretrained_path() / "manifest.json").read_text())
    sources = {d["name"] for d in man["provenance"]["data"]}
    assert len(sources) == 5 and all(s.startswith("amazon-") for s in sources)
    assert not sources & {"amazon-toys", "amazon-clothing", "scientific"}
    assert set(man["data_fingerprints"]) == sources
    assert sum(d["train_events"] for d in man["provenance"]["data"]) > 1_000_000


def test_shipped_checkpoint_is_small_documented_and_scores_a_new_domain():
    """The packaged pretrained model works for a user with no source data (fake 384-d text)."""
    from shiftrec.models.transfer import load_checkpoint
    from shiftrec.models.transfer_fit import DEFAULT_PRETRAINED, PRETRAINED_DIR, pretrained_path

    if not (PRETRAINED_DIR / DEFAULT_PRETRAINED / "manifest.json").exists():
        pytest.skip("no pretrained checkpoint shipped in this checkout")
    ck = pretrained_path()
    size = sum(f.stat().st_size for f in ck.rglob("*") if f.is_file())
    assert size < 2 * 2**20
    man = json.loads((ck / "manifest.json").read_text())
    assert man["encoder"] == "minilm" and man["text_dim"] == 384
    prov = man["provenance"]
    for key in ("data", "seed", "hardware", "wall_seconds", "epochs_run"):
        assert key in prov
    text = np.random.default_rng(0).normal(size=(31, 384)).astype(np.float32)
    text[0] = 0
    net, _ = load_checkpoint(ck, text, encoder="minilm")
    import torch

    with torch.no_grad():
        s = net.eval().score_all(torch.tensor([[0, 0, 3, 7, 9]]))
    assert s.shape == (1, 31) and torch.isfinite(s[:, 1:]).all()
    with pytest.raises(ArtifactError, match="minilm.*use-multilingual"):
        load_checkpoint(ck, np.ones((31, 512), np.float32), encoder="use-multilingual")


def test_subsample_keeps_the_whole_catalogue_when_asked():
    import polars as pl

    from shiftrec.data.schema import Dataset
    from shiftrec.pipelines.transfer import subsample_users

    ev = pl.DataFrame({"user_id": ["a", "a", "b", "b", "c", "c"],
                       "item_id": ["i1", "i2", "i2", "i3", "i3", "i4"],
                       "ts": [1, 2, 1, 2, 1, 2]}).select(
        "user_id", "item_id", pl.from_epoch("ts", "s").dt.replace_time_zone("UTC").alias("timestamp"),
        pl.lit("d").alias("domain"))
    items = pl.DataFrame({"item_id": ["i1", "i2", "i3", "i4", "i5"], "domain": "d"})
    ds = Dataset(ev, items, name="d")
    few = subsample_users(ds, 1, seed=0)
    user = few.events["user_id"].unique().item()
    touched = set(few.events["item_id"])
    assert set(few.items["item_id"]) == touched and len(touched) == 2
    whole = subsample_users(ds, 1, seed=0, whole_catalogue=True)
    assert whole.events["user_id"].unique().item() == user  # the same users
    assert set(whole.items["item_id"]) == {"i1", "i2", "i3", "i4", "i5"}  # i5: never bought
    split = leave_one_out(whole, 8)
    assert split.n_items == 5  # full ranking covers the unsold items too
