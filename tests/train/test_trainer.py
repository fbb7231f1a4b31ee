from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from shiftrec.data.splits import Seqs  # noqa: E402
from shiftrec.errors import ConfigError, InputError  # noqa: E402
from shiftrec.train.batches import CausalBatches  # noqa: E402
from shiftrec.train.trainer import (  # noqa: E402
    Phase,
    TrainConfig,
    load_train_config,
    read_checkpoint,
    seed_everything,
    train,
)
from tests.models.cyclic import cyclic_split  # noqa: E402
from tests.train.tinynet import TinyNet  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


# ----------------------------------------------------------------------------- batches


def _random_seqs(seed: int = 0) -> Seqs:
    rng = np.random.default_rng(seed)
    lens = [0, 1, 2, 3, 7, 8, 9, 10, 11, 12, 17, 23, 40]
    seqs = [rng.integers(1, 1000, n) for n in lens]
    return Seqs.from_lists(seqs, [np.arange(n) * 10 for n in lens])


@pytest.mark.parametrize("max_len,stride", [(8, 1), (8, 3), (8, 8), (5, 2), (50, 10)])
def test_every_target_supervised_once_with_at_most_max_len_history(max_len, stride):
    seqs = _random_seqs()
    src = CausalBatches(seqs, max_len=max_len, stride=stride)
    seen: dict[tuple[int, int], int] = {}
    w = src.windows
    for i in range(len(w)):
        b = src.make(np.array([i]))
        u = int(w.user[i])
        s0 = int(w.start[i] - seqs.indptr[u])
        for p in np.flatnonzero(b["labels"][0]):
            t = s0 + p + 1  # target index in the user's sequence
            assert b["labels"][0, p] == seqs[u][t]
            hist = b["seq"][0, :p + 1]
            assert np.array_equal(hist, seqs[u][s0:t])  # history = the items right before t
            assert 1 <= len(hist) <= max_len
            if t <= max_len:
                assert s0 == 0  # early targets see their whole history
            else:
                assert len(hist) >= max_len - stride + 1
            seen[(u, t)] = seen.get((u, t), 0) + 1
    expected = {(u, t) for u in range(len(seqs)) for t in range(1, len(seqs[u]))}
    assert set(seen) == expected and set(seen.values()) == {1}
    assert src.n_targets == len(expected)


def test_batches_cover_all_windows_and_respect_budget():
    seqs = _random_seqs(1)
    src = CausalBatches(seqs, max_len=8, stride=3)
    got = list(src(1, np.random.default_rng(0), 12))
    n_sup = sum(int((b["labels"] > 0).sum()) for b in got)
    assert n_sup == src.n_targets
    for b in got:
        assert b["seq"].shape == b["labels"].shape
        sup = (b["labels"] > 0).sum(1)
        assert sup.sum() <= 12 or len(sup) == 1
        assert (b["seq"][:, -1] > 0).any()  # trimmed to the longest window of the batch


def test_groups_keep_each_batch_in_one_group_and_cover_every_target():
    seqs = _random_seqs(2)
    groups = np.array([0, 0, 1, 1, 1, 2, 2, 0, 1, 2, 0, 1, 2])  # a group id per sequence
    src = CausalBatches(seqs, max_len=8, stride=3, groups=groups)
    idx = src.order(np.random.default_rng(0), 12)
    assert np.array_equal(np.sort(np.concatenate(idx)), np.arange(len(src.windows)))
    for b in idx:
        assert len(set(groups[src.windows.user[b]].tolist())) == 1
    # an order mixing the groups exists for this budget: without groups some batch mixes them
    plain = CausalBatches(seqs, max_len=8, stride=3).order(np.random.default_rng(0), 12)
    assert any(len(set(groups[src.windows.user[b]].tolist())) > 1 for b in plain)
    with pytest.raises(InputError, match="one id per sequence"):
        CausalBatches(seqs, max_len=8, groups=groups[:-1])


# ----------------------------------------------------------------------------- training


def _cfg(*phases: Phase, seed: int = 1) -> TrainConfig:
    return TrainConfig(phases=phases, seed=seed, device="cpu", threads=1)


def _fresh(split, seed: int = 1) -> TinyNet:
    seed_everything(seed)
    return TinyNet(split.n_items)


def _state(net) -> dict[str, np.ndarray]:
    return {k: v.detach().clone().numpy() for k, v in net.state_dict().items()}


@pytest.fixture(scope="module")
def split():
    return cyclic_split(n_users=50, n_items=10)


def test_trains_and_keeps_best_weights(split):
    net = _fresh(split)
    events = []
    res = train(net, _cfg(Phase(epochs=6, lr=0.05, batch_size=64, patience=3)),
                CausalBatches(split.train), split.valid, progress=events.append)
    best = res.phases[0].best_metric
    assert best is not None and best > 0.9  # the cycle is learnt: next item ranked first
    from shiftrec.train.trainer import evaluate_module

    assert evaluate_module(net, split.valid)["ndcg@10"] == pytest.approx(best)
    kinds = {e.kind for e in events}
    assert {"phase_start", "step", "epoch", "phase_end", "done"} <= kinds
    assert not any(p.requires_grad is False for p in net.parameters())


def test_early_stopping_stops(split):
    net = _fresh(split)
    res = train(net, _cfg(Phase(epochs=50, lr=0.0, batch_size=64, patience=2)),
                CausalBatches(split.train), split.valid)
    # lr 0: nothing improves after epoch 1, so patience 2 stops at epoch 3
    assert res.phases[0].stopped_early and res.phases[0].epochs_run == 3


def test_same_seed_same_weights(split):
    cfg = _cfg(Phase(epochs=2, lr=0.05, batch_size=32, patience=0))
    a, b = _fresh(split), _fresh(split)
    train(a, cfg, CausalBatches(split.train), split.valid)
    train(b, cfg, CausalBatches(split.train), split.valid)
    sa, sb = _state(a), _state(b)
    assert all(np.array_equal(sa[k], sb[k]) for k in sa)


def test_freeze_keeps_prefixed_parameters_fixed(split):
    net = _fresh(split)
    before = _state(net)
    train(net, _cfg(Phase(epochs=1, lr=0.05, batch_size=64, freeze=("emb.",), patience=0)),
          CausalBatches(split.train), None)
    after = _state(net)
    assert np.array_equal(before["emb.weight"], after["emb.weight"])
    assert not np.array_equal(before["out.weight"], after["out.weight"])


class _Kill(Exception):
    pass


@pytest.mark.parametrize("kill_after", [2, 3])
def test_resume_after_kill_gives_identical_weights(split, tmp_path, kill_after):
    """Two phases (pretrain, then finetune with a frozen embedding); kill after `kill_after`
    epochs in total (mid-phase-1 / mid-phase-2), resume from the checkpoint with a fresh module,
    and compare with an uninterrupted run of the same seed."""
    cfg = _cfg(Phase(name="pre", epochs=2, lr=0.05, batch_size=32, patience=0),
               Phase(name="fine", epochs=3, lr=0.02, batch_size=32, patience=5, freeze=("emb.",)))
    data = {"default": CausalBatches(split.train)}
    ref = _fresh(split)
    ref_res = train(ref, cfg, data, split.valid)

    n = {"epochs": 0}

    def killer(ev):
        if ev.kind == "epoch":
            n["epochs"] += 1
            if n["epochs"] == kill_after:
                raise _Kill

    ck = tmp_path / "ck"
    with pytest.raises(_Kill):
        train(_fresh(split), cfg, data, split.valid, checkpoint_dir=ck, progress=killer)
    man, tensors = read_checkpoint(ck)
    assert man["epoch"] == (2 if kill_after == 2 else 1)
    assert any(k.startswith("optim.") for k in tensors) and "rng.torch" in tensors
    resumed = _fresh(split, seed=123)  # different init: everything must come from the checkpoint
    res = train(resumed, cfg, data, split.valid, checkpoint_dir=ck, resume=True)
    assert res.resumed_from is not None
    sa, sb = _state(ref), _state(resumed)
    assert all(np.array_equal(sa[k], sb[k]) for k in sa)
    assert [r["loss"] for r in res.history] == [r["loss"] for r in ref_res.history]
    assert len(list(ck.glob("*.safetensors"))) == 1  # older checkpoints are replaced


def test_yaml_config(tmp_path):
    p = tmp_path / "train.yaml"
    p.write_text("seed: 7\ndevice: cpu\nphases:\n  - {name: pre, epochs: 3, lr: 0.01, freeze: []}\n"
                 "  - {name: fine, epochs: 2, freeze: [item_emb., pos_emb]}\n")
    cfg = load_train_config(p)
    assert cfg.seed == 7 and cfg.phases[1].freeze == ("item_emb.", "pos_emb")
    assert cfg.phases[0].lr == 0.01 and cfg.device == "cpu"
    p.write_text("device: tpu\n")
    with pytest.raises(ConfigError, match="valid: auto, cpu, cuda"):
        load_train_config(p)
    p.write_text("phases:\n  - {name: x, epochz: 3}\n")
    with pytest.raises(ConfigError, match="epochz"):
        load_train_config(p)


def test_bad_requests(split):
    net = _fresh(split)
    with pytest.raises(ConfigError, match="resume"):
        train(net, _cfg(Phase()), CausalBatches(split.train), resume=True)
    with pytest.raises(ConfigError, match="nothing to train"):
        train(net, _cfg(Phase(freeze=("",))), CausalBatches(split.train))
    with pytest.raises(ConfigError, match="available: default"):
        train(net, _cfg(Phase(data="other")), {"default": CausalBatches(split.train)})
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA is not available"):
            train(net, TrainConfig(device="cuda"), CausalBatches(split.train))


def test_torchrun_two_gloo_processes(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT / "src"))
    for k in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(ROOT / "tests" / "train" / "ddp_script.py"), str(tmp_path)]
    proc = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0, r1 = np.load(tmp_path / "rank0.npz"), np.load(tmp_path / "rank1.npz")
    assert int(r0["world"]) == 2 and int(r1["world"]) == 2
    assert np.array_equal(r0["steps"], r1["steps"]) and r0["steps"].min() > 0
    for k in r0.files:
        assert np.array_equal(r0[k], r1[k]), k  # parameters stayed in sync
    seed_everything(3)
    init = TinyNet(10).state_dict()
    assert not np.array_equal(init["out.weight"].numpy(), r0["out.weight"])  # it trained
    assert (tmp_path / "ckpt" / "checkpoint.json").exists()  # rank 0 wrote the checkpoint


def test_resume_rejects_a_different_run(split, tmp_path):
    from shiftrec.errors import ArtifactError

    ck = tmp_path / "ck"
    cfg = _cfg(Phase(name="pre", epochs=1, lr=0.05, batch_size=64, patience=0))
    train(_fresh(split), cfg, CausalBatches(split.train), None, checkpoint_dir=ck)
    other = _cfg(Phase(name="fine", epochs=1))
    with pytest.raises(ArtifactError, match=r"phases \['pre'\], this run has \['fine'\]"):
        train(_fresh(split), other, CausalBatches(split.train), None, checkpoint_dir=ck, resume=True)
    with pytest.raises(ArtifactError, match="seed 1, this run has seed 5"):
        train(_fresh(split), _cfg(cfg.phases[0], seed=5), CausalBatches(split.train), None,
              checkpoint_dir=ck, resume=True)
    with pytest.raises(ArtifactError, match="do not fit"):
        train(TinyNet(split.n_items, dim=4), cfg, CausalBatches(split.train), None,
              checkpoint_dir=ck, resume=True)


def test_phases_pick_their_data_and_validation_by_key(split):
    other = cyclic_split(n_users=20, n_items=10, seed=4)
    seen = []

    def validator(module):
        seen.append(module.training)
        return {"ndcg@10": 0.5}

    cfg = TrainConfig(phases=(Phase(name="pre", data="src", epochs=2, lr=0.05, batch_size=64, patience=0),
                              Phase(name="fine", data="tgt", epochs=1, lr=0.05, batch_size=64)),
                      seed=1, device="cpu", threads=1, valid_max_users=10)
    res = train(_fresh(split), cfg, {"src": CausalBatches(other.train), "tgt": CausalBatches(split.train)},
                {"src": validator, "tgt": split.valid})
    assert [r["phase"] for r in res.history] == ["pre", "pre", "fine"]
    assert seen == [False, False]  # validators run in eval mode
    assert res.history[-1]["metrics"]["ndcg@10"] >= 0 and res.phases[0].best_metric == 0.5


def test_resume_without_a_checkpoint_is_an_error(split, tmp_path):
    from shiftrec.errors import ArtifactError

    net = _fresh(split)
    with pytest.raises(ArtifactError, match="no checkpoint to resume from"):
        train(net, _cfg(Phase(epochs=1)), CausalBatches(split.train),
              checkpoint_dir=tmp_path / "empty", resume=True)


def test_overlay_train_changes_only_what_it_names():
    from shiftrec.errors import ConfigError
    from shiftrec.train.trainer import overlay_train

    base = TrainConfig(phases=(Phase(name="a", epochs=200, patience=10, lr=1e-3),
                               Phase(name="b", epochs=5, patience=2, freeze=("x.",))), seed=4)
    cfg = overlay_train(base, {"epochs": 30, "threads": 1})
    assert [p.epochs for p in cfg.phases] == [30, 30]
    assert [p.patience for p in cfg.phases] == [10, 2] and cfg.phases[1].freeze == ("x.",)
    assert cfg.seed == 4 and cfg.threads == 1
    cfg = overlay_train(base, {"phases": [{"lr": 0.01}]})
    assert cfg.phases[0].lr == 0.01 and cfg.phases[0].patience == 10 and len(cfg.phases) == 1
    with pytest.raises(ConfigError, match="epochz"):
        overlay_train(base, {"epochz": 3})
    with pytest.raises(ConfigError, match="patiense"):
        overlay_train(base, {"phases": [{"patiense": 3}]})


def test_auto_threads_rule():
    from shiftrec.train.threads import auto_threads, idle_cores, torch_threads

    assert auto_threads(64, 1024, cores=8, load=0.0, env={}) == 1  # tiny matrices: one thread
    assert auto_threads(300, 1024, cores=8, load=0.5, env={}) == 8
    assert auto_threads(300, 1024, cores=2, load=2.0, env={}) == 1  # one core busy elsewhere
    assert auto_threads(300, 1024, cores=8, load=0.0, env={"OMP_NUM_THREADS": "3"}) == 3
    assert idle_cores(cores=4, load=9.0) == 1
    import torch

    before = torch.get_num_threads()
    with torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before


def test_training_sets_threads_for_the_call_only(split):
    import torch

    before = torch.get_num_threads()
    net = _fresh(split)
    net.hidden = 16  # train.threads reads the width from the module (or its cfg / config)
    res = train(net, TrainConfig(phases=(Phase(epochs=1, lr=0.05, batch_size=64, patience=0),),
                                 device="cpu", threads=0), CausalBatches(split.train))
    assert res.threads == 1  # hidden <= 64, small batches: the auto rule picks one thread
    assert torch.get_num_threads() == before
