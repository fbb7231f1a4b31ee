"""The transferable text model's settings and batch contract, free of torch: shared by the
wrapper (models.transfer), the network (models.transfer_net) and the fitting code
(models.transfer_fit), so that none of them imports another in a circle."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

import numpy as np

from shiftrec.errors import InputError


class Mode(enum.StrEnum):
    INDUCTIVE = "inductive"
    TRANSDUCTIVE = "transductive"


class Objective(enum.StrEnum):
    FULL_CE = "full_ce"
    CONTRASTIVE = "contrastive"


class Freeze(enum.StrEnum):
    """Which parameters stay fixed when fine-tuning a pretrained model."""

    NONE = "none"  # train everything
    ENCODER = "encoder"  # freeze the transformer (UniSRec's parameter-efficient fine-tuning)
    ADAPTOR = "adaptor"  # freeze the text adaptor, train the transformer


@dataclass(frozen=True)
class TransferConfig:
    """Architecture and objective settings. Sizes must match a checkpoint to load it."""

    hidden: int = 128  # UniSRec used 300 with 8 experts; 128/4 trains ~3x faster on a CPU
    n_layers: int = 2
    n_heads: int = 2
    inner: int = 256
    n_experts: int = 4
    max_len: int = 50
    dropout: float = 0.5
    attn_dropout: float = 0.5
    adaptor_dropout: float = 0.2
    gate_noise: bool = True
    temperature: float = 0.07
    mode: Mode = Mode.INDUCTIVE
    objective: Objective = Objective.FULL_CE
    seq_weight: float = 0.001  # weight of the sequence-sequence contrastive term (pretraining)
    item_drop: float = 0.2  # item-dropout rate of the sequence augmentation (pretraining)
    # contrastive pretraining: subtract log(training frequency) of each in-batch item from its
    # logit (sampling-bias correction: in-batch negatives are drawn by popularity, so without it
    # the model learns to rank popular items low; with it the loss estimates the full softmax)
    logq: bool = False
    # contrastive pretraining: this many extra negatives per batch drawn uniformly from the items of
    # the batch's domain (TransferNet.set_domains; the whole table when the batch mixes domains),
    # beside the in-batch ones (mixed negative sampling): in-batch negatives are popular items only,
    # while full-ranking evaluation ranks the long tail too
    uniform_negatives: int = 0
    # text-similarity path: add skip_weight * cos(recency-weighted profile of the history's item
    # texts, the item's text) to every logit (raw encoder vectors, not the adaptor's: near-
    # duplicate and same-line titles keep their full similarity); the weight and the decay are
    # learned (from skip_init and skip_decay_init). A checkpoint without the path gets a
    # fresh one when fine-tuned with text_skip on.
    text_skip: bool = False
    skip_init: float = 20.0  # initial skip_weight (logit units per unit of cosine; TextSim's 1/0.05)
    skip_decay_init: float = 0.3  # initial decay of the history profile

    def arch(self) -> dict[str, Any]:
        """The fields that decide tensor shapes (checked when loading)."""
        return {k: getattr(self, k) for k in ("hidden", "n_layers", "n_heads", "inner", "n_experts",
                                              "max_len")}


def check_text_table(text: np.ndarray) -> np.ndarray:
    text = np.asarray(text, dtype=np.float32)
    if text.ndim != 2 or text.shape[0] < 2:
        raise InputError(f"item text table must be (n_items + 1, dim) with at least one item; "
                         f"got shape {tuple(text.shape)}")
    if not np.isfinite(text).all():
        raise InputError("item text table contains NaN or infinite values")
    return text


def aligned_item_text(source: Any, split: Any, encoder: str | None) -> tuple[np.ndarray, str | None]:
    """(table, encoder) of a text model's item text for `split`: a saved ItemEmbeddings folder
    (`shiftrec encode`) aligned with the split's item index, or an (n_items + 1, d) table as is.
    A folder from another encoder than the one requested is an ArtifactError."""
    from pathlib import Path

    from shiftrec.errors import ArtifactError

    if not isinstance(source, str | Path):
        return check_text_table(source), encoder
    from shiftrec.text.features import ItemEmbeddings

    emb = ItemEmbeddings.load(source)
    if encoder is not None and encoder != emb.encoder:
        raise ArtifactError(f"item embeddings come from encoder '{emb.encoder}' but encoder "
                            f"'{encoder}' was requested", path=source)
    try:
        return check_text_table(emb.aligned(split.item_map)), emb.encoder
    except ArtifactError as e:
        raise ArtifactError(f"item embeddings do not cover split '{split.name}': {e.message}",
                            path=source) from None


# Batch keys (train.batches.CausalBatches): the input window "seq" (left-aligned, right-padded
# with 0) and, aligned with it, "labels": the next item at each position (0 = not supervised).
SEQ_KEYS = ("seq", "input", "inputs")
TARGET_KEYS = ("labels", "target", "targets")


def batch_inputs(batch: dict[str, Any]) -> tuple[Any, Any]:
    seq = next((batch[k] for k in SEQ_KEYS if k in batch), None)
    tgt = next((batch[k] for k in TARGET_KEYS if k in batch), None)
    if seq is None or tgt is None:
        raise InputError(f"training batch needs an input key ({'/'.join(SEQ_KEYS)}) and a target key "
                         f"({'/'.join(TARGET_KEYS)}); got {sorted(batch)}")
    return seq.long(), tgt.long()


