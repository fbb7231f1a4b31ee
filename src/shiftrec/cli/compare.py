"""`shiftrec compare RUN_A RUN_B`: paired significance between two saved evaluations (thin adapter
over evaluate.significance.compare_runs)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Annotated, Any

import typer


def _fmt_p(p: float) -> str:
    return "n/a" if p is None or math.isnan(p) else f"{p:.4g}"


def _jsonable(v: Any) -> Any:
    return None if isinstance(v, float) and math.isnan(v) else v


def compare_cmd(
    run_a: Annotated[Path, typer.Argument(help="run folder with metrics.json (or the metrics file) of run A")],
    run_b: Annotated[Path, typer.Argument(help="run folder with metrics.json (or the metrics file) of run B")],
    metric: Annotated[str, typer.Option(help="per-user metric: recall@K, ndcg@K, mrr@K or mrr")] = "ndcg@10",
    alpha: Annotated[float, typer.Option(help="significance level for the verdict")] = 0.05,
    json_out: Annotated[Path | None, typer.Option("--json", help="write the result as JSON to this file ('-' = stdout)")] = None,
    seed: Annotated[int, typer.Option(help="seed of the bootstrap interval")] = 0,
) -> None:
    """Paired test of a metric between two runs evaluated on the same users (the per-user ranks
    that `shiftrec train`, `finetune` and `evaluate -o` write beside metrics.json).

    Prints both means, the difference B - A with a bootstrap 95% interval, and the p-values of a
    paired t-test and a Wilcoxon signed-rank test.

    Example: shiftrec compare out/knn out/sasrec --metric ndcg@10 --json out/knn-vs-sasrec.json
    """
    from rich.console import Console

    from shiftrec.errors import ConfigError
    from shiftrec.evaluate.significance import compare_runs

    if not 0.0 < alpha < 1.0:
        raise ConfigError(f"--alpha must be between 0 and 1, got {alpha}")
    res = compare_runs(run_a, run_b, metric, seed=seed)
    p = res["t_test_p"]
    res["alpha"] = alpha
    res["significant"] = bool(p < alpha)
    if json_out is not None and str(json_out) == "-":
        print(json.dumps({k: _jsonable(v) for k, v in res.items()}, indent=2))
        return
    con = Console(highlight=False)
    m = res["metric"]
    con.print(f"{m} on {res['n_users']:,} {res['split']} users "
              f"({res['n_differ']:,} differ), paired by user")
    con.print(f"  A {res['mean_a']:.4f}  {res['run_a']}")
    con.print(f"  B {res['mean_b']:.4f}  {res['run_b']}")
    con.print(f"  B - A {res['diff']:+.4f}  (bootstrap 95% CI {res['ci95_low']:+.4f} to "
              f"{res['ci95_high']:+.4f})")
    w = res["wilcoxon_p"]
    w_text = _fmt_p(w) + (" (10 or fewer users differ)" if w is None or math.isnan(w) else "")
    con.print(f"  paired t-test p = {_fmt_p(p)}   Wilcoxon signed-rank p = {w_text}")
    verdict = ("B better" if res["diff"] > 0 else "A better") if res["significant"] else "no significant difference"
    con.print(f"  {verdict} at alpha = {alpha:g} (t-test)")
    if json_out is not None:
        from shiftrec.manifest import make_manifest, write_json

        write_json(json_out, make_manifest("comparison", **{k: _jsonable(v) for k, v in res.items()}))
        con.print(f"  wrote {json_out}")


def register(app: typer.Typer) -> None:
    app.command("compare")(compare_cmd)
