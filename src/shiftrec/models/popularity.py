"""Popularity baseline: every user gets the items most frequent in training."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from shiftrec.data.splits import SeqSplit
from shiftrec.errors import ArtifactError
from shiftrec.manifest import make_manifest, read_model_manifest, write_json


class Popularity:
    name = "popularity"

    def __init__(self, counts: np.ndarray | None = None) -> None:
        self.counts = counts

    def fit(self, split: SeqSplit) -> Popularity:
        self.counts = np.bincount(split.train.items, minlength=split.n_items + 1).astype(np.float32)
        self.counts[0] = -np.inf
        return self

    def score(self, histories: list[np.ndarray], times: list[np.ndarray] | None = None) -> np.ndarray:
        if self.counts is None:
            raise ArtifactError("popularity model is not fitted")
        return np.broadcast_to(self.counts, (len(histories), len(self.counts))).copy()

    def save(self, path: str | Path) -> None:
        p = Path(path)
        p.mkdir(parents=True, exist_ok=True)
        np.savez(p / "model.npz", counts=self.counts)
        write_json(p / "manifest.json", make_manifest("model", model=self.name, n_items=len(self.counts) - 1))

    @classmethod
    def load(cls, path: str | Path) -> Popularity:
        p, _ = read_model_manifest(path, cls.name)
        return cls(np.load(p / "model.npz", allow_pickle=False)["counts"])
