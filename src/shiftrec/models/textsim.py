"""TextSim: a training-free recommender from item text alone (text-kNN).

A history's profile is the recency-weighted sum of its items' unit-length text vectors (the k-th
most recent item weighs decay**k); every item scores the cosine of its text vector with that
profile, divided by `temperature`: the scores are the logits of P(item | history) =
softmax(cos / temperature), which is how ShiftFusion reads a base model's scores (the temperature
does not change TextSim's own ranking, only how it mixes with the item flows). Nothing is
learned from interactions: it works for a new shop, a new domain and cold items from the first
event, with any encoder of shiftrec.text (the multilingual one for Chinese titles). fit() only
picks, on the validation users (NDCG@10 over all items), the decay from `select_decay` and the
catalogue transform of the text vectors from `select_transform` (none, centre, whiten:
shiftrec.text.transform), jointly; empty grids keep `decay` and `transform`.

Saved as model.npz (the unit-length item table, float32, and the fitted transform's mean and
projection, which new items get too) plus the manifest (config, the chosen decay and transform
with the validation scores, encoder, data and item-map fingerprints).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from shiftrec.config import from_dict, to_dict
from shiftrec.data.splits import SeqSplit
from shiftrec.errors import ArtifactError, ConfigError, InputError
from shiftrec.manifest import atomic_write_bytes
from shiftrec.models.artifact import read_model_folder, save_model_folder, split_fields
from shiftrec.models.torch_base import apply_overrides
from shiftrec.models.transfer_config import aligned_item_text
from shiftrec.text.transform import (
    TEXT_TRANSFORMS,
    TextTransform,
    apply_text_transform,
    fit_text_transform,
    fitted_transform_fits,
)

NEEDS_TEXT = ("textsim needs item text embeddings aligned with the split: run `shiftrec encode "
              "DATASET --split SPLIT -o EMB` and pass --item-text EMB")


@dataclass(frozen=True)
class TextSimConfig:
    decay: float = 0.5  # weight of the k-th most recent history item: decay ** k
    select_decay: tuple[float, ...] = (1.0, 0.7, 0.5, 0.3, 0.1)  # chosen on validation; () keeps decay
    transform: TextTransform = TextTransform.NONE  # of the catalogue's text vectors before the cosine
    select_transform: tuple[TextTransform, ...] = TEXT_TRANSFORMS  # chosen with the decay; () keeps transform
    temperature: float = 0.05  # scores = cosine / temperature (logits; see the module docstring)
    max_history: int = 50
    # choose them ranking each validation target among the items outside the user's history (as
    # `shiftrec serve` recommends and `--exclude-seen` evaluates); False ranks every item
    select_exclude_seen: bool = False


def _unit_rows(x: np.ndarray) -> np.ndarray:
    """float32 rows scaled to unit length; all-zero rows (no text) stay zero."""
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return np.where(norm > 0, x / np.maximum(norm, 1e-12), 0.0).astype(np.float32)


class TextSim:
    name = "textsim"

    def __init__(self, item_text: np.ndarray | str | Path | None = None, encoder: str | None = None,
                 config: TextSimConfig | None = None, **overrides: Any) -> None:
        self.config: TextSimConfig = apply_overrides(config or TextSimConfig(), overrides, "textsim")
        for d in (self.config.decay, *self.config.select_decay):
            if not 0 < d <= 1:
                raise ConfigError(f"textsim: decay must be in (0, 1], got {d}")
        if not self.config.temperature > 0:
            raise ConfigError(f"textsim: temperature must be > 0, got {self.config.temperature}")
        if self.config.max_history < 1:
            raise ConfigError("textsim: max_history must be >= 1")
        self.source = item_text
        self.encoder = encoder
        self.decay = self.config.decay
        self.transform = TextTransform(self.config.transform)
        self.table: np.ndarray | None = None  # (n_items + 1, d) unit rows, row 0 zeros
        self.mean: np.ndarray | None = None  # the fitted transform (shiftrec.text.transform)
        self.proj: np.ndarray | None = None
        # the untransformed vectors, kept after fit() so choose() can pick the transform again
        # (not saved: a loaded model keeps its transform)
        self._raw: np.ndarray | None = None
        self.selection: dict[str, float] = {}  # valid NDCG@10 by "transform decay"
        self.data_fingerprint: str | None = None
        self.item_keys: str | None = None

    @property
    def n_items(self) -> int | None:
        return None if self.table is None else int(self.table.shape[0]) - 1

    def fit(self, split: SeqSplit) -> TextSim:
        if self.source is None:
            raise ConfigError(NEEDS_TEXT)
        text, self.encoder = aligned_item_text(self.source, split, self.encoder)
        if text.shape[0] != split.n_items + 1:
            raise InputError(f"item text table has {text.shape[0] - 1} items but the split has "
                             f"{split.n_items}")
        text = np.asarray(text, np.float32).copy()
        text[0] = 0.0
        self._raw = text
        self._set_transform(self.transform)
        self.choose(split, self.config.select_exclude_seen)
        f = split_fields(split)
        self.data_fingerprint, self.item_keys = f["data_fingerprint"], f["item_keys_hash"]
        return self

    def _set_transform(self, kind: TextTransform) -> None:
        assert self._raw is not None
        self.transform = TextTransform(kind)
        self.mean, self.proj = fit_text_transform(self._raw[1:], self.transform)
        self.table = _unit_rows(apply_text_transform(self._raw, self.mean, self.proj))

    @property
    def valid_ndcg(self) -> float | None:
        """Validation NDCG@10 of the chosen decay and transform (None if nothing was chosen)."""
        return self.selection.get(f"{self.transform.value} {self.decay:g}")

    def choose(self, split: SeqSplit, exclude_seen: bool = False) -> None:
        """Keep the (transform, decay) of `select_transform` x `select_decay` with the best
        validation NDCG@10 (all items ranked, or with `exclude_seen` all but each user's
        history, as the evaluation will rank them); ties go to the earlier transform, then the
        earlier decay. No-op with both grids empty or no validation users; a loaded model (its
        raw vectors are not kept) chooses its decay only."""
        cfg = self.config
        if not (cfg.select_decay or cfg.select_transform) or not len(split.valid):
            return
        decays = cfg.select_decay or (self.decay,)
        kinds = (cfg.select_transform if self._raw is not None else ()) or (self.transform,)
        self.selection = {}
        best: tuple[float, TextTransform, float] | None = None
        for kind in kinds:
            if self._raw is not None:
                self._set_transform(kind)
            for d in decays:
                v = self._valid_ndcg(split, d, exclude_seen)
                self.selection[f"{TextTransform(kind).value} {d:g}"] = v
                if best is None or v > best[0]:
                    best = (v, TextTransform(kind), float(d))
        assert best is not None
        if self._raw is not None:
            self._set_transform(best[1])
        self.decay = best[2]

    def _valid_ndcg(self, split: SeqSplit, decay: float, exclude_seen: bool = False) -> float:
        from shiftrec.evaluate.ranking import evaluate

        self.decay = decay
        return float(evaluate(self, split, "valid", max_len=self.config.max_history,
                              exclude_history=exclude_seen)[0]["ndcg@10"])

    def scores_with_decay(self, histories: list[np.ndarray], decay: float) -> np.ndarray:
        """score() with another decay (fitted models only)."""
        if self.table is None:
            raise ArtifactError("textsim model is not fitted")
        prof = np.zeros((len(histories), self.table.shape[1]), np.float32)
        for i, h in enumerate(histories):
            h = np.asarray(h, dtype=np.int64)[-self.config.max_history:]
            if len(h) and (h.min() < 0 or h.max() >= self.table.shape[0]):
                raise InputError(f"textsim: history item ids must be in [0, {self.table.shape[0] - 1}]; "
                                 f"got {int(h.min())}..{int(h.max())}")
            h = h[h > 0]
            if len(h):
                w = (decay ** np.arange(len(h) - 1, -1, -1)).astype(np.float32)
                prof[i] = w @ self.table[h]
        prof /= np.maximum(np.linalg.norm(prof, axis=1, keepdims=True), 1e-12)  # cosines
        out = (prof @ self.table.T) / np.float32(self.config.temperature)
        out[:, 0] = -np.inf
        return out

    def score(self, histories: list[np.ndarray], times: list[np.ndarray] | None = None) -> np.ndarray:
        if self.table is None:
            raise ArtifactError("textsim model is not fitted")
        return self.scores_with_decay(histories, self.decay)

    def extend_items(self, vectors: np.ndarray) -> None:
        """Append items, given their text vectors (the run's encoder): scored at once, since
        nothing about them is learned."""
        if self.table is None:
            raise ArtifactError("textsim model is not fitted")
        v = np.asarray(vectors, np.float32)
        if v.ndim != 2 or v.shape[1] != self.table.shape[1] or not np.isfinite(v).all():
            raise InputError(f"new item vectors must be finite and (n, {self.table.shape[1]}); "
                             f"got shape {tuple(v.shape)}")
        self.table = np.concatenate([self.table, _unit_rows(apply_text_transform(v, self.mean, self.proj))])
        if self._raw is not None:
            self._raw = np.concatenate([self._raw, v])

    def save(self, path: str | Path) -> None:
        import io

        if self.table is None:
            raise ArtifactError("textsim model is not fitted: nothing to save")
        buf = io.BytesIO()
        fitted = {k: v for k, v in (("mean", self.mean), ("proj", self.proj)) if v is not None}
        np.savez(buf, table=self.table, **fitted)
        save_model_folder(path, lambda d: atomic_write_bytes(d / "model.npz", buf.getvalue()),
                          model=self.name, n_items=self.n_items, text_dim=int(self.table.shape[1]),
                          encoder=self.encoder, config=to_dict(self.config), decay=self.decay,
                          transform=self.transform.value,
                          selection_valid_ndcg10=self.selection,
                          data_fingerprint=self.data_fingerprint, item_keys_hash=self.item_keys)

    @classmethod
    def load(cls, path: str | Path) -> TextSim:
        p, man = read_model_folder(path, cls.name)
        with np.load(p / "model.npz", allow_pickle=False) as z:
            table = z["table"]
            mean = z["mean"].astype(np.float32) if "mean" in z.files else None
            proj = z["proj"].astype(np.float32) if "proj" in z.files else None
        # saved before transforms existed: the raw cosine
        try:
            transform = TextTransform(man.get("transform", TextTransform.NONE.value))
        except ValueError:
            raise ArtifactError(f"manifest transform '{man.get('transform')}' is not one of "
                                f"{[t.value for t in TextTransform]}", path=p) from None
        if not fitted_transform_fits(transform, mean, proj, table.shape[1] if table.ndim == 2 else -1):
            raise ArtifactError(f"manifest transform '{transform.value}' does not match the arrays "
                                f"in model.npz", path=p)
        if table.ndim != 2 or table.shape[0] != int(man["n_items"]) + 1:
            raise ArtifactError(f"manifest n_items={man['n_items']} but model.npz holds "
                                f"{table.shape[0] - 1} items", path=p)
        m = cls(None, man.get("encoder"), from_dict(TextSimConfig, man["config"], where=f"{p}: config"))
        m.table = table.astype(np.float32)
        m.decay = float(man["decay"])
        m.transform, m.mean, m.proj = transform, mean, proj
        m.selection = dict(man.get("selection_valid_ndcg10") or {})
        m.data_fingerprint = man.get("data_fingerprint")
        m.item_keys = man.get("item_keys_hash")
        return m
