"""CLI: bad input gives one line and exit 2 with no traceback; commands work end to end."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

CLI = [sys.executable, "-m", "shiftrec.cli"]


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, cwd=cwd, timeout=300)


@pytest.mark.parametrize("content, expect", [
    (None, "not found"),
    (b"", "empty"),
    (b"user_id,item_id\nu,i\n", "column 'timestamp'"),
    (b"user_id,item_id,timestamp\nu,i,nope\n", "unparseable timestamp"),
    (b"user_id,item_id,timestamp\nu,i,2024-01-01\n\xff\xfe,i,2024-01-01\n\xff,i,2024-01-01\n", "invalid UTF-8"),
])
def test_bad_input_one_line(tmp_path: Path, content: bytes | None, expect: str) -> None:
    p = tmp_path / "events.csv"
    if content is not None:
        p.write_bytes(content)
    r = run("ingest", "generic", str(p), "-o", str(tmp_path / "out"))
    assert r.returncode == 2
    err = r.stderr.strip().splitlines()
    assert len(err) == 1, r.stderr
    assert err[0].startswith("error: ") and "events.csv" in err[0] and expect in err[0]
    assert "Traceback" not in r.stderr + r.stdout


def test_unknown_format_and_preset_list_valid(tmp_path: Path) -> None:
    r = run("ingest", "xlsx-magic", "x")
    assert r.returncode == 2 and "valid formats" in r.stderr and "generic" in r.stderr
    r = run("ingest", "preset", "not-a-dataset")
    assert r.returncode == 2 and "scientific" in r.stderr and "online-retail" in r.stderr


def test_ingest_prepare_roundtrip(tmp_path: Path, small_store) -> None:
    raw = small_store.write(tmp_path / "raw", fmt="csv")
    r = run("ingest", "generic", str(raw / "events.csv"), "--items", str(raw / "items.csv"),
            "--map", "event_type=event_type", "--map", "domain=domain", "--map", "item_category=category",
            "-o", str(tmp_path / "ds"))
    assert r.returncode == 0, r.stderr
    rep = json.loads((tmp_path / "ds" / "ingest_report.json").read_text())
    assert rep["balanced"] and rep["rows_in"] == small_store.events.height
    r = run("prepare", str(tmp_path / "ds"), "-o", str(tmp_path / "split"))
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "split" / "split.npz").exists()
    r = run("prepare", str(tmp_path / "ds"), "--split", "temporal", "-o", str(tmp_path / "t"))
    assert r.returncode == 0, r.stderr


def test_prepare_takes_a_named_dataset(tmp_path: Path, shared_data: Path) -> None:
    """`prepare NAME` splits a named dataset of the shared data folder, the same split as
    `ingest preset NAME` then `prepare FOLDER`; an unknown name or a missing folder is one line."""
    r = run("prepare", "gift-cards", "--data-root", str(shared_data), "-o", str(tmp_path / "named"))
    assert r.returncode == 0, r.stderr
    r = run("ingest", "preset", "gift-cards", "--data-root", str(shared_data), "-o", str(tmp_path / "gc"))
    assert r.returncode == 0, r.stderr
    r = run("prepare", str(tmp_path / "gc"), "-o", str(tmp_path / "folder"))
    assert r.returncode == 0, r.stderr
    a, b = (json.loads((tmp_path / d / "split.json").read_text()) for d in ("named", "folder"))
    assert a["dataset"] == "gift-cards" and a["data_fingerprint"] == b["data_fingerprint"]
    assert (tmp_path / "named" / "split.npz").read_bytes() == (tmp_path / "folder" / "split.npz").read_bytes()
    for bad, expect in (("no-such-shop", "unknown dataset 'no-such-shop'"),
                        (str(tmp_path / "missing"), "dataset folder not found")):
        r = run("prepare", bad, "-o", str(tmp_path / "x"))
        assert r.returncode == 2 and expect in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_help_has_examples() -> None:
    for cmd in ("ingest", "prepare", "demo"):
        r = run(cmd, "--help")
        assert r.returncode == 0 and "shiftrec " + cmd in r.stdout


@pytest.mark.parametrize("fmt, expect", [
    ("generic", "timestamp_unit"), ("online-retail", "InvoiceDate"), ("unisrec", ".item2index"),
    ("amazon-2018", "meta_<Category>.json.gz"), ("recbole", "unix seconds"),
    ("amazon-csv", "items.csv"),
])
def test_ingest_format_help(fmt: str, expect: str) -> None:
    r = run("ingest", fmt, "--help")
    assert r.returncode == 0, r.stderr
    assert f"format '{fmt}'" in r.stdout and expect in r.stdout
    assert "required columns" in r.stdout and "timestamp units" in r.stdout and "companion files" in r.stdout
    r = run("ingest", "--help")
    assert all(f in r.stdout for f in ("generic", "online-retail", "unisrec", "preset"))


def test_ingest_tie_order_shuffle(tmp_path: Path) -> None:
    rows = ["InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country"]
    rows += [f"1,S{k},x,1,2011-01-01 10:00:00,1,10,UK" for k in range(8)]
    p = tmp_path / "or.csv"
    p.write_text("\n".join(rows) + "\n")
    orders = []
    for run_ in range(2):
        out = tmp_path / f"o{run_}"
        r = run("ingest", "online-retail", str(p), "--recipe", "unisrec", "--tie-order", "shuffle",
                "--seed", "0", "-o", str(out))
        assert r.returncode == 0, r.stderr
        import polars as pl

        orders.append(pl.read_parquet(out / "events.parquet")["item_id"].to_list())
        meta = json.loads((out / "manifest.json").read_text())["meta"]["online_retail"]
        assert meta == {"user": "invoice", "tie_order": "shuffle", "seed": 0}
    assert orders[0] == orders[1] and sorted(orders[0]) == [f"S{k}" for k in range(8)]
    r = run("ingest", "generic", str(p), "--tie-order", "shuffle", "-o", str(tmp_path / "g"))
    assert r.returncode == 2 and "--tie-order does not apply" in r.stderr


def test_repeat_gate_flags_refuse_the_wrong_model_in_one_line(tmp_path: Path) -> None:
    """`train --repeat-gate` is for sasrec and the text models, `evaluate --repeat-gate` for --zero-shot: anything
    else is one line, exit 2, before any data is read."""
    r = run("train", "no-such-split", "--model", "itemknn", "--repeat-gate", "-o", str(tmp_path / "m"))
    assert r.returncode == 2 and "--repeat-gate applies to sasrec, transfer" in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
    r = run("evaluate", "no-such-split", "--repeat-gate")
    assert r.returncode == 2 and "--repeat-gate goes with --zero-shot" in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
