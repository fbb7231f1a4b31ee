"""Embedding cache: vectors keyed by sha1(text) for one encoder (name + weights fingerprint).

A cache folder holds ``embeddings.npz`` (``hashes`` <U40, ``vectors`` float32 (n, dim),
``encoder_id``, ``dim``) and ``manifest.json`` (encoder, fingerprint, dim, count, versions).
Both are written atomically (npz first). Loading is strict: a folder built by another encoder or
with another dimension raises ArtifactError naming both. A re-run encodes only texts whose hash
is not there yet.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from shiftrec.errors import ArtifactError
from shiftrec.manifest import atomic_write_bytes, make_manifest, read_json, write_json
from shiftrec.text.encoders import DEFAULT_BATCH_SIZE, Progress, TextEncoder

EMB_FILE = "embeddings.npz"
MANIFEST_FILE = "manifest.json"
CACHE_KIND = "embedding-cache"


def text_hash(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8")).hexdigest()


class EmbeddingCache:
    """In-memory view of one cache folder for one encoder."""

    def __init__(self, folder: str | Path, encoder: str, fingerprint: str, dim: int) -> None:
        self.folder = Path(folder)
        self.encoder = encoder
        self.fingerprint = fingerprint
        self.dim = int(dim)
        self.hashes: np.ndarray = np.zeros(0, dtype="<U40")
        self.vectors: np.ndarray = np.zeros((0, self.dim), dtype=np.float32)
        self._index: dict[str, int] = {}
        self._dirty = False
        self._load()

    @property
    def encoder_id(self) -> str:
        return f"{self.encoder}@{self.fingerprint}"

    @classmethod
    def for_encoder(cls, folder: str | Path, enc: TextEncoder) -> EmbeddingCache:
        return cls(folder, enc.name, enc.fingerprint, enc.dim)

    def __len__(self) -> int:
        return len(self.hashes)

    def _load(self) -> None:
        mpath = self.folder / MANIFEST_FILE
        epath = self.folder / EMB_FILE
        if not mpath.exists():
            if epath.exists():
                raise ArtifactError(f"embedding cache has {EMB_FILE} but no {MANIFEST_FILE}",
                                    path=self.folder)
            return
        try:
            man = read_json(mpath)
        except ValueError:
            raise ArtifactError("embedding cache manifest is not valid JSON", path=mpath) from None
        if man.get("kind") != CACHE_KIND:
            raise ArtifactError(f"manifest kind is '{man.get('kind')}', expected '{CACHE_KIND}'",
                                path=mpath)
        have = f"{man.get('encoder')}@{man.get('fingerprint')}"
        if have != self.encoder_id or man.get("dim") != self.dim:
            raise ArtifactError(
                f"embedding cache was built by encoder '{have}' (dim {man.get('dim')}), "
                f"but encoder '{self.encoder_id}' (dim {self.dim}) was requested; "
                "use another cache folder or delete this one", path=self.folder)
        if not epath.exists():
            return  # manifest written, no vectors yet: an empty cache
        try:
            with np.load(epath, allow_pickle=False) as z:
                hashes, vectors = z["hashes"], z["vectors"]
                stored_id, stored_dim = str(z["encoder_id"]), int(z["dim"])
        except (OSError, ValueError, KeyError) as e:
            raise ArtifactError(f"unreadable embedding cache: {e}", path=epath) from None
        if stored_id != self.encoder_id or stored_dim != self.dim:
            raise ArtifactError(
                f"embedding file was built by encoder '{stored_id}' (dim {stored_dim}), "
                f"but encoder '{self.encoder_id}' (dim {self.dim}) was requested", path=epath)
        if (vectors.dtype != np.float32 or vectors.ndim != 2 or vectors.shape[1] != self.dim
                or hashes.shape != (vectors.shape[0],)):
            raise ArtifactError(f"embedding cache arrays are inconsistent: hashes {hashes.shape}, "
                                f"vectors {vectors.shape} {vectors.dtype}", path=epath)
        self.hashes, self.vectors = hashes.astype("<U40"), vectors
        self._index = {h: i for i, h in enumerate(self.hashes.tolist())}

    def lookup(self, hashes: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """(found mask, rows): rows[i] is the cached vector for hashes[i] where found."""
        pos = np.array([self._index.get(h, -1) for h in hashes], dtype=np.int64)
        found = pos >= 0
        rows = np.zeros((len(hashes), self.dim), dtype=np.float32)
        rows[found] = self.vectors[pos[found]]
        return found, rows

    def add(self, hashes: Sequence[str], vectors: np.ndarray) -> None:
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.shape != (len(hashes), self.dim):
            raise ArtifactError(f"cannot add vectors of shape {vectors.shape} to a dim-{self.dim} "
                                "cache", path=self.folder)
        new = [i for i, h in enumerate(hashes) if h not in self._index]
        if not new:
            return
        start = len(self.hashes)
        add_h = np.array([hashes[i] for i in new], dtype="<U40")
        self.hashes = np.concatenate([self.hashes, add_h])
        self.vectors = np.concatenate([self.vectors, vectors[new]])
        for j, h in enumerate(add_h.tolist()):
            self._index[h] = start + j
        self._dirty = True

    def save(self, **extra: object) -> None:
        """Write the npz then the manifest, each atomically (only when something changed)."""
        if not self._dirty and (self.folder / MANIFEST_FILE).exists():
            return
        buf = io.BytesIO()
        np.savez(buf, hashes=self.hashes, vectors=self.vectors,
                 encoder_id=np.array(self.encoder_id), dim=np.array(self.dim))
        atomic_write_bytes(self.folder / EMB_FILE, buf.getvalue())
        write_json(self.folder / MANIFEST_FILE, make_manifest(
            CACHE_KIND, encoder=self.encoder, fingerprint=self.fingerprint, dim=self.dim,
            count=len(self.hashes), file=EMB_FILE, key="sha1(utf-8 text)", **extra))
        self._dirty = False


@dataclass(frozen=True)
class EncodeStats:
    texts: int  # texts asked for
    unique: int  # distinct texts among them
    cached: int  # distinct texts found in the cache
    encoded: int  # distinct texts run through the encoder


def encode_texts(texts: Sequence[str], enc: TextEncoder, cache_dir: str | Path | None = None,
                 batch_size: int = DEFAULT_BATCH_SIZE, progress: Progress | None = None,
                 ) -> tuple[np.ndarray, EncodeStats]:
    """Encode `texts` (distinct texts once), reusing and extending the cache in `cache_dir`.

    Returns ((len(texts), enc.dim) float32 L2-normalised, stats). With a cache whose texts are
    all present, the encoder's weights are never loaded.
    """
    hashes = [text_hash(t) for t in texts]
    first: dict[str, int] = {}
    for i, h in enumerate(hashes):
        first.setdefault(h, i)
    uniq_h = list(first)
    uniq_t = [texts[first[h]] for h in uniq_h]
    cache = EmbeddingCache.for_encoder(cache_dir, enc) if cache_dir is not None else None
    if cache is not None:
        found, rows = cache.lookup(uniq_h)
    else:
        found, rows = np.zeros(len(uniq_h), dtype=bool), np.zeros((len(uniq_h), enc.dim), np.float32)
    todo = np.flatnonzero(~found)
    if len(todo):
        vec = enc.encode([uniq_t[i] for i in todo], batch_size=batch_size, progress=progress)
        rows[todo] = vec
        if cache is not None:
            cache.add([uniq_h[i] for i in todo], vec)
    elif progress is not None:
        progress(0, 0)
    if cache is not None:
        cache.save()
    pos = {h: j for j, h in enumerate(uniq_h)}
    out = rows[[pos[h] for h in hashes]] if hashes else np.zeros((0, enc.dim), np.float32)
    return out, EncodeStats(len(texts), len(uniq_h), int(found.sum()), len(todo))
