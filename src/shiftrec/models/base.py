"""The one Protocol every model implements: fit, score every item for a batch of histories, save, load."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from shiftrec.data.splits import SeqSplit
from shiftrec.train.batches import pad_left

__all__ = ["Recommender", "pad_left"]


@runtime_checkable
class Recommender(Protocol):
    """A recommender over one item index (SeqSplit.item_map).

    score() returns float32 scores of shape (batch, n_items + 1); column 0 is padding and is
    ignored by evaluation. `times` (unix seconds, aligned with histories) may be None.
    """

    name: str

    def fit(self, split: SeqSplit) -> Recommender: ...

    def score(self, histories: list[np.ndarray], times: list[np.ndarray] | None = None) -> np.ndarray: ...

    def save(self, path: str | Path) -> None: ...

    @classmethod
    def load(cls, path: str | Path) -> Recommender: ...


