from __future__ import annotations

import hashlib

import numpy as np
import pytest


class CountingEncoder:
    """A fake encoder with deterministic vectors that counts what it encodes."""

    def __init__(self, name: str = "fake", dim: int = 8, fingerprint: str = "f0") -> None:
        self.name = name
        self.dim = dim
        self.fingerprint = fingerprint
        self.calls: list[list[str]] = []

    @property
    def encoded(self) -> int:
        return sum(len(c) for c in self.calls)

    def encode(self, texts, batch_size=64, progress=None):
        self.calls.append(list(texts))
        out = np.stack([np.random.default_rng(
            int.from_bytes(hashlib.sha1(t.encode()).digest()[:8], "little")).normal(size=self.dim)
            for t in texts]).astype(np.float32) if texts else np.zeros((0, self.dim), np.float32)
        if progress is not None:
            progress(len(texts), len(texts))
        return out / np.linalg.norm(out, axis=1, keepdims=True)


@pytest.fixture
def counting_encoder():
    return CountingEncoder()


@pytest.fixture(scope="session")
def torch_threads():
    import torch

    torch.set_num_threads(2)


@pytest.fixture(scope="session")
def minilm(torch_threads):
    from shiftrec.text import load_encoder

    return load_encoder("minilm", device="cpu", threads=2)


@pytest.fixture(scope="session")
def use_ml():
    from shiftrec.text import load_encoder

    return load_encoder("use-multilingual")
