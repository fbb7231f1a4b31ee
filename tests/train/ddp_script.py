"""Run by test_trainer under torchrun: 2 gloo processes train TinyNet; each rank dumps its params."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from shiftrec.train.batches import CausalBatches  # noqa: E402
from shiftrec.train.trainer import Phase, TrainConfig, seed_everything, train  # noqa: E402
from tests.models.cyclic import cyclic_split  # noqa: E402
from tests.train.tinynet import TinyNet  # noqa: E402


def main() -> None:
    out = Path(sys.argv[1])
    torch.set_num_threads(1)
    split = cyclic_split(n_users=40, n_items=10)
    seed_everything(3)
    net = TinyNet(split.n_items)
    cfg = TrainConfig(phases=(Phase(epochs=2, lr=0.05, batch_size=64, patience=0),), seed=3,
                      device="cpu")
    res = train(net, cfg, CausalBatches(split.train, max_len=50), split.valid,
                checkpoint_dir=out / "ckpt")
    rank = int(os.environ["RANK"])
    np.savez(out / f"rank{rank}.npz", **{k: v.detach().numpy() for k, v in net.state_dict().items()},
             steps=np.array([r["steps"] for r in res.history]),
             world=np.array(int(os.environ["WORLD_SIZE"])))


if __name__ == "__main__":
    main()
