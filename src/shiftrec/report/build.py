"""`build_report`: collect the sections, write the HTML file and (optionally) a PNG per chart."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from shiftrec.report.collect import Progress, ReportInputs, collect
from shiftrec.report.html import write_html


def build_report(inp: ReportInputs, out_html: str | Path, png_dir: str | Path | None = None,
                 progress: Progress | None = None, lang: str | None = None) -> dict[str, Any]:
    """Write the report; returns {'path', 'bytes', 'sections', 'pngs', 'notes'}."""
    c = collect(inp, progress)
    if lang:
        c.data["lang"] = lang
    out = write_html(c.data, out_html)
    pngs = [str(p) for p in export_pngs(c.data, inp, Path(png_dir))] if png_dir is not None else []
    return {"path": str(out), "bytes": out.stat().st_size,
            "sections": [k for k in ("data", "models", "migration", "shoppers", "reproduce") if c.data.get(k)],
            "pngs": pngs, "notes": c.notes,
            "users": [u["user_id"] for u in c.data.get("shoppers", {}).get("users", [])]}


def export_pngs(data: dict[str, Any], inp: ReportInputs, out_dir: Path) -> list[Path]:
    """A matplotlib PNG twin of each chart (the HTML charts also export PNG from their toolbar)."""
    from shiftrec.report import plots

    out: list[Path] = []
    if data.get("data"):
        out += plots.plot_data(data["data"], out_dir)
    if data.get("models"):
        out += plots.plot_models(data["models"], out_dir)
    if data.get("migration"):
        out.append(plots.plot_flows(plots.flow_report_from_json(data["migration"]), out_dir / "flows.png",
                                    title="Where dominant interest moved"))
    users = data.get("shoppers", {}).get("users", [])
    if users and inp.dataset is not None and inp.topics is not None:
        import polars as pl

        from shiftrec.interest.events import InterestEvents
        from shiftrec.interest.shifts import ShiftConfig, ShiftDetector
        from shiftrec.interest.timeline import user_timeline
        from shiftrec.interest.topics import Topics

        tp = Topics.load(inp.topics)
        u = users[0]["user_id"]
        ev = InterestEvents.from_frame(pl.read_parquet(Path(inp.dataset) / "events.parquet")
                                       .filter(pl.col("user_id") == u), tp)
        tl = user_timeline(ev, u, ShiftDetector(tp.n_topics, ShiftConfig()))
        if tl.known:
            out.append(plots.plot_timeline(tl, tp.names, out_dir / f"timeline_{u}.png"))
    return out
