"""Shared plumbing for torch recommenders: scoring a score_all module, safetensors artifacts.

A torch recommender keeps an `nn.Module` with `score_all(seq, times)` (see train.trainer) and
saves it as `model.safetensors` + `manifest.json`. `load_torch_artifact` checks that the manifest
names the expected model and that every declared dimension matches the stored tensors, raising
ArtifactError naming both values otherwise.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from shiftrec.errors import ArtifactError
from shiftrec.manifest import atomic_write_bytes

WEIGHTS = "model.safetensors"
MANIFEST = "manifest.json"


def apply_overrides(cfg: Any, overrides: Mapping[str, Any], where: str) -> Any:
    """`cfg` with keyword overrides: dataclass values replace as-is, plain values go through
    config.overlay (so YAML-style dicts and enum strings are validated); a `train` mapping is
    overlaid on the config's training run in the one training dialect (overlay_train)."""
    import dataclasses

    from shiftrec.config import overlay

    overrides = dict(overrides)
    train = overrides.get("train")
    if isinstance(train, Mapping) and any(f.name == "train" for f in dataclasses.fields(cfg)):
        # the one training dialect: flat epochs/lr/... set every phase, nothing else changes
        from shiftrec.train.trainer import overlay_train

        overrides["train"] = overlay_train(cfg.train, train, where=f"{where}.train")
    direct = {k: v for k, v in overrides.items() if dataclasses.is_dataclass(v)}
    plain = {k: v for k, v in overrides.items() if k not in direct}
    if plain:
        cfg = overlay(cfg, plain, where=where)
    if direct:
        names = {f.name for f in dataclasses.fields(cfg)}
        bad = sorted(set(direct) - names)
        if bad:
            from shiftrec.errors import ConfigError

            raise ConfigError(f"{where}: unknown key(s) {bad}; valid keys: {sorted(names)}")
        cfg = dataclasses.replace(cfg, **direct)
    return cfg


def save_torch_artifact(path: str | Path, module: Any, model_name: str, **fields: Any) -> None:
    """model.safetensors (the module's state) + manifest.json (model name, `fields` and the
    file hashes), written atomically (models.artifact.save_model_folder)."""
    from safetensors.torch import save

    from shiftrec.models.artifact import save_model_folder

    tensors = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
    save_model_folder(path, lambda d: atomic_write_bytes(d / WEIGHTS, save(tensors)),
                      model=model_name, **fields)


def read_torch_artifact(path: str | Path, model_name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(manifest, tensors) of a saved torch model: verified folder (hashes, completeness) whose
    manifest names `model_name`."""
    from safetensors.torch import load_file

    from shiftrec.models.artifact import read_model_folder

    p, man = read_model_folder(path, model_name)
    if not (p / WEIGHTS).exists():
        raise ArtifactError(f"{WEIGHTS} missing", path=p)
    try:
        tensors = load_file(str(p / WEIGHTS))
    except Exception as e:  # safetensors raises its own error types
        raise ArtifactError(f"cannot read {WEIGHTS}: {' '.join(str(e).split())[:200]}",
                            path=p) from None
    return man, tensors


def check_shapes(tensors: Mapping[str, Any], expected: Mapping[str, tuple[int, ...]], path: Any,
                 what: Mapping[str, str] | None = None) -> None:
    """Raise ArtifactError when a stored tensor's shape differs from the one the manifest implies."""
    for key, shape in expected.items():
        if key not in tensors:
            raise ArtifactError(f"tensor '{key}' missing from {WEIGHTS}", path=path)
        got = tuple(tensors[key].shape)
        if got != tuple(shape):
            label = (what or {}).get(key, f"tensor '{key}'")
            raise ArtifactError(f"{label}: manifest implies shape {tuple(shape)} but {WEIGHTS} "
                                f"holds {got}", path=path)


def load_state_strict(module: Any, tensors: Mapping[str, Any], path: Any) -> None:
    missing = sorted(set(module.state_dict()) - set(tensors))
    extra = sorted(set(tensors) - set(module.state_dict()))
    if missing or extra:
        raise ArtifactError(f"weights do not match the model: missing {missing[:5]}, "
                            f"unexpected {extra[:5]}", path=path)
    for k, v in module.state_dict().items():
        if tuple(v.shape) != tuple(tensors[k].shape):
            raise ArtifactError(f"tensor '{k}': model expects {tuple(v.shape)}, file holds "
                                f"{tuple(tensors[k].shape)}", path=path)
    module.load_state_dict(dict(tensors), strict=True)


def full_softmax_ce(h: Any, weight: Any, target: Any) -> Any:
    """Mean cross-entropy of softmax(h @ weight.T) over ALL rows of `weight` (no sampling).

    h (T, H), weight (N, H), target (T,) in [0, N). Same value and gradients as
    F.cross_entropy(h @ weight.T, target), with fewer passes over the (T, N) logits: the
    log-softmax is computed once and turned into the gradient in place in backward.
    """
    return _full_ce_fn().apply(h, weight, target)


_FULL_CE: Any = None


def _full_ce_fn() -> Any:
    global _FULL_CE
    if _FULL_CE is not None:
        return _FULL_CE
    import torch

    class FullSoftmaxCE(torch.autograd.Function):
        @staticmethod
        def forward(ctx: Any, h: torch.Tensor, weight: torch.Tensor, target: torch.Tensor
                    ) -> torch.Tensor:
            logits = h @ weight.T.to(h.dtype)  # under autocast both are already low precision
            lsm = torch.log_softmax(logits.float(), dim=1)
            del logits
            loss = -lsm.gather(1, target[:, None]).mean()
            ctx.save_for_backward(h, weight, target, lsm)
            return loss

        @staticmethod
        def backward(ctx: Any, grad: torch.Tensor) -> tuple[Any, Any, None]:
            h, weight, target, lsm = ctx.saved_tensors
            g = lsm.exp_()  # softmax, in place (backward runs once per graph)
            g[torch.arange(len(target), device=g.device), target] -= 1.0
            scale = grad / max(len(target), 1)
            g = g.to(h.dtype)
            gh = gw = None
            if ctx.needs_input_grad[0]:
                gh = (g @ weight.to(h.dtype)) * scale.to(h.dtype)
            if ctx.needs_input_grad[1]:
                gw = ((g.T @ h) * scale.to(h.dtype)).to(weight.dtype)
            return gh, gw, None

    _FULL_CE = FullSoftmaxCE
    return _FULL_CE
