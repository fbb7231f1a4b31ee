from __future__ import annotations

import json

import typer
from typer.testing import CliRunner

from shiftrec.cli.train import register
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


def test_train_transfer_models_need_item_text_then_train(tmp_path):
    import subprocess
    import sys

    import numpy as np

    from shiftrec.errors import ConfigError
    from shiftrec.models.registry import load_model
    from shiftrec.text.features import ItemEmbeddings

    split = cyclic_split(n_users=30, n_items=8)
    split_dir = split.save(tmp_path / "split")
    r = CliRunner().invoke(_app(), ["train", str(split_dir), "--model", "transfer", "-o", str(tmp_path / "t")])
    assert r.exit_code != 0 and isinstance(r.exception, ConfigError)
    assert "needs item text embeddings" in str(r.exception) and "shiftrec encode" in str(r.exception)
    # through the real entry point: one line, exit 2, no traceback
    p = subprocess.run([sys.executable, "-m", "shiftrec.cli", "train", str(split_dir), "--model",
                        "transfer-transductive", "-o", str(tmp_path / "t")],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and "Traceback" not in p.stderr + p.stdout, p.stderr
    assert p.stderr.strip().startswith("error: model 'transfer-transductive' needs item text")
    # item embeddings as `shiftrec encode --split` writes them (seeded stand-in vectors)
    vec = np.random.default_rng(0).normal(size=(split.n_items + 1, 12)).astype(np.float32)
    vec[0] = 0
    ItemEmbeddings(split.item_map.keys, vec, "seeded-random", "fp").save(tmp_path / "emb")
    r = CliRunner().invoke(_app(), ["train", str(split_dir), "--model", "itemknn", "--item-text",
                                    str(tmp_path / "emb"), "-o", str(tmp_path / "k")])
    assert isinstance(r.exception, ConfigError) and "text models" in str(r.exception)
    cfg = tmp_path / "t.yaml"
    cfg.write_text("hidden: 16\nn_layers: 1\ninner: 32\nn_experts: 2\n"
                   "train: {threads: 1, batch_size: 64, lr: 0.01, device: cpu}\n")
    for name in ("transfer", "transfer-transductive"):
        out = tmp_path / name
        r = CliRunner().invoke(_app(), ["train", str(split_dir), "--model", name, "--item-text",
                                        str(tmp_path / "emb"), "--config", str(cfg), "--epochs", "2",
                                        "--seed", "3", "-o", str(out)])
        assert r.exit_code == 0, r.output
        assert "epoch 2" in r.output and "epoch 3" not in r.output
        man = json.loads((out / "manifest.json").read_text())
        assert man["model"] == "transfer" and man["encoder"] == "seeded-random"
        assert man["mode"] == ("inductive" if name == "transfer" else "transductive")
        tc = man["train_config"]
        assert tc["seed"] == 3 and tc["phases"][0]["epochs"] == 2 and tc["threads"] == 1
        assert tc["phases"][0]["lr"] == 0.01 and tc["phases"][0]["patience"] == 10  # kept
        metrics = json.loads((out / "metrics.json").read_text())
        assert metrics["per_user"]["n_users"] == 30 and (out / "metrics.ranks.npz").exists()
        assert load_model(out).name == name


def test_train_shiftfusion_over_a_saved_model_with_topics(tmp_path):
    """`--model shiftfusion --base-model M --topics T`: the flows rescue a base that cannot rank
    the cycle (popularity); the gate uses the topics; a wrong base size is a clear error."""
    import numpy as np

    from shiftrec.errors import ArtifactError, ConfigError
    from shiftrec.interest.topics import Topics

    split = cyclic_split(n_users=40, n_items=8)
    split_dir = split.save(tmp_path / "split")
    keys = split.item_map.keys[1:]
    Topics(keys, np.arange(len(keys)) % 2, ["even", "odd"], [[], []], "test").save(tmp_path / "topics")
    app = _app()
    r = CliRunner().invoke(app, ["train", str(split_dir), "--model", "popularity", "-o", str(tmp_path / "pop")])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(app, ["train", str(split_dir), "--model", "shiftfusion", "--base-model",
                                 str(tmp_path / "pop"), "--topics", str(tmp_path / "topics"),
                                 "-o", str(tmp_path / "fused")])
    assert r.exit_code == 0, r.output
    pop = json.loads((tmp_path / "pop" / "metrics.json").read_text())
    fused = json.loads((tmp_path / "fused" / "metrics.json").read_text())
    assert fused["ndcg@10"] > pop["ndcg@10"] + 0.05
    man = json.loads((tmp_path / "fused" / "manifest.json").read_text())
    assert man["model"] == "shiftfusion" and man["has_item_topic"] and man["base_model"] == "popularity"
    other = cyclic_split(n_users=20, n_items=5).save(tmp_path / "other")
    r = CliRunner().invoke(app, ["train", str(other), "--model", "shiftfusion", "--base-model",
                                 str(tmp_path / "pop"), "-o", str(tmp_path / "bad")])
    assert r.exit_code != 0 and isinstance(r.exception, ArtifactError)
    assert "has 8 items but split" in str(r.exception) and "has 5" in str(r.exception)
    r = CliRunner().invoke(app, ["train", str(split_dir), "--model", "itemknn", "--topics",
                                 str(tmp_path / "topics"), "-o", str(tmp_path / "bad2")])
    assert r.exit_code != 0 and isinstance(r.exception, ConfigError)


def test_epochs_flag_overrides_only_epochs(tmp_path):
    """`--epochs 3` sets the epochs and keeps sasrec's patience 10, lr 1e-3 and batch 2048
    (setting one phase field used to reset the others to Phase()'s defaults, patience 5)."""
    split_dir = cyclic_split(n_users=20, n_items=8).save(tmp_path / "split")
    cfg = tmp_path / "s.yaml"
    cfg.write_text("hidden: 8\ninner: 16\ntrain: {device: cpu}\n")
    r = CliRunner().invoke(_app(), ["train", str(split_dir), "--model", "sasrec", "--config",
                                    str(cfg), "--epochs", "3", "--threads", "1",
                                    "-o", str(tmp_path / "sas")])
    assert r.exit_code == 0, r.output
    tc = json.loads((tmp_path / "sas" / "manifest.json").read_text())["config"]["train"]
    ph = tc["phases"][0]
    assert (ph["epochs"], ph["patience"], ph["lr"], ph["batch_size"]) == (3, 10, 1e-3, 2048)
    assert tc["threads"] == 1 and tc["device"] == "cpu"
    # a YAML phase mapping also changes only what it names
    cfg.write_text("hidden: 8\ninner: 16\ntrain: {device: cpu, phases: [{lr: 0.01}]}\n")
    r = CliRunner().invoke(_app(), ["train", str(split_dir), "--model", "sasrec", "--config",
                                    str(cfg), "--epochs", "2", "-o", str(tmp_path / "sas2")])
    assert r.exit_code == 0, r.output
    ph = json.loads((tmp_path / "sas2" / "manifest.json").read_text())["config"]["train"]["phases"][0]
    assert (ph["epochs"], ph["patience"], ph["lr"]) == (2, 10, 0.01)


def test_resume_without_checkpoint_says_so(tmp_path):
    from shiftrec.errors import ArtifactError

    split_dir = cyclic_split(n_users=20, n_items=8).save(tmp_path / "split")
    r = CliRunner().invoke(_app(), ["train", str(split_dir), "--model", "sasrec", "--resume",
                                    "-o", str(tmp_path / "fresh")])
    assert isinstance(r.exception, ArtifactError)
    assert "no checkpoint to resume from" in str(r.exception)
    assert not (tmp_path / "fresh" / "manifest.json").exists()


def test_train_accepts_a_dataset_folder_split_with_loo(tmp_path):
    """One input convention: a dataset folder is split with the default leave-one-out and gives
    the same metrics as its split folder from `prepare`."""
    from shiftrec.data.schema import Dataset, conform_events, conform_items
    from shiftrec.data.splits import leave_one_out
    from tests.models.test_transfer import topic_domain, topic_vectors

    raw, _ = topic_domain("shop", topic_vectors(3, 8, seed=1), seed=2)
    ds = Dataset(conform_events(raw.events).collect(), conform_items(raw.items), name="shop")
    ds.save(tmp_path / "ds")
    leave_one_out(ds).save(tmp_path / "split")
    outs = []
    for src, name in ((tmp_path / "ds", "from-ds"), (tmp_path / "split", "from-split")):
        r = CliRunner().invoke(_app(), ["train", str(src), "--model", "itemknn", "-o",
                                        str(tmp_path / name)])
        assert r.exit_code == 0, r.output
        outs.append(json.loads((tmp_path / name / "metrics.json").read_text()))
    assert outs[0]["ndcg@10"] == outs[1]["ndcg@10"]
    for o in (tmp_path / "from-ds", tmp_path / "from-split"):
        assert json.loads((o / "manifest.json").read_text())["item_keys_hash"]


def test_model_sets_come_from_the_registry():
    from shiftrec.cli.train import _names
    from shiftrec.models.registry import REGISTRY

    assert _names("needs_item_text") == {"transfer", "transfer-transductive", "textsim"}
    assert _names("torch") == {n for n, s in REGISTRY.items() if s.torch}
    assert {"sasrec", "shiftaware"} <= _names("torch")
    assert _names("needs_topics") == {"shiftaware", "topic_profile"}


def test_shiftaware_and_topic_profile_train_from_the_cli(tmp_path):
    import numpy as np

    from shiftrec.interest.topics import Topics
    from shiftrec.models.registry import load_model

    split = cyclic_split(n_users=30, n_items=8)
    split_dir = split.save(tmp_path / "split")
    keys = split.item_map.keys[1:]
    Topics(keys, np.arange(len(keys)) // 2, ["a", "b", "c", "d"], [[]] * 4, "test").save(tmp_path / "topics")
    r = CliRunner().invoke(_app(), ["train", str(split_dir), "--model", "topic_profile", "-o",
                                    str(tmp_path / "tp")])
    assert r.exit_code != 0 and "needs item topics" in str(r.exception)
    for name in ("topic_profile", "shiftaware"):
        args = ["train", str(split_dir), "--model", name, "--topics", str(tmp_path / "topics"),
                "-o", str(tmp_path / name)]
        if name == "shiftaware":
            cfg = tmp_path / "sa.yaml"
            cfg.write_text("hidden: 8\ninner: 16\ntrain: {device: cpu}\n")
            args += ["--config", str(cfg), "--epochs", "2", "--threads", "1"]
        r = CliRunner().invoke(_app(), args)
        assert r.exit_code == 0, r.output
        assert load_model(tmp_path / name, split=split).name == name


def test_threads_option_on_every_compute_command():
    from shiftrec.cli.transfer import register as register_transfer

    app = _app()
    register_transfer(app)
    for cmd in ("train", "pretrain", "finetune", "evaluate"):
        r = CliRunner().invoke(app, [cmd, "--help"], env={"COLUMNS": "200"})
        assert r.exit_code == 0 and "--threads" in r.output, cmd


def test_fusion_select_metric_flag(tmp_path):
    split_dir = cyclic_split(n_users=30, n_items=8).save(tmp_path / "split")
    r = CliRunner().invoke(_app(), ["train", str(split_dir), "--model", "itemknn", "-o", str(tmp_path / "knn")])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(_app(), ["train", str(split_dir), "--model", "shiftfusion", "--base-model",
                                    str(tmp_path / "knn"), "--select-metric", "recall@50",
                                    "-o", str(tmp_path / "fused")])
    assert r.exit_code == 0, r.output
    man = json.loads((tmp_path / "fused" / "manifest.json").read_text())
    assert man["selection"]["metric"] == "recall@50"
    r = CliRunner().invoke(_app(), ["train", str(split_dir), "--model", "itemknn", "--select-metric",
                                    "recall@50", "-o", str(tmp_path / "x")])
    assert r.exit_code != 0 and "applies to shiftfusion" in str(r.exception)
