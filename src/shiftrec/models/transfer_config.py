"""The transferable text model's settings and batch contract, free of torch: shared by the
wrapper (models.transfer), the network (models.transfer_net) and the fitting code
(models.transfer_fit), so that none of them imports another in a circle."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

import numpy as np

from shiftrec.errors import InputError
from shiftrec.text.transform import TextTransform


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
    # the catalogue transform of the text vectors the path's cosines use (shiftrec.text.transform;
    # fitted on the item table the net holds, so nothing is stored; chosen on validation by
    # pipelines.transfer.select_text_path)
    skip_transform: TextTransform = TextTransform.NONE
    # domain-relative popularity prior: every item's logit gets a learned bias for its popularity
    # bucket *within its own domain's* training log (bucket 0: no training interaction;
    # 1..pop_buckets-1: quantiles of the items that have some; popularity_buckets()). It is as
    # inductive as the text: a new domain's counts give its buckets, so a pretrained model carries
    # "how much popularity matters" to a domain it never saw (zero-shot too: counts, no training).
    # 0 = off (the shipped checkpoints). In training, a target's own column uses its bucket
    # without the event being predicted (popularity_buckets(minus=1)), as a held-out target's.
    # Measured forms: README, "A popularity prior that transfers, and why it is off".
    pop_buckets: int = 0

    def arch(self) -> dict[str, Any]:
        """The fields that decide tensor shapes (checked when loading)."""
        return {k: getattr(self, k) for k in ("hidden", "n_layers", "n_heads", "inner", "n_experts",
                                              "max_len", "pop_buckets")}


def popularity_buckets(counts: np.ndarray, n_buckets: int,
                       domain_sizes: np.ndarray | list[int] | None = None, minus: int = 0
                       ) -> np.ndarray:
    """Bucket of each item row (row 0 = padding, bucket 0) by its training count, within its
    domain (consecutive rows of `domain_sizes`; one domain when None): 0 for a count of 0, else
    1 + the item's quantile among the domain's items with a positive count, in n_buckets - 1 equal
    steps (mid-rank, so equal counts share a bucket). Relative, not absolute: a 300-user shop and a
    40,000-user one both span every bucket.

    `minus=1` gives the bucket an item has as a training *target*: its count without the event
    being predicted, placed in the same domain's distribution. A held-out target's count never
    includes its own event, so training with the full count teaches that items with no count are
    never chosen (bucket 0 only ever appears as a negative) and buries the cold items."""
    counts = np.asarray(counts, dtype=np.float64)
    if counts.ndim != 1 or len(counts) < 1 or (counts < 0).any() or not np.isfinite(counts).all():
        raise InputError(f"item counts must be a 1-d array of non-negative numbers; got shape "
                         f"{counts.shape}")
    if n_buckets < 2:
        raise InputError(f"popularity buckets need n_buckets >= 2; got {n_buckets}")
    n = len(counts) - 1
    sizes = np.array([n] if domain_sizes is None else domain_sizes, dtype=np.int64)
    if sizes.ndim != 1 or (sizes < 0).any() or int(sizes.sum()) != n:
        raise InputError(f"domain sizes must be non-negative and sum to the {n} items; got "
                         f"{sizes.tolist()}")
    out = np.zeros(n + 1, dtype=np.int64)
    lo = 1
    for size in sizes.tolist():
        c = counts[lo:lo + size]
        pos = c > 0
        if pos.any():
            v = c[pos]
            order = np.sort(v)
            w = v - minus
            # mid-rank quantile in (0, 1): items with equal counts get the same value
            q = (np.searchsorted(order, w, "left") + np.searchsorted(order, w, "right")) / (2.0 * len(v))
            b = 1 + np.minimum((q * (n_buckets - 1)).astype(np.int64), n_buckets - 2)
            out[lo:lo + size][pos] = np.where(w > 0, b, 0)
        lo += size
    return out


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


