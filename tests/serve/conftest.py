"""Fixtures for the serving tests: a small synthetic store packaged as runs of several models,
a service over a temporary SQLite or PostgreSQL store, and a real uvicorn process."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

PG_URL = os.environ.get("SHIFTREC_TEST_PG", "postgresql://root@127.0.0.1:5432/test")
TOKEN = "test-token-123"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="session")
def store_data():
    """(dataset, split) of a seeded synthetic store with planted shifts."""
    from shiftrec.data.clean import clean
    from shiftrec.data.readers._common import finish
    from shiftrec.data.schema import conform_items
    from shiftrec.data.splits import leave_one_out
    from shiftrec.data.synthetic import StoreConfig, generate

    st = generate(StoreConfig(n_users=300, n_items=240, mean_events=20, seed=7))
    rr = finish(st.events, conform_items(st.items), [], st.events.height, ["synthetic"])
    ds, _, _ = clean(rr, name="small")
    return ds, leave_one_out(ds)


def make_run(tmp: Path, model, ds, split, name: str) -> Path:
    from shiftrec.pipelines.run import write_run

    model.save(tmp / f"{name}-model")
    return write_run(tmp / f"{name}-run", model_dir=tmp / f"{name}-model", split=split,
                     dataset=ds)


@pytest.fixture(scope="session")
def knn_run(tmp_path_factory, store_data):
    from shiftrec.models.itemknn import ItemKNN

    ds, split = store_data
    return make_run(tmp_path_factory.mktemp("knn"), ItemKNN().fit(split), ds, split, "knn")


@pytest.fixture(scope="session")
def text_run(tmp_path_factory, store_data):
    """The inductive text model on seeded random 'text' vectors (nothing is encoded)."""
    from shiftrec.models.registry import build_model

    ds, split = store_data
    text = np.random.default_rng(0).normal(size=(split.n_items + 1, 8)).astype(np.float32)
    text[0] = 0
    m = build_model("transfer", item_text=text, encoder="fake", hidden=16, n_layers=1,
                    n_heads=2, inner=32, n_experts=2, max_len=20,
                    train={"epochs": 1, "batch_size": 256, "seed": 0, "threads": 1,
                           "device": "cpu"})
    return make_run(tmp_path_factory.mktemp("text"), m.fit(split), ds, split, "text")


class FakeEncoder:
    """Deterministic 8-d vectors from the text's hash (stands in for the run's encoder)."""

    name, dim, fingerprint = "fake", 8, "f0"

    def encode(self, texts, batch_size=64, progress=None):
        import hashlib

        out = [np.random.default_rng(int.from_bytes(hashlib.sha1(t.encode()).digest()[:8],
                                                    "little")).normal(size=8) for t in texts]
        return np.asarray(out, np.float32).reshape(len(texts), 8)


def pg_available() -> bool:
    try:
        import psycopg

        psycopg.connect(PG_URL, connect_timeout=2).close()
        return True
    except Exception:  # noqa: BLE001
        return False


def pg_schema_url() -> tuple[str, str]:
    """A fresh schema in the test database and a URL whose search_path is that schema."""
    import psycopg

    schema = "t_" + uuid.uuid4().hex[:12]
    with psycopg.connect(PG_URL, autocommit=True) as c:
        c.execute(f"CREATE SCHEMA {schema}")
    sep = "&" if "?" in PG_URL else "?"
    return f"{PG_URL}{sep}options=-csearch_path%3D{schema}", schema


def drop_schema(schema: str) -> None:
    import psycopg

    with psycopg.connect(PG_URL, autocommit=True) as c:
        c.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request, tmp_path):
    """The same tests over both backends; PostgreSQL is skipped (with the reason) only when
    the server is unreachable."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'events.sqlite'}"
        return
    if not pg_available():
        pytest.skip(f"PostgreSQL not reachable at {PG_URL}")
    url, schema = pg_schema_url()
    yield url
    drop_schema(schema)


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Server:
    """`shiftrec serve RUN` in a subprocess (a real uvicorn)."""

    def __init__(self, run: Path, store: str, port: int | None = None,
                 args: tuple[str, ...] = ()) -> None:
        self.run, self.store, self.args = run, store, args
        self.port = port or free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60.0) -> Server:
        import httpx

        env = {**os.environ, "SHIFTREC_TOKEN": TOKEN, "OMP_NUM_THREADS": "1"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "shiftrec.cli", "serve", str(self.run), "--port",
             str(self.port), "--store", self.store, *self.args], env=env, stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE)
        t0 = time.time()
        while time.time() - t0 < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.proc.stderr.read().decode()[-2000:]}")
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError("server did not start")

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.kill()  # SIGKILL
        self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
