"""One self-contained HTML file: Plotly's JavaScript, the styles, the report's script and its
data all inline, so it opens from disk with no network at view time."""

from __future__ import annotations

import html
import json
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from shiftrec.errors import ConfigError
from shiftrec.manifest import atomic_write_bytes


def asset(name: str) -> str:
    return resources.files("shiftrec.report").joinpath("assets", name).read_text(encoding="utf-8")


@cache
def plotly_js() -> str:
    """plotly.min.js from the plotly Python package (bundled in its wheel: offline)."""
    try:
        from plotly.offline import get_plotlyjs
    except ImportError:
        raise ConfigError("the report needs the 'plotly' package (pip install plotly)") from None
    return get_plotlyjs()


def _script_json(obj: Any) -> str:
    """JSON safe inside <script>: no '</' can close the tag early."""
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).replace("</", "<\\/")


def _inline_js(js: str) -> str:
    return js.replace("</script", "<\\/script")


SECTIONS = {
    "data": ("Data", """
<p class="muted">Dataset <b>{name}</b>: what came in, what was kept, and why the rest was not.</p>
<div class="kpis" id="data-kpis"></div>
<div class="grid2"><div id="chart-accounting" class="chart"></div><div id="chart-events" class="chart"></div>
<div id="chart-quarantine" class="chart"></div><div id="chart-peruser" class="chart"></div></div>"""),
    "models": ("Models", """
<p class="muted">Full ranking over all items; each cell is the mean over users with its bootstrap 95%
interval (resampling users). Bold: best run.</p>
<label>metric <select id="metric-select"></select></label>
<div id="chart-models" class="chart"></div>
<div style="overflow-x:auto"><table id="models-table"></table></div>
<h3>Shifted and stable users</h3><div id="chart-slices" class="chart"></div>
<h3>Paired tests between runs (same users)</h3>
<p class="muted">B − A of NDCG@10 per user; bold when the paired-bootstrap 95% interval excludes 0.</p>
<table id="paired-table"></table>"""),
    "migration": ("Interest migration", """
<p class="muted">Each user's dominant topic in consecutive time windows; a band is the users whose
dominant topic went from the left topic to the right one.</p>
<label>window pair <select id="pair-select"></select></label>
<div id="chart-sankey" class="chart"></div>
<table id="pair-top"></table>
<div id="chart-largest" class="chart"></div>
<h3>Topics and their distinctive terms</h3><table id="topics-table"></table>"""),
    "shoppers": ("Shoppers", """
<div class="shoppers"><div><input id="user-search" type="search" placeholder="search a user id…"
autocomplete="off"><ul id="user-list"></ul><p class="muted">shifted users first</p></div>
<div><h3 id="user-title"></h3><div id="chart-timeline" class="chart"></div>
<div class="grid2"><div><h3>Detected shifts</h3><ul id="user-shifts"></ul></div>
<div><h3>Last items</h3><ol id="user-recent"></ol></div></div>
<h3>Recommended now, and why</h3><table id="user-recs" class="recs"></table></div></div>"""),
    "reproduce": ("Reproduce", """
<h3>Fingerprints</h3><table id="fp-table"></table>
<h3>Commands</h3><pre id="commands"></pre><p class="muted" id="versions"></p>"""),
}


def render(data: dict[str, Any]) -> str:
    """The report page for collected data (shiftrec.report.collect)."""
    title = html.escape(str(data.get("title", "shiftrec report")))
    present = [k for k in SECTIONS if data.get(k)]
    nav = "".join(f'<a href="#sec-{k}">{SECTIONS[k][0]}</a>' for k in present)
    notes = "".join(f'<div class="note">{html.escape(n)}</div>' for n in data.get("notes", []))
    body = []
    for k in present:
        head, inner = SECTIONS[k]
        if k == "data":
            inner = inner.replace("{name}", html.escape(str(data["data"].get("name", ""))))
        body.append(f'<section id="sec-{k}"><h2>{head}</h2>{inner}</section>')
    return f"""<!DOCTYPE html>
<html lang="{html.escape(str(data.get("lang", "en")))}"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>{asset("report.css")}</style>
<script>{_inline_js(plotly_js())}</script>
</head><body>
<header><h1>{title}</h1><nav>{nav}</nav></header>
<main>{notes}{"".join(body)}</main>
<footer>shiftrec · one self-contained file (Plotly {html.escape(_plotly_version())} inline) ·
charts export PNG from their toolbar</footer>
<script type="application/json" id="report-data">{_script_json(data)}</script>
<script>{_inline_js(asset("report.js"))}</script>
</body></html>
"""


def _plotly_version() -> str:
    try:
        import plotly

        return str(plotly.__version__)
    except ImportError:  # pragma: no cover
        return "?"


def write_html(data: dict[str, Any], path: str | Path) -> Path:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out, render(data).encode("utf-8"))
    return out
