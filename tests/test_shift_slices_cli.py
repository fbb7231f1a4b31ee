"""`shiftrec shift-slices` end to end on a tiny synthetic store: trains SASRec and two variants
(1-2 epochs), chooses on validation with the library rule, reports test slices; resumes; refuses
a folder made with other settings."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from shiftrec.evaluate.selection import select_shift_aware, slice_scores

CLI = [sys.executable, "-m", "shiftrec.cli"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=300, env=ENV)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory, small_split, small_store) -> Path:  # noqa: ANN001
    from shiftrec.data.clean import clean
    from shiftrec.data.readers._common import finish
    from shiftrec.data.schema import conform_items
    from shiftrec.interest.topics import category_topics

    d = tmp_path_factory.mktemp("shift")
    small_split.save(d / "split")
    rr = finish(small_store.events, conform_items(small_store.items), [], small_store.events.height,
                ["synthetic"])
    ds, _, _ = clean(rr, name="small")
    category_topics(ds.items).save(d / "topics", data_fingerprint=ds.fingerprint())
    return d


def test_shift_slices_cli_end_to_end(store: Path) -> None:
    out = store / "exp"
    args = ["shift-slices", str(store / "split"), "--topics", str(store / "topics"), "-o", str(out),
            "--variant", "none", "--variant", "trend", "--sasrec-epochs", "2", "--finetune-epochs", "1"]
    r = run(*args)
    assert r.returncode == 0, r.stderr
    res = json.loads((out / "shift_slices.json").read_text())
    ab = res["ablation"]
    # the recorded choice is the library rule applied to the recorded validation numbers
    sel = select_shift_aware({v: slice_scores(x["valid"]) for v, x in ab["variants"].items()},
                             slice_scores(ab["sasrec_valid"]))
    assert ab["chosen"] == sel.chosen and ab["chosen"] in ("none", "trend")
    assert ab["fusion_chosen"] in ab["fusion_valid"]
    models = [row["model"] for row in res["rows"]]
    assert models[:4] == ["popularity", "topic_profile", "itemknn", "sasrec"]
    assert f"shiftaware:{ab['chosen']}" in models and "shiftfusion:sasrec" in models
    for row in res["rows"]:
        t = row["test"]
        assert t["shifted"]["n_users"] + t["stable"]["n_users"] <= t["all"]["n_users"]
        assert 0.0 <= t["shifted"]["ndcg@10"] <= 1.0
    assert set(res["paired_tests"]) == {m for m in models if m.startswith(("shiftaware", "shiftfusion"))}
    assert "chosen variant on validation" in r.stdout
    # resume: every run is kept, nothing retrains, same numbers
    r2 = run(*args)
    assert r2.returncode == 0, r2.stderr
    assert "fit " not in r2.stdout
    assert json.loads((out / "shift_slices.json").read_text())["rows"] == res["rows"]
    # the same folder with another budget is refused in one line, exit 2
    r3 = run(*args[:-1], "2")
    assert r3.returncode == 2 and "other settings" in r3.stderr and "Traceback" not in r3.stderr


@pytest.mark.parametrize("extra, msg", [(["--variant", "bogus"], "unknown shift-aware variant"),
                                         (["--setting", "toys"], "unknown setting"),
                                         (["--threads", "0"], "--threads")])
def test_bad_options_are_one_line(store: Path, extra: list[str], msg: str) -> None:
    r = run("shift-slices", str(store / "split"), "--topics", str(store / "topics"),
            "-o", str(store / "bad"), *extra)
    assert r.returncode == 2 and msg in r.stderr and "Traceback" not in r.stderr
