"""Explicit registry of recommenders: one `ModelSpec` per name (factory, loader and what it needs).

Every factory returns an object implementing models.base.Recommender; `load_model` dispatches a
saved folder to the right loader through the manifest's "model" field. To add a model, add one
ModelSpec to SPECS: the contract test in tests/models/test_contract.py iterates MODELS, so a new
entry is covered automatically, and the CLI's model sets (which models need item text, topics,
a base model, which train with the torch trainer) are read from the spec's flags.

- "transfer" (inductive, text only) and "transfer-transductive" (text + item ID) need item text
  embeddings (`item_text`: an (n_items + 1, d) table aligned with the split, or an
  ItemEmbeddings folder from `shiftrec encode`). Both save model "transfer" and the mode, and
  load through TransferRec.load.
- "textsim" (models.textsim) needs item text too but learns nothing from interactions: the
  cosine of each item's text with the history's recency-weighted text profile (the decay is
  chosen on validation, with the catalogue transform of the text vectors: none, centre, whiten).
- "shiftfusion" wraps another registry model (`base`, default sasrec, built with
  `base_options`) and adds the item-level migration flows (models.fusion); item topics
  (`item_topic`) feed its shift gate.
- "shiftaware" needs item topics (`item_topic`) and may warm-start from a saved SASRec
  (`init_from`); "topic_profile" needs item topics.

All loaders verify the folder (models.artifact: completeness, file hashes); a manifest that does
not describe a valid model of its kind is one ArtifactError line.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shiftrec.errors import ArtifactError, ConfigError, unknown_name
from shiftrec.models.artifact import check_model_split, read_manifest_file
from shiftrec.models.base import Recommender
from shiftrec.models.fusion import ShiftFusion
from shiftrec.models.itemknn import ItemKNN
from shiftrec.models.popularity import Popularity
from shiftrec.models.sasrec import SASRec
from shiftrec.models.shiftaware import ShiftAware
from shiftrec.models.textsim import TextSim
from shiftrec.models.topic_profile import TopicProfileModel
from shiftrec.models.transfer import Mode, TransferRec


@dataclass(frozen=True)
class ModelSpec:
    """A registered model. `torch`: trained by train.trainer (accepts checkpoint_dir, resume,
    progress, and a `train:` mapping in the one training dialect); `needs_item_text`,
    `needs_topics`, `needs_base`: what its factory needs besides the split."""

    name: str
    factory: Callable[..., Recommender]
    loader: Callable[[str | Path], Recommender]
    needs_item_text: bool = False
    needs_topics: bool = False
    needs_base: bool = False
    torch: bool = False
    saved_as: str = ""  # the manifest's "model" when it differs from the name

    @property
    def manifest_name(self) -> str:
        return self.saved_as or self.name


def _popularity(**kwargs: Any) -> Popularity:
    if kwargs:
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
        raise ConfigError("shiftfusion: the base model cannot itself be a shiftfusion")
    return ShiftFusion(build_model(base, **(base_options or {})), **kwargs)


def _shiftaware(**kwargs: Any) -> ShiftAware:
    return ShiftAware(**kwargs)


def _topic_profile(**kwargs: Any) -> TopicProfileModel:
    return TopicProfileModel(**kwargs)


SPECS: tuple[ModelSpec, ...] = (
    ModelSpec("popularity", _popularity, Popularity.load),
    ModelSpec("itemknn", ItemKNN, ItemKNN.load),
    ModelSpec("sasrec", SASRec, SASRec.load, torch=True),
    ModelSpec("transfer", _transfer, TransferRec.load, needs_item_text=True, torch=True),
    ModelSpec("transfer-transductive", _transfer_transductive, TransferRec.load,
              needs_item_text=True, torch=True, saved_as="transfer"),
    ModelSpec("shiftfusion", _shiftfusion, lambda p: ShiftFusion.load(p, load_base=load_model),
              needs_base=True),
    ModelSpec("shiftaware", _shiftaware, ShiftAware.load, needs_topics=True, torch=True),
    ModelSpec("topic_profile", _topic_profile, TopicProfileModel.load, needs_topics=True),
    ModelSpec("textsim", TextSim, TextSim.load, needs_item_text=True),
)

REGISTRY: dict[str, ModelSpec] = {s.name: s for s in SPECS}
#: name -> factory (kept for callers that only build)
MODELS: dict[str, Callable[..., Recommender]] = {s.name: s.factory for s in SPECS}
#: manifest "model" -> loader
LOADERS: dict[str, Callable[[str | Path], Recommender]] = {}
for _s in SPECS:
    LOADERS.setdefault(_s.manifest_name, _s.loader)


def spec(name: str) -> ModelSpec:
    if name not in REGISTRY:
        raise unknown_name("model", name, REGISTRY)
    return REGISTRY[name]


def names_where(flag: str) -> set[str]:
    """Registered names whose spec has `flag` set (e.g. 'torch', 'needs_item_text')."""
    return {s.name for s in SPECS if getattr(s, flag)}


def build_model(name: str, **kwargs: Any) -> Recommender:
    """A fresh, unfitted model; kwargs override fields of its config (validated)."""
    return spec(name).factory(**kwargs)


def load_model(path: str | Path, split: Any = None) -> Recommender:
    """Load any saved model folder, dispatching on manifest.json's "model"; with `split`, refuse
    a model trained on another item map (models.artifact.check_model_split)."""
    p, man = read_manifest_file(path)
    name = man.get("model")
    if name not in LOADERS:
        raise ArtifactError(f"unknown model '{name}' in manifest; valid models: "
                            f"{', '.join(sorted(LOADERS))}", path=p)
    try:
        model = LOADERS[name](p)
    except ConfigError as e:  # the manifest's config is not this model's
        raise ArtifactError(f"manifest does not describe a valid '{name}' model: {e.message}",
                            path=p) from None
    except OSError as e:  # a file the named model needs is not in the folder
        what = Path(e.filename).name if getattr(e, "filename", None) else "a model file"
        raise ArtifactError(f"cannot read {what} of a '{name}' model: {e.strerror or e}",
                            path=p) from None
    except (KeyError, TypeError, ValueError, IndexError, AttributeError) as e:
        raise ArtifactError(f"manifest does not describe a valid '{name}' model "
                            f"({type(e).__name__}: {' '.join(str(e).split())[:160]})",
                            path=p) from None
    if split is not None:
        check_model_split(model, split)
    return model
