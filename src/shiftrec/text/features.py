"""Item text features: an (n_items + 1, dim) float32 matrix aligned with an IdMap (row 0 zeros)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from shiftrec.config import to_dict
from shiftrec.data.splits import IdMap, SeqSplit
from shiftrec.errors import ArtifactError
from shiftrec.manifest import (
    atomic_dir,
    atomic_write_bytes,
    make_manifest,
    read_json,
    require_complete,
    sha256_file,
    write_json,
)
from shiftrec.text.cache import EncodeStats, encode_texts
from shiftrec.text.encoders import DEFAULT_BATCH_SIZE, Progress, TextEncoder, resolve_encoder
from shiftrec.text.item_text import TextConfig, item_texts

FEATURES_FILE = "item_embeddings.npz"
FEATURES_KIND = "item-embeddings"


@dataclass
class ItemEmbeddings:
    """Item vectors aligned with `keys` ("domain/item_id", keys[0] == "<pad>", row 0 zeros)."""

    keys: np.ndarray
    vectors: np.ndarray
    encoder: str
    fingerprint: str
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    @property
    def n_items(self) -> int:
        return len(self.keys) - 1

    def aligned(self, item_map: IdMap) -> np.ndarray:
        """The (item_map.n_items + 1, dim) matrix for another id map over the same items."""
        if len(item_map.keys) == len(self.keys) and np.array_equal(item_map.keys, self.keys):
            return self.vectors
        pos = {k: i for i, k in enumerate(self.keys.tolist())}
        idx = np.array([pos.get(k, -1) for k in item_map.keys[1:].tolist()], dtype=np.int64)
        missing = int((idx < 0).sum())
        if missing:
            first = item_map.keys[1:][idx < 0][0]
            raise ArtifactError(f"{missing} items of the id map have no embedding (first: '{first}')")
        out = np.zeros((len(item_map.keys), self.dim), dtype=np.float32)
        out[1:] = self.vectors[idx]
        return out

    def save(self, path: str | Path) -> Path:
        import io

        p = Path(path)
        buf = io.BytesIO()
        np.savez(buf, keys=self.keys.astype(str), vectors=self.vectors.astype(np.float32))
        with atomic_dir(p) as tmp:
            atomic_write_bytes(tmp / FEATURES_FILE, buf.getvalue())
            write_json(tmp / "manifest.json", make_manifest(
                FEATURES_KIND, encoder=self.encoder, fingerprint=self.fingerprint, dim=self.dim,
                n_items=self.n_items, file=FEATURES_FILE, sha256=sha256_file(tmp / FEATURES_FILE),
                **self.meta))
        return p

    @classmethod
    def load(cls, path: str | Path, encoder: str | None = None,
             dim: int | None = None) -> ItemEmbeddings:
        """Strict load; `encoder`/`dim`, when given, must match what the folder was built with."""
        p = Path(path)
        mpath = p / "manifest.json"
        if not mpath.exists():
            raise ArtifactError("not an item-embeddings folder (manifest.json missing)", path=p)
        require_complete(p, "item-embeddings folder")
        man = read_json(mpath)
        if man.get("sha256") and sha256_file(p / FEATURES_FILE) != man["sha256"]:
            raise ArtifactError("embeddings file does not match the SHA-256 in its manifest "
                                "(changed or corrupt)", path=p / FEATURES_FILE)
        if man.get("kind") != FEATURES_KIND:
            raise ArtifactError(f"manifest kind is '{man.get('kind')}', expected '{FEATURES_KIND}'",
                                path=mpath)
        if (encoder is not None and man.get("encoder") != encoder) or \
                (dim is not None and man.get("dim") != dim):
            raise ArtifactError(
                f"item embeddings were built by encoder '{man.get('encoder')}' (dim {man.get('dim')}),"
                f" but encoder '{encoder or man.get('encoder')}' (dim {dim or man.get('dim')}) "
                "was requested", path=p)
        with np.load(p / FEATURES_FILE, allow_pickle=False) as z:
            keys, vectors = z["keys"].astype(object), z["vectors"]
        if vectors.dtype != np.float32 or vectors.shape != (len(keys), man.get("dim")):
            raise ArtifactError(f"vectors {vectors.shape} {vectors.dtype} disagree with manifest "
                                f"(dim {man.get('dim')}, {len(keys) - 1} items)", path=p / FEATURES_FILE)
        meta = {k: v for k, v in man.items()
                if k not in {"kind", "created", "versions", "encoder", "fingerprint", "dim",
                             "n_items", "file", "sha256"}}
        return cls(keys, vectors, man["encoder"], man.get("fingerprint", ""), meta)


def _texts_fingerprint(texts: list[str]) -> str:
    h = hashlib.sha1()
    for t in texts:
        h.update(t.encode("utf-8"))
        h.update(b"\0")
    return h.hexdigest()[:32]


def embed_items(items: pl.DataFrame, item_map: IdMap, encoder: str | TextEncoder = "minilm",
                text_cfg: TextConfig = TextConfig(), cache_dir: str | Path | None = None,
                progress: Progress | None = None, batch_size: int = DEFAULT_BATCH_SIZE,
                device: str | None = None, threads: int | None = None,
                ) -> tuple[ItemEmbeddings, EncodeStats]:
    """Embed the text of every item of `item_map` (built from `items`, the Dataset items frame)."""
    enc = resolve_encoder(encoder, device=device, threads=threads)
    texts = item_texts(items, item_map, text_cfg)
    vec, stats = encode_texts(texts, enc, cache_dir=cache_dir, batch_size=batch_size,
                              progress=progress)
    mat = np.zeros((item_map.n_items + 1, enc.dim), dtype=np.float32)
    mat[1:] = vec
    meta = {"text_config": to_dict(text_cfg), "texts_fingerprint": _texts_fingerprint(texts),
            "empty_texts": sum(1 for t in texts if not t)}
    return ItemEmbeddings(np.asarray(item_map.keys, dtype=object), mat, enc.name, enc.fingerprint,
                          meta), stats


def encode_items(items: pl.DataFrame, item_map: IdMap, encoder: str | TextEncoder = "minilm",
                 text_cfg: TextConfig = TextConfig(), cache_dir: str | Path | None = None,
                 progress: Progress | None = None, batch_size: int = DEFAULT_BATCH_SIZE,
                 device: str | None = None, threads: int | None = None) -> np.ndarray:
    """(item_map.n_items + 1, dim) float32 item text embeddings, row 0 zeros (padding), rows
    L2-normalised. Items the catalogue lacks are embedded from an empty text."""
    return embed_items(items, item_map, encoder, text_cfg, cache_dir, progress, batch_size,
                       device, threads)[0].vectors


def split_item_embeddings(items: pl.DataFrame, split: SeqSplit, **kwargs: Any) -> np.ndarray:
    """`encode_items` for a SeqSplit: rows aligned with split.item_map."""
    return encode_items(items, split.item_map, **kwargs)
