"""Popularity baseline: every user gets the items most frequent in training."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from shiftrec.data.splits import SeqSplit
from shiftrec.errors import ArtifactError
from shiftrec.models.artifact import read_model_folder, save_model_folder, split_fields


class Popularity:
    name = "popularity"

    def __init__(self, counts: np.ndarray | None = None) -> None:
        self.counts = counts
        self.data_fingerprint: str | None = None
        self.item_keys: str | None = None

    @property
    def n_items(self) -> int | None:
        return None if self.counts is None else len(self.counts) - 1

    def fit(self, split: SeqSplit) -> Popularity:
        self.counts = np.bincount(split.train.items, minlength=split.n_items + 1).astype(np.float32)
        self.counts[0] = -np.inf
        f = split_fields(split)
        self.data_fingerprint, self.item_keys = f["data_fingerprint"], f["item_keys_hash"]
        return self

    def score(self, histories: list[np.ndarray], times: list[np.ndarray] | None = None) -> np.ndarray:
        if self.counts is None:
            raise ArtifactError("popularity model is not fitted")
        return np.broadcast_to(self.counts, (len(histories), len(self.counts))).copy()

    def save(self, path: str | Path) -> None:
        if self.counts is None:
            raise ArtifactError("popularity model is not fitted: nothing to save")
        counts = self.counts
        save_model_folder(path, lambda d: np.savez(d / "model.npz", counts=counts),
                          model=self.name, n_items=len(counts) - 1,
                          data_fingerprint=self.data_fingerprint, item_keys_hash=self.item_keys)

    @classmethod
    def load(cls, path: str | Path) -> Popularity:
        p, man = read_model_folder(path, cls.name)
        try:
            counts = np.load(p / "model.npz", allow_pickle=False)["counts"]
        except (OSError, ValueError, KeyError) as e:
            raise ArtifactError(f"cannot read model.npz: {e}", path=p) from None
        if counts.ndim != 1 or len(counts) != int(man.get("n_items", -2)) + 1:
            raise ArtifactError(f"model.npz holds {counts.shape} counts, the manifest says "
                                f"{man.get('n_items')} items", path=p)
        m = cls(counts)
        m.data_fingerprint, m.item_keys = man.get("data_fingerprint"), man.get("item_keys_hash")
        return m
