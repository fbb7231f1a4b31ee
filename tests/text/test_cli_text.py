from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import typer
from typer.testing import CliRunner

from shiftrec.cli import app as cli_app
from shiftrec.text import ItemEmbeddings


@pytest.fixture(scope="module")
def app() -> typer.Typer:
    return cli_app  # the real CLI, with its one error handler


def test_help_has_example(app):
    res = CliRunner().invoke(app, ["encode", "--help"], terminal_width=120)
    assert res.exit_code == 0
    assert "Example" in res.output and "--encoder" in res.output and "--cache-dir" in res.output


def test_encode_items_file_with_cache(app, tmp_path):
    items = tmp_path / "items.csv"
    pl.DataFrame({"item_id": ["1", "2", "3"],
                  "title": ["无线蓝牙耳机", "wireless bluetooth earbuds", "garden hose"]}
                 ).write_csv(items)
    args = ["encode", str(items), "--encoder", "use-multilingual", "--fields", "title",
            "--cache-dir", str(tmp_path / "cache"), "--out", str(tmp_path / "emb"),
            "--threads", "1"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "3 encoded" in res.output
    emb = ItemEmbeddings.load(tmp_path / "emb", encoder="use-multilingual", dim=512)
    assert emb.keys.tolist() == ["<pad>", "default/1", "default/2", "default/3"]
    assert not emb.vectors[0].any()
    v = emb.vectors
    assert v[1] @ v[2] > v[1] @ v[3]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0 and "3 cached, 0 encoded" in res.output
    np.testing.assert_array_equal(ItemEmbeddings.load(tmp_path / "emb").vectors, v)


def test_encode_dataset_folder_and_split(app, tmp_path, small_store):
    from shiftrec.data.clean import clean
    from shiftrec.data.readers._common import finish
    from shiftrec.data.schema import conform_items
    from shiftrec.data.splits import leave_one_out

    rr = finish(small_store.events, conform_items(small_store.items), [],
                small_store.events.height, ["synthetic"])
    ds, _, _ = clean(rr, name="small")
    ds.save(tmp_path / "ds")
    small_split = leave_one_out(ds)
    small_split.save(tmp_path / "split")
    res = CliRunner().invoke(app, ["encode", str(tmp_path / "ds"), "--encoder", "use-multilingual",
                                   "--split", str(tmp_path / "split"), "--out",
                                   str(tmp_path / "emb"), "--threads", "1"])
    assert res.exit_code == 0, res.output
    emb = ItemEmbeddings.load(tmp_path / "emb")
    assert emb.vectors.shape == (small_split.n_items + 1, 512)
    assert emb.keys.tolist() == small_split.item_map.keys.tolist()


@pytest.mark.parametrize("extra, needle", [
    (["--encoder", "nope"], "valid encoders: minilm, use-multilingual"),
    (["--fields", "title,colour"], "unknown text field 'colour'"),
])
def test_bad_options_fail_with_one_line(app, tmp_path, extra, needle):
    items = tmp_path / "items.csv"
    pl.DataFrame({"item_id": ["1"], "title": ["kite"]}).write_csv(items)
    res = CliRunner().invoke(app, ["encode", str(items), "--out", str(tmp_path / "o"), *extra],
                             terminal_width=400)
    assert res.exit_code == 2
    assert needle in res.output


def test_missing_input(app, tmp_path):
    res = CliRunner().invoke(app, ["encode", str(tmp_path / "nope.csv"), "--out", str(tmp_path / "o")],
                             terminal_width=400)
    assert res.exit_code == 2 and "input not found" in res.output
