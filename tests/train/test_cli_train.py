from __future__ import annotations

import json

import typer
from typer.testing import CliRunner

from shiftrec.cli_train import register
from tests.models.cyclic import cyclic_split


def _app() -> typer.Typer:
    app = typer.Typer()
    register(app)

    @app.command("noop", hidden=True)
    def _noop() -> None:  # a second command keeps `train` a named subcommand
        pass

    return app


def test_train_itemknn_and_sasrec(tmp_path):
    split_dir = cyclic_split(n_users=30, n_items=8).save(tmp_path / "split")
    r = CliRunner().invoke(_app(), ["train", str(split_dir), "--model", "itemknn", "-o", str(tmp_path / "knn")])
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "knn" / "metrics.json").read_text())["recall@10"] == 1.0

    cfg = tmp_path / "s.yaml"
    cfg.write_text("hidden: 8\ninner: 16\ntrain:\n  device: cpu\n  threads: 1\n"
                   "  phases: [{epochs: 3, lr: 0.01, batch_size: 64}]\n")
    r = CliRunner().invoke(_app(), ["train", str(split_dir), "--model", "sasrec", "--config", str(cfg),
                                    "--epochs", "2", "--seed", "3", "-o", str(tmp_path / "sas")])
    assert r.exit_code == 0, r.output
    assert "epoch 2" in r.output and "epoch 3" not in r.output
    man = json.loads((tmp_path / "sas" / "manifest.json").read_text())
    assert man["hidden"] == 8 and man["config"]["train"]["seed"] == 3
    assert (tmp_path / "sas" / "trainer" / "checkpoint.json").exists()


def test_unknown_model(tmp_path):
    split_dir = cyclic_split(n_users=10, n_items=8).save(tmp_path / "split")
    r = CliRunner().invoke(_app(), ["train", str(split_dir), "--model", "nope"])
    assert r.exit_code != 0 and "valid models" in str(r.exception)
