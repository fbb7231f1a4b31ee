"""Per-user ranks beside metrics.json, and `shiftrec compare` (paired significance between runs)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from shiftrec.errors import ArtifactError, ConfigError
from shiftrec.evaluate.metrics import KS, all_metrics, per_user_metric
from shiftrec.evaluate.ranking import UserRanks, evaluate, read_user_ranks, write_metrics
from shiftrec.evaluate.significance import compare_runs, paired_test
from tests.models.cyclic import cyclic_split


def _app() -> typer.Typer:
    from shiftrec.cli import compare as cli_compare
    from shiftrec.cli import train as cli_train

    app = typer.Typer()
    cli_train.register(app)
    cli_compare.register(app)
    return app


def _train(split_dir: Path, model: str, out: Path) -> Path:
    r = CliRunner().invoke(_app(), ["train", str(split_dir), "--model", model, "-o", str(out)])
    assert r.exit_code == 0, r.output
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """popularity and item-kNN on one cyclic split (item-kNN ranks the cycle's next item first,
    popularity cannot), and popularity on a split with other users or other data."""
    tmp = tmp_path_factory.mktemp("runs")
    main = cyclic_split(n_users=60, n_items=20).save(tmp / "split")
    fewer = cyclic_split(n_users=40, n_items=20).save(tmp / "split-fewer")
    other = cyclic_split(n_users=60, n_items=20, seed=1).save(tmp / "split-other")
    return {"pop": _train(main, "popularity", tmp / "pop"), "knn": _train(main, "itemknn", tmp / "knn"),
            "fewer": _train(fewer, "popularity", tmp / "pop-fewer"),
            "other": _train(other, "popularity", tmp / "pop-other"), "split": main}


def test_per_user_metric_means_are_all_metrics():
    ranks = np.random.default_rng(0).integers(1, 200, size=500)
    m = all_metrics(ranks)
    for k in KS:
        for name in ("recall", "ndcg", "mrr"):
            assert per_user_metric(ranks, f"{name}@{k}").mean() == pytest.approx(m[f"{name}@{k}"])
    assert per_user_metric(ranks, "mrr").mean() == pytest.approx(m["mrr"])
    assert per_user_metric(ranks, "HR@10").mean() == pytest.approx(m["recall@10"])
    for bad in ("ndcg", "ndcg@0", "auc@10", "recall@x"):
        with pytest.raises(ConfigError, match="valid metrics"):
            per_user_metric(ranks, bad)


def test_ranks_written_beside_metrics_and_agree_with_them(runs):
    for name in ("pop", "knn"):
        run = runs[name]
        man = json.loads((run / "metrics.json").read_text())
        rec = man["per_user"]
        assert (run / rec["file"]).exists() and rec["file"] == "metrics.ranks.npz"
        assert rec["split"] == man["split"] == "test" and rec["n_users"] == 60
        assert rec["data_fingerprint"] == "cyclic-0" and rec["split_kind"] == "leave_one_out"
        with np.load(run / rec["file"], allow_pickle=False) as z:  # plain arrays, no pickle
            assert sorted(z.files) == ["rank", "target", "user_id", "user_index"]
        ur, _ = read_user_ranks(run)
        assert ur.user_id[0] == "u0" and (ur.rank >= 1).all()
        for key in [f"{n}@{k}" for n in ("recall", "ndcg", "mrr") for k in KS] + ["mrr"]:
            assert per_user_metric(ur.rank, key).mean() == pytest.approx(man[key]), (name, key)
    assert json.loads((runs["knn"] / "metrics.json").read_text())["recall@10"] == 1.0


def test_compare_a_run_with_itself_is_not_significant(runs, tmp_path):
    out = tmp_path / "self.json"
    r = CliRunner().invoke(_app(), ["compare", str(runs["pop"]), str(runs["pop"]), "--json", str(out)])
    assert r.exit_code == 0, r.output
    assert "no significant difference" in r.output
    res = json.loads(out.read_text())
    assert res["diff"] == 0.0 and res["t_test_p"] == 1.0 and res["significant"] is False
    assert res["mean_a"] == res["mean_b"] == pytest.approx(res["reported_a"])
    assert res["wilcoxon_p"] is None and res["n_users"] == 60 and res["metric"] == "ndcg@10"


def test_planted_better_run_is_significant(runs, tmp_path):
    """item-kNN follows the cycle (its target is ranked first), popularity does not."""
    out = tmp_path / "pop-vs-knn.json"
    r = CliRunner().invoke(_app(), ["compare", str(runs["pop"]), str(runs["knn"] / "metrics.json"),
                                    "--metric", "recall@5", "--json", str(out)])
    assert r.exit_code == 0, r.output
    assert "B better" in r.output
    res = json.loads(out.read_text())
    assert res["mean_b"] == 1.0 and res["diff"] > 0.3 and res["ci95_low"] > 0
    assert res["t_test_p"] < 1e-6 and res["wilcoxon_p"] < 1e-6 and res["significant"] is True
    # reversed order: the same test, the sign flips
    back = compare_runs(runs["knn"], runs["pop"], "recall@5")
    assert back["diff"] == pytest.approx(-res["diff"]) and back["t_test_p"] == pytest.approx(res["t_test_p"])
    r = CliRunner().invoke(_app(), ["compare", str(runs["pop"]), str(runs["knn"]), "--json", "-"])
    assert r.exit_code == 0 and json.loads(r.output)["metric"] == "ndcg@10"


@pytest.mark.parametrize("other, expect", [("fewer", "evaluated users differ"),
                                           ("other", "data fingerprints differ")])
def test_mismatched_runs_error_names_both_files(runs, other, expect):
    r = CliRunner().invoke(_app(), ["compare", str(runs["pop"]), str(runs[other])])
    assert r.exit_code != 0 and isinstance(r.exception, ArtifactError)
    msg = str(r.exception)
    assert expect in msg and str(runs["pop"] / "metrics.json") in msg
    assert str(runs[other] / "metrics.json") in msg and "\n" not in msg


def test_cli_mismatch_is_one_line_exit_2(runs):
    r = subprocess.run([sys.executable, "-m", "shiftrec.cli", "compare", str(runs["pop"]),
                        str(runs["fewer"])], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr
    err = r.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: runs are not comparable"), r.stderr
    assert "Traceback" not in r.stderr + r.stdout


def test_other_split_reordered_users_and_bad_files(runs, tmp_path):
    from shiftrec.data.splits import SeqSplit
    from shiftrec.models.popularity import Popularity

    split = SeqSplit.load(runs["split"])
    model = Popularity().fit(split)
    # the valid split of the same data is another evaluation
    metrics, ranks = evaluate(model, split, "valid")
    write_metrics(tmp_path / "valid" / "metrics.json", metrics, None, None,
                  per_user=UserRanks.of(split, "valid", ranks))
    with pytest.raises(ArtifactError, match="evaluated sets differ"):
        compare_runs(runs["pop"], tmp_path / "valid")
    # the same users in another order are matched by id
    metrics, ranks = evaluate(model, split, "test")
    ur = UserRanks.of(split, "test", ranks)
    perm = np.random.default_rng(0).permutation(len(ranks))
    shuffled = UserRanks(ur.user_id[perm], ur.user_index[perm], ur.target[perm], ur.rank[perm],
                         "test", ur.split_kind, ur.fingerprint)
    write_metrics(tmp_path / "shuffled.json", metrics, None, None, per_user=shuffled)
    assert (tmp_path / "shuffled.ranks.npz").exists()
    res = compare_runs(runs["pop"], tmp_path / "shuffled.json")
    assert res["diff"] == 0.0 and res["n_differ"] == 0
    # a metrics file without per-user ranks (written before they were kept)
    write_metrics(tmp_path / "old" / "metrics.json", metrics, None, None, split="test")
    with pytest.raises(ArtifactError, match="no per-user ranks"):
        compare_runs(runs["pop"], tmp_path / "old")
    # a ranks file that is not the one metrics.json records
    np.savez(tmp_path / "shuffled.ranks.npz", user_id=shuffled.user_id,
             user_index=shuffled.user_index, target=shuffled.target, rank=shuffled.rank + 1)
    with pytest.raises(ArtifactError, match="rank differs"):
        compare_runs(runs["pop"], tmp_path / "shuffled.json")
    with pytest.raises(ConfigError, match="valid metrics"):
        compare_runs(runs["pop"], runs["knn"], "auc")
    r = CliRunner().invoke(_app(), ["compare", str(runs["pop"]), str(tmp_path / "nope")])
    assert r.exit_code != 0 and "metrics file not found" in str(r.exception)


def test_paired_test_default_is_ndcg_and_bootstrap_is_chunked():
    rng = np.random.default_rng(1)
    a = rng.integers(1, 50, size=3000)
    b = np.maximum(a - rng.integers(0, 3, size=3000), 1)
    res = paired_test(a, b, k=10, n_boot=50)
    assert res["metric"] == "ndcg@10" and res["diff"] > 0 and res["t_test_p"] < 0.01
    d = per_user_metric(b, "ndcg@10") - per_user_metric(a, "ndcg@10")
    boots = d[np.random.default_rng(0).integers(0, len(d), size=(50, len(d)))].mean(axis=1)
    assert res["ci95_low"] == pytest.approx(np.quantile(boots, 0.025))


def test_paired_values_test_on_hand_values():
    """Per-user values given directly (e.g. averaged over seeds): hand-computed mean, difference
    and t-test p-value (d = 1, 2, 3: mean 2, sd 1, t = 2 * sqrt(3), 2 degrees of freedom)."""
    from scipy import stats

    from shiftrec.evaluate.significance import paired_values_test

    res = paired_values_test(np.array([0.0, 0.0, 0.0]), np.array([1.0, 2.0, 3.0]), n_boot=20)
    assert res["mean_a"] == 0 and res["mean_b"] == 2 and res["diff"] == 2
    assert res["t_test_p"] == pytest.approx(2 * stats.t.sf(2 * np.sqrt(3), 2))
    assert paired_values_test(np.ones(4), np.ones(4))["t_test_p"] == 1.0
    with pytest.raises(ValueError, match="same users"):
        paired_values_test(np.ones(3), np.ones(4))


def test_exclude_seen_is_recorded_and_never_compared_with_ranking_everything(runs, tmp_path):
    """`shiftrec train --exclude-seen` ranks each test target among the items outside the
    user's history (no rank gets worse, and here some get better: popularity's top items are
    in most histories), records the protocol, and compare refuses to pair it with a run that
    ranked every item."""
    r = CliRunner().invoke(_app(), ["train", str(runs["split"]), "--model", "popularity",
                                    "--exclude-seen", "-o", str(tmp_path / "pop-x")])
    assert r.exit_code == 0, r.output
    assert "(seen items excluded)" in r.output
    plain, mp = read_user_ranks(runs["pop"])
    excl, mx = read_user_ranks(tmp_path / "pop-x")
    assert mp["seen_items"] == "ranked" and mx["seen_items"] == "excluded"
    assert np.array_equal(plain.target, excl.target)
    assert (excl.rank <= plain.rank).all() and (excl.rank < plain.rank).any()
    with pytest.raises(ArtifactError, match=r"seen items \(ranked or excluded\) differ"):
        compare_runs(runs["pop"], tmp_path / "pop-x")
    # a metrics file written before the protocol was recorded ranked every item
    old = json.loads((runs["pop"] / "metrics.json").read_text())
    del old["seen_items"]
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "metrics.json").write_text(json.dumps(old))
    (tmp_path / "old" / "metrics.ranks.npz").write_bytes((runs["pop"] / "metrics.ranks.npz").read_bytes())
    assert compare_runs(runs["pop"], tmp_path / "old")["diff"] == 0.0
    with pytest.raises(ArtifactError, match="seen items"):
        compare_runs(tmp_path / "old", tmp_path / "pop-x")
    # shiftfusion chooses its flow weights ranking every item: the flag is refused
    r = CliRunner().invoke(_app(), ["train", str(runs["split"]), "--model", "shiftfusion",
                                    "--exclude-seen", "-o", str(tmp_path / "fx")])
    assert r.exit_code != 0 and "--exclude-seen does not apply to shiftfusion" in str(r.exception)
