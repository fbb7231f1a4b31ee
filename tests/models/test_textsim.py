"""TextSim (models.textsim): scores pinned to a hand computation, decay and text transform
chosen on validation, the transforms pinned to hand values, bad input, and `shiftrec train
--model textsim --item-text EMB` end to end."""

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
    m = TextSim(text, "hand", decay=0.5, select_decay=(), select_transform=(), temperature=0.5).fit(split)
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
    m = build_model("textsim", item_text=circle_text(12), encoder="circle", select_transform=()).fit(split)
    # on the cycle the most recent item says the most: a short memory wins on validation
    # (0.3 and 0.1 tie there; the first best of the grid is kept)
    assert set(m.selection) == {"none 1", "none 0.7", "none 0.5", "none 0.3", "none 0.1"}
    assert m.decay == 0.3 and m.valid_ndcg == max(m.selection.values()) > m.selection["none 1"]
    m.save(tmp_path / "ts")
    man = json.loads((tmp_path / "ts" / "manifest.json").read_text())
    assert man["model"] == "textsim" and man["decay"] == 0.3 and man["encoder"] == "circle"
    assert man["transform"] == "none"
    again = load_model(tmp_path / "ts")
    h = [split.test.history[i] for i in range(5)]
    assert np.array_equal(again.score(h), m.score(h))
    kept = TextSim(circle_text(12), decay=0.7, select_decay=(), select_transform=()).fit(split)
    assert kept.decay == 0.7 and kept.selection == {}
    # choose(exclude_seen=True): each decay scored as the test will rank (history out)
    from shiftrec.evaluate.ranking import evaluate

    m.choose(split, exclude_seen=True)
    for key, v in m.selection.items():
        probe = TextSim(circle_text(12), decay=float(key.split()[1]), select_decay=(),
                        select_transform=()).fit(split)
        assert v == pytest.approx(evaluate(probe, split, "valid", exclude_history=True)[0]["ndcg@10"])
        assert v >= evaluate(probe, split, "valid")[0]["ndcg@10"]  # the history only took slots
    assert m.valid_ndcg == max(m.selection.values())
    # the config asks for it at fit time: one choice, the same one
    once = TextSim(circle_text(12), select_exclude_seen=True, select_transform=("none",)).fit(split)
    assert once.selection == m.selection and once.decay == m.decay


def test_transforms_are_the_hand_computed_maps():
    from shiftrec.text.transform import apply_text_transform, fit_text_transform, parse_transforms

    # four points around (5, 5): variance 2 along x, 0.5 along y (mean variance 1.25), and a
    # row without text
    x = np.array([[7, 5], [3, 5], [5, 6], [5, 4], [0, 0]], np.float32)
    assert fit_text_transform(x, "none") == (None, None)
    mean, proj = fit_text_transform(x, "centre")
    assert mean.tolist() == [5, 5] and proj is None
    mean, proj = fit_text_transform(x, "whiten")
    assert mean.tolist() == pytest.approx([5, 5])
    assert proj == pytest.approx(np.diag([3.25 ** -0.5, 1.75 ** -0.5]), abs=1e-6)
    y = apply_text_transform(x, mean, proj)
    assert y[0].tolist() == pytest.approx([2 / 3.25 ** 0.5, 0]) and y[4].tolist() == [0, 0]
    assert parse_transforms("none, whiten,,centre") == ("none", "whiten", "centre")
    with pytest.raises(ConfigError, match="unknown text transform 'pca'.*centre, none, whiten"):
        parse_transforms("none,pca")


def test_transform_is_chosen_with_the_decay_on_validation(tmp_path):
    """On a circle far from the origin every raw cosine is near 1 and mirrored items look alike;
    centring gives back the circle itself (the same scores as the circle at the origin), and
    validation picks a transform over the raw vectors. Each cell of the selection is that
    (transform, decay) scored alone; save/load keeps the fitted map, and new items get it."""
    from shiftrec.evaluate.ranking import evaluate
    from shiftrec.text.transform import apply_text_transform

    split = cyclic_split(n_users=40, n_items=12)
    far = circle_text(12) + np.array([40.0, 0.0], np.float32)
    far[0] = 0
    h = [split.test.history[i] for i in range(6)]
    centred = TextSim(far, decay=0.5, select_decay=(), transform="centre", select_transform=()).fit(split)
    plain = TextSim(circle_text(12), decay=0.5, select_decay=(), select_transform=()).fit(split)
    assert np.allclose(centred.score(h), plain.score(h), atol=1e-4)
    m = TextSim(far, "far").fit(split)
    assert len(m.selection) == 15 and m.transform != "none"
    assert m.valid_ndcg == max(m.selection.values()) > max(v for k, v in m.selection.items()
                                                          if k.startswith("none"))
    for key, v in m.selection.items():
        t, d = key.split()
        probe = TextSim(far, decay=float(d), select_decay=(), transform=t, select_transform=()).fit(split)
        assert v == pytest.approx(evaluate(probe, split, "valid")[0]["ndcg@10"])
    w = TextSim(far, "far", transform="whiten", select_transform=()).fit(split)
    w.save(tmp_path / "w")
    again = load_model(tmp_path / "w")
    assert again.transform == "whiten" and np.array_equal(again.score(h), w.score(h))
    new = np.array([[41.0, 3.0], [10.0, -2.0]], np.float32)
    again.extend_items(new)
    want = apply_text_transform(new, w.mean, w.proj)
    want /= np.linalg.norm(want, axis=1, keepdims=True)
    assert np.allclose(again.table[-2:], want, atol=1e-6)
    # a manifest that disagrees with its arrays, or names no known transform: one clear error
    man = json.loads((tmp_path / "w" / "manifest.json").read_text())
    for bad, msg in (("centre", "does not match the arrays"), ("zca", "is not one of")):
        (tmp_path / "w" / "manifest.json").write_text(json.dumps({**man, "transform": bad}))
        with pytest.raises(ArtifactError, match=msg):
            load_model(tmp_path / "w")
    # saved before transforms existed (no transform key, no arrays): read as the raw cosine
    raw = TextSim(far, "far", decay=0.5, select_decay=(), select_transform=()).fit(split)
    raw.save(tmp_path / "old")
    man = json.loads((tmp_path / "old" / "manifest.json").read_text())
    del man["transform"]
    (tmp_path / "old" / "manifest.json").write_text(json.dumps(man))
    old = load_model(tmp_path / "old")
    assert old.transform == "none" and np.array_equal(old.score(h), raw.score(h))
    # whiten where no item has text: the identity map, saved and loaded like any other
    blank = TextSim(np.zeros_like(far), transform="whiten", select_transform=(), select_decay=()).fit(split)
    blank.save(tmp_path / "blank")
    assert load_model(tmp_path / "blank").proj.tolist() == np.eye(2).tolist()


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
