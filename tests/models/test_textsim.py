"""TextSim (models.textsim): scores pinned to a hand computation, decay chosen on validation,
bad input, and `shiftrec train --model textsim --item-text EMB` end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest

from shiftrec.errors import ArtifactError, ConfigError, InputError
from shiftrec.models.registry import build_model, load_model
from shiftrec.models.textsim import TextSim
from tests.models.cyclic import cyclic_split


def circle_text(n_items: int) -> np.ndarray:
    """Item k at angle 2*pi*k/n on a circle (scaled, to check the unit-length step): neighbours
    in the cycle have the most similar 'titles'."""
    a = 2 * np.pi * np.arange(n_items + 1) / n_items
    t = np.stack([np.cos(a), np.sin(a)], 1).astype(np.float32) * 3.0
    t[0] = 0
    return t


def test_scores_are_the_hand_computed_cosines():
    # items: 1 = (1, 0), 2 = (0, 2) -> unit (0, 1), 3 = (3, 4) -> unit (0.6, 0.8)
    text = np.array([[0, 0], [1, 0], [0, 2], [3, 4]], np.float32)
    split = cyclic_split(n_users=6, n_items=3)
    m = TextSim(text, "hand", decay=0.5, select_decay=(), temperature=0.5).fit(split)
    s = m.score([np.array([1, 2]), np.array([3]), np.zeros(0, np.int64)])
    # history [1, 2]: profile = 0.5 * (1, 0) + 1 * (0, 1) = (0.5, 1), length sqrt(1.25);
    # scores = cosine / temperature 0.5
    n = np.sqrt(1.25)
    assert s[0, 1:].tolist() == pytest.approx([0.5 / n / 0.5, 1 / n / 0.5, (0.5 * 0.6 + 0.8) / n / 0.5])
    assert s[1, 1:].tolist() == pytest.approx([1.2, 1.6, 2.0])
    assert s[2, 1:].tolist() == [0.0, 0.0, 0.0]  # empty history: every item 0
    assert np.isneginf(s[:, 0]).all() and s.dtype == np.float32


def test_decay_is_chosen_on_validation_and_saved(tmp_path):
    split = cyclic_split(n_users=40, n_items=12)
    m = build_model("textsim", item_text=circle_text(12), encoder="circle").fit(split)
    # on the cycle the most recent item says the most: a short memory wins on validation
    # (0.3 and 0.1 tie there; the first best of the grid is kept)
    assert set(m.selection) == {"1", "0.7", "0.5", "0.3", "0.1"}
    assert m.decay == 0.3 and m.selection["0.3"] == max(m.selection.values()) > m.selection["1"]
    m.save(tmp_path / "ts")
    man = json.loads((tmp_path / "ts" / "manifest.json").read_text())
    assert man["model"] == "textsim" and man["decay"] == 0.3 and man["encoder"] == "circle"
    again = load_model(tmp_path / "ts")
    h = [split.test.history[i] for i in range(5)]
    assert np.array_equal(again.score(h), m.score(h))
    kept = TextSim(circle_text(12), decay=0.7, select_decay=()).fit(split)
    assert kept.decay == 0.7 and kept.selection == {}
    # choose_decay(exclude_seen=True): each decay scored as the test will rank (history out)
    from shiftrec.evaluate.ranking import evaluate

    m.choose_decay(split, exclude_seen=True)
    for d, v in m.selection.items():
        probe = TextSim(circle_text(12), decay=float(d), select_decay=()).fit(split)
        assert v == pytest.approx(evaluate(probe, split, "valid", exclude_history=True)[0]["ndcg@10"])
        assert v >= evaluate(probe, split, "valid")[0]["ndcg@10"]  # the history only took slots
    assert m.selection[f"{m.decay:g}"] == max(m.selection.values())


def test_bad_input_is_one_clear_error():
    split = cyclic_split(n_users=10, n_items=8)
    with pytest.raises(ConfigError, match="decay must be in"):
        TextSim(circle_text(8), decay=0.0)
    with pytest.raises(ConfigError, match="decay must be in"):
        TextSim(circle_text(8), select_decay=(0.5, 1.5))
    with pytest.raises(ConfigError, match="temperature must be > 0"):
        TextSim(circle_text(8), temperature=0)
    with pytest.raises(ConfigError, match="needs item text"):
        TextSim().fit(split)
    with pytest.raises(InputError, match="7 items but the split has 8"):
        TextSim(circle_text(7)).fit(split)
    with pytest.raises(ArtifactError, match="not fitted"):
        TextSim(circle_text(8)).score([np.array([1])])
    m = TextSim(circle_text(8)).fit(split)
    with pytest.raises(InputError, match="item ids must be in"):
        m.score([np.array([1, 9])])


def test_cli_train_textsim_from_encoded_items(tmp_path):
    import typer
    from typer.testing import CliRunner

    from shiftrec.cli.train import register
    from shiftrec.text.features import ItemEmbeddings

    app = typer.Typer()
    register(app)
    app.command("noop", hidden=True)(lambda: None)
    split = cyclic_split(n_users=30, n_items=8)
    split_dir = split.save(tmp_path / "split")
    ItemEmbeddings(split.item_map.keys, circle_text(8), "circle", "fp").save(tmp_path / "emb")
    r = CliRunner().invoke(app, ["train", str(split_dir), "--model", "textsim", "--item-text",
                                 str(tmp_path / "emb"), "-o", str(tmp_path / "ts")])
    assert r.exit_code == 0, r.output
    metrics = json.loads((tmp_path / "ts" / "metrics.json").read_text())
    assert metrics["ndcg@10"] >= 0.5  # the next item ranks 3rd at worst (1 / log2(4) = 0.5)
    man = json.loads((tmp_path / "ts" / "manifest.json").read_text())
    assert man["model"] == "textsim" and man["encoder"] == "circle"
