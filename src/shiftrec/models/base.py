"""The one Protocol every model implements: fit, score every item for a batch of histories, save, load."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from shiftrec.data.splits import SeqSplit


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


def pad_left(histories: list[np.ndarray], max_len: int) -> np.ndarray:
    """Right-aligned padded matrix (batch, max_len) keeping the last max_len items; pad = 0."""
    out = np.zeros((len(histories), max_len), dtype=np.int64)
    for i, h in enumerate(histories):
        h = h[-max_len:]
        if len(h):
            out[i, max_len - len(h):] = h
    return out


def read_model_manifest(path: str | Path, model_name: str) -> tuple[Path, dict[str, Any]]:
    """(folder, manifest) of a saved model; the manifest must exist and name `model_name`."""
    from shiftrec.errors import ArtifactError
    from shiftrec.manifest import read_json

    p = Path(path)
    if not (p / "manifest.json").is_file():
        raise ArtifactError("not a model folder (manifest.json missing)", path=p)
    man = read_json(p / "manifest.json")
    if man.get("model") != model_name:
        raise ArtifactError(f"checkpoint is a '{man.get('model')}' model, not '{model_name}'", path=p)
    return p, man
