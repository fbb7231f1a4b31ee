"""The report and the live dashboard in a real browser (Debian chromium via Playwright)."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import polars as pl

from shiftrec.report.collect import sankey_nodes
from tests.report.conftest import shot
from tests.report.test_report import report_data

ROOT = Path(__file__).resolve().parents[2]


def open_report(page, path: str | Path) -> tuple[list[str], list[str]]:
    """Open a report from file://, recording console errors and every non-file request."""
    errors: list[str] = []
    remote: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("request", lambda r: remote.append(r.url) if not r.url.startswith(("file:", "data:", "blob:", "about:")) else None)
    page.goto(Path(path).resolve().as_uri())
    page.wait_for_selector("body[data-ready='1']")
    return errors, remote


def test_report_in_browser(page, demo_en) -> None:
    _, rep = demo_en
    errors, remote = open_report(page, rep["path"])
    d = report_data(rep["path"])
    # the Sankey draws one node per topic with leavers (left) and per topic with arrivals (right)
    pairs = d["migration"]["pairs"]
    pi = max(i for i, p in enumerate(pairs) if not p["message"])
    left, right = sankey_nodes(pairs[pi]["matrix"])
    box = page.locator("#chart-sankey")
    assert box.get_attribute("data-nodes") == str(len(left) + len(right))
    assert page.locator("#chart-sankey g.sankey-node").count() == len(left) + len(right)
    # choosing another window pair redraws it
    other = next(i for i, p in enumerate(pairs) if not p["message"] and i != pi)
    page.select_option("#pair-select", str(other))
    l2, r2 = sankey_nodes(pairs[other]["matrix"])
    assert page.locator("#chart-sankey g.sankey-node").count() == len(l2) + len(r2)
    shot(page, "report_migration.png", full_page=True, clip=_clip(page, "#sec-migration"))
    # searching a user shows their timeline and recommendations with reasons
    users = d["shoppers"]["users"]
    u = next(x for x in users[3:] if x.get("recs", {}).get("items") and x["shifts"])
    page.fill("#user-search", u["user_id"])
    page.wait_for_function(f"document.getElementById('user-title').textContent.includes('{u['user_id']} ')"
                           f" || document.getElementById('user-title').textContent.endsWith('{u['user_id']}')"
                           f" || document.getElementById('user-title').textContent.includes('{u['user_id']} (')")
    assert page.locator("#user-list li:visible").count() >= 1
    assert page.locator("#chart-timeline .scatterlayer .trace").count() >= 2
    assert page.locator("#chart-timeline .shapelayer path").count() == len(u["shifts"])
    rows = page.locator("#user-recs tr.rec")
    assert rows.count() == len(u["recs"]["items"])
    assert rows.first.locator(".reason").count() >= 1
    assert u["recs"]["items"][0]["title"] in rows.first.inner_text()
    page.locator("#sec-shoppers").scroll_into_view_if_needed()
    shot(page, "report_shoppers.png", full_page=True, clip=_clip(page, "#sec-shoppers"))
    page.goto(Path(rep["path"]).resolve().as_uri() + "#sec-models")
    page.wait_for_selector("body[data-ready='1']")
    shot(page, "report_models.png", full_page=True, clip=_clip(page, "#sec-models"))
    assert errors == []
    assert remote == []


def _clip(page, sel: str) -> dict:
    """Page coordinates of an element, for a full-page screenshot clip."""
    b = page.eval_on_selector(sel, "e => { const r = e.getBoundingClientRect(); return "
                              "{x: r.left + scrollX, y: r.top + scrollY, width: r.width, height: r.height}; }")
    return {"x": b["x"], "y": b["y"], "width": b["width"], "height": min(b["height"], 1400)}


def test_chinese_report_renders_chinese(page, demo_zh) -> None:
    res, rep = demo_zh
    errors, remote = open_report(page, rep["path"])
    d = report_data(rep["path"])
    u = next(x for x in d["shoppers"]["users"] if x.get("recs", {}).get("items"))
    page.fill("#user-search", u["user_id"])
    page.wait_for_function(f"document.querySelectorAll('#user-recs tr.rec').length == {len(u['recs']['items'])}")
    text = page.locator("#user-recs").inner_text()
    title = u["recs"]["items"][0]["title"]
    assert re.search("[\u4e00-\u9fff]", title) and title in text
    assert page.locator("#topics-table").inner_text().count(" / ") >= len(d["migration"]["topics"])
    # the Sankey's node labels are the Chinese topic names
    labels = page.eval_on_selector_all("#chart-sankey g.sankey-node text", "els => els.map(e => e.textContent)")
    labels = [t for t in labels if t and t.strip()]
    assert labels and all(re.search("[\u4e00-\u9fff]", t) for t in labels)
    p = shot(page, "report_zh_shoppers.png", full_page=True, clip=_clip(page, "#sec-shoppers"))
    shot(page, "report_zh_migration.png", full_page=True, clip=_clip(page, "#sec-migration"))
    assert p.stat().st_size > 20_000
    assert errors == [] and remote == []


# ---------------------------------------------------------------- live dashboard

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_live_dashboard(page, demo_en, tmp_path) -> None:
    res, _ = demo_en
    run = Path(res["servable_run"])
    port, token = _free_port(), "test-token-123"
    env = {**os.environ, "SHIFTREC_TOKEN": token, "OMP_NUM_THREADS": "1"}
    store = f"sqlite:///{tmp_path / 'events.sqlite'}"
    # the real `shiftrec serve`, which mounts the dashboard at /
    cmd = [sys.executable, "-m", "shiftrec.cli", "serve", str(run), "--port", str(port), "--store", store]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            try:
                if httpx.get(base + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
            assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(base + "/")
        user = res["interest"]["example_user"]["user"]
        page.fill("#user-id", user)
        page.click("#user-go")
        page.wait_for_selector("#recs tr.rec")
        before = page.locator("#recs tr.rec td:nth-child(2)").all_inner_texts()
        assert len(before) == 10 and page.locator("#recs .reason").count() >= 10
        page.wait_for_selector("#counters .kpi[data-metric='shiftrec_requests_total']")
        page.wait_for_selector("#chart-migrations .trace")
        shot(page, "dashboard_before.png", full_page=True)
        # post events of a topic the user has not shown interest in
        prof = httpx.get(f"{base}/v1/users/{user}/interests").json()
        shifts_before = len(prof["shifts"])
        mine = {p["topic"] for p in prof["profile"][:3]}
        out = Path(res["out_dir"])
        topics = pl.read_parquet(out / "topics" / "topics.parquet")
        new_topic = next(n for n in topics["topic_name"].unique(maintain_order=True) if n not in mine)
        items = topics.filter(pl.col("topic_name") == new_topic)["item_id"].to_list()[:20]
        t0 = int(pl.read_parquet(out / "dataset" / "events.parquet")["timestamp"].max().timestamp()) + 3600
        evs = [{"user_id": user, "item_id": items[i % len(items)], "timestamp": t0 + 600 * i,
                "event_type": "view"} for i in range(8)]
        r = httpx.post(f"{base}/v1/events", json={"events": evs}, headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 200 and r.json()["accepted"] == 8, r.text
        version = page.get_attribute("body", "data-user-version")
        page.wait_for_function(f"document.body.getAttribute('data-user-version') != '{version}'", timeout=15_000)
        page.wait_for_function(f"document.getElementById('user-shift').textContent.includes('{new_topic}')",
                               timeout=15_000)
        after = page.locator("#recs tr.rec td:nth-child(2)").all_inner_texts()
        assert after != before
        new_items = set(topics.filter(pl.col("topic_name") == new_topic)["item_id"].to_list())
        assert np.mean([i in new_items for i in after]) > np.mean([i in new_items for i in before])
        prof2 = httpx.get(f"{base}/v1/users/{user}/interests").json()
        assert len(prof2["shifts"]) > shifts_before and new_topic in prof2["shifts"][-1]["to"]
        assert new_topic in [p["topic"] for p in prof2["profile"]]
        assert page.locator("#chart-profile .trace").count() == 1
        assert new_topic in page.locator("#chart-profile").text_content()
        assert new_topic in page.locator("#chart-shifts").text_content()
        stored = page.locator("#counters .kpi[data-metric='shiftrec_events_stored_total'] b")
        page.wait_for_function("Number(document.querySelector(\"#counters .kpi[data-metric='shiftrec_events_stored_total'] b\").textContent) >= 8")
        assert int(stored.inner_text().replace(",", "")) >= 8
        shot(page, "dashboard_after.png", full_page=True)
        assert errors == []
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
