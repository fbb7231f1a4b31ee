"""JSON manifests beside every artifact: versions, dimensions, encoder, data fingerprint, config."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from shiftrec import SCHEMA_VERSION, __version__
from shiftrec.errors import ArtifactError


def versions() -> dict[str, str]:
    out = {"shiftrec": __version__, "python": platform.python_version(),
           "schema": str(SCHEMA_VERSION)}
    from importlib.metadata import PackageNotFoundError, version

    for dist in ("polars", "numpy", "torch", "sentence-transformers"):
        try:  # read package metadata only: importing torch here would cost seconds
            out[dist] = version(dist)
        except PackageNotFoundError:  # pragma: no cover
            pass
    return out


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; use the usual file mode
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_json(path: str | Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n").encode())


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def make_manifest(kind: str, **fields: Any) -> dict[str, Any]:
    return {"kind": kind, "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "versions": versions(), **fields}


def fingerprint_frame(df: Any) -> str:
    """Content fingerprint of a Polars DataFrame: order-sensitive hash of all rows and columns."""
    import polars as pl

    h = hashlib.sha256()
    h.update(",".join(f"{n}:{t}" for n, t in df.schema.items()).encode())
    if df.height:
        row_hashes = df.select(pl.struct(pl.all()).hash(seed=17).alias("h"))["h"]
        h.update(row_hashes.to_numpy().tobytes())
    return h.hexdigest()[:32]


def fingerprint_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while b := f.read(chunk):
            h.update(b)
    return h.hexdigest()[:32]


def read_model_manifest(path: str | Path, model_name: str) -> tuple[Path, dict[str, Any]]:
    """(folder, manifest) of a saved model; the manifest must exist and name `model_name`."""
    p = Path(path)
    if not (p / "manifest.json").is_file():
        raise ArtifactError("not a model folder (manifest.json missing)", path=p)
    man = read_json(p / "manifest.json")
    if man.get("model") != model_name:
        raise ArtifactError(f"checkpoint is a '{man.get('model')}' model, not '{model_name}'", path=p)
    return p, man
