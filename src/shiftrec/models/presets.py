"""Model presets for the shift-slice experiment, as data: the shift-aware variants, the variant
sets and training budgets per README setting, and builders that turn a name into a model.

`VARIANTS` maps a variant name to keyword overrides of models.shiftaware.ShiftAwareConfig
(`none` is the control: the same SASRec warm start fine-tuned again with every shift signal
off). `SETTINGS` records, for each dataset/split of the README's shift table, the epoch caps
and the variants compared on validation (evaluate.selection.SELECTION chooses among them);
`BUDGET` holds what every setting shares. `shiftrec shift-slices` and bench/shift_slices.py
both read these tables, so the README's rows come from one definition.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np

from shiftrec.errors import ConfigError, unknown_name
from shiftrec.train.trainer import Device, Phase, TrainConfig

# every shift signal off (the flow prior and the shift loss are off by default)
OFF: Mapping[str, Any] = MappingProxyType(
    {"gap_emb": False, "time_bias": False, "trend_prior": False, "topic_prior": False})

VARIANTS: Mapping[str, Mapping[str, Any]] = MappingProxyType({
    "none": dict(OFF),  # control: the warm start fine-tuned again without any signal
    "time": dict(OFF) | {"gap_emb": True, "time_bias": True},  # time intervals + recency in attention
    "trend": dict(OFF) | {"trend_prior": True},
    "topic": dict(OFF) | {"topic_prior": True},
    "flow": dict(OFF) | {"flow_prior": True},
    "all": {},  # time + trend + topic, shift gate
    "all+flow": {"flow_prior": True},
    "all-fixed-gate": {"gate": "fixed"},
    # objective aimed at the shifted users: targets outside the prefix's dominant topics weigh more
    "all+shift-loss": {"shift_weight": 3.0},
    "all+shift-loss-1.25": {"shift_weight": 1.25},
    "all+shift-loss-1.5": {"shift_weight": 1.5},
    "all+shift-loss-2": {"shift_weight": 2.0},
    "shift-loss": dict(OFF) | {"shift_weight": 3.0},
})

CORE_VARIANTS: tuple[str, ...] = ("none", "time", "trend", "topic", "all")


@dataclass(frozen=True)
class Budget:
    """Training settings shared by every setting of the shift table."""

    lr: float = 1e-3
    batch_size: int = 2048
    patience: int = 3  # SASRec early stopping
    finetune_patience: int = 2  # the variants' fine-tuning
    valid_max_users: int = 3000  # early stopping on a fixed validation subset
    threads: int = 1


@dataclass(frozen=True)
class Setting:
    """One column of the README's shift table: epoch caps and the variants compared."""

    sasrec_epochs: int
    finetune_epochs: int
    variants: tuple[str, ...] = CORE_VARIANTS
    budget: Budget = field(default_factory=Budget)

    def __post_init__(self) -> None:
        for v in self.variants:
            variant_overrides(v)
        if self.sasrec_epochs < 1 or self.finetune_epochs < 1:
            raise ConfigError("setting: epoch caps must be >= 1")


def variant_overrides(name: str) -> dict[str, Any]:
    """The ShiftAwareConfig overrides of variant `name` (a copy)."""
    if name not in VARIANTS:
        raise unknown_name("shift-aware variant", name, list(VARIANTS))
    return dict(VARIANTS[name])


def setting(name: str) -> Setting:
    if name not in SETTINGS:
        raise unknown_name("setting", name, list(SETTINGS))
    return SETTINGS[name]


SETTINGS: Mapping[str, Setting] = MappingProxyType({
    "online-retail/loo": Setting(12, 4),
    "online-retail-customers/temporal": Setting(20, 6),
    "amazon-toys/loo": Setting(40, 8, CORE_VARIANTS + ("all+flow", "all-fixed-gate")),
    "amazon-toys/temporal": Setting(40, 8),
})


def train_config(epochs: int, seed: int, patience: int, budget: Budget = Budget(),
                 device: str = "cpu") -> TrainConfig:
    """The one-phase training config of the shift table (early stopping on validation)."""
    try:
        dev = Device(device)
    except ValueError:
        raise ConfigError(f"device must be one of {[d.value for d in Device]}, got '{device}'") from None
    return TrainConfig(phases=(Phase(name="train", epochs=epochs, lr=budget.lr,
                                     batch_size=budget.batch_size, patience=patience),),
                       seed=seed, valid_max_users=budget.valid_max_users, threads=budget.threads,
                       device=dev)


def checkpointing(checkpoint_dir: str | Path) -> dict[str, Any]:
    """Model keyword arguments that checkpoint every epoch into `checkpoint_dir` and resume
    from it when an interrupted run left a checkpoint there (else start from scratch)."""
    from shiftrec.train.trainer import CKPT_JSON

    return {"checkpoint_dir": checkpoint_dir,
            "resume": (Path(checkpoint_dir) / CKPT_JSON).is_file()}


def sasrec(epochs: int, seed: int, budget: Budget = Budget(), **kwargs: Any) -> Any:
    """The SASRec baseline of the shift table (also the warm start of every variant)."""
    from shiftrec.models.sasrec import SASRec

    return SASRec(train=train_config(epochs, seed, budget.patience, budget), **kwargs)


def shiftaware_variant(name: str, item_topic: np.ndarray, warm_start: str | Path, epochs: int,
                       seed: int, budget: Budget = Budget(), **kwargs: Any) -> Any:
    """Variant `name` of ShiftAware, warm-started from a saved SASRec folder and fine-tuned for
    at most `epochs` (kwargs: checkpoint_dir, resume, progress)."""
    from shiftrec.models.shiftaware import ShiftAware

    return ShiftAware(item_topic=item_topic, init_from=warm_start,
                      train=train_config(epochs, seed, budget.finetune_patience, budget),
                      **kwargs, **variant_overrides(name))
