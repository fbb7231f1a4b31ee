from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real datasets folder; skips the test with the reason when it is absent."""
    from shiftrec.paths import ENV_VAR, data_root

    root = data_root()
    if root is None:
        pytest.skip(f"shared datasets not found: set {ENV_VAR} or place them at ../shared/data")
    return root


@pytest.fixture(scope="session")
def small_store():
    """A small seeded synthetic store (known planted shifts)."""
    from shiftrec.data.synthetic import StoreConfig, generate

    return generate(StoreConfig(n_users=300, n_items=240, mean_events=20, seed=7))


@pytest.fixture(scope="session")
def small_split(small_store):
    from shiftrec.data.clean import clean
    from shiftrec.data.readers._common import ReadResult, finish
    from shiftrec.data.schema import conform_items
    from shiftrec.data.splits import leave_one_out

    rr: ReadResult = finish(small_store.events, conform_items(small_store.items), [],
                            small_store.events.height, ["synthetic"])
    ds, _, _ = clean(rr, name="small")
    return leave_one_out(ds)
