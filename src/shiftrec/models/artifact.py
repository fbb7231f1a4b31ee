"""Saved model folders that can be verified: atomic write, SHA-256 of every file, the item map.

Every model folder is written by `save_model_folder`: the files go into a temporary sibling
(manifest.atomic_dir), the manifest records the SHA-256 of each file beside it (`files`), the
fingerprint of the item map the model was trained on (`item_keys_hash`, a hash of the split's
ordered item keys) and of the data (`data_fingerprint`); then the `_COMPLETE` marker is written
and the folder swapped into place. Sub-folders (a fusion's base/ and flow/) are model folders of
their own, verified when they are loaded.

Every loader reads its folder through `read_model_folder`, which accepts a folder when its
manifest's file hashes verify, and refuses with one line: a manifest that is missing, not valid
JSON or not a mapping, one of another kind or naming another model, one without file hashes
(an unfinished write - no `_COMPLETE` marker - says so; else: saved before hashes were
recorded, save the model again), a listed file that is missing, and a file whose SHA-256
differs from the manifest's (random bytes written into the weights, weights swapped in from
another run). The hashes make the `_COMPLETE` marker redundant for loading (the manifest is
written last and lists every file), so a checkpoint shipped inside the package or copied by
hand, without the marker, loads when its hashes verify.
`check_model_split` refuses a model whose item map is not the
split's (another dataset with the same item count), naming both fingerprints.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from shiftrec.errors import ArtifactError
from shiftrec.manifest import (
    COMPLETE,
    atomic_dir,
    make_manifest,
    read_json,
    require_complete,
    sha256_file,
    write_json,
)

MANIFEST = "manifest.json"


def item_map_fingerprint(split: Any) -> str:
    """Fingerprint of a split's item map: its ordered item keys ('domain/item_id')."""
    return hashlib.sha1("\n".join(map(str, split.item_map.keys)).encode()).hexdigest()[:16]


def split_fields(split: Any) -> dict[str, Any]:
    """The manifest fields that tie a model to the split it was trained on."""
    return {"data_fingerprint": split.meta.get("fingerprint"),
            "item_keys_hash": item_map_fingerprint(split)}


def hash_files(folder: Path) -> dict[str, str]:
    """SHA-256 of every regular file directly in `folder` (not the manifest or the marker)."""
    return {f.name: sha256_file(f) for f in sorted(folder.iterdir())
            if f.is_file() and f.name not in (MANIFEST, COMPLETE)}


#: sub-folders of the run itself carried over into the new folder: the trainer's resumable
#: checkpoint (train --resume / finetune --resume can extend a finished run)
KEEP = ("trainer",)


def save_model_folder(path: str | Path, write: Callable[[Path], None], *, model: str,
                      kind: str = "model", **fields: Any) -> Path:
    """Write a model folder atomically: `write(tmp)` fills it, then the manifest (with `files`
    hashes and `fields`) and the completion marker; returns the final path. Nothing of an
    earlier folder at `path` survives except its KEEP sub-folders (this run's checkpoint)."""
    import os
    import shutil

    final = Path(path)
    held: dict[str, Path] = {}
    for name in KEEP:  # set aside during the swap, put into the new folder after it
        if final.is_dir() and (final / name).is_dir():
            hold = final.parent / f".{final.name}.{name}.keep"
            if hold.exists():
                shutil.rmtree(hold)
            os.replace(final / name, hold)
            held[name] = hold
    try:
        with atomic_dir(final) as tmp:
            write(tmp)
            man = make_manifest(kind, model=model, **fields)
            man["files"] = hash_files(tmp)
            write_json(tmp / MANIFEST, man)
    finally:
        for name, hold in held.items():
            if hold.exists() and final.is_dir() and not (final / name).exists():
                os.replace(hold, final / name)
    return final


def read_manifest_file(path: str | Path) -> tuple[Path, dict[str, Any]]:
    """(folder, manifest) of a model folder; missing, invalid or non-mapping manifest = one line."""
    p = Path(path)
    if not p.is_dir():
        raise ArtifactError("model folder not found" if not p.exists() else
                            "not a model folder (a file, not a folder)", path=p)
    if not (p / MANIFEST).is_file():
        raise ArtifactError(f"not a model folder ({MANIFEST} missing)", path=p)
    man = read_json(p / MANIFEST)
    if not isinstance(man, dict):
        raise ArtifactError(f"{MANIFEST} is not a JSON object", path=p)
    return p, man


def verify_files(p: Path, man: dict[str, Any]) -> None:
    """Every file the manifest lists exists and has the recorded SHA-256."""
    files = man.get("files")
    if not isinstance(files, dict) or not files:
        raise ArtifactError("manifest records no file hashes (saved by an older shiftrec, or "
                            "edited): save the model again", path=p)
    for name, digest in files.items():
        f = p / str(name)
        if "/" in str(name) or not f.is_file():
            raise ArtifactError(f"'{name}' listed in the manifest is missing", path=p)
        got = sha256_file(f)
        if got != digest:
            raise ArtifactError(f"'{name}' does not match the manifest (SHA-256 {got[:12]}..., "
                                f"recorded {str(digest)[:12]}...): the file is corrupt or comes "
                                "from another run", path=p)


def read_model_folder(path: str | Path, model: str | None = None, kind: str = "model"
                      ) -> tuple[Path, dict[str, Any]]:
    """(folder, manifest) of a verified model folder (see the module docstring)."""
    p, man = read_manifest_file(path)
    if not isinstance(man.get("files"), dict):
        require_complete(p, "model folder")  # no hashes: an unfinished write says so first
    if man.get("kind") != kind:
        raise ArtifactError(f"not a saved model (manifest kind '{man.get('kind')}', expected "
                            f"'{kind}')", path=p)
    if model is not None and man.get("model") != model:
        raise ArtifactError(f"checkpoint is a '{man.get('model')}' model, not '{model}'", path=p)
    verify_files(p, man)
    return p, man


def check_model_split(model: Any, split: Any) -> None:
    """Refuse a fitted model whose item index is not `split`'s: another item count, or the same
    count over another item map (its manifest's item_keys_hash differs), naming both."""
    n = getattr(model, "n_items", None)
    if isinstance(n, int) and n != split.n_items:
        raise ArtifactError(f"model '{getattr(model, 'name', '?')}' has {n} items but split "
                            f"'{split.name}' has {split.n_items}")
    mine = getattr(model, "item_keys", None)
    theirs = item_map_fingerprint(split)
    if mine is not None and mine != theirs:
        raise ArtifactError(f"model '{getattr(model, 'name', '?')}' was trained on another item "
                            f"map (item_keys_hash {mine}) than split '{split.name}' "
                            f"({theirs}): same item count, other items; train it on this split")
