"""Explicit registry of recommenders: name -> factory (keyword overrides of the model's config).

Every factory returns an object implementing models.base.Recommender; `load_model` dispatches a
saved folder to the right class through the manifest's "model" field. To add a model, add one
entry to MODELS (and to LOADERS if its class differs from the factory): the contract test in
tests/models/test_contract.py iterates MODELS, so a new entry is covered automatically.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from shiftrec.errors import ArtifactError, unknown_name
from shiftrec.manifest import read_json
from shiftrec.models.base import Recommender
from shiftrec.models.itemknn import ItemKNN
from shiftrec.models.popularity import Popularity
from shiftrec.models.sasrec import SASRec


def _popularity(**kwargs: Any) -> Popularity:
    if kwargs:
        from shiftrec.errors import ConfigError

        raise ConfigError(f"popularity takes no options; got {sorted(kwargs)}")
    return Popularity()


MODELS: dict[str, Callable[..., Recommender]] = {
    "popularity": _popularity,
    "itemknn": ItemKNN,
    "sasrec": SASRec,
    # The transferable text model (models/transfer.py) registers here, e.g.
    # "unisrec": TransferRec  -- add its entry (and LOADERS entry) when that module lands.
}

LOADERS: dict[str, Callable[[str | Path], Recommender]] = {
    "popularity": Popularity.load,
    "itemknn": ItemKNN.load,
    "sasrec": SASRec.load,
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
