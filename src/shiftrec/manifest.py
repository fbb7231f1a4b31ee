"""JSON manifests beside every artifact: versions, dimensions, encoder, data fingerprint, config."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
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


def write_npz(path: str | Path, arrays: Any) -> None:
    """Write named arrays (a mapping) as one compressed .npz, atomically; no pickled objects."""
    import io

    import numpy as np

    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    atomic_write_bytes(path, buf.getvalue())


def read_npz(path: str | Path) -> dict[str, Any]:
    """Every array of an .npz written by write_npz ({} when there is no such file); never
    unpickles."""
    import numpy as np

    p = Path(path)
    if not p.is_file():
        return {}
    with np.load(p, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def write_json(path: str | Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n").encode())


def read_json(path: str | Path) -> Any:
    """Parse a JSON artifact; a missing, unreadable or invalid file is one ArtifactError line."""
    p = Path(path)
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ArtifactError("file not found", path=p) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        line = getattr(e, "lineno", None)
        raise ArtifactError(f"not valid JSON ({type(e).__name__})", path=p, row=line) from None
    except OSError as e:
        raise ArtifactError(f"cannot read: {e.strerror}", path=p) from None


@contextmanager
def locked(lock_file: str | Path) -> Iterator[None]:
    """Hold an exclusive advisory lock (flock) on `lock_file` for the block, so that processes
    updating the same result files side by side take turns (POSIX; the file is created)."""
    import fcntl

    lock_file = Path(lock_file)
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_file, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def update_json(path: str | Path, update: Callable[[dict[str, Any]], None], *,
                lock_file: str | Path | None = None, indent: int = 2) -> dict[str, Any]:
    """Locked read-modify-write of a JSON results file: `update` changes the parsed object ({}
    when there is no file) in place; it is written atomically and returned. The lock is
    `lock_file` (default: a hidden `.<name>.lock` beside the file)."""
    p = Path(path)
    with locked(lock_file or p.with_name(f".{p.name}.lock")):
        data = read_json(p) if p.exists() else {}
        update(data)
        atomic_write_bytes(p, (json.dumps(data, indent=indent, default=str) + "\n").encode())
    return data


def update_npz(path: str | Path, arrays: Any, *, lock_file: str | Path | None = None) -> None:
    """Locked merge of named arrays into an .npz written by write_npz (a name already there is
    replaced); never unpickles."""
    p = Path(path)
    with locked(lock_file or p.with_name(f".{p.name}.lock")):
        write_npz(p, {**read_npz(p), **arrays})


#: written last into every artifact folder; a folder without it is an unfinished or foreign write
COMPLETE = "_COMPLETE"


@contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Write an artifact folder atomically: yield a temporary sibling to fill, then mark it
    complete and swap it into place. A re-run into an existing folder never leaves files of the
    earlier run beside the new ones; a crash leaves the earlier folder untouched.

    `-o` below a regular file or in an unwritable place is one ArtifactError line.
    """
    final = Path(path)
    parent = final.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=parent, prefix=f".{final.name}.", suffix=".tmp"))
    except (FileExistsError, NotADirectoryError):
        raise ArtifactError("cannot create the output folder: a parent is a regular file",
                            path=final) from None
    except PermissionError:
        raise ArtifactError("cannot create the output folder: permission denied", path=final) from None
    except OSError as e:
        raise ArtifactError(f"cannot create the output folder: {e.strerror}", path=final) from None
    try:
        yield tmp
        (tmp / COMPLETE).write_text(datetime.now(UTC).isoformat(timespec="seconds") + "\n")
        old = None
        if final.is_file() or final.is_symlink():
            raise ArtifactError("output path exists and is not a folder", path=final)
        if final.exists():
            old = Path(tempfile.mkdtemp(dir=parent, prefix=f".{final.name}.", suffix=".old"))
            os.rmdir(old)
            os.replace(final, old)
        os.replace(tmp, final)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def require_complete(path: str | Path, what: str = "artifact folder") -> Path:
    """The folder, if it exists and was completely written (see `atomic_dir`); else one line."""
    p = Path(path)
    if not p.exists():
        raise ArtifactError(f"{what} not found", path=p)
    if not p.is_dir():
        raise ArtifactError(f"{what} is not a folder", path=p)
    if not (p / COMPLETE).is_file():
        raise ArtifactError(f"{what} is incomplete (no {COMPLETE} marker: the write that made it "
                            "did not finish, or it was not written by shiftrec); write it again",
                            path=p)
    return p


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Full SHA-256 hex digest of a file (recorded for weight files, verified on load)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while b := f.read(chunk):
            h.update(b)
    return h.hexdigest()


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


def read_model_manifest(path: str | Path, model_name: str) -> tuple[Path, dict[str, Any]]:
    """(folder, manifest) of a saved model; the manifest must exist and name `model_name`."""
    p = Path(path)
    if not (p / "manifest.json").is_file():
        raise ArtifactError("not a model folder (manifest.json missing)", path=p)
    man = read_json(p / "manifest.json")
    if man.get("model") != model_name:
        raise ArtifactError(f"checkpoint is a '{man.get('model')}' model, not '{model_name}'", path=p)
    return p, man
