"""The demo's last step (one layer above pipelines): the HTML report and PNGs of a demo folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from shiftrec.report.build import build_report
from shiftrec.report.collect import ReportInputs


def demo_commands(out: Path, lang: str) -> tuple[str, ...]:
    runs = " ".join(f"--run {out}/runs/{n}" for n in ("popularity", "itemknn", "topic_profile",
                                                       "sasrec", "sasrec-flows"))
    return (f"shiftrec demo --lang {lang} -o {out}",
            f"shiftrec report --dataset {out}/dataset {runs} --run {out}/run --topics {out}/topics "
            f"--shifts {out}/shifts.parquet --flows {out}/flows.json --split {out}/split "
            f"--png {out}/figures -o {out}/report.html")


def finish_demo(result: dict[str, Any], sample_users: int = 40) -> dict[str, Any]:
    """Write OUT/report.html and OUT/figures/*.png for a finished `run_demo` result."""
    out = Path(result["out_dir"])
    lang = result.get("lang", "en")
    runs = tuple(Path(p) for p in result.get("runs", {}).values())
    inp = ReportInputs(dataset=out / "dataset", runs=runs, topics=out / "topics",
                       shifts=out / "shifts.parquet", flows=out / "flows.json", split=out / "split",
                       servable=Path(result["servable_run"]) if result.get("servable_run") else None,
                       title="shiftrec demo" + (" · 中文商店" if lang == "zh" else ""),
                       sample_users=sample_users, commands=demo_commands(out, lang))
    return build_report(inp, out / "report.html", png_dir=out / "figures", lang=lang)
