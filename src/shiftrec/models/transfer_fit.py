"""Fitting the transferable text model on one split: the fine-tuning config, the shipped
checkpoints and the training loop call shared by `TransferRec.fit` and the transfer pipelines."""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from shiftrec.data.splits import Seqs, SeqSplit
from shiftrec.errors import InputError
from shiftrec.models.transfer_config import Freeze, Objective, TransferConfig
from shiftrec.train.trainer import Device, Phase, TrainConfig

PRETRAINED_DIR = Path(__file__).resolve().parent.parent / "assets" / "pretrained"
DEFAULT_PRETRAINED = "amazon5dom-minilm"  # bench/leave_domains_out.py; "amazon5-minilm", "amazon-minilm" are earlier ones


def pretrained_path(name: str = DEFAULT_PRETRAINED) -> Path:
    """Folder of a checkpoint shipped inside the package (assets/pretrained/<name>)."""
    p = PRETRAINED_DIR / name
    if not (p / "manifest.json").exists():
        valid = sorted(d.name for d in PRETRAINED_DIR.glob("*") if (d / "manifest.json").exists()) \
            if PRETRAINED_DIR.is_dir() else []
        from shiftrec.errors import unknown_name

        raise unknown_name("pretrained checkpoint", name, valid or ["<none shipped>"])
    return p


class FitMode(enum.StrEnum):
    """FinetuneConfig.mode: the model's Mode, or `auto`: fine-tune both and keep the one better
    on the target's validation NDCG@10 (twice the training). Item IDs won on the natively small
    shops with few items and lost on the sampled Amazon shops whose test targets are mostly
    unseen items (README, "Item IDs where the catalogue is small")."""

    INDUCTIVE = "inductive"
    TRANSDUCTIVE = "transductive"
    AUTO = "auto"


# default learning rates of FinetuneConfig (lr None): a pretrained start keeps more of what it
# learned at the lower rate (README, "Early stopping with room for both")
FINETUNE_LR = 5e-4
SCRATCH_LR = 2e-3


@dataclass(frozen=True)
class FinetuneConfig:
    """Fine-tuning (or training from scratch) on one target split with full cross-entropy.

    The training options (epochs, lr, weight_decay, batch_size, patience, steps_per_epoch,
    seed, threads, device, valid_max_users) are the flat keys of the one training dialect
    (train.trainer.overlay_train); `train_config()` turns them into the trainer's TrainConfig.
    The defaults were chosen on the validation splits of held-out shops (README, "Early
    stopping with room for both"): patience 10 within at most 100 epochs, batch 1024, and a
    learning rate of 5e-4 when fine-tuning a checkpoint, 2e-3 from scratch (`lr` None); the
    README's older transfer rows used patience 3, at most 25 epochs, lr 2e-3 for both, and rows
    recorded before `interpolate` became the default were fine-tuned without it."""

    mode: FitMode = FitMode.INDUCTIVE  # auto: both modes, the better on validation kept
    freeze: Freeze = Freeze.NONE
    epochs: int = 100
    lr: float | None = None  # None = FINETUNE_LR from a checkpoint, SCRATCH_LR from scratch
    weight_decay: float = 0.0
    batch_size: int = 1024
    patience: int = 10
    steps_per_epoch: int = 0
    stride: int = 10
    seed: int = 0
    threads: int = 0  # 0 = auto (train.threads); an explicit count is used as given
    device: Device = Device.AUTO  # auto = CUDA when present
    valid_max_users: int = 0
    # non-shape model settings applied on top of the checkpoint's (None = keep)
    dropout: float | None = None
    attn_dropout: float | None = None
    adaptor_dropout: float | None = None
    temperature: float | None = None
    text_skip: bool | None = None  # the text-similarity path learned with the rest (TransferConfig.text_skip)
    # after training, add the text path with the weight and decay chosen on validation
    # (pipelines.transfer.select_text_path; weight 0 = no path is in the grid)
    text_path: bool = False
    # the repeat/explore gate (models.repeat) with the share of next items found in the
    # history counted on the target's training sequences
    repeat_gate: bool = False
    # after fine-tuning a checkpoint, the weights alpha * fine-tuned + (1 - alpha) * pretrained
    # with alpha chosen on validation (WiSE-FT; pipelines.transfer.interpolate_weights; alpha 1 =
    # plain fine-tuning is in the grid, so validation never gets worse). On by default: it was
    # +0.1% to +6.4% on test in every held-out shop, never below (README, "Mixing back toward the
    # pretrained weights"). Training from scratch has nothing to mix with and ignores it.
    interpolate: bool = True
    # architecture for training from scratch (ignored when a checkpoint is given)
    model: TransferConfig = TransferConfig()

    def learning_rate(self, pretrained: bool) -> float:
        """`lr` when set, else the default for fine-tuning a checkpoint or training from scratch."""
        if self.lr is not None:
            return self.lr
        return FINETUNE_LR if pretrained else SCRATCH_LR

    def train_config(self, max_len: int, name: str = "fit", freeze: tuple[str, ...] = (),
                     pretrained: bool = False) -> TrainConfig:
        phase = Phase(name=name, epochs=self.epochs, lr=self.learning_rate(pretrained),
                      weight_decay=self.weight_decay,
                      batch_size=self.batch_size, patience=self.patience,
                      steps_per_epoch=self.steps_per_epoch, freeze=freeze)
        return TrainConfig(phases=(phase,), seed=self.seed, device=self.device, max_len=max_len,
                           threads=self.threads, valid_max_users=self.valid_max_users)


def default_fit_train() -> TrainConfig:
    """TransferRec's training run when none is given: FinetuneConfig's defaults."""
    return FinetuneConfig().train_config(TransferConfig().max_len)


def check_split(split: SeqSplit, what: str = "target") -> None:
    """Fail clearly (never NaN metrics) on a split with nothing to train or evaluate."""
    lens = split.train.lengths()
    if split.n_items == 0 or len(lens) == 0:
        raise InputError(f"{what} split '{split.name}' is empty: no users or items")
    if int((lens >= 2).sum()) == 0:
        raise InputError(f"{what} split '{split.name}' has no training sequence with 2 or more items")
    if len(split.valid) == 0 or len(split.test) == 0:
        raise InputError(f"{what} split '{split.name}' has no validation/test users (every user "
                         f"needs at least 3 events)")


def causal_batches(seqs: Seqs, max_len: int, stride: int, groups: np.ndarray | None = None) -> Any:
    """The trainer's batch source; `groups` (an id per sequence) keeps each batch in one group."""
    from shiftrec.train.batches import CausalBatches

    return CausalBatches(seqs, max_len=max_len, stride=max(1, min(stride, max_len)), groups=groups)


def train_on_split(net: Any, split: SeqSplit, train_cfg: TrainConfig | None = None, *,
                   stride: int = 10, checkpoint_dir: str | Path | None = None,
                   resume: bool = False, progress: Callable[[Any], None] | None = None
                   ) -> tuple[Any, list]:
    """Train an existing net on a split with full CE (used by TransferRec.fit); checkpoint_dir,
    resume and progress are handed to the trainer."""
    from dataclasses import replace

    from shiftrec.train.trainer import train

    cfg = train_cfg or default_fit_train()
    cfg = replace(cfg, max_len=net.cfg.max_len)
    check_split(split)
    net.objective = Objective.FULL_CE
    res = train(net, cfg, causal_batches(split.train, net.cfg.max_len, stride), split.valid,
                checkpoint_dir=checkpoint_dir, resume=resume, progress=progress)
    return net, res.history


def item_keys_hash(split: SeqSplit) -> str:
    """Fingerprint of the split's item map (models.artifact.item_map_fingerprint)."""
    from shiftrec.models.artifact import item_map_fingerprint

    return item_map_fingerprint(split)

