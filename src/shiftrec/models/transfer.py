"""Transferable text-based sequence recommender (UniSRec-like).

Frozen item text embeddings (a swappable buffer) -> a learned adaptor (parametric whitening with a
mixture of experts: several (x - b_k) W_k experts mixed by a softmax gate) -> a causal transformer
-> user vector. Item scores are cosine similarities between the user vector and the adapted item
embeddings, divided by a temperature.

Modes:
- inductive: text only. Any item with text can be scored, including a new domain zero-shot: swap
  the text table with `set_item_text`.
- transductive: text plus a learned item-ID embedding (tied to one item index).

Objectives (chosen by `TransferNet.objective`, all inside `training_loss`):
- full_ce: cross-entropy over all items of the current table at every prefix (fine-tuning);
- contrastive: in-batch sequence->item contrastive at every prefix plus a sequence-sequence
  contrastive term between two item-dropout views (pretraining across domains, where items of all
  domains live in one namespaced table and negatives come from the batch).

The torch modules live in models.transfer_net (imported when `build_net` builds one).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from shiftrec.config import from_dict, to_dict
from shiftrec.data.splits import SeqSplit
from shiftrec.errors import ArtifactError, ConfigError, InputError
from shiftrec.manifest import atomic_write_bytes
from shiftrec.models.repeat import repeat_share, stored_gate
from shiftrec.models.transfer_config import (
    Freeze,
    Mode,
    Objective,
    TransferConfig,
    aligned_item_text,
    batch_inputs,
    check_text_table,
)

MODEL_KIND = "transfer-model"
WEIGHTS = "model.safetensors"
ITEM_TEXT = "item_text.safetensors"
MANIFEST = "manifest.json"

__all__ = ["Freeze", "Mode", "Objective", "TransferConfig", "TransferRec", "batch_inputs",
           "build_net", "check_text_table", "load_checkpoint", "save_checkpoint",
           "train_item_counts"]


def build_net(cfg: TransferConfig, text: np.ndarray, n_id_items: int | None = None) -> Any:
    """A fresh TransferNet for `text` ((n_items + 1, d_text), row 0 = padding); models.transfer_net,
    imported here so that `import shiftrec` stays free of torch."""
    from shiftrec.models.transfer_net import TransferNet

    text = check_text_table(text)
    return TransferNet(cfg, text, n_id_items)


ENCODER_PREFIXES = ("pos.", "ln.", "blocks.")
ADAPTOR_PREFIXES = ("adaptor.",)


def freeze_prefixes(freeze: Freeze | str) -> tuple[str, ...]:
    """Parameter-name prefixes kept fixed for a freeze choice (for train.Phase.freeze)."""
    freeze = Freeze(freeze)
    if freeze == Freeze.ENCODER:
        return ENCODER_PREFIXES
    if freeze == Freeze.ADAPTOR:
        return ADAPTOR_PREFIXES
    return ()


# ---------------------------------------------------------------------------------------------
# checkpoints: model.safetensors (+ item_text.safetensors when an item table travels) + manifest
# ---------------------------------------------------------------------------------------------

def save_checkpoint(net: Any, path: str | Path, *, encoder: str, include_items: bool = False,
                    half: bool = False, **manifest_fields: Any) -> Path:
    """Write the weights (the text buffer is not a weight; `include_items` stores it beside
    them) and a manifest with the file hashes, atomically (models.artifact)."""
    import torch
    from safetensors.torch import save as st_save

    from shiftrec.models.artifact import save_model_folder

    sd = {k: (v.detach().cpu().half() if half and v.is_floating_point() else v.detach().cpu()).contiguous()
          for k, v in net.state_dict().items()}

    def write(d: Path) -> None:
        atomic_write_bytes(d / WEIGHTS, st_save(sd, metadata={"encoder": encoder,
                                                              "text_dim": str(net.text_dim)}))
        if include_items:
            items = {"text": net.text.detach().cpu().contiguous()}
            if net.pop_bucket is not None:  # the items' popularity buckets travel with them
                items["pop_bucket"] = net.pop_bucket.detach().cpu().contiguous()
            if net.cfg.text_skip and net.cfg.skip_transform != "none":  # the path's fitted map
                for k, v in zip(("skip_mean", "skip_proj"), net.text_transform_fit(), strict=True):
                    if v is not None:
                        items[k] = torch.from_numpy(np.ascontiguousarray(v))
            atomic_write_bytes(d / ITEM_TEXT, st_save(items))

    n_id = None if net.item_id is None else net.item_id.num_embeddings - 1
    if net.repeat_fit is not None:  # the repeat/explore gate travels in the manifest
        manifest_fields = {**manifest_fields, "repeat_gate": dict(net.repeat_fit)}
    return save_model_folder(path, write, kind=MODEL_KIND, model="transfer", encoder=encoder,
                             text_dim=net.text_dim, dims=net.cfg.arch(), mode=str(net.cfg.mode),
                             n_id_items=n_id, n_items=net.n_items if include_items else None,
                             config=to_dict(net.cfg), weights_dtype="float16" if half else "float32",
                             **manifest_fields)


def read_manifest(path: str | Path) -> dict[str, Any]:
    """The verified manifest of a transfer checkpoint (models.artifact.read_model_folder)."""
    from shiftrec.models.artifact import read_model_folder

    p, man = read_model_folder(path, None, kind=MODEL_KIND)
    if not (p / WEIGHTS).exists():
        raise ArtifactError(f"not a transfer checkpoint ({WEIGHTS} missing)", path=p)
    return man


def check_compatible(man: dict[str, Any], encoder: str | None, text_dim: int | None,
                     path: str | Path | None = None) -> None:
    """Fail with one line naming both sides when the item features do not match the checkpoint."""
    ce, cd = man.get("encoder"), int(man.get("text_dim", -1))
    if (encoder is not None and encoder != ce) or (text_dim is not None and int(text_dim) != cd):
        have = f"'{encoder}'" if encoder is not None else "unnamed features"
        raise ArtifactError(
            f"checkpoint was trained with encoder '{ce}' ({cd}-d) but the item features come from "
            f"{have} ({text_dim if text_dim is not None else '?'}-d); re-encode the items with "
            f"'{ce}' or pretrain with {have}", path=path)


def load_checkpoint(path: str | Path, text: np.ndarray | None = None, *, encoder: str | None = None,
                    overrides: dict[str, Any] | None = None, strict: bool = False
                    ) -> tuple[Any, dict[str, Any]]:
    """Load a TransferNet. `text` (with its `encoder` name) replaces the stored item table.

    Architecture fields come from the checkpoint; `overrides` may change non-shape settings such
    as dropout, temperature, objective or mode (switching to transductive adds a fresh ID table).
    `strict` (a saved Recommender, reloaded as it was): every stored tensor must be used and
    every model tensor stored, and the stored item table must have the manifest's item count.
    """
    from safetensors.torch import load_file

    p = Path(path)
    man = read_manifest(p)
    buckets = None
    skip_fit = None  # the text path's fitted transform, stored with the item table it was fitted on
    if text is None:
        if not (p / ITEM_TEXT).exists():
            raise ArtifactError("checkpoint carries no item table: pass item text features", path=p)
        items = load_file(str(p / ITEM_TEXT))
        text = items["text"].numpy()
        buckets = items["pop_bucket"].numpy() if "pop_bucket" in items else None
        skip_fit = ((items["skip_mean"].numpy(), items["skip_proj"].numpy() if "skip_proj" in items else None)
                    if "skip_mean" in items else None)
        encoder = encoder or man.get("encoder")
    check_compatible(man, encoder, int(np.asarray(text).shape[1]), p)
    cfg = from_dict(TransferConfig, man["config"], where=str(p / MANIFEST))
    stored_skip = cfg.text_skip
    if overrides:
        bad = set(overrides) & set(cfg.arch())
        changed = {k for k in bad if overrides[k] != getattr(cfg, k)}
        if changed:
            raise ConfigError(f"cannot change architecture field(s) {sorted(changed)} of a checkpoint",
                              path=p)
        from shiftrec.config import overlay

        cfg = overlay(cfg, overrides)
    sd = load_file(str(p / WEIGHTS))
    sd = {k: v.float() if v.is_floating_point() else v for k, v in sd.items()}
    stored_ids = sd.get("item_id.weight")
    net = build_net(cfg, np.asarray(text, dtype=np.float32),
                    None if stored_ids is None else stored_ids.shape[0] - 1)
    if cfg.mode == Mode.TRANSDUCTIVE and stored_ids is not None and \
            stored_ids.shape[0] != net.text.shape[0]:
        raise ArtifactError(f"checkpoint's item-ID table has {stored_ids.shape[0] - 1} items but the "
                            f"item table has {net.text.shape[0] - 1}", path=p)
    if strict and man.get("n_items") is not None and int(man["n_items"]) != net.n_items:
        raise ArtifactError(f"manifest says {man['n_items']} items but {ITEM_TEXT} holds "
                            f"{net.n_items}", path=p)
    if stored_ids is not None and cfg.mode == Mode.INDUCTIVE and not strict:
        sd.pop("item_id.weight")
    skip_keys = {"skip_log_weight", "skip_decay_logit"}
    if not cfg.text_skip and not strict:  # fine-tuned without the text path: drop a stored one
        sd = {k: v for k, v in sd.items() if k not in skip_keys}
    try:
        missing, unexpected = net.load_state_dict(sd, strict=False)
    except RuntimeError as e:  # shape mismatch between the manifest's config and the weights
        raise ArtifactError(f"checkpoint weights do not match its manifest: "
                            f"{' '.join(str(e).split())[:300]}", path=p) from None
    allowed_missing = {"item_id.weight"} if cfg.mode == Mode.TRANSDUCTIVE and not strict else set()
    if cfg.text_skip and not stored_skip and not strict:  # turned on here: a fresh path
        allowed_missing |= skip_keys
    if set(missing) - allowed_missing or unexpected:
        raise ArtifactError(f"checkpoint weights do not match the model: missing "
                            f"{sorted(set(missing) - allowed_missing)}, unexpected {sorted(unexpected)}",
                            path=p)
    if skip_fit is not None and cfg.text_skip and cfg.skip_transform != "none":
        from shiftrec.text.transform import fitted_transform_fits

        mean, proj = skip_fit
        if not fitted_transform_fits(cfg.skip_transform, mean, proj, net.text_dim):
            raise ArtifactError(f"the text path's stored transform does not fit a '{cfg.skip_transform}' "
                                f"map of dim {net.text_dim}", path=p)
        net.skip_fit = (mean.astype(np.float32), None if proj is None else proj.astype(np.float32))
    net.repeat_fit = stored_gate(man.get("repeat_gate"), p)
    if net.pop_bias is not None and buckets is not None:
        try:
            net.set_pop_buckets(buckets)
        except InputError as e:
            raise ArtifactError(f"stored popularity buckets do not fit the item table: {e.message}",
                                path=p) from None
    elif net.pop_bias is not None and strict:
        raise ArtifactError(f"model has the popularity feature but {ITEM_TEXT} stores no buckets",
                            path=p)
    return net, man


def train_item_counts(split: SeqSplit) -> np.ndarray:
    """Training interactions per item row of the split (row 0 = padding): what the popularity
    feature (TransferConfig.pop_buckets) buckets."""
    return np.bincount(split.train.items, minlength=split.n_items + 1)[:split.n_items + 1]


# ---------------------------------------------------------------------------------------------
# Recommender Protocol wrapper
# ---------------------------------------------------------------------------------------------

#: registry name of each mode (models.registry has one entry per mode)
MODEL_NAMES: dict[Mode, str] = {Mode.INDUCTIVE: "transfer", Mode.TRANSDUCTIVE: "transfer-transductive"}

#: FinetuneConfig fields that TransferRec.fit does not use (model settings go at the top level)
_UNUSED_TRAIN_KEYS = ("mode", "freeze", "model", "dropout", "attn_dropout", "adaptor_dropout",
                      "temperature", "text_skip", "text_path", "stride")

NEEDS_TEXT = ("the transfer model needs item text embeddings aligned with the split: encode the "
              "items with `shiftrec encode DATASET --split SPLIT -o EMB` and pass that folder as "
              "item_text (`shiftrec train --item-text EMB`), or use `shiftrec finetune`")


class TransferRec:
    """The Protocol face of TransferNet for one item index (a SeqSplit.item_map).

    `item_text` is the frozen text feature table of that index ((n_items + 1, d), row 0 padding),
    produced by shiftrec.text for `encoder`; or the folder of saved ItemEmbeddings
    (`shiftrec encode`), aligned with the split's item index by fit(). fit() trains with the
    shared trainer (full CE over all items); when a net is already present (loaded from a
    checkpoint) fit() continues training it, otherwise it builds a fresh one (seeded).

    `name` is the registry name of the mode: "transfer" (inductive) or "transfer-transductive".
    """

    name = MODEL_NAMES[Mode.INDUCTIVE]

    def __init__(self, item_text: np.ndarray | str | Path | None = None, encoder: str | None = None,
                 cfg: TransferConfig | None = None, train_cfg: Any = None, net: Any = None,
                 manifest: dict[str, Any] | None = None, *, checkpoint_dir: str | Path | None = None,
                 resume: bool = False, progress: Any = None, repeat_gate: bool = False) -> None:
        self.cfg = cfg or TransferConfig()
        # fit() counts the repeat/explore gate (models.repeat) on the split's training sequences
        self.repeat_gate = bool(repeat_gate or (net is not None and net.repeat_fit is not None))
        self.name = MODEL_NAMES[Mode(self.cfg.mode)]
        self.train_cfg = train_cfg
        self.text_source: Path | None = None
        self.item_text: np.ndarray | None = None
        if isinstance(item_text, str | Path):
            self.text_source = Path(item_text)
        elif item_text is not None:
            self.item_text = check_text_table(item_text)
        self.encoder = encoder
        self.net = net
        self.manifest = manifest or {}
        self.history: list[dict[str, Any]] = []
        self.checkpoint_dir = checkpoint_dir
        self.resume = resume
        self.progress = progress

    @property
    def config(self) -> TransferConfig:
        return self.cfg

    @property
    def n_items(self) -> int | None:
        return None if self.net is None else int(self.net.n_items)

    @property
    def item_keys(self) -> str | None:
        """Fingerprint of the item map it was trained on (its item table and, transductive, its
        ID embeddings belong to that map; set_item_text on the net moves it to another)."""
        return self.manifest.get("item_keys_hash")

    @classmethod
    def from_options(cls, mode: Mode | str, /, *, item_text: np.ndarray | str | Path | None = None,
                     encoder: str | None = None, train: Any = None, **options: Any) -> TransferRec:
        """The registry factory: `options` override TransferConfig fields (validated), `train`
        (a mapping in the one training dialect: epochs, lr, batch_size, patience, seed,
        threads, ...; see train.trainer.overlay_train) sets the training run. checkpoint_dir, resume and progress go to the trainer."""
        from shiftrec.models.torch_base import apply_overrides

        mode = Mode(mode)
        where = MODEL_NAMES[mode]
        if "mode" in options:
            raise ConfigError(f"{where}: the mode is chosen by the model name "
                              f"({', '.join(f'{n} = {m}' for m, n in MODEL_NAMES.items())}), "
                              "not by a 'mode' option")
        runtime = {k: options.pop(k) for k in ("checkpoint_dir", "resume", "progress", "repeat_gate")
                   if k in options}
        if not isinstance(runtime.get("repeat_gate", False), bool):
            raise ConfigError(f"{where}.repeat_gate: expected true or false, got {runtime['repeat_gate']!r}")
        cfg = apply_overrides(TransferConfig(mode=mode), options, where)
        return cls(item_text, encoder, cfg, _train_config(train, where), **runtime)

    def _text_for(self, split: SeqSplit) -> np.ndarray:
        source = self.text_source if self.text_source is not None else self.item_text
        if source is None:
            raise ConfigError(NEEDS_TEXT)
        text, self.encoder = aligned_item_text(source, split, self.encoder)
        return text

    def fit(self, split: SeqSplit) -> TransferRec:
        from shiftrec.models.transfer_fit import item_keys_hash, train_on_split

        text = self._text_for(split)
        if split.n_items + 1 != text.shape[0]:
            raise InputError(f"item text table has {text.shape[0] - 1} items but the split "
                             f"has {split.n_items}")
        self.item_text = text
        train_cfg = _train_config(self.train_cfg, self.name)
        if self.net is None:
            from shiftrec.train.trainer import seed_everything

            seed_everything(train_cfg.seed)
            self.net = build_net(self.cfg, text)
        else:  # continue training a loaded net, on this split's item table
            self.net.set_item_text(text, reset_ids=False)
        self.net.set_item_popularity(train_item_counts(split))
        # before training: early stopping ranks as the model will
        self.net.repeat_fit = repeat_share(split.train, self.cfg.max_len) if self.repeat_gate else None
        self.net, self.history = train_on_split(self.net, split, train_cfg,
                                                checkpoint_dir=self.checkpoint_dir,
                                                resume=self.resume, progress=self.progress)
        self.manifest = {**self.manifest, "stage": "fit", "train_config": to_dict(train_cfg),
                         "data_fingerprints": {split.name: split.meta.get("fingerprint")},
                         "data_fingerprint": split.meta.get("fingerprint"),
                         "item_keys_hash": item_keys_hash(split)}
        return self

    def _fitted(self, what: str) -> Any:
        if self.net is None:
            raise ArtifactError(f"{self.name} model is not fitted{what}")
        return self.net

    def _run(self, histories: list[np.ndarray], fn: Any = None) -> np.ndarray:
        """float32 rows of the net for each history (its scores, or `fn(seq, times)`), through
        train.trainer.score_module as SASRec does: eval mode, no grad, the scoring thread count,
        256 histories at a time, shortest first."""
        from shiftrec.train.trainer import score_module

        return score_module(self._fitted(""), histories, None, self.cfg.max_len,
                            threads=getattr(self.train_cfg, "threads", 0) or 0, fn=fn)

    def score(self, histories: list[np.ndarray], times: list[np.ndarray] | None = None) -> np.ndarray:
        return self._run(histories)

    def item_vectors(self, ids: np.ndarray | None = None) -> np.ndarray:
        """(n_items + 1, hidden) unit item vectors (row 0 padding), or those of `ids`:
        score(h)[:, i] == query_vectors(h) @ item_vectors()[i] (cosine / temperature, up to
        float rounding; with the text path the raw unit text vectors are appended, width
        hidden + text dim)."""
        import torch

        net = self._fitted("")
        net.eval()
        sel = None if ids is None else torch.as_tensor(np.asarray(ids, np.int64),
                                                       device=net.text.device)
        with torch.no_grad():
            v = net.item_vectors(sel)
        return v.float().cpu().numpy()

    def query_vectors(self, histories: list[np.ndarray],
                      times: list[np.ndarray] | None = None) -> np.ndarray:
        """(batch, hidden) unit user vectors / temperature (see item_vectors; with the text path
        skip_weight * the history's unit text profile appended); only the history items are
        adapted, not the whole table; run like score."""
        net = self._fitted("")
        return self._run(histories, lambda seq, _t: net.query_vectors(seq))

    def extend_items(self, vectors: np.ndarray) -> None:
        """Append items, given their text vectors (the run's encoder), to the item table: the
        inductive model scores them at once (a transductive one has no ID for them)."""
        net = self._fitted("")
        if Mode(self.cfg.mode) != Mode.INDUCTIVE:
            raise ConfigError("the transductive model has no item-ID embedding for new items: "
                              "retrain, or serve the inductive model")
        table = check_text_table(np.concatenate([self._fitted_text(), np.asarray(vectors, np.float32)]))
        net.set_item_text(table, reset_ids=False)
        self.item_text = table

    def _fitted_text(self) -> np.ndarray:
        if self.item_text is None:
            raise ArtifactError(f"{self.name} model has no item table")
        return self.item_text

    def save(self, path: str | Path) -> None:
        net = self._fitted(": nothing to save")
        save_checkpoint(net, path, encoder=self.encoder or "unnamed", include_items=True,
                        **{k: v for k, v in self.manifest.items()
                           if k not in ("kind", "created", "versions", "model", "encoder", "text_dim",
                                        "dims", "mode", "n_id_items", "n_items", "config",
                                        "weights_dtype", "repeat_gate")})

    @classmethod
    def load(cls, path: str | Path) -> TransferRec:
        """Strict load of a saved model folder (weights, item table and manifest must agree)."""
        net, man = load_checkpoint(path, strict=True)
        net.eval()
        return cls(net.text.cpu().numpy(), man["encoder"], net.cfg, net=net, manifest=man)


def _train_config(train: Any, where: str) -> Any:
    """The TrainConfig of a fit: None (FinetuneConfig's defaults), a TrainConfig, a
    FinetuneConfig, or a mapping in the one training dialect (train.trainer.overlay_train)."""
    from shiftrec.models.transfer_fit import FinetuneConfig, default_fit_train
    from shiftrec.train.trainer import TrainConfig, overlay_train

    if train is None:
        return default_fit_train()
    if isinstance(train, TrainConfig):
        return train
    if isinstance(train, FinetuneConfig):
        return train.train_config(TransferConfig().max_len)
    if not isinstance(train, dict):
        raise ConfigError(f"{where}.train: expected a mapping of training options")
    unused = sorted(set(train) & set(_UNUSED_TRAIN_KEYS))
    if unused:
        raise ConfigError(f"{where}.train: {unused} are not training options here; set model "
                          "options at the top level")
    return overlay_train(default_fit_train(), train, where=f"{where}.train")
