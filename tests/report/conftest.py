"""Fixtures for the report tests: small demo folders (English and Chinese) and a Chromium page.

Browser tests use Debian's chromium (/usr/bin/chromium, installed by `make`/.ci/run) through
Playwright; outside CI they skip when it is missing, in CI (CI=true) they fail instead."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SHOTS = ROOT / "out" / "screenshots"
CHROMIUM = os.environ.get("SHIFTREC_CHROMIUM", "/usr/bin/chromium")


def _demo(tmp: Path, lang: str) -> tuple[dict, dict]:
    from shiftrec.data.synthetic import StoreConfig
    from shiftrec.pipelines.demo import run_demo
    from shiftrec.report.demo import finish_demo

    res = run_demo(tmp / f"demo-{lang}", StoreConfig(n_users=400, n_items=240, seed=1, lang=lang),
                   sasrec_epochs=2)
    return res, finish_demo(res, sample_users=20)


@pytest.fixture(scope="session")
def demo_en(tmp_path_factory):
    return _demo(tmp_path_factory.mktemp("report"), "en")


@pytest.fixture(scope="session")
def demo_zh(tmp_path_factory):
    return _demo(tmp_path_factory.mktemp("report"), "zh")


def need_browser() -> None:
    missing = []
    if not Path(CHROMIUM).exists() and not shutil.which("chromium"):
        missing.append(f"chromium ({CHROMIUM}; apt-get install -y chromium)")
    try:
        import playwright  # noqa: F401
    except ImportError:
        missing.append("the playwright package")
    if missing:
        msg = "browser tests need " + " and ".join(missing)
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)


@pytest.fixture(scope="package")  # closed when tests/report ends: Playwright's sync API keeps
def browser():                     # an event loop running in the main thread while it is open
    need_browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM if Path(CHROMIUM).exists() else shutil.which("chromium"),
                              args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"])
        yield b
        b.close()


@pytest.fixture()
def page(browser):
    ctx = browser.new_context(viewport={"width": 1400, "height": 1000}, device_scale_factor=1)
    pg = ctx.new_page()
    pg.set_default_timeout(20_000)
    yield pg
    ctx.close()


def shot(page, name: str, **kw) -> Path:
    SHOTS.mkdir(parents=True, exist_ok=True)
    p = SHOTS / name
    page.screenshot(path=str(p), style="header { position: static !important; }", **kw)
    return p
