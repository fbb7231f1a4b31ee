from __future__ import annotations

import json

import polars as pl
import pytest
from typer.testing import CliRunner

from shiftrec.cli import app as cli_app
from shiftrec.data.synthetic import StoreConfig, generate


@pytest.fixture(scope="module")
def app():
    return cli_app  # the real CLI, with its one error handler


@pytest.fixture(scope="module")
def store_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("store")
    generate(StoreConfig(n_users=200, n_items=120, mean_events=25, seed=3)).write(d)
    return d


def test_help_has_examples(app):
    r = CliRunner().invoke(app, ["shifts", "--help"])
    assert r.exit_code == 0 and "shiftrec shifts" in r.output
    for cmd in ("topics", "flows"):
        r = CliRunner().invoke(app, [cmd, "--help"])
        assert r.exit_code == 0 and f"shiftrec {cmd}" in r.output


def test_topics_shifts_flows(app, store_dir, tmp_path):
    run = CliRunner()
    r = run.invoke(app, ["topics", str(store_dir), "-o", str(tmp_path / "t")])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "t" / "topics.json").exists()
    r = run.invoke(app, ["shifts", str(store_dir), "--topics", str(tmp_path / "t"), "-o", str(tmp_path / "s")])
    assert r.exit_code == 0, r.output
    df = pl.read_parquet(tmp_path / "s" / "shifts.parquet")
    assert {"user_id", "event_index", "topics_left", "topics_entered", "magnitude", "confidence"} <= set(df.columns)
    summ = json.loads((tmp_path / "s" / "shifts_summary.json").read_text())
    assert "against_planted_truth" in summ and summ["shifts"] == df.height
    user = df["user_id"][0]
    r = run.invoke(app, ["shifts", str(store_dir), "--topics", str(tmp_path / "t"), "--user", user,
                         "--plot", str(tmp_path / "u.png")])
    assert r.exit_code == 0 and "shift" in r.output and (tmp_path / "u.png").exists()
    r = run.invoke(app, ["flows", str(store_dir), "--topics", str(tmp_path / "t"), "--every", "1mo",
                         "-o", str(tmp_path / "f")])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "f" / "flows.png").exists()
    assert json.loads((tmp_path / "f" / "flows.json").read_text())["pairs"]


def test_unknown_user_and_bad_input(app, store_dir, tmp_path):
    r = CliRunner().invoke(app, ["shifts", str(store_dir), "--user", "nobody"])
    assert r.exit_code == 2 and "unknown user 'nobody'" in r.output
    r = CliRunner().invoke(app, ["flows", str(tmp_path / "nope")])
    assert r.exit_code == 2 and "manifest.json missing" in r.output
    r = CliRunner().invoke(app, ["topics", str(store_dir), "--source", "magic"])
    assert r.exit_code == 2 and "--source must be one of" in r.output
