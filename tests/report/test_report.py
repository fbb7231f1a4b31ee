"""The report without a browser: sections, known answers, self-containedness, Chinese, PNGs."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from shiftrec.report.collect import _bootstrap, sankey_nodes


def report_data(path: str | Path) -> dict:
    s = Path(path).read_text(encoding="utf-8")
    m = re.search(r'<script type="application/json" id="report-data">(.*?)</script>', s, re.S)
    assert m
    return json.loads(m.group(1).replace("<\\/", "</"))


def test_sankey_nodes_known_answer() -> None:
    m = [[3, 1, 0], [0, 0, 0], [0, 2, 0]]  # topic 1 has no leavers, topic 2 no arrivals
    assert sankey_nodes(m) == ([0, 2], [0, 1])


def test_bootstrap_interval_brackets_the_mean_and_is_seeded() -> None:
    x = np.random.default_rng(0).random(500)
    a = _bootstrap({"m": x}, 400, 0)["m"]
    assert a == _bootstrap({"m": x}, 400, 0)["m"]
    assert a[0] < x.mean() < a[1]
    se = x.std() / np.sqrt(len(x))
    assert abs((a[1] - a[0]) - 2 * 1.96 * se) < 0.3 * 2 * 1.96 * se  # about a normal 95% interval


def test_demo_report_sections_and_self_contained(demo_en) -> None:
    res, rep = demo_en
    assert rep["sections"] == ["data", "models", "migration", "shoppers", "reproduce"]
    html = Path(rep["path"]).read_text(encoding="utf-8")
    # nothing is fetched at view time: no external scripts, styles, images or fonts
    assert not re.search(r'<(script|link|img|iframe)[^>]+(src|href)=["\']?(https?:)?//', html, re.I)
    assert "<script src=" not in html and "@import" not in html
    d = report_data(rep["path"])
    a = d["data"]["accounting"]
    assert a["rows_in"] == a["accepted"] + a["quarantined"] + sum(a["filtered_by_rule"].values())
    assert a["quarantined"] >= 2 and d["data"]["quarantine_reasons"]  # the demo plants bad rows
    runs = {r["name"]: r for r in d["models"]["runs"]}
    assert set(runs) == {"popularity", "itemknn", "topic_profile", "sasrec", "sasrec+flows"}
    for r in runs.values():  # the report's means are the run's own metrics.json
        saved = json.loads((Path(r["path"]) / "metrics.json").read_text())
        for m in ("recall@10", "ndcg@10", "mrr@20"):
            assert r["metrics"][m] == pytest.approx(saved[m])
            assert r["ci95"][m][0] <= r["metrics"][m] <= r["ci95"][m][1]
        assert r["slices"]["shifted"]["n_users"] + r["slices"]["stable"]["n_users"] <= r["n_users"]
    assert len(d["models"]["paired"]) == 10 and all("error" not in t for t in d["models"]["paired"])
    users = d["shoppers"]["users"]
    assert users and users[0]["shifted"]
    assert [u["shifted"] for u in users] == sorted([u["shifted"] for u in users], reverse=True)
    rec_users = [u for u in users if u.get("recs", {}).get("items")]
    assert rec_users, d["notes"]
    assert all(it["reasons"] for u in rec_users for it in u["recs"]["items"])
    assert {f["what"] for f in d["reproduce"]["fingerprints"]} >= {"dataset", "topics", "servable run"}
    assert any(c.startswith("shiftrec report") for c in d["reproduce"]["commands"])
    assert len(rep["pngs"]) >= 6 and all(Path(p).stat().st_size > 5000 for p in rep["pngs"])


def test_sections_only_with_their_inputs(demo_en, tmp_path) -> None:
    from shiftrec.report.build import build_report
    from shiftrec.report.collect import ReportInputs

    out = Path(demo_en[0]["out_dir"])
    rep = build_report(ReportInputs(flows=out / "flows.json", topics=out / "topics"), tmp_path / "r.html")
    assert rep["sections"] == ["migration", "reproduce"]
    html = (tmp_path / "r.html").read_text(encoding="utf-8")
    assert 'id="sec-migration"' in html and 'id="sec-data"' not in html and 'id="sec-models"' not in html


def test_cli_report(demo_en, tmp_path) -> None:
    from typer.testing import CliRunner

    from shiftrec.cli.app import app

    out = Path(demo_en[0]["out_dir"])
    r = CliRunner().invoke(app, ["report", "--dataset", str(out / "dataset"), "--run", str(out / "runs/sasrec"),
                                 "--run", str(out / "runs/itemknn"), "-o", str(tmp_path / "r.html"),
                                 "--n-boot", "200"])
    assert r.exit_code == 0, r.output
    assert "sections: data, models, reproduce" in r.output
    r = CliRunner().invoke(app, ["report", "--run", str(tmp_path / "nope"), "-o", str(tmp_path / "x.html")])
    assert r.exit_code == 2 and "metrics file not found" in r.output


def test_chinese_store_and_topic_terms(demo_zh) -> None:
    from shiftrec.interest.topics import tokenize

    assert tokenize("声匠便携无线耳机藏青色") == ["声匠", "便携", "无线耳机", "藏青色"]
    assert tokenize("Sonix 蓝牙音箱") == ["sonix", "蓝牙", "音箱"]
    res, rep = demo_zh
    items = pl.read_parquet(Path(res["out_dir"]) / "dataset" / "items.parquet")
    assert items["category"].str.contains("[\u4e00-\u9fff]").all()
    assert items["title"].str.contains("[\u4e00-\u9fff]").all()
    names = res["topics"]["names"]
    assert res["topics"]["source"].startswith("learned (use-multilingual")
    # every topic is named by Chinese words that occur in its items' titles
    titles = "".join(items["title"].to_list())
    for n in names:
        words = n.split(" / ")
        assert words and all(re.fullmatch("[\u4e00-\u9fff]{2,}", w) and w in titles for w in words), n
    d = report_data(rep["path"])
    assert d["lang"] == "zh"
    assert any(re.search("[\u4e00-\u9fff]", it["title"] or "") for u in d["shoppers"]["users"]
               for it in u.get("recs", {}).get("items", []))


def test_cjk_font_renders_glyphs_not_boxes(tmp_path) -> None:
    """Chinese text drawn with the CJK font differs glyph by glyph; without one, matplotlib
    draws the same empty box for every character."""
    from shiftrec.report.plots import _plt, cjk_font

    fam = cjk_font()
    if fam is None:
        import os

        if os.environ.get("CI"):
            pytest.fail("no CJK font (apt-get install -y fonts-wqy-microhei)")
        pytest.skip("no CJK font installed (fonts-wqy-microhei)")
    plt = _plt(["中文"])

    def ink(ch: str) -> np.ndarray:
        fig = plt.figure(figsize=(1, 1), dpi=60)
        fig.text(0.1, 0.2, ch, fontsize=40)
        fig.canvas.draw()
        a = np.asarray(fig.canvas.buffer_rgba())[..., 0] < 128
        plt.close(fig)
        return a

    a, b = ink("厨"), ink("音")
    assert a.sum() > 30 and b.sum() > 30 and (a != b).sum() > 30
