"""SASRec (Kang & McAuley 2018) over item IDs, full cross-entropy over all items.

The network follows RecBole's SASRec (item + learned position embedding, LayerNorm, dropout,
post-LN transformer blocks with GELU feed-forward, prediction = hidden @ item_emb.T), but is
trained with causal all-prefix batches (train.batches.CausalBatches): one pass per user window
supervises every prefix, attention uses scaled_dot_product_attention(is_causal=True), and the
cross-entropy is computed only at supervised positions.

Sequences are handled left-aligned (position 0 = oldest item of the <= max_len history) in both
training and scoring; score_all receives right-aligned histories and realigns them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from shiftrec.config import to_dict
from shiftrec.data.splits import SeqSplit
from shiftrec.errors import ArtifactError, ConfigError
from shiftrec.models.artifact import check_model_split, item_map_fingerprint
from shiftrec.models.torch_base import (
    apply_overrides,
    check_shapes,
    load_state_strict,
    read_torch_artifact,
    save_torch_artifact,
)
from shiftrec.train.trainer import Phase, TrainConfig, TrainResult, score_module


def _default_train() -> TrainConfig:
    return TrainConfig(phases=(Phase(name="train", epochs=200, lr=1e-3, batch_size=2048,
                                     patience=10),))


@dataclass(frozen=True)
class SASRecConfig:
    hidden: int = 64
    layers: int = 2
    heads: int = 2
    inner: int = 256  # feed-forward width
    dropout: float = 0.5  # hidden dropout (embeddings, attention output, feed-forward)
    attn_dropout: float = 0.5
    max_len: int = 50
    stride: int = 10  # extra windows for sequences longer than max_len + 1 (train.batches)
    bucket: bool = True  # length-bucketed batches (little padding)
    # the repeat/explore gate (models.repeat): the history's items together get the share of
    # next items found in the history, counted on the training sequences (saved in the manifest)
    repeat_gate: bool = False
    train: TrainConfig = field(default_factory=_default_train)


def build_net(n_items: int, cfg: SASRecConfig) -> Any:
    """The SASRec nn.Module (models.sasrec_net; imports torch lazily)."""
    if cfg.hidden % cfg.heads:
        raise ConfigError(f"hidden ({cfg.hidden}) must be divisible by heads ({cfg.heads})")
    from shiftrec.models.sasrec_net import SASRecNet

    return SASRecNet(n_items, cfg)


class SASRec:
    """Recommender Protocol wrapper: fit trains with train.trainer, save/load via safetensors."""

    name = "sasrec"

    def __init__(self, config: SASRecConfig | None = None, *, checkpoint_dir: str | Path | None = None,
                 resume: bool = False, progress: Any = None, **overrides: Any) -> None:
        cfg = config or SASRecConfig()
        self.config = apply_overrides(cfg, overrides, "sasrec")
        self.checkpoint_dir = checkpoint_dir
        self.resume = resume
        self.progress = progress
        self.net: Any = None
        self.n_items: int | None = None
        self.result: TrainResult | None = None
        self.data_fingerprint: str | None = None
        self.item_keys: str | None = None  # fingerprint of the item map it was trained on

    def _build(self, n_items: int) -> Any:
        from shiftrec.train.trainer import seed_everything

        seed_everything(self.config.train.seed)
        self.n_items = n_items
        self.net = build_net(n_items, self.config)
        return self.net

    def fit(self, split: SeqSplit) -> SASRec:
        from shiftrec.train.batches import CausalBatches
        from shiftrec.train.trainer import train

        cfg = self.config
        self._build(split.n_items)
        if cfg.repeat_gate:  # before training: early stopping ranks as the model will
            from shiftrec.models.repeat import repeat_share

            self.net.repeat_fit = repeat_share(split.train, cfg.max_len)
        src = CausalBatches(split.train, cfg.max_len, cfg.stride, cfg.bucket)
        valid = split.valid if len(split.valid) else None
        self.result = train(self.net, cfg.train, src, valid, checkpoint_dir=self.checkpoint_dir,
                            resume=self.resume, progress=self.progress)
        self.data_fingerprint = split.meta.get("fingerprint")
        self.item_keys = item_map_fingerprint(split)
        return self

    def score(self, histories: list[np.ndarray], times: list[np.ndarray] | None = None) -> np.ndarray:
        if self.net is None:
            raise ArtifactError("sasrec model is not fitted")
        return score_module(self.net, histories, None, self.config.max_len,
                            threads=self.config.train.threads)

    def item_vectors(self) -> np.ndarray:
        """(n_items + 1, hidden) item embeddings (row 0 padding): score(h)[:, i] ==
        query_vectors(h) @ item_vectors()[i] (up to float rounding; before the repeat gate, which
        only moves the history's items). Shares the weights' memory."""
        if self.net is None:
            raise ArtifactError("sasrec model is not fitted")
        return self.net.item_emb.weight.detach().cpu().float().numpy()

    def query_vectors(self, histories: list[np.ndarray],
                      times: list[np.ndarray] | None = None) -> np.ndarray:
        """(batch, hidden) user vectors whose dot products with item_vectors() are the scores
        (for candidate retrieval over a large catalogue); run like score, in batches."""
        if self.net is None:
            raise ArtifactError("sasrec model is not fitted")
        if not histories:
            return np.zeros((0, self.config.hidden), np.float32)
        net = self.net
        return score_module(net, histories, None, self.config.max_len,
                            threads=self.config.train.threads, fn=lambda seq, _t: net.query(seq))

    def save(self, path: str | Path) -> None:
        if self.net is None:
            raise ArtifactError("sasrec model is not fitted: nothing to save")
        c = self.config
        save_torch_artifact(path, self.net, self.name, n_items=self.n_items, hidden=c.hidden,
                            layers=c.layers, heads=c.heads, inner=c.inner, max_len=c.max_len,
                            config=to_dict(c), data_fingerprint=self.data_fingerprint,
                            item_keys_hash=self.item_keys, repeat_gate=self.net.repeat_fit,
                            training=self.result.to_dict() if self.result else None)

    @classmethod
    def load(cls, path: str | Path) -> SASRec:
        from shiftrec.config import from_dict

        man, tensors = read_torch_artifact(path, cls.name)
        try:
            cfg = from_dict(SASRecConfig, man["config"], where=f"{path}: config")
            n_items = int(man["n_items"])
        except KeyError as e:
            raise ArtifactError(f"manifest lacks {e}", path=path) from None
        for key in ("hidden", "layers", "heads", "inner", "max_len"):
            if man.get(key) != getattr(cfg, key):
                raise ArtifactError(f"manifest {key}={man.get(key)} disagrees with its config "
                                    f"{key}={getattr(cfg, key)}", path=path)
        check_shapes(tensors, {"item_emb.weight": (n_items + 1, cfg.hidden),
                               "pos_emb.weight": (cfg.max_len, cfg.hidden)}, path,
                     {"item_emb.weight": "item embedding (n_items + 1, hidden)",
                      "pos_emb.weight": "position embedding (max_len, hidden)"})
        model = cls(cfg)
        model._build(n_items)
        load_state_strict(model.net, tensors, path)
        from shiftrec.models.repeat import stored_gate

        model.net.repeat_fit = stored_gate(man.get("repeat_gate"), path)
        if cfg.repeat_gate != (model.net.repeat_fit is not None):
            raise ArtifactError(f"config repeat_gate {cfg.repeat_gate} but the manifest "
                                f"{'holds no' if cfg.repeat_gate else 'holds a'} gate", path=path)
        model.net.eval()
        model.data_fingerprint = man.get("data_fingerprint")
        model.item_keys = man.get("item_keys_hash")
        return model

    def check_split(self, split: SeqSplit) -> None:
        """Raise ArtifactError when this model's item index does not fit `split`."""
        check_model_split(self, split)
