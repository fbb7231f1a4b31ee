"""Training across processes: `torchrun --nproc-per-node 2 -m shiftrec.cli train` (gloo on CPU).

- fast: each rank's loss weight (its share of the global batch's targets) makes the averaged
  gradient of the shards equal to the gradient of the whole batch (what DDP computes);
- slow: 2 gloo processes through the CLI train SASRec (dropout 0) to the same weights, losses and
  validation metrics as one process with the same global batch (tolerance below), and a run whose
  rank 1 is SIGKILLed after a checkpoint resumes (`--resume`) to exactly the weights of an
  uninterrupted 2-process run.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from shiftrec.train.batches import CausalBatches  # noqa: E402
from shiftrec.train.trainer import DistInfo, _shard  # noqa: E402
from tests.models.cyclic import cyclic_split  # noqa: E402
from tests.train.tinynet import TinyNet  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
# 1 vs 2 processes differ only in float summation order (the gradient of each half is summed
# separately, then averaged by gloo); after a few dozen Adam steps the weights agree to this:
WEIGHT_ATOL = 1e-3  # measured 9e-5 (weights up to 1.4) after 4 epochs x 16 Adam steps
LOSS_RTOL = 1e-6  # measured 1e-8


def test_shard_weights_give_the_global_batch_gradient():
    split = cyclic_split(n_users=40, n_items=10, min_len=3, max_len=30)
    src = CausalBatches(split.train, max_len=8, stride=3)

    def n_lab(b):
        return [int((_shard(b, DistInfo(2, r))[0]["labels"] > 0).sum()) for r in range(2)]

    # a batch whose halves hold different numbers of targets: an unweighted average is wrong
    batch = next(b for b in src(1, np.random.default_rng(0), 16) if len(set(n_lab(b))) == 2)
    torch.manual_seed(0)
    net = TinyNet(10, dropout=0.0).double()

    def grad(b, w=1.0):
        net.zero_grad()
        (net.training_loss({k: torch.from_numpy(v) for k, v in b.items()}) * w).backward()
        return torch.cat([p.grad.flatten() for p in net.parameters()]).clone()

    full = grad(batch)
    weighted = sum(grad(*_shard(batch, DistInfo(2, r))) for r in range(2)) / 2
    plain = sum(grad(_shard(batch, DistInfo(2, r))[0]) for r in range(2)) / 2
    assert torch.allclose(weighted, full, atol=1e-12, rtol=1e-10)
    assert not torch.allclose(plain, full, atol=1e-6)
    part, w = _shard({"labels": np.array([[0, 1]])}, DistInfo(2, 1))
    assert part is None and w == 0.0  # fewer rows than ranks: every rank skips the batch


# ----------------------------------------------------------------------------- slow: real torchrun

def _env():
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT / "src"))
    for k in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    return env


def _cmd(nproc, split_dir, cfg, out, *extra):
    train = ["train", str(split_dir), "--model", "sasrec", "--config", str(cfg), "--seed", "3",
             "--threads", "1", "-o", str(out), *extra]
    if nproc == 1:
        return [sys.executable, "-m", "shiftrec.cli", *train]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone",
            f"--nproc_per_node={nproc}", "-m", "shiftrec.cli", *train]


def _weights(out):
    from safetensors.numpy import load_file

    files = sorted(out.glob("*.safetensors"))
    assert files, f"no weights in {out}"
    return {f"{f.name}:{k}": v for f in files for k, v in load_file(f).items()}


def _history(out):
    return json.loads((out / "trainer" / "checkpoint.json").read_text())["history"]


def _write(tmp_path, n_users, epochs, batch, dropout):
    split_dir = cyclic_split(n_users=n_users, n_items=40, min_len=4, max_len=40
                             ).save(tmp_path / "split")
    cfg = tmp_path / "sasrec.yaml"
    cfg.write_text(f"hidden: 16\ninner: 32\ndropout: {dropout}\nattn_dropout: {dropout}\n"
                   f"train:\n  device: cpu\n  phases: [{{epochs: {epochs}, lr: 0.005, "
                   f"batch_size: {batch}, patience: 0}}]\n")
    return split_dir, cfg


@pytest.mark.slow  # 3 CLI processes (torch + polars imports, 2 gloo ranks): ~40 s on 2 busy cores
def test_two_processes_equal_one_with_the_same_global_batch(tmp_path):
    split_dir, cfg = _write(tmp_path, n_users=200, epochs=4, batch=256, dropout=0.0)
    for n in (1, 2):
        proc = subprocess.run(_cmd(n, split_dir, cfg, tmp_path / f"p{n}"), env=_env(), cwd=ROOT,
                              capture_output=True, text=True, timeout=400)
        assert proc.returncode == 0, proc.stderr[-3000:]
    one, two = _weights(tmp_path / "p1"), _weights(tmp_path / "p2")
    assert one.keys() == two.keys()
    diff = max(float(np.abs(one[k] - two[k]).max()) for k in one)
    assert diff <= WEIGHT_ATOL, diff
    moved = max(float(np.abs(one[k]).max()) for k in one)
    assert moved > 100 * WEIGHT_ATOL  # the comparison is not between near-zero tensors
    h1, h2 = _history(tmp_path / "p1"), _history(tmp_path / "p2")
    assert [r["steps"] for r in h1] == [r["steps"] for r in h2] and h1[0]["steps"] > 5
    np.testing.assert_allclose([r["loss"] for r in h2], [r["loss"] for r in h1], rtol=LOSS_RTOL)
    for a, b in zip(h1, h2, strict=True):
        assert a["metrics"].keys() == b["metrics"].keys() and a["metrics"]
        for k in a["metrics"]:
            assert abs(a["metrics"][k] - b["metrics"][k]) <= 1e-6, (k, a, b)
    m1 = json.loads((tmp_path / "p1" / "metrics.json").read_text())
    m2 = json.loads((tmp_path / "p2" / "metrics.json").read_text())
    assert abs(m1["ndcg@10"] - m2["ndcg@10"]) <= 1e-6


def _worker_pids(parent: int) -> dict[int, int]:
    """RANK -> pid of the torchrun workers under `parent`."""
    out: dict[int, int] = {}
    todo = [parent]
    while todo:
        pid = todo.pop()
        try:
            kids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        except OSError:
            continue
        for k in map(int, kids):
            todo.append(k)
            try:
                env = Path(f"/proc/{k}/environ").read_bytes().split(b"\0")
            except OSError:
                continue
            rank = [e[5:] for e in env if e.startswith(b"RANK=")]
            if rank:
                out[int(rank[0])] = k
    return out


@pytest.mark.slow  # 3 torchrun launches of the CLI, ~60-90 s on 2 busy cores
def test_resume_after_sigkill_of_one_rank(tmp_path):
    epochs = 8
    split_dir, cfg = _write(tmp_path, n_users=1500, epochs=epochs, batch=256, dropout=0.2)
    ref = subprocess.run(_cmd(2, split_dir, cfg, tmp_path / "ref"), env=_env(), cwd=ROOT,
                         capture_output=True, text=True, timeout=400)
    assert ref.returncode == 0, ref.stderr[-3000:]

    out = tmp_path / "run"
    proc = subprocess.Popen(_cmd(2, split_dir, cfg, out), env=_env(), cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    ck = out / "trainer" / "checkpoint.json"
    killed_at = None
    t_end = time.time() + 300
    while time.time() < t_end and proc.poll() is None:
        if ck.exists():
            try:
                epoch = json.loads(ck.read_text())["epoch"]
            except (ValueError, KeyError, OSError):
                epoch = 0
            if epoch >= 1:
                pids = _worker_pids(proc.pid)
                if 1 in pids:
                    os.kill(pids[1], signal.SIGKILL)
                    killed_at = epoch
                    break
        time.sleep(0.05)
    _, err = proc.communicate(timeout=300)
    assert killed_at is not None, "the run ended before a checkpoint could be killed: " + err[-2000:]
    assert proc.returncode != 0  # torchrun reports the lost rank
    at = json.loads(ck.read_text())["epoch"]
    assert 1 <= at < epochs, at  # killed mid-training, after a checkpoint
    assert not (out / "metrics.json").exists()

    res = subprocess.run(_cmd(2, split_dir, cfg, out, "--resume"), env=_env(), cwd=ROOT,
                         capture_output=True, text=True, timeout=400)
    assert res.returncode == 0, res.stderr[-3000:]
    a, b = _weights(tmp_path / "ref"), _weights(out)
    assert a.keys() == b.keys()
    for k in a:
        assert np.array_equal(a[k], b[k]), k  # resumed: bit for bit the uninterrupted run
    assert [r["loss"] for r in _history(out)] == [r["loss"] for r in _history(tmp_path / "ref")]
    ma = json.loads((tmp_path / "ref" / "metrics.json").read_text())
    mb = json.loads((out / "metrics.json").read_text())
    assert ma["ndcg@10"] == mb["ndcg@10"]
