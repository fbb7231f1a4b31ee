"""Explicit registry of recommenders: name -> factory (keyword overrides of the model's config).

Every factory returns an object implementing models.base.Recommender; `load_model` dispatches a
saved folder to the right class through the manifest's "model" field. To add a model, add one
entry to MODELS (and to LOADERS if its class differs from the factory): the contract test in
tests/models/test_contract.py iterates MODELS, so a new entry is covered automatically.

The transferable text model has one entry per mode: "transfer" (inductive, text only) and
"transfer-transductive" (text + item ID). Both need item text embeddings (`item_text`: an
(n_items + 1, d) table aligned with the split, or an ItemEmbeddings folder from `shiftrec
encode`). Their checkpoints record model "transfer" and the mode, and load through
TransferRec.load (which gives back the mode's name).

"shiftfusion" wraps another registry model (`base`, default sasrec, built with `base_options`)
and adds the item-level migration flows, weighted per bin of the shift statistic (models.fusion).
"shiftaware" is load-only here: it is built with item topics and a SASRec warm start
(bench/shift_slices.py), so it has no registry factory.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from shiftrec.errors import ArtifactError, unknown_name
from shiftrec.manifest import read_json
from shiftrec.models.base import Recommender
from shiftrec.models.fusion import ShiftFusion
from shiftrec.models.itemknn import ItemKNN
from shiftrec.models.popularity import Popularity
from shiftrec.models.sasrec import SASRec
from shiftrec.models.shiftaware import ShiftAware
from shiftrec.models.transfer import Mode, TransferRec


def _popularity(**kwargs: Any) -> Popularity:
    if kwargs:
        from shiftrec.errors import ConfigError

        raise ConfigError(f"popularity takes no options; got {sorted(kwargs)}")
    return Popularity()


def _transfer(**kwargs: Any) -> TransferRec:
    return TransferRec.from_options(Mode.INDUCTIVE, **kwargs)


def _transfer_transductive(**kwargs: Any) -> TransferRec:
    return TransferRec.from_options(Mode.TRANSDUCTIVE, **kwargs)


def _shiftfusion(base: str = "sasrec", base_options: dict[str, Any] | None = None,
                 **kwargs: Any) -> ShiftFusion:
    """A registry model (`base`, built with `base_options`) fused with the item-level flows."""
    if base == "shiftfusion":
        from shiftrec.errors import ConfigError

        raise ConfigError("shiftfusion: the base model cannot itself be a shiftfusion")
    return ShiftFusion(build_model(base, **(base_options or {})), **kwargs)


MODELS: dict[str, Callable[..., Recommender]] = {
    "popularity": _popularity,
    "itemknn": ItemKNN,
    "sasrec": SASRec,
    "transfer": _transfer,
    "transfer-transductive": _transfer_transductive,
    "shiftfusion": _shiftfusion,
}

LOADERS: dict[str, Callable[[str | Path], Recommender]] = {
    "popularity": Popularity.load,
    "itemknn": ItemKNN.load,
    "sasrec": SASRec.load,
    "transfer": TransferRec.load,  # both modes save model "transfer" (the mode is in the manifest)
    "transfer-transductive": TransferRec.load,
    "shiftfusion": lambda p: ShiftFusion.load(p, load_base=load_model),
    # saved-only: built with item topics and a SASRec warm start (bench/shift_slices.py)
    "shiftaware": ShiftAware.load,
}


def build_model(name: str, **kwargs: Any) -> Recommender:
    """A fresh, unfitted model; kwargs override fields of its config (validated)."""
    if name not in MODELS:
        raise unknown_name("model", name, MODELS)
    return MODELS[name](**kwargs)


def load_model(path: str | Path) -> Recommender:
    """Load any saved model folder, dispatching on manifest.json's "model"."""
    p = Path(path)
    if not (p / "manifest.json").exists():
        raise ArtifactError("not a model folder (manifest.json missing)", path=p)
    name = read_json(p / "manifest.json").get("model")
    if name not in LOADERS:
        raise ArtifactError(f"unknown model '{name}' in manifest; valid models: "
                            f"{', '.join(sorted(LOADERS))}", path=p)
    return LOADERS[name](p)
