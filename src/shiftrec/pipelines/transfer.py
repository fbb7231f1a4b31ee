"""Transfer learning with the text-based model: pretrain on several source domains, fine-tune on a
target, evaluate zero-shot on an unseen domain. Every stage trains through the one shared trainer
(shiftrec.train.trainer.train); the objectives live in TransferNet.training_loss.

- A `Source` is one domain: its SeqSplit and the frozen text features of its items.
- `pretrain` merges the sources into one namespaced item table (offsets per domain), draws causal
  all-prefix batches that mix domains (or keep one domain per batch: PretrainConfig.same_domain),
  trains with in-batch contrastive objectives and writes a
  checkpoint (safetensors + manifest with encoder, dims, data fingerprints, config, provenance).
- `finetune` loads a checkpoint (or starts from scratch) on a target split with full cross-entropy
  over all target items; what is frozen is `FinetuneConfig.freeze`.
- `zero_shot` scores an unseen domain with a pretrained model, only swapping the item table.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from shiftrec.config import to_dict
from shiftrec.data.splits import EvalSet, Seqs, SeqSplit
from shiftrec.errors import ArtifactError, ConfigError, InputError
from shiftrec.models.repeat import repeat_share
from shiftrec.models.transfer import (
    Freeze,
    Mode,
    Objective,
    TransferConfig,
    build_net,
    check_compatible,
    freeze_prefixes,
    load_checkpoint,
    read_manifest,
    save_checkpoint,
    train_item_counts,
)
from shiftrec.models.transfer_fit import (
    FinetuneConfig,
    FitMode,
    causal_batches,
    check_split,
    item_keys_hash,
)
from shiftrec.text.transform import TEXT_TRANSFORMS, TextTransform

# --------------------------------------------------------------------------------------- configs


@dataclass(frozen=True)
class PretrainConfig:
    """Pretraining on source domains (contrastive by default). `model` fixes the architecture."""

    # the recipe measured best on held-out domains (README, "Pretraining that learns its sources"):
    # light dropout for a large pool seen about once, 4,096 uniform in-domain negatives per batch
    model: TransferConfig = TransferConfig(objective=Objective.CONTRASTIVE, dropout=0.1, attn_dropout=0.1,
                                           uniform_negatives=4096)
    epochs: int = 5
    lr: float = 1e-3
    weight_decay: float = 0.0
    batch_size: int = 1024  # supervised targets per batch (in-batch negatives come from these)
    patience: int = 2
    steps_per_epoch: int = 0  # cap (0 = whole data); chunks a long pretraining into short epochs
    valid_users: int = 500  # per source domain, for early stopping (in-domain full ranking)
    stride: int = 10
    seed: int = 0
    threads: int = 0  # 0 = auto (train.threads); an explicit count is used as given
    half_weights: bool = False  # store float16 weights (for a small shipped asset)
    # every batch from one source domain (its in-batch negatives then share the positive's
    # domain); False mixes the domains in every batch
    same_domain: bool = True
    # the repeat/explore gate (models.repeat): the share of next items found in the
    # history, counted on the sources' training sequences, goes into the checkpoint
    repeat_gate: bool = False


# --------------------------------------------------------------------------------------- sources


@dataclass
class Source:
    """One domain: its split and the text features of its items ((n_items + 1, d), row 0 zeros)."""

    name: str
    split: SeqSplit
    text: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.text.shape[0] != self.split.n_items + 1:
            raise InputError(f"source '{self.name}': text table has {self.text.shape[0] - 1} items "
                             f"but the split has {self.split.n_items}")


def _offset_evalset(es: EvalSet, off: int, rows: np.ndarray) -> EvalSet:
    h = es.history
    seqs = [h[i] + off for i in rows]
    times = [h.times_of(i) for i in rows]
    return EvalSet(es.users[rows], Seqs.from_lists(seqs, times), es.target[rows] + off,
                   es.target_time[rows])


@dataclass
class Merged:
    """Several domains in one namespaced item table: domain d owns rows offsets[d]+1..+n_d."""

    names: list[str]
    offsets: np.ndarray
    sizes: np.ndarray
    text: np.ndarray
    train: Seqs
    valid: dict[str, EvalSet]


def merge_sources(sources: list[Source], valid_users: int = 500, seed: int = 0) -> Merged:
    if not sources:
        raise InputError("pretraining needs at least one source domain")
    names = [s.name for s in sources]
    if len(set(names)) != len(names):
        raise InputError(f"source names must be distinct; got {names}")
    dims = {s.text.shape[1] for s in sources}
    if len(dims) != 1:
        raise InputError(f"sources have text features of different sizes: {sorted(dims)}")
    sizes = np.array([s.split.n_items for s in sources], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
    text = np.concatenate([np.zeros((1, sources[0].text.shape[1]), np.float32)]
                          + [s.text[1:].astype(np.float32) for s in sources])
    indptr, items, times = [np.zeros(1, np.int64)], [], []
    total = 0
    for s, off in zip(sources, offsets, strict=True):
        tr = s.split.train
        indptr.append(tr.indptr[1:] + total)
        total += int(tr.indptr[-1])
        items.append(tr.items + off)
        times.append(tr.times)
    train = Seqs(np.concatenate(indptr), np.concatenate(items), np.concatenate(times))
    rng = np.random.default_rng(seed)
    valid = {}
    for s, off in zip(sources, offsets, strict=True):
        n = len(s.split.valid)
        if n == 0:
            continue
        rows = np.sort(rng.choice(n, size=min(n, valid_users), replace=False)) if valid_users else \
            np.arange(n)
        valid[s.name] = _offset_evalset(s.split.valid, int(off), rows)
    return Merged(names, offsets, sizes, text, train, valid)


def domain_validator(merged: Merged, max_len: int = 50, batch_size: int = 512
                     ) -> Callable[[Any], dict[str, float]]:
    """Validation for pretraining: full ranking within each source domain's own items."""
    from shiftrec.evaluate.metrics import all_metrics, ndcg_at_k

    def run(net: Any) -> dict[str, float]:
        import torch

        from shiftrec.train.batches import pad_left

        all_ranks = []
        out: dict[str, float] = {}
        dev = net.text.device
        for name, es in merged.valid.items():
            d = merged.names.index(name)
            off, n = int(merged.offsets[d]), int(merged.sizes[d])
            ids = torch.arange(off + 1, off + n + 1, device=dev)
            items = net.item_embed(ids)
            ranks = []
            for a in range(0, len(es), batch_size):
                b = min(a + batch_size, len(es))
                seq = torch.from_numpy(pad_left([es.history[i] for i in range(a, b)], max_len)).to(dev)
                s = net.logits(net.user_vectors(seq), items).float().cpu().numpy()
                t = es.target[a:b] - off - 1
                tv = s[np.arange(b - a), t][:, None]
                ranks.append(((s > tv).sum(1) + (s == tv).sum(1)).astype(np.int64))
            r = np.concatenate(ranks)
            out[f"ndcg@10/{name}"] = ndcg_at_k(r, 10)
            all_ranks.append(r)
        out |= all_metrics(np.concatenate(all_ranks), (10, 50))
        return out

    return run


# --------------------------------------------------------------------------------------- pretrain


def _provenance(sources_meta: list[dict[str, Any]], seconds: float, result: Any, seed: int
                ) -> dict[str, Any]:
    import torch

    return {"data": sources_meta, "seed": seed, "wall_seconds": round(seconds, 1),
            "epochs_run": [p.epochs_run for p in result.phases],
            "best_epoch": [p.best_epoch for p in result.phases],
            "best_valid": [p.best_metric for p in result.phases],
            "hardware": {"machine": platform.machine(), "processor": platform.processor() or None,
                         "torch_threads": result.threads or torch.get_num_threads(),
                         "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None},
            "history": result.history}


def _source_meta(s: Source) -> dict[str, Any]:
    tr = s.split.train
    return {"name": s.name, "users": len(s.split.user_ids), "items": s.split.n_items,
            "train_events": int(tr.indptr[-1]),
            "fingerprint": s.split.meta.get("fingerprint"), **s.meta}


def pretrain(sources: list[Source], encoder: str, cfg: PretrainConfig = PretrainConfig(),
             out_dir: str | Path | None = None, *, resume: bool = False,
             progress: Callable[[Any], None] | None = None) -> tuple[Any, dict[str, Any]]:
    """Pretrain on `sources` (mixed in every batch, or one domain per batch with
    cfg.same_domain). Writes a checkpoint to out_dir when given;
    the trainer's resumable state lives in out_dir/trainer. Returns (net, manifest fields)."""
    import torch

    from shiftrec.train.trainer import Phase, TrainConfig, train

    for s in sources:
        check_split(s.split, f"source '{s.name}'")
    merged = merge_sources(sources, cfg.valid_users, cfg.seed)
    torch.manual_seed(cfg.seed)
    net = build_net(cfg.model, merged.text)
    net.objective = Objective(cfg.model.objective)
    if cfg.model.logq:
        net.set_item_frequency(np.bincount(merged.train.items, minlength=len(merged.text)))
    net.set_domains(merged.sizes)
    net.set_item_popularity(np.bincount(merged.train.items, minlength=len(merged.text)), merged.sizes)
    if cfg.repeat_gate:
        net.repeat_fit = repeat_share([s.split.train for s in sources], cfg.model.max_len)
    groups = np.repeat(np.arange(len(sources)), [len(s.split.train) for s in sources]) \
        if cfg.same_domain else None
    batches = causal_batches(merged.train, cfg.model.max_len, cfg.stride, groups)
    phase = Phase(name="pretrain", epochs=cfg.epochs, lr=cfg.lr, weight_decay=cfg.weight_decay,
                  batch_size=cfg.batch_size, patience=cfg.patience,
                  steps_per_epoch=cfg.steps_per_epoch)
    tcfg = TrainConfig(phases=(phase,), seed=cfg.seed, device="auto", max_len=cfg.model.max_len,
                       threads=cfg.threads)
    t0 = time.perf_counter()
    ckpt = Path(out_dir) / "trainer" if out_dir is not None else None
    result = train(net, tcfg, batches, domain_validator(merged, cfg.model.max_len),
                   checkpoint_dir=ckpt, resume=resume, progress=progress)
    seconds = result.seconds if resume else time.perf_counter() - t0
    fields = {"stage": "pretrain", "pretrain_config": to_dict(cfg),
              "data_fingerprints": {s.name: s.split.meta.get("fingerprint") for s in sources},
              "provenance": _provenance([_source_meta(s) for s in sources], seconds, result,
                                        cfg.seed)}
    if out_dir is not None:
        save_checkpoint(net, out_dir, encoder=encoder, half=cfg.half_weights, **fields)
    return net, fields


# --------------------------------------------------------------------------------------- finetune


def _overrides(cfg: FinetuneConfig) -> dict[str, Any]:
    o: dict[str, Any] = {"mode": Mode(cfg.mode), "objective": Objective.FULL_CE}
    for k in ("dropout", "attn_dropout", "adaptor_dropout", "temperature", "text_skip"):
        v = getattr(cfg, k)
        if v is not None:
            o[k] = v
    return o


def finetune(checkpoint: str | Path | None, split: SeqSplit, text: np.ndarray, encoder: str,
             cfg: FinetuneConfig = FinetuneConfig(), out_dir: str | Path | None = None, *,
             resume: bool = False, progress: Callable[[Any], None] | None = None,
             data_name: str | None = None,
             counted_gate: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
    """Fine-tune `checkpoint` (None = train from scratch) on the target split with full CE.

    Returns (net, manifest fields incl. provenance and the training history). Writes a
    checkpoint that carries the target item table to out_dir when given. Mode `auto` fine-tunes
    both modes and keeps the better on validation (finetune_either_mode). `counted_gate` is the
    repeat gate already counted on this split (with cfg.repeat_gate; mode auto counts it once).
    """
    import torch

    from shiftrec.train.trainer import train

    if FitMode(cfg.mode) == FitMode.AUTO:
        return finetune_either_mode(checkpoint, split, text, encoder, cfg, out_dir, resume=resume,
                                    progress=progress, data_name=data_name)
    check_split(split)
    text = np.asarray(text, dtype=np.float32)
    if text.shape[0] != split.n_items + 1:
        raise InputError(f"text table has {text.shape[0] - 1} items but split '{split.name}' has "
                         f"{split.n_items}")
    torch.manual_seed(cfg.seed)
    base: dict[str, Any] = {}
    if checkpoint is not None:
        net, man = load_checkpoint(checkpoint, text, encoder=encoder, overrides=_overrides(cfg))
        base = {"pretrained_from": str(checkpoint),
                "pretrained_provenance": {k: man.get(k) for k in ("stage", "data_fingerprints",
                                                                   "created")}}
    else:
        mc = replace(cfg.model, **_overrides(cfg))
        net = build_net(mc, text)
    net.set_item_popularity(train_item_counts(split))
    # the gate counts the target's own repeats (a checkpoint's gate, counted on its sources, is
    # not kept: the target's training sequences say how often its shoppers come back)
    if not cfg.repeat_gate:
        net.repeat_fit = None
    elif counted_gate is not None and counted_gate.get("max_len") == net.cfg.max_len:
        net.repeat_fit = counted_gate
    else:
        net.repeat_fit = repeat_share(split.train, net.cfg.max_len)
    if cfg.freeze != Freeze.NONE and checkpoint is None:
        raise ConfigError(f"freeze '{cfg.freeze}' needs a pretrained checkpoint; "
                          "use freeze 'none' to train from scratch")
    # the pretrained weights, for interpolate (tensors new to this net, such as item IDs, stay
    # out); from scratch there is nothing to mix with
    start = pretrained_state(net, checkpoint) if cfg.interpolate and checkpoint is not None else None
    if cfg.text_path and net.cfg.text_skip:  # before training, not after it
        raise ConfigError("text_path chooses a text path after training, but this net already has "
                          "one (text_skip on, or a checkpoint saved with a text path): use one of them")
    net.objective = Objective.FULL_CE
    batches = causal_batches(split.train, net.cfg.max_len, cfg.stride)
    tcfg = cfg.train_config(net.cfg.max_len, "finetune", freeze_prefixes(cfg.freeze),
                            pretrained=checkpoint is not None)
    t0 = time.perf_counter()
    ckpt = Path(out_dir) / "trainer" if out_dir is not None else None
    result = train(net, tcfg, batches, split.valid, checkpoint_dir=ckpt, resume=resume,
                   progress=progress)
    seconds = result.seconds if resume else time.perf_counter() - t0
    mix = interpolate_weights(net, start, split, threads=cfg.threads) if start is not None else None
    text_path = select_text_path(net, split, threads=cfg.threads) if cfg.text_path else None
    meta = {"name": data_name or split.name, "users": len(split.user_ids), "items": split.n_items,
            "fingerprint": split.meta.get("fingerprint")}
    fields = {"stage": "finetune" if checkpoint is not None else "scratch",
              # the learning rate actually used (None in the config picks one by the start)
              "finetune_config": {**to_dict(cfg), "lr": tcfg.phases[0].lr,
                                  "interpolate": start is not None},
              **base,
              "data_fingerprints": {meta["name"]: meta["fingerprint"]},
              "data_fingerprint": meta["fingerprint"],
              "item_keys_hash": item_keys_hash(split),
              "provenance": _provenance([meta], seconds, result, cfg.seed)}
    if mix is not None:
        fields["interpolation"] = mix
    if text_path is not None:
        fields["text_path"] = text_path
    if out_dir is not None:
        save_checkpoint(net, out_dir, encoder=encoder, include_items=True, **fields)
    return net, fields


INTERPOLATE_ALPHAS = tuple(i / 10 for i in range(11))  # share of the fine-tuned weights (0: pretrained)


def pretrained_state(net: Any, checkpoint: str | Path) -> dict[str, Any]:
    """A copy of the net's floating-point tensors that `checkpoint` stored (as loaded: the
    tensors it adds, such as a transductive item-ID table, are left out)."""
    from safetensors import safe_open

    from shiftrec.models.transfer import WEIGHTS

    with safe_open(str(Path(checkpoint) / WEIGHTS), "pt") as f:
        stored = set(f.keys())
    return {k: v.detach().clone() for k, v in net.state_dict().items()
            if k in stored and v.is_floating_point()}


def interpolate_weights(net: Any, start: dict[str, Any], split: SeqSplit,
                        alphas: tuple[float, ...] = INTERPOLATE_ALPHAS, threads: int = 0
                        ) -> dict[str, Any]:
    """WiSE-FT (Wortsman et al., CVPR 2022): set the net's weights to alpha * fine-tuned +
    (1 - alpha) * pretrained (`start`, from pretrained_state), alpha the best of `alphas` on the
    target's validation NDCG@10 (a tie keeps the larger alpha; alpha 1 is the fine-tuned net
    unchanged). Tensors outside `start` keep their fine-tuned values, so alpha 0 is the pretrained
    net with the fine-tuned item-ID table when fine-tuning added one. Returns the choice."""
    import torch

    if not alphas or any(not 0.0 <= a <= 1.0 for a in alphas):
        raise ConfigError(f"interpolation weights must lie in [0, 1], got {list(alphas)}")
    tuned = {k: v.detach().clone() for k, v in net.state_dict().items()}

    def load(a: float) -> None:
        with torch.no_grad():
            # the net may have moved to the GPU for training after `start` was copied
            net.load_state_dict({k: (a * v + (1.0 - a) * start[k].to(device=v.device, dtype=v.dtype))
                                 if k in start else v for k, v in tuned.items()})

    by: dict[float, float] = {}
    for a in alphas:
        load(a)
        by[a] = float(evaluate_net(net, split, "valid", threads=threads)[0]["ndcg@10"])
    best = max(by, key=lambda a: (by[a], a))
    load(best)
    return {"method": "WiSE-FT", "alpha": best, "valid_ndcg@10": by[best],
            "valid_by_alpha": {f"{a:g}": v for a, v in by.items()}, "tensors": len(start)}


CANDIDATES = "candidates"  # finetune_either_mode's working folder inside out_dir


def finetune_either_mode(checkpoint: str | Path | None, split: SeqSplit, text: np.ndarray,
                         encoder: str, cfg: FinetuneConfig, out_dir: str | Path | None = None, *,
                         resume: bool = False, progress: Callable[[Any], None] | None = None,
                         data_name: str | None = None) -> tuple[Any, dict[str, Any]]:
    """Fine-tune inductively and transductively (each resumable in out_dir/candidates/<mode>)
    and keep the model better on the target's validation NDCG@10; a tie keeps the inductive one
    (it also scores items added to the catalogue later). Both validation scores go to the
    manifest under "mode_selection"; writing the chosen model to out_dir replaces the folder,
    candidates included (models.artifact.save_model_folder keeps only trainer/)."""
    modes = (Mode.INDUCTIVE, Mode.TRANSDUCTIVE)
    if resume and (out_dir is None or not any((Path(out_dir) / CANDIDATES / m.value).is_dir()
                                              for m in modes)):
        raise ArtifactError("--resume: there is no interrupted run of mode auto to resume from "
                            f"({CANDIDATES}/ missing); run without --resume to start from scratch",
                            path=out_dir)
    fits: dict[Mode, tuple[Any, dict[str, Any]]] = {}
    for m in modes:
        sub = None if out_dir is None else Path(out_dir) / CANDIDATES / m.value
        if resume and sub is not None and (sub / "manifest.json").exists():  # finished before
            net, man = load_checkpoint(sub, strict=True)
            if (net.repeat_fit is not None) != bool(cfg.repeat_gate):
                raise ConfigError(f"--resume: the finished {m.value} candidate was fine-tuned "
                                  f"{'with' if net.repeat_fit is not None else 'without'} the repeat "
                                  "gate; resume with the same setting, or start again without --resume",
                                  path=sub)
            mixed = bool((man.get("finetune_config") or {}).get("interpolate", False))
            if checkpoint is not None and mixed != bool(cfg.interpolate):
                raise ConfigError(f"--resume: the finished {m.value} candidate was fine-tuned "
                                  f"{'with' if mixed else 'without'} interpolation; resume with the "
                                  "same setting (--interpolate / --no-interpolate), or start again "
                                  "without --resume", path=sub)
            fits[m] = (net, {k: v for k, v in man.items() if k in _FIT_FIELDS})
            continue
        again = resume and sub is not None and (sub / "trainer" / "checkpoint.json").exists()
        counted = next((f[0].repeat_fit for f in fits.values()), None)  # one count for both modes
        fits[m] = finetune(checkpoint, split, text, encoder, replace(cfg, mode=FitMode(m.value)),
                           sub, resume=again, progress=progress, data_name=data_name,
                           counted_gate=counted)
    # the validation NDCG@10 of each model as saved (after its interpolation and text path)
    valid = {m: float(f[1].get("text_path", f[1].get("interpolation", {})).get(
                 "valid_ndcg@10", f[1]["provenance"]["best_valid"][0])) for m, f in fits.items()}
    chosen = max(valid, key=lambda m: (valid[m], m == Mode.INDUCTIVE))
    net, fields = fits[chosen]
    fields = {**fields, "mode_selection": {"chosen": chosen.value, "metric": "valid ndcg@10",
                                           "valid_ndcg@10": {m.value: v for m, v in valid.items()}}}
    if out_dir is not None:
        save_checkpoint(net, out_dir, encoder=encoder, include_items=True, **fields)
    return net, fields


# the manifest fields that finetune() returns (a finished candidate is read back from them)
_FIT_FIELDS = ("stage", "finetune_config", "pretrained_from", "pretrained_provenance",
               "data_fingerprints", "data_fingerprint", "item_keys_hash", "provenance", "text_path",
               "interpolation")


# --------------------------------------------------------------------------------------- evaluate


def evaluate_net(net: Any, split: SeqSplit, which: str = "test", batch_size: int = 512,
                 threads: int = 0, exclude_seen: bool = False) -> tuple[dict[str, float], np.ndarray]:
    """Full-ranking metrics over all items of the split (never sampled). `exclude_seen` ranks
    each user's target among the items outside their history only (what `shiftrec serve`
    recommends by default; see evaluate.ranking.rank_targets)."""
    from shiftrec.evaluate.ranking import evaluate
    from shiftrec.train.trainer import ModuleScorer

    if which not in ("valid", "test"):
        raise ConfigError(f"unknown evaluation set '{which}'; valid evaluation sets: test, valid")
    es = split.test if which == "test" else split.valid
    if len(es) == 0:
        raise InputError(f"split '{split.name}' has no {which} users to evaluate")
    if net.n_items != split.n_items:
        raise InputError(f"model scores {net.n_items} items but split '{split.name}' has "
                         f"{split.n_items}")
    net.eval()
    return evaluate(ModuleScorer(net, net.text.device, net.cfg.max_len, threads=threads), split, which,
                    batch_size=batch_size, max_len=net.cfg.max_len, exclude_history=exclude_seen)


TEXT_PATH_WEIGHTS = (0.0, 1.0, 2.0, 5.0, 10.0, 20.0, 40.0, 80.0, 160.0, 320.0, 640.0)
TEXT_PATH_DECAYS = (0.1, 0.3, 0.5, 0.7, 0.9)
TEXT_PATH_GROWTH = 4  # doublings of the largest weight while it is the best on validation


def select_text_path(net: Any, split: SeqSplit, weights: tuple[float, ...] = TEXT_PATH_WEIGHTS,
                     decays: tuple[float, ...] = TEXT_PATH_DECAYS, batch_size: int = 512,
                     threads: int = 0, exclude_seen: bool = False,
                     max_growth: int = TEXT_PATH_GROWTH,
                     transforms: tuple[TextTransform, ...] = TEXT_TRANSFORMS) -> dict[str, Any]:
    """Add the text-similarity path to a trained net with the weight, decay and catalogue
    transform of the text vectors (shiftrec.text.transform) that rank the validation users best
    (NDCG@10 over all items, or over the items outside each user's history with
    `exclude_seen`, as the evaluation will rank them): scores + w * cos(history text profile,
    item text). Weight 0 (no path) is in the grid, so validation never gets worse; ties go to
    the smaller weight, then the earlier transform and decay. While the largest weight is the
    best, the grid grows by doublings (at most `max_growth`); a choice still at the top is
    flagged (`at_grid_top`). Returns the choice and the validation NDCG@10 of each
    (transform, decay, weight)."""
    from shiftrec.evaluate.metrics import mixed_metric
    from shiftrec.evaluate.ranking import history_cells
    from shiftrec.models.textsim import TextSim
    from shiftrec.train.trainer import ModuleScorer

    es = split.valid
    if len(es) == 0:
        raise InputError(f"split '{split.name}' has no validation users to choose the text path on")
    if net.cfg.text_skip:
        raise ConfigError("the net already has a text path")
    net.eval()
    scorer = ModuleScorer(net, net.text.device, net.cfg.max_len, threads=threads)
    transforms = tuple(TextTransform(t) for t in transforms) or (TextTransform.NONE,)
    raw = net.text.cpu().numpy()
    sims = [TextSim(raw, select_decay=(), select_transform=(), transform=t,  # cosines, as the net's
                    temperature=1.0, max_history=net.cfg.max_len).fit(split) for t in transforms]
    cells = [(ti, di) for ti in range(len(transforms)) for di in range(len(decays))]
    gate, net.repeat_fit = net.repeat_fit, None  # the net's repeat gate goes after the path

    def grid_gain(ws: list[float]) -> np.ndarray:
        gain = np.zeros((len(cells), len(ws)))
        for a in range(0, len(es), batch_size):
            rows = range(a, min(a + batch_size, len(es)))
            hist = [es.history[i][-net.cfg.max_len:] for i in rows]
            base = np.asarray(scorer.score(hist), np.float32)
            tgt = np.asarray(es.target[a:a + len(rows)])
            cells_out = history_cells([es.history[i] for i in rows], tgt) if exclude_seen else None
            post = None
            if gate is not None:  # as score_all then rank_targets: the gate, then the history out
                post = _gate_rows(hist, net.cfg.max_len, float(gate["share"]), cells_out)
            elif cells_out is not None:  # the whole history, as rank_targets; -inf stays -inf
                base[cells_out] = -np.inf
            for ci, (ti, di) in enumerate(cells):
                cos = sims[ti].scores_with_decay(hist, decays[di])
                cos[:, 0] = 0.0  # padding column: base keeps its -inf (0 * -inf would be NaN)
                gain[ci] += mixed_metric(base, cos, ws, tgt, "ndcg@10", post).sum(axis=0)
        return gain / len(es)

    W = sorted(set(float(w) for w in weights) | {0.0})
    try:
        gain = grid_gain(W)
        for _ in range(max_growth):
            if len(W) > 1 and gain[:, -1].max() > gain[:, :-1].max():
                W.append(2.0 * W[-1])  # the top of the grid won: try the next doubling
                gain = np.concatenate([gain, grid_gain(W[-1:])], axis=1)
            else:
                break
    finally:
        net.repeat_fit = gate
    # the best (transform, decay, weight); of a tie the smaller weight, then the earlier cell
    ci, wi = min(np.argwhere(gain == gain.max()).tolist(), key=lambda t: (t[1], t[0]))
    ti, di = cells[ci]
    choice = {"weight": W[wi], "decay": float(decays[di]) if wi else None,
              "transform": transforms[ti].value if wi else None,
              "valid_ndcg@10": float(gain[ci, wi]), "valid_ndcg@10_without": float(gain[0, 0]),
              "exclude_seen": bool(exclude_seen),
              # still the largest weight after max_growth doublings: a larger one might do better
              "at_grid_top": bool(wi > 0 and wi == len(W) - 1),
              "grid": {f"{transforms[t].value}, decay {decays[d]:g}":
                       {f"{w:g}": float(g) for w, g in zip(W, gain[i], strict=True)}
                       for i, (t, d) in enumerate(cells)}}
    if wi:
        net.enable_text_path(W[wi], float(decays[di]), transforms[ti])
        if transforms[ti] != TextTransform.NONE:  # the map the choice was scored with, not refitted
            net.skip_fit = (sims[ti].mean, sims[ti].proj)
    return choice


def _gate_rows(hist: list[np.ndarray], max_len: int, share: float,
               cells_out: tuple[np.ndarray, np.ndarray] | None = None) -> Callable[[np.ndarray], np.ndarray]:
    """The repeat gate (models.repeat.repeat_gate) over numpy score rows of `hist`, then the
    `cells_out` (history items other than the target, with exclude_seen) at -inf, as a gated
    net's scores are ranked by rank_targets."""
    import torch

    from shiftrec.models.repeat import repeat_gate
    from shiftrec.train.batches import pad_left

    seq = torch.as_tensor(pad_left([h[-max_len:] for h in hist], max_len))

    def gated(s: np.ndarray) -> np.ndarray:
        out = repeat_gate(torch.from_numpy(s), seq, share).numpy()
        if cells_out is not None:
            out[cells_out] = -np.inf
        return out

    return gated


def zero_shot_net(checkpoint: str | Path, split: SeqSplit, text: np.ndarray, encoder: str,
                  repeat_gate: bool = False) -> Any:
    """A pretrained net ready to score an unseen domain: only the item table changes (a
    transductive checkpoint drops its ID table and scores from text alone); the target's
    training counts set the popularity feature's buckets, if it has one. Nothing is trained.
    `repeat_gate` keeps the checkpoint's repeat/explore gate (counted on its sources)."""
    man = read_manifest(checkpoint)
    check_compatible(man, encoder, int(np.asarray(text).shape[1]), checkpoint)
    if repeat_gate and man.get("repeat_gate") is None:
        raise ConfigError("this checkpoint carries no repeat gate (it was pretrained without one): "
                          "pretrain with --repeat-gate, or leave --repeat-gate out", path=checkpoint)
    net, _ = load_checkpoint(checkpoint, np.asarray(text, dtype=np.float32), encoder=encoder,
                             overrides={"mode": Mode.INDUCTIVE})
    net.set_item_popularity(train_item_counts(split))  # no training: counts only
    if not repeat_gate:
        net.repeat_fit = None
    return net


def checkpoint_net(checkpoint: str | Path, split: SeqSplit, text: np.ndarray, encoder: str,
                   name: str | None = None) -> Any:
    """A checkpoint as it is, on `split`'s items (`shiftrec evaluate` without --zero-shot): a
    transductive one only on the item map it was trained on; the target's training counts set
    the popularity feature's buckets. A fine-tuned model keeps the repeat gate it was trained
    with; a pretrained one scores without its sources' gate (that is zero_shot_net's
    `repeat_gate`)."""
    man = read_manifest(checkpoint)
    mine, theirs = man.get("item_keys_hash"), item_keys_hash(split)
    if man.get("mode") == Mode.TRANSDUCTIVE and mine not in (None, theirs):
        raise ArtifactError(f"checkpoint's item IDs belong to another item map (item_keys_hash "
                            f"{mine}) than '{name or split.name}' ({theirs}); use --zero-shot to "
                            "score from text only", path=checkpoint)
    net, _ = load_checkpoint(checkpoint, np.asarray(text, dtype=np.float32), encoder=encoder)
    net.set_item_popularity(train_item_counts(split))  # the feature's buckets, if it has one
    if man.get("stage") == "pretrain":
        net.repeat_fit = None
    return net


def zero_shot(checkpoint: str | Path, split: SeqSplit, text: np.ndarray, encoder: str,
              which: str = "test", threads: int = 0, exclude_seen: bool = False,
              repeat_gate: bool = False) -> tuple[dict[str, float], np.ndarray]:
    """Evaluate a pretrained model on an unseen domain (zero_shot_net; nothing trained)."""
    return evaluate_net(zero_shot_net(checkpoint, split, text, encoder, repeat_gate), split, which,
                        threads=threads, exclude_seen=exclude_seen)


def add_repeat_gate(checkpoint: str | Path, sources: list[SeqSplit], out_dir: str | Path) -> dict[str, Any]:
    """Write `checkpoint` to `out_dir` (it may be the same folder) with the repeat/explore gate
    counted on its sources' training sequences; each split's fingerprint must be the one the
    checkpoint records, so the count is of the data it was pretrained on. The weights are copied
    byte for byte. Returns the gate."""
    import shutil

    from shiftrec.models.artifact import save_model_folder

    p = Path(checkpoint)
    man = read_manifest(p)
    prints = man.get("data_fingerprints") or {}
    got = [sp.meta.get("fingerprint") for sp in sources]
    want = list(prints.values())
    if not sources or None in got or sorted(map(str, got)) != sorted(map(str, want)):
        raise InputError(f"the splits' fingerprints {sorted(map(str, got))} are not the sources the "
                         f"checkpoint was pretrained on {sorted(map(str, want))}")
    gate = repeat_share([sp.train for sp in sources], int(man["config"]["max_len"]))
    held = Path(out_dir).parent / f".{Path(out_dir).name}.gate"  # out_dir may be the checkpoint
    if held.exists():
        shutil.rmtree(held)
    # what the rewrite needs: the hashed weights and the unhashed extras (not trainer/ state)
    shutil.copytree(p, held, ignore=shutil.ignore_patterns("trainer"))
    # the pretraining's date is kept (the versions are those of this write)
    keep = {k: v for k, v in man.items() if k not in ("kind", "versions", "files", "model")}

    hashed = set(man.get("files") or {})

    def write(d: Path) -> None:  # the files the manifest hashes (the weights), as they were
        for f in hashed:
            shutil.copy2(held / f, d / f)

    try:
        save_model_folder(out_dir, write, kind=man["kind"], model=man["model"],
                          **{**keep, "repeat_gate": gate})
        for f in held.iterdir():  # and what it does not hash (a shipped checkpoint's README)
            if f.is_file() and f.name not in hashed | {"manifest.json", "_COMPLETE"}:
                shutil.copy2(f, Path(out_dir) / f.name)
    finally:
        shutil.rmtree(held, ignore_errors=True)
    return gate


# --------------------------------------------------------------------------------------- data


def load_dataset(spec: str | Path, root: str | Path | None = None) -> Any:
    """A named dataset of the shared data folder (shiftrec.data.presets) or a prepared folder."""
    from shiftrec.data.clean import clean
    from shiftrec.data.presets import PRESETS, load_preset
    from shiftrec.data.schema import Dataset
    from shiftrec.errors import unknown_name

    p = Path(spec)
    if p.is_dir():
        return Dataset.load(p)
    if str(spec) not in PRESETS:
        err = unknown_name("dataset", str(spec), PRESETS)
        raise ConfigError(f"{err.message} (or the path of a prepared dataset folder)")
    read, ccfg = load_preset(str(spec), root)
    ds, _, _ = clean(read, ccfg, str(spec))
    return ds


def subsample_users(ds: Any, max_users: int, seed: int = 0, whole_catalogue: bool = False) -> Any:
    """Keep a seeded random subset of at most max_users users (all their events), and the
    catalogue items they touched, or every catalogue item (`whole_catalogue`: a small shop that
    lists the whole range, most of it unsold to these users; full ranking then covers it all)."""
    import polars as pl

    from shiftrec.data.schema import Dataset

    if not max_users:
        return ds
    users = ds.events["user_id"].unique().sort()
    if len(users) <= max_users:
        return ds
    keep = users.sample(n=max_users, seed=seed, shuffle=True)
    ev = ds.events.filter(pl.col("user_id").is_in(keep.implode()))
    items = ds.items if whole_catalogue else ds.items.join(
        ev.select("domain", "item_id").unique(), on=["domain", "item_id"], how="semi")
    return Dataset(ev, items, name=ds.name, meta={**ds.meta, "subsample": {
        "max_users": max_users, "seed": seed, "whole_catalogue": whole_catalogue}})


def events_before(ds: Any, cutoff_unix: int) -> Any:
    """Keep only events strictly before `cutoff_unix` (temporal transfer without overlap)."""
    from datetime import UTC, datetime

    import polars as pl

    from shiftrec.data.schema import Dataset

    t = datetime.fromtimestamp(int(cutoff_unix), UTC)
    ev = ds.events.filter(pl.col("timestamp") < t)
    if ev.height == 0:
        raise InputError(f"dataset '{ds.name}' has no events before {t.isoformat()}")
    items = ds.items.join(ev.select("domain", "item_id").unique(), on=["domain", "item_id"], how="semi")
    return Dataset(ev, items, name=ds.name, meta={**ds.meta, "events_before": t.isoformat()})


def make_source(ds: Any, encoder: str, *, name: str | None = None, max_users: int = 0, seed: int = 0,
                max_len: int = 50, cache_dir: str | Path | None = None, text_cfg: Any = None,
                progress: Any = None, whole_catalogue: bool = False) -> Source:
    """Leave-one-out split of `ds` (optionally user-subsampled) plus its item text features;
    `whole_catalogue` keeps every catalogue item in a subsample (subsample_users)."""
    from shiftrec.data.splits import leave_one_out
    from shiftrec.text import TextConfig, encode_items

    sub = subsample_users(ds, max_users, seed, whole_catalogue=whole_catalogue)
    split = leave_one_out(sub, max_len)
    text = encode_items(sub.items, split.item_map, encoder, text_cfg or TextConfig(),
                        cache_dir=cache_dir, progress=progress)
    return Source(name or ds.name, split, text,
                  meta={"dataset": ds.name, "max_users": max_users or None, "subsample_seed": seed})


@dataclass
class Target:
    """What train, finetune and evaluate take: a split, and the dataset when one was given."""

    name: str
    split: SeqSplit
    dataset: Any = None  # data.schema.Dataset when the input was a dataset (items' text)
    split_dir: Path | None = None


INPUT_HELP = ("a split folder written by `shiftrec prepare` (used as is), or a dataset folder "
              "written by `shiftrec ingest` / a named dataset of the shared data folder (split "
              "with the default leave-one-out, histories cut to the last 50)")


def open_target(spec: str | Path, root: str | Path | None = None, max_len: int = 50) -> Target:
    """The one input convention of train, finetune and evaluate (INPUT_HELP)."""
    from shiftrec.data.splits import leave_one_out

    p = Path(spec)
    if p.is_dir() and (p / "split.json").exists():
        split = SeqSplit.load(p)
        return Target(split.name, split, None, p)
    ds = load_dataset(spec, root)
    return Target(ds.name, leave_one_out(ds, max_len), ds)


def target_source(target: Target, encoder: str, *, item_text: str | Path | None = None,
                  cache_dir: str | Path | None = None, text_cfg: Any = None) -> Source:
    """A Source for a Target: item text from an embeddings folder (`shiftrec encode DATASET
    --split SPLIT -o EMB`, aligned with the split's item map) or encoded from the dataset."""
    from shiftrec.errors import ArtifactError

    split = target.split
    if item_text is not None:
        from shiftrec.text.features import ItemEmbeddings

        emb = ItemEmbeddings.load(item_text)
        if emb.encoder != encoder:
            raise ArtifactError(f"item embeddings come from encoder '{emb.encoder}' but the "
                                f"checkpoint needs '{encoder}'", path=item_text)
        return Source(target.name, split, np.asarray(emb.aligned(split.item_map), np.float32))
    if target.dataset is None:
        raise ConfigError(f"'{target.split_dir}' is a split folder: the text model needs its items' "
                          "text: pass --item-text EMB (from `shiftrec encode DATASET --split "
                          f"{target.split_dir} -o EMB`) or give the dataset instead of the split")
    from shiftrec.text import TextConfig, encode_items

    text = encode_items(target.dataset.items, split.item_map, encoder, text_cfg or TextConfig(),
                        cache_dir=cache_dir)
    return Source(target.name, split, text, meta={"dataset": target.dataset.name})


def sources_from_dataset(ds: Any, encoder: str, **kw: Any) -> list[Source]:
    """One Source per domain of `ds` (items are namespaced by domain)."""
    from shiftrec.data.splits import by_domain

    doms = ds.domains
    if len(doms) <= 1:
        return [make_source(ds, encoder, **kw)]
    return [make_source(by_domain(ds, d), encoder, name=f"{ds.name}:{d}", **kw) for d in doms]
