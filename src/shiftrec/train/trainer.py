"""One generic trainer for every torch recommender: phases as data, early stopping, resume, DDP.

A trainable module implements two methods:

    training_loss(batch: dict[str, Tensor]) -> Tensor        # scalar loss of one batch
    score_all(seq: LongTensor (B, L), times: LongTensor | None) -> Tensor (B, n_items + 1)

`seq` given to score_all is right-aligned and left-padded with 0 (as train.batches.pad_left makes).

Data comes from batch sources: callables `(epoch, rng, batch_size) -> iterable of dict[str,
np.ndarray]`, every array with the batch on axis 0 (see train.batches.CausalBatches). Validation
is an EvalSet (full-ranking NDCG@10 over all items) or a callable `module -> dict of metrics`.

Pretraining and fine-tuning are `Phase`s in one `TrainConfig`; a phase picks its data source and
validation by key (`Phase.data`), freezes parameters by name prefix, and restores its best weights
when it ends. A checkpoint (safetensors + JSON manifest) is written atomically after every epoch;
`resume=True` continues from it exactly. Under torchrun (WORLD_SIZE > 1) the trainer joins the
process group (gloo on CPU, nccl on CUDA), every rank draws the same global batch and trains on
its own slice of rows (its loss weighted by its share of the batch's targets, so that the
averaged gradient and the logged loss are those of the global batch), and only rank 0 evaluates
and writes checkpoints.
"""

from __future__ import annotations

import enum
import hashlib
import math
import os
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from shiftrec.config import read_yaml_mapping, to_dict
from shiftrec.errors import ArtifactError, ConfigError, InputError
from shiftrec.manifest import atomic_write_bytes, make_manifest, read_json, write_json

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from shiftrec.data.splits import EvalSet

CKPT_JSON = "checkpoint.json"
DEFAULT_KEY = "default"


class Device(enum.StrEnum):
    AUTO = "auto"
    CPU = "cpu"
    CUDA = "cuda"


@dataclass(frozen=True)
class Phase:
    """One stage of training (e.g. pretrain, finetune), described as data."""

    name: str = "train"
    epochs: int = 50
    lr: float = 1e-3
    weight_decay: float = 0.0
    batch_size: int = 2048  # handed to the batch source (CausalBatches: supervised targets)
    patience: int = 5  # epochs without a better validation metric before stopping; 0 = never stop
    freeze: tuple[str, ...] = ()  # parameter-name prefixes kept fixed in this phase
    data: str = DEFAULT_KEY  # key of the batch source / validation used by this phase
    grad_clip: float = 0.0  # max gradient norm; 0 = no clipping
    steps_per_epoch: int = 0  # cap on optimiser steps per epoch; 0 = the whole source
    eval_every: int = 1  # validate every n epochs (and after the last)
    restore_best: bool = True  # load the best validated weights when the phase ends
    min_delta: float = 0.0  # improvement needed to reset patience


@dataclass(frozen=True)
class TrainConfig:
    phases: tuple[Phase, ...] = (Phase(),)
    seed: int = 0
    device: Device = Device.AUTO
    amp: bool = True  # mixed precision (autocast) on CUDA; ignored on CPU
    monitor: str = "ndcg@10"  # validation metric for early stopping (higher is better)
    max_len: int = 50  # history length given to score_all during validation
    eval_batch_size: int = 1024
    valid_max_users: int = 0  # validate on a fixed random subset of this size; 0 = all
    threads: int = 0  # torch threads during this call; 0 = auto (train.threads.auto_threads)
    ddp_find_unused: bool = False


#: Phase fields that may be given flat (next to seed, threads, ...): they set every phase
PHASE_KEYS = ("epochs", "lr", "weight_decay", "batch_size", "patience", "grad_clip",
              "steps_per_epoch", "eval_every", "restore_best", "min_delta")


def overlay_train(base: TrainConfig, data: Mapping[str, Any] | TrainConfig,
                  where: str = "train") -> TrainConfig:
    """`base` with the training options in `data` changed, and nothing else.

    The one training-config dialect of every model and command: `epochs`, `lr`,
    `weight_decay`, `batch_size`, `patience`, ... given flat set that field of every phase
    (`train: {epochs: 30}` keeps each phase's patience, lr, ...); `seed`, `threads`, `device`,
    ... are run options; `phases:` (a list of mappings) is the multi-phase form, where phase i
    overlays base phase i (a new phase starts from Phase()). Unknown keys are errors.
    """
    from shiftrec.config import overlay

    if isinstance(data, TrainConfig):
        return data
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}: expected a mapping of training options, got "
                          f"{type(data).__name__}")
    data = dict(data)
    flat = {k: data.pop(k) for k in PHASE_KEYS if k in data}
    phases = data.pop("phases", None)
    cfg = overlay(base, data, where=where) if data else base
    if phases is not None:
        if not isinstance(phases, list | tuple) or not phases:
            raise ConfigError(f"{where}.phases: expected a non-empty list of phase mappings")
        new = []
        for i, ph in enumerate(phases):
            if isinstance(ph, Phase):
                new.append(ph)
                continue
            if not isinstance(ph, Mapping):
                raise ConfigError(f"{where}.phases[{i}]: expected a mapping")
            start = cfg.phases[i] if i < len(cfg.phases) else Phase()
            new.append(overlay(start, dict(ph), where=f"{where}.phases[{i}]"))
        cfg = replace(cfg, phases=tuple(new))
    if flat:
        cfg = replace(cfg, phases=tuple(overlay(ph, flat, where=where) for ph in cfg.phases))
    return cfg


def load_train_config(path: str | Path | None, base: TrainConfig | None = None) -> TrainConfig:
    """TrainConfig from YAML (the overlay_train dialect), overlaid on `base`."""
    base = base or TrainConfig()
    if path is None:
        return base
    return overlay_train(base, read_yaml_mapping(path), where=str(path))


@dataclass(frozen=True)
class TrainEvent:
    """What the progress callback receives. kind: phase_start | step | epoch | phase_end | done."""

    kind: str
    phase: str
    epoch: int = 0
    step: int = 0
    loss: float | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0
    improved: bool = False


@dataclass
class PhaseResult:
    name: str
    epochs_run: int
    best_epoch: int
    best_metric: float | None
    stopped_early: bool
    seconds: float


@dataclass
class TrainResult:
    phases: list[PhaseResult]
    history: list[dict[str, Any]]  # one row per epoch: phase, epoch, loss, seconds, metrics
    seconds: float
    resumed_from: dict[str, int] | None = None
    threads: int | None = None  # torch threads the run used (config.threads or the auto pick)

    def to_dict(self) -> dict[str, Any]:
        return {"phases": [vars(p) for p in self.phases], "history": self.history,
                "seconds": self.seconds, "resumed_from": self.resumed_from,
                "threads": self.threads}


class BatchSource(Protocol):
    def __call__(self, epoch: int, rng: np.random.Generator, batch_size: int
                 ) -> Iterable[dict[str, np.ndarray]]: ...


Validator = Callable[[Any], dict[str, float]]


# ----------------------------------------------------------------------------- distributed / device


@dataclass(frozen=True)
class DistInfo:
    world: int = 1
    rank: int = 0
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def dist_info() -> DistInfo:
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if world <= 1:
        return DistInfo()
    return DistInfo(world, int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0")))


def resolve_device(choice: Device | str, local_rank: int = 0) -> torch.device:
    import torch

    choice = Device(choice)
    has_cuda = torch.cuda.is_available()
    if choice is Device.CUDA and not has_cuda:
        raise ConfigError("device 'cuda' requested but CUDA is not available; use device: cpu or auto")
    if choice is Device.CPU or (choice is Device.AUTO and not has_cuda):
        return torch.device("cpu")
    return torch.device("cuda", local_rank if local_rank < torch.cuda.device_count() else 0)


def _init_dist(info: DistInfo, device: torch.device) -> bool:
    """Join the process group if torchrun started us; return True when this call created it."""
    import torch.distributed as dist

    if info.world <= 1 or dist.is_initialized():
        return False
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        import torch

        torch.cuda.set_device(device)
    dist.init_process_group(backend=backend)
    return True


def _shard(batch: dict[str, np.ndarray], info: DistInfo
           ) -> tuple[dict[str, np.ndarray] | None, float]:
    """This rank's contiguous slice of the global batch and its loss weight.

    The models' losses are means over the batch's targets (labels > 0) or rows; DDP averages the
    ranks' gradients, so each rank scales its loss by world * (its targets / the global batch's
    targets). The averaged gradient is then the gradient of the global batch's mean loss, as in
    one process with the same batch (up to float summation order). Exact for a plain mean over
    targets or rows; a loss coupling rows (in-batch negatives, per-batch weights) sees only its
    own shard."""
    if info.world <= 1:
        return batch, 1.0
    n = len(next(iter(batch.values())))
    if n < info.world:
        return None, 0.0  # every rank sees the same global batch, so every rank skips it together
    bounds = np.linspace(0, n, info.world + 1).astype(np.int64)
    a, b = bounds[info.rank], bounds[info.rank + 1]
    part = {k: v[a:b] for k, v in batch.items()}
    if "labels" in batch:
        total, mine = int((batch["labels"] > 0).sum()), int((part["labels"] > 0).sum())
    else:
        total, mine = n, int(b - a)
    return part, (info.world * mine / total if total else 1.0)


# ----------------------------------------------------------------------------- seeds


def _derive_seed(*parts: int) -> int:
    h = hashlib.sha256(",".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(h[:8], "little") & ((1 << 63) - 1)


def seed_everything(seed: int) -> None:
    import random

    import torch

    random.seed(seed)
    np.random.seed(seed % (1 << 32))
    torch.manual_seed(seed)


# ----------------------------------------------------------------------------- evaluation


class ModuleScorer:
    """Adapts a module with score_all to the models.base.Recommender.score signature."""

    def __init__(self, module: Any, device: Any = None, max_len: int = 50, amp: bool = False,
                 threads: int | None = 0) -> None:
        self.module, self.max_len, self.amp, self.threads = module, max_len, amp, threads

    def score(self, histories: list[np.ndarray], times: list[np.ndarray] | None = None) -> np.ndarray:
        return score_module(self.module, histories, times, self.max_len, amp=self.amp,
                            threads=self.threads)


def evaluate_module(module: Any, evalset: EvalSet, device: Any = "cpu", max_len: int = 50,
                    batch_size: int = 1024, amp: bool = False) -> dict[str, float]:
    """Full-ranking metrics (all items) of a score_all module on an EvalSet, in eval mode."""
    from shiftrec.evaluate.metrics import all_metrics
    from shiftrec.evaluate.ranking import rank_targets

    was = module.training
    module.eval()
    try:
        ranks = rank_targets(ModuleScorer(module, device, max_len, amp, threads=None), evalset,
                             batch_size=batch_size, max_len=max_len)
    finally:
        module.train(was)
    return all_metrics(ranks)


def _subset(evalset: EvalSet, n: int, seed: int) -> EvalSet:
    from shiftrec.data.splits import EvalSet, Seqs

    if n <= 0 or n >= len(evalset):
        return evalset
    rows = np.sort(np.random.default_rng(_derive_seed(seed, 99)).choice(len(evalset), n, replace=False))
    h = evalset.history
    return EvalSet(evalset.users[rows], Seqs.from_lists([h[i] for i in rows], [h.times_of(i) for i in rows]),
                   evalset.target[rows], evalset.target_time[rows])


def _autocast(device: Any, amp: bool) -> Any:
    import contextlib

    import torch

    dev = torch.device(device)
    if amp and dev.type == "cuda":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast("cuda", dtype=dtype)
    return contextlib.nullcontext()


# ----------------------------------------------------------------------------- checkpoints


def _optim_to_tensors(opt: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    import torch

    sd = opt.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for pid, st in sd["state"].items():
        for k, v in st.items():
            if isinstance(v, torch.Tensor):
                tensors[f"optim.{pid}.{k}"] = v.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(pid), {})[k] = v
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _optim_from_tensors(opt: Any, tensors: dict[str, Any], meta: dict[str, Any]) -> None:
    state: dict[int, dict[str, Any]] = {}
    for key, v in tensors.items():
        if key.startswith("optim."):
            _, pid, k = key.split(".", 2)
            state.setdefault(int(pid), {})[k] = v
    for pid, st in meta["scalars"].items():
        state.setdefault(int(pid), {}).update(st)
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def _state_tensors(module: Any) -> dict[str, Any]:
    return {k: v.detach().cpu().clone().contiguous() for k, v in module.state_dict().items()}


def read_checkpoint(ckpt_dir: str | Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(manifest, tensors) of the latest checkpoint in ckpt_dir."""
    from safetensors.torch import load_file

    d = Path(ckpt_dir)
    man_path = d / CKPT_JSON
    if not man_path.exists():
        raise ArtifactError("no checkpoint to resume from (checkpoint.json missing)", path=d)
    man = read_json(man_path)
    tpath = d / man["tensors"]
    if not tpath.exists():
        raise ArtifactError(f"checkpoint tensors '{man['tensors']}' missing", path=d)
    return man, load_file(str(tpath))


def _write_checkpoint(ckpt_dir: Path, module: Any, opt: Any, best_state: dict[str, Any] | None,
                      state: dict[str, Any], config: TrainConfig) -> None:
    import torch
    from safetensors.torch import save

    tensors = {f"model.{k}": v for k, v in _state_tensors(module).items()}
    if best_state is not None:
        tensors |= {f"best.{k}": v for k, v in best_state.items()}
    otens, ometa = _optim_to_tensors(opt)
    tensors |= otens
    tensors["rng.torch"] = torch.get_rng_state()
    if torch.cuda.is_available():
        tensors["rng.cuda"] = torch.cuda.get_rng_state()
    name = f"ckpt-p{state['phase_index']}-e{state['epoch']}.safetensors"
    atomic_write_bytes(ckpt_dir / name, save(tensors))
    man = make_manifest("checkpoint", tensors=name, config=to_dict(config), optimizer=ometa,
                        module=type(module).__name__, **state)
    old = None
    if (ckpt_dir / CKPT_JSON).exists():
        old = read_json(ckpt_dir / CKPT_JSON).get("tensors")
    write_json(ckpt_dir / CKPT_JSON, man)  # the atomic switch to the new checkpoint
    if old and old != name and (ckpt_dir / old).exists():
        (ckpt_dir / old).unlink()


# ----------------------------------------------------------------------------- training


def _pick(obj: Any, key: str, what: str) -> Any:
    if obj is None or callable(obj) or not isinstance(obj, Mapping):
        return obj
    if key not in obj:
        if what == "validation":
            return None
        raise ConfigError(f"phase data '{key}' has no {what}; available: {', '.join(sorted(obj))}")
    return obj[key]


def _check_resumable(man: dict[str, Any], config: TrainConfig, module: Any, path: Path) -> None:
    was = [p.get("name") for p in man.get("config", {}).get("phases", [])]
    now = [p.name for p in config.phases]
    if was != now:
        raise ArtifactError(f"checkpoint was written with phases {was}, this run has {now}", path=path)
    if man.get("module") != type(module).__name__:
        raise ArtifactError(f"checkpoint holds a '{man.get('module')}', this run trains a "
                            f"'{type(module).__name__}'", path=path)
    if man.get("seed") != config.seed:
        raise ArtifactError(f"checkpoint was written with seed {man.get('seed')}, this run has "
                            f"seed {config.seed}", path=path)


def _set_trainable(module: Any, freeze: tuple[str, ...]) -> list[Any]:
    params = []
    for name, p in module.named_parameters():
        frozen = any(name.startswith(f) for f in freeze)
        p.requires_grad_(not frozen)
        if not frozen:
            params.append(p)
    return params


def make_optimizer(params: list[Any], phase: Phase) -> Any:
    """AdamW of a phase (the fused kernel when every parameter is a float32/16 tensor)."""
    import torch

    fused = all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params)
    return torch.optim.AdamW(params, lr=phase.lr, weight_decay=phase.weight_decay,
                             fused=fused or None)


def _loss_module(module: Any) -> Any:
    import torch

    class LossWrapper(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
            return self.inner.training_loss(batch)

    return LossWrapper(module)


def train(module: Any, config: TrainConfig,
          batches: BatchSource | Mapping[str, BatchSource],
          valid: EvalSet | Validator | Mapping[str, EvalSet | Validator] | None = None, *,
          checkpoint_dir: str | Path | None = None, resume: bool = False,
          progress: Callable[[TrainEvent], None] | None = None) -> TrainResult:
    """Train `module` in place through config.phases and return the history.

    batches / valid are one object for every phase or a mapping keyed by Phase.data. With a
    validation, each phase stops after `patience` epochs without improving config.monitor and
    (restore_best) ends with its best weights. With checkpoint_dir, a checkpoint is written after
    every epoch; resume=True loads it and continues as if never interrupted (and is an error
    when checkpoint_dir holds no checkpoint). The torch thread count is config.threads (0 =
    auto for the module's width and the batch size, train.threads) during the call only.
    """
    from shiftrec.train.threads import module_hidden, resolve_threads, torch_threads

    if not config.phases:
        raise ConfigError("training config has no phases")
    if resume and checkpoint_dir is None:
        raise ConfigError("resume needs a checkpoint directory")
    if resume and not (Path(checkpoint_dir) / CKPT_JSON).exists():  # type: ignore[arg-type]
        raise ArtifactError("--resume: there is no checkpoint to resume from (an interrupted run "
                            "leaves one here); run without --resume to start from scratch",
                            path=checkpoint_dir)
    n = resolve_threads(config.threads, module_hidden(module),
                        max(p.batch_size for p in config.phases))
    with torch_threads(n):
        res = _train(module, config, batches, valid, checkpoint_dir, resume, progress)
    res.threads = n
    return res


def _train(module: Any, config: TrainConfig, batches: Any, valid: Any,
           checkpoint_dir: str | Path | None, resume: bool,
           progress: Callable[[TrainEvent], None] | None) -> TrainResult:
    import torch

    info = dist_info()
    device = resolve_device(config.device, info.local_rank)
    created_group = _init_dist(info, device)
    ddp = info.world > 1
    amp = bool(config.amp and device.type == "cuda")
    module.to(device)
    ckpt_dir = Path(checkpoint_dir) if checkpoint_dir is not None else None

    history: list[dict[str, Any]] = []
    results: list[PhaseResult] = []
    start_phase, start_epoch = 0, 0
    restored: dict[str, Any] | None = None
    resumed_from = None
    if resume and ckpt_dir is not None:
        man, tensors = read_checkpoint(ckpt_dir)
        _check_resumable(man, config, module, ckpt_dir)
        try:
            module.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
        except RuntimeError as e:
            raise ArtifactError(f"checkpoint weights do not fit this model: "
                                f"{str(e).splitlines()[0]}", path=ckpt_dir) from None
        history = man["history"]
        results = [PhaseResult(**r) for r in man["results"]]
        start_phase, start_epoch = man["phase_index"], man["epoch"]
        restored = {"man": man, "tensors": tensors}
        resumed_from = {"phase_index": start_phase, "epoch": start_epoch}
    t_all = time.perf_counter() - (restored["man"]["seconds"] if restored else 0.0)

    def emit(ev: TrainEvent) -> None:
        if progress is not None and info.main:
            progress(ev)

    for pi in range(start_phase, len(config.phases)):
        ph = config.phases[pi]
        source = _pick(batches, ph.data, "batch source")
        val = _pick(valid, ph.data, "validation")
        if val is not None and not callable(val):
            val = _subset(val, config.valid_max_users, config.seed)
        params = _set_trainable(module, ph.freeze)
        if not params:
            raise ConfigError(f"phase '{ph.name}' freezes every parameter: nothing to train")
        opt = make_optimizer(params, ph)
        scaler = torch.amp.GradScaler("cuda") if amp and not torch.cuda.is_bf16_supported() else None
        lossmod = _loss_module(module)
        if ddp:
            from torch.nn.parallel import DistributedDataParallel

            lossmod = DistributedDataParallel(
                lossmod, device_ids=[device.index] if device.type == "cuda" else None,
                find_unused_parameters=config.ddp_find_unused)
        best_metric: float | None = None
        best_epoch, bad = 0, 0
        best_state: dict[str, Any] | None = None
        epoch0 = 0
        t_phase = time.perf_counter()
        stopped = False
        if restored is not None and pi == start_phase:
            man, tensors = restored["man"], restored["tensors"]
            if start_epoch > 0:  # mid-phase: optimiser, best weights and patience continue
                _optim_from_tensors(opt, tensors, man["optimizer"])
                best = {k[5:]: v for k, v in tensors.items() if k.startswith("best.")}
                best_state = best or None
                best_metric, best_epoch, bad = man["best_metric"], man["best_epoch"], man["bad_epochs"]
                stopped = bool(man["stopped"])
                if "rng.torch" in tensors:
                    torch.set_rng_state(tensors["rng.torch"])
                epoch0 = start_epoch
                t_phase -= man["phase_seconds"]
            restored = None
        emit(TrainEvent("phase_start", ph.name, epoch0))
        epoch = epoch0
        while epoch < ph.epochs and not stopped:
            epoch += 1
            t0 = time.perf_counter()
            rng = np.random.default_rng(_derive_seed(config.seed, pi, epoch))
            torch.manual_seed(_derive_seed(config.seed, pi, epoch, info.rank, 1))
            module.train()
            tot, n_steps = 0.0, 0
            for batch in source(epoch, rng, ph.batch_size):
                part, weight = _shard(batch, info)
                if part is None:
                    continue
                tb = {k: torch.from_numpy(np.ascontiguousarray(v)).to(device, non_blocking=True)
                      for k, v in part.items()}
                opt.zero_grad(set_to_none=True)
                with _autocast(device, amp):
                    loss = lossmod(tb)
                if weight == 0.0:  # no target in this rank's slice: join the all-reduce with 0
                    loss = torch.nan_to_num(loss) * 0.0
                if not torch.isfinite(loss):
                    raise InputError(f"phase '{ph.name}' epoch {epoch}: loss is {loss.item()}")
                if ddp:
                    loss = loss * weight
                if scaler is not None:
                    scaler.scale(loss).backward()
                    scaler.unscale_(opt)
                else:
                    loss.backward()
                if ph.grad_clip > 0:
                    torch.nn.utils.clip_grad_norm_(params, ph.grad_clip)
                if scaler is not None:
                    scaler.step(opt)
                    scaler.update()
                else:
                    opt.step()
                lv = float(loss.detach())
                tot += lv / info.world if ddp else lv  # summed over ranks: the global mean loss
                n_steps += 1
                emit(TrainEvent("step", ph.name, epoch, n_steps, lv))
                if ph.steps_per_epoch and n_steps >= ph.steps_per_epoch:
                    break
            if n_steps == 0:
                raise InputError(f"phase '{ph.name}': the batch source gave no batch in epoch {epoch}")
            if ddp:
                import torch.distributed as dist

                box_t = torch.tensor([tot], dtype=torch.float64, device=device)
                dist.all_reduce(box_t)
                tot = float(box_t.item())
            train_s = time.perf_counter() - t0
            metrics: dict[str, float] = {}
            improved = False
            do_eval = val is not None and (epoch % ph.eval_every == 0 or epoch == ph.epochs)
            if do_eval:
                if info.main:
                    if callable(val):
                        module.eval()
                        with torch.no_grad():
                            metrics = dict(val(module))
                        module.train()
                    else:
                        metrics = evaluate_module(module, val, device, config.max_len,
                                                  config.eval_batch_size, amp)
                    if config.monitor not in metrics:
                        raise ConfigError(f"validation gave no '{config.monitor}'; got {sorted(metrics)}")
                if ddp:
                    import torch.distributed as dist

                    box = [metrics]
                    dist.broadcast_object_list(box, src=0)
                    metrics = box[0]
                m = float(metrics[config.monitor])
                if math.isnan(m):
                    raise InputError(f"phase '{ph.name}': validation {config.monitor} is NaN")
                if best_metric is None or m > best_metric + ph.min_delta:
                    best_metric, best_epoch, bad, improved = m, epoch, 0, True
                    best_state = _state_tensors(module)
                else:
                    bad += 1
                if ph.patience and bad >= ph.patience:
                    stopped = True
            row = {"phase": ph.name, "epoch": epoch, "loss": tot / n_steps, "steps": n_steps,
                   "train_seconds": train_s, "seconds": time.perf_counter() - t0,
                   "metrics": {k: v for k, v in metrics.items() if k.startswith(("ndcg", "recall", "mrr"))}}
            history.append(row)
            if ckpt_dir is not None and info.main:
                state = {"phase_index": pi, "phase": ph.name, "epoch": epoch, "seed": config.seed,
                         "best_metric": best_metric, "best_epoch": best_epoch, "bad_epochs": bad,
                         "stopped": stopped, "history": history,
                         "results": [vars(r) for r in results],
                         "rng_numpy": rng.bit_generator.state,
                         "phase_seconds": time.perf_counter() - t_phase,
                         "seconds": time.perf_counter() - t_all}
                _write_checkpoint(ckpt_dir, module, opt, best_state, state, config)
            if ddp:
                import torch.distributed as dist

                dist.barrier()
            emit(TrainEvent("epoch", ph.name, epoch, n_steps, tot / n_steps, metrics,
                            row["seconds"], improved))
        if ph.restore_best and best_state is not None:
            module.load_state_dict(best_state)
        res = PhaseResult(ph.name, epoch, best_epoch, best_metric, stopped,
                          time.perf_counter() - t_phase)
        results.append(res)
        best_v = float("nan") if best_metric is None else best_metric
        emit(TrainEvent("phase_end", ph.name, epoch, metrics={"best": best_v}, seconds=res.seconds))
        if ckpt_dir is not None and info.main and pi + 1 < len(config.phases):
            # phase boundary: the next phase starts from epoch 0 with the restored weights
            state = {"phase_index": pi + 1, "phase": config.phases[pi + 1].name, "epoch": 0,
                     "seed": config.seed, "best_metric": None, "best_epoch": 0, "bad_epochs": 0,
                     "stopped": False, "history": history, "results": [vars(r) for r in results],
                     "rng_numpy": None, "phase_seconds": 0.0,
                     "seconds": time.perf_counter() - t_all}
            nxt = config.phases[pi + 1]
            _write_checkpoint(ckpt_dir, module, make_optimizer(_set_trainable(module, nxt.freeze), nxt),
                              None, state, config)
    for p in module.parameters():
        p.requires_grad_(True)
    out = TrainResult(results, history, time.perf_counter() - t_all, resumed_from)
    emit(TrainEvent("done", config.phases[-1].name, seconds=out.seconds))
    if created_group:
        import torch.distributed as dist

        dist.barrier()
        dist.destroy_process_group()
    return out


def score_module(module: Any, histories: list[np.ndarray], times: list[np.ndarray] | None,
                 max_len: int, batch_size: int = 256, amp: bool = False,
                 threads: int | None = 0, *, fn: Callable[[Any, Any], Any] | None = None
                 ) -> np.ndarray:
    """float32 scores (batch, n_items + 1) of a score_all module (see _score_module), with
    `threads` torch threads (0 = auto for the module's width, None = leave the current count,
    as inside a training call) during the call only. `fn(seq, times)` replaces
    module.score_all for other per-history rows (e.g. a model's query vectors)."""
    from shiftrec.train.threads import module_hidden, resolve_threads, torch_threads

    if threads is None:
        return _score_module(module, histories, times, max_len, batch_size, amp, fn)
    with torch_threads(resolve_threads(threads, module_hidden(module), batch_size)):
        return _score_module(module, histories, times, max_len, batch_size, amp, fn)


def _score_module(module: Any, histories: list[np.ndarray], times: list[np.ndarray] | None,
                  max_len: int, batch_size: int = 256, amp: bool = False,
                  fn: Callable[[Any, Any], Any] | None = None) -> np.ndarray:
    """float32 scores (batch, n_items + 1) of a score_all module (or the rows of
    `fn(seq, times)`), in eval mode, without grad.

    Histories are scored in order of length, `batch_size` at a time (and put back in the given
    order), so a module that trims all-padding columns (as SASRec does) does little padding work.
    Every call still passes seq of width max_len, right-aligned and left-padded with 0.
    """
    import contextlib

    import torch

    from shiftrec.train.batches import pad_left

    try:
        device = next(module.parameters()).device
    except StopIteration:  # pragma: no cover
        device = torch.device("cpu")
    run = module.score_all if fn is None else fn
    n = len(histories)
    lens = np.array([min(len(h), max_len) for h in histories], dtype=np.int64)
    order = np.argsort(lens, kind="stable")
    out: np.ndarray | None = None
    cast = contextlib.nullcontext()
    if amp and device.type == "cuda":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        cast = torch.autocast("cuda", dtype=dtype)
    was = module.training
    module.eval()
    try:
        with torch.no_grad(), cast:
            for a in range(0, n, batch_size):
                rows = order[a:a + batch_size]
                seq = torch.from_numpy(pad_left([histories[i] for i in rows], max_len)).to(device)
                t = None
                if times is not None:
                    t = torch.from_numpy(pad_left([times[i] for i in rows], max_len)).to(device)
                s = run(seq, t).float().cpu().numpy()
                if out is None:
                    out = np.empty((n, s.shape[1]), dtype=np.float32)
                out[rows] = s
    finally:
        module.train(was)
    return out if out is not None else np.zeros((0, 0), np.float32)
