"""`shiftrec package`, `recommend` (table, --json, --all), `export-events`; one-line errors."""

from __future__ import annotations

import json

import polars as pl
from typer.testing import CliRunner

from shiftrec.cli.app import app


def _run(*args: str):
    from shiftrec.cli.app import main  # noqa: F401 - the real entry point turns errors into lines

    return CliRunner().invoke(app, list(args), catch_exceptions=True)


def test_package_then_recommend(tmp_path, store_data):
    from shiftrec.models.itemknn import ItemKNN

    ds, split = store_data
    ds.save(tmp_path / "ds")
    split.save(tmp_path / "split")
    ItemKNN().fit(split).save(tmp_path / "m")
    r = _run("package", str(tmp_path / "m"), "--split", str(tmp_path / "split"), "--dataset",
             str(tmp_path / "ds"), "-o", str(tmp_path / "run"))
    assert r.exit_code == 0, r.output
    user = str(split.user_ids[0])
    r = _run("recommend", str(tmp_path / "run"), "--user", user, "-k", "3")
    assert r.exit_code == 0 and "reasons" in r.output and "score" in r.output
    r = _run("recommend", str(tmp_path / "run"), "--user", user, "-k", "3", "--json")
    body = json.loads(r.output)
    assert len(body["items"]) == 3 and body["items"][0]["reasons"]
    r = _run("recommend", str(tmp_path / "run"), "--all", "-o", str(tmp_path / "recs.parquet"),
             "-k", "4")
    assert r.exit_code == 0, r.output
    df = pl.read_parquet(tmp_path / "recs.parquet")
    assert df.height == 4 * len(split.user_ids) and set(df.columns) == {"user_id", "rank",
                                                                        "item_id", "score"}


def test_package_with_one_category_says_to_learn_topics(tmp_path, store_data):
    """A catalogue with a single category gives one category topic: `package` refuses it in one
    line naming the fix (it used to write a run whose every recommendation failed)."""
    from shiftrec.data.schema import Dataset
    from shiftrec.data.splits import leave_one_out
    from shiftrec.models.itemknn import ItemKNN

    ds, _ = store_data
    one = Dataset(ds.events, ds.items.with_columns(pl.lit("Everything").alias("category")), name="one")
    split = leave_one_out(one)
    one.save(tmp_path / "ds")
    split.save(tmp_path / "split")
    ItemKNN().fit(split).save(tmp_path / "m")
    r = _run("package", str(tmp_path / "m"), "--split", str(tmp_path / "split"), "--dataset",
             str(tmp_path / "ds"), "-o", str(tmp_path / "run"))
    assert r.exit_code != 0 and not (tmp_path / "run").exists()
    assert r.exit_code == 2 and "1 topic" in r.output and "shiftrec topics" in r.output


def test_export_events_cli(tmp_path):
    from shiftrec.data.schema import Dataset
    from shiftrec.serve.store import EventStore, StoredEvent

    url = f"sqlite:///{tmp_path / 'e.sqlite'}"
    s = EventStore(url)
    s.append([StoredEvent(f"e{i}", "u", "I1", "store", 1_700_000_000_000_000 + i, "view")
              for i in range(3)])
    s.close()
    r = _run("export-events", "--store", url, "-o", str(tmp_path / "exp"))
    assert r.exit_code == 0, r.output
    assert Dataset.load(tmp_path / "exp").events.height == 3


def test_bad_run_is_one_line(tmp_path):
    import subprocess
    import sys

    p = subprocess.run([sys.executable, "-m", "shiftrec.cli", "recommend", str(tmp_path / "no"),
                        "--user", "u"], capture_output=True, text=True)
    assert p.returncode == 2 and p.stderr.count("\n") == 1 and "run folder not found" in p.stderr


def test_reload_watcher_swaps_in_a_rewritten_run(tmp_path, knn_run, text_run):
    """`shiftrec serve --reload`: when RUN_DIR is swapped for a retrained run (a new manifest
    `created`), the watcher reloads it; live events are replayed into the new run."""
    import shutil
    import time

    from fastapi.testclient import TestClient

    from shiftrec.cli.serve import _watch
    from shiftrec.serve.app import Service, create_app
    from tests.serve.conftest import AUTH, TOKEN, FakeEncoder

    run = tmp_path / "run"
    shutil.copytree(knn_run, run)
    svc = Service(run, f"sqlite:///{tmp_path / 'ev.sqlite'}", token=TOKEN,
                  encoder=FakeEncoder())
    try:
        c = TestClient(create_app(svc))
        c.post("/v1/events", json={"events": [{"user_id": "w", "item_id": "I0000001",
                                               "timestamp": 1.7e9}]}, headers=AUTH)
        _watch(svc, run, interval=0.2)
        time.sleep(0.6)
        assert svc.reloads == 0  # nothing changed: no reload
        new = tmp_path / ".run.new"
        shutil.copytree(text_run, new)
        # written in the same second as the serving run: the watcher must still see the change
        man = json.loads((new / "manifest.json").read_text())
        man["created"] = json.loads((run / "manifest.json").read_text())["created"]
        (new / "manifest.json").write_text(json.dumps(man))
        old = tmp_path / ".run.old"
        run.rename(old)
        new.rename(run)
        deadline = time.time() + 30
        while svc.reloads == 0 and time.time() < deadline:
            time.sleep(0.1)
        assert svc.reloads == 1 and c.get("/healthz").json()["model"] == "transfer"
        assert c.get("/v1/users/w/interests").json()["n_events"] == 1
    finally:
        svc.close()
