"""Catalogue-level transforms of item text vectors before a cosine (pure numpy).

Sentence embeddings of one shop's titles share a large common component ("... Gift Card",
"... for Men"), so their cosines sit close together and the common part decides much of the
ranking. Two standard fixes, fitted on the catalogue's own vectors (no interactions, so they
work zero-shot and for items added later):

- CENTRE: subtract the catalogue's mean vector.
- WHITEN: centre, then scale each principal direction of the catalogue by (var + mean var)^-1/2
  (ZCA whitening shrunk towards the identity, so the many near-empty directions of a small
  catalogue are not blown up; BERT-whitening, Su et al. 2021; UniSRec's adaptor learns the
  same kind of map as "parametric whitening").

Which one a shop's cosines rank best is chosen on its validation users (TextSim, the text path
of pipelines.transfer.select_text_path); NONE keeps the raw vectors. Rows without text (all
zeros, the padding row included) stay zero.
"""

from __future__ import annotations

import enum

import numpy as np


class TextTransform(enum.StrEnum):
    NONE = "none"
    CENTRE = "centre"
    WHITEN = "whiten"


TEXT_TRANSFORMS: tuple[TextTransform, ...] = tuple(TextTransform)


def fit_text_transform(vectors: np.ndarray, kind: TextTransform | str
                       ) -> tuple[np.ndarray | None, np.ndarray | None]:
    """(mean, projection) of `kind` fitted on the rows of `vectors` that have text; (None, None)
    for NONE, (mean, None) for CENTRE, (mean, d x d matrix) for WHITEN."""
    kind = TextTransform(kind)
    if kind == TextTransform.NONE:
        return None, None
    x = np.asarray(vectors, np.float64)
    has = np.linalg.norm(x, axis=1) > 0
    if not has.any():  # nothing to fit: the identity map of the kind
        d = x.shape[1]
        return np.zeros(d, np.float32), (np.eye(d, dtype=np.float32) if kind == TextTransform.WHITEN else None)
    mean = x[has].mean(axis=0)
    if kind == TextTransform.CENTRE:
        return mean.astype(np.float32), None
    c = x[has] - mean
    var, vec = np.linalg.eigh(c.T @ c / len(c))
    var = np.clip(var, 0.0, None)
    scale = (var + max(var.mean(), 1e-12)) ** -0.5
    return mean.astype(np.float32), ((vec * scale) @ vec.T).astype(np.float32)


def fitted_transform_fits(kind: TextTransform | str, mean: np.ndarray | None, proj: np.ndarray | None,
                          dim: int) -> bool:
    """Whether stored (mean, projection) arrays are what fit_text_transform gives `kind` in `dim`
    dimensions (for loaders: TextSim's model.npz, a checkpoint's item table)."""
    kind = TextTransform(kind)
    return ((mean is None) == (kind == TextTransform.NONE)
            and (proj is None) == (kind != TextTransform.WHITEN)
            and (mean is None or mean.shape == (dim,))
            and (proj is None or proj.shape == (dim, dim)))


def apply_text_transform(vectors: np.ndarray, mean: np.ndarray | None, proj: np.ndarray | None
                         ) -> np.ndarray:
    """The vectors after a fitted transform, float32; rows without text stay zero."""
    x = np.asarray(vectors, np.float32)
    if mean is None:
        return x.copy()
    has = np.linalg.norm(x, axis=1, keepdims=True) > 0
    y = x - mean
    if proj is not None:
        y = y @ proj
    return np.where(has, y, 0.0).astype(np.float32)


def parse_transforms(spec: str) -> tuple[TextTransform, ...]:
    """Comma-separated transform names ("none,centre,whiten") as a tuple, in order; an unknown
    name is one ConfigError naming the valid ones."""
    from shiftrec.errors import unknown_name

    out = []
    for name in (t.strip() for t in spec.split(",")):
        if not name:
            continue
        try:
            out.append(TextTransform(name))
        except ValueError:
            raise unknown_name("text transform", name, [t.value for t in TextTransform]) from None
    return tuple(out)
