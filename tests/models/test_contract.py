"""One contract test for every registered model (iterates models.registry.MODELS).

A new registry entry is covered automatically. If its defaults are slow on this tiny fixture,
add small settings to TINY (keyword overrides, or a callable split -> unfitted model built
through the registry), and state what it must get right in KNOWN_ANSWER ("next": the cycle's
next item is ranked in the top 3 for most users; "popular": the most frequent training item is
ranked first; "topic": the top item shares the topic of the history's last item; None: shape
and round-trip checks only). test_every_entry_has_a_known_answer
makes sure no entry is left with shape checks only by accident.

The transfer models need item text embeddings: the fixture gives each item a seeded random
16-d vector (a stand-in for encoded titles, nothing is downloaded or encoded). Distinct random
vectors are linearly independent, so the text adaptor can learn the cycle from them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from shiftrec.errors import ArtifactError
from shiftrec.evaluate.metrics import ranks_from_scores
from shiftrec.models.base import Recommender
from shiftrec.models.registry import MODELS, build_model, load_model
from tests.models.cyclic import cyclic_split

POPULAR = 5

_FAST_TRAIN = {"seed": 0, "device": "cpu", "threads": 1,
               "phases": [{"name": "train", "epochs": 40, "lr": 0.01, "batch_size": 256,
                           "patience": 8}]}



def seeded_item_text(split: Any, dim: int = 16, seed: int = 0) -> np.ndarray:
    """(n_items + 1, dim) float32 'text embeddings': one seeded random vector per item, row 0 zeros."""
    text = np.random.default_rng(seed).normal(size=(split.n_items + 1, dim)).astype(np.float32)
    text[0] = 0.0
    return text


_TINY_TRANSFER = {"hidden": 32, "n_layers": 1, "n_heads": 2, "inner": 64, "n_experts": 2,
                  "max_len": 20, "dropout": 0.1, "attn_dropout": 0.1, "adaptor_dropout": 0.0,
                  "gate_noise": False,
                  "train": {"epochs": 40, "lr": 0.01, "batch_size": 256, "patience": 8, "seed": 0,
                            "threads": 1, "device": "cpu"}}


def _tiny_transfer(name: str) -> Callable[[Any], Any]:
    def make(split: Any) -> Any:
        return build_model(name, item_text=seeded_item_text(split), encoder="seeded-random",
                           **_TINY_TRANSFER)
    return make


def cyclic_topics(split: Any, per_topic: int = 3) -> np.ndarray:
    """Item topics of the cyclic fixture: runs of `per_topic` consecutive items (0 = padding, -1)."""
    it = (np.arange(split.n_items + 1) - 1) // per_topic
    it[0] = -1
    return it.astype(np.int64)


def _tiny_shiftaware(split: Any) -> Any:
    return build_model("shiftaware", item_topic=cyclic_topics(split), hidden=32, inner=64,
                       dropout=0.1, attn_dropout=0.1, train=_FAST_TRAIN)


def _tiny_topic_profile(split: Any) -> Any:
    # recency-dominated profile (half-life 1 event) and P(item | topic) from topic labels
    return build_model("topic_profile", item_topic=cyclic_topics(split), half_life=1.0,
                       decay_unit="events", item_topic_mode="hard")


def _tiny_textsim(split: Any) -> Any:
    # 'titles' on a circle: cycle neighbours are the most similar texts (models/test_textsim.py)
    a = 2 * np.pi * np.arange(split.n_items + 1) / split.n_items
    text = np.stack([np.cos(a), np.sin(a)], 1).astype(np.float32)
    text[0] = 0
    return build_model("textsim", item_text=text, encoder="circle")


TINY: dict[str, dict[str, Any] | Callable[[Any], Any]] = {
    "textsim": _tiny_textsim,
    "shiftaware": _tiny_shiftaware,
    "topic_profile": _tiny_topic_profile,
    "sasrec": {"hidden": 32, "inner": 64, "dropout": 0.1, "attn_dropout": 0.1, "train": _FAST_TRAIN},
    "transfer": _tiny_transfer("transfer"),
    "transfer-transductive": _tiny_transfer("transfer-transductive"),
    "shiftfusion": {"base": "sasrec", "base_options": {"hidden": 32, "inner": 64, "dropout": 0.1,
                                                       "attn_dropout": 0.1, "train": _FAST_TRAIN}},
}

KNOWN_ANSWER: dict[str, str | None] = {"popularity": "popular", "itemknn": "next", "sasrec": "next",
                                       "transfer": "next", "transfer-transductive": "next",
                                       "shiftfusion": "next", "shiftaware": "next",
                                       "topic_profile": "topic", "textsim": "next"}


@pytest.fixture(scope="module")
def split():
    return cyclic_split(n_users=60, n_items=12, popular=POPULAR)


def _build(name: str, split) -> Any:
    tiny = TINY.get(name, {})
    return tiny(split) if callable(tiny) else build_model(name, **tiny)


@pytest.fixture(scope="module", params=sorted(MODELS))
def fitted(request, split):
    model = _build(request.param, split)
    assert isinstance(model, Recommender)
    with pytest.raises(ArtifactError):
        model.score([np.array([1, 2])])  # scoring before fit is a clear error
    assert model.fit(split) is model
    return request.param, model


def test_every_entry_has_a_known_answer():
    assert set(KNOWN_ANSWER) == set(MODELS)


def _hist(split):
    es = split.test
    return [es.history[i] for i in range(len(es))], [es.history.times_of(i) for i in range(len(es))]


def test_score_shape_and_dtype(fitted, split):
    name, model = fitted
    hist, times = _hist(split)
    s = model.score(hist[:7] + [np.zeros(0, np.int64)], times[:7] + [np.zeros(0, np.int64)])
    assert s.shape == (8, split.n_items + 1), name
    assert s.dtype == np.float32
    assert np.isfinite(s[:, 1:]).all()
    assert model.score(hist[:3], None).shape == (3, split.n_items + 1)  # times are optional


def test_known_answer(fitted, split):
    name, model = fitted
    kind = KNOWN_ANSWER.get(name)
    hist, times = _hist(split)
    scores = model.score(hist, times)
    if kind == "next":
        ranks = ranks_from_scores(scores, split.test.target)
        assert np.mean(ranks <= 3) >= 0.9, (name, ranks)
    elif kind == "popular":
        assert (scores[:, 1:].argmax(axis=1) + 1 == POPULAR).all()
    elif kind == "topic":  # the top item is in the topic of the history's last item
        it = cyclic_topics(split)
        top = scores[:, 1:].argmax(axis=1) + 1
        last = np.array([h[-1] for h in hist])
        assert np.mean(it[top] == it[last]) >= 0.9, (name, it[top], it[last])


def test_save_load_round_trip(fitted, split, tmp_path):
    name, model = fitted
    model.save(tmp_path / name)
    again = load_model(tmp_path / name)
    assert type(again) is type(model) and again.name == name
    hist, times = _hist(split)
    a, b = model.score(hist[:20], times[:20]), again.score(hist[:20], times[:20])
    assert np.array_equal(a, b)
    again2 = type(model).load(tmp_path / name)
    assert np.array_equal(a, again2.score(hist[:20], times[:20]))
    files = sorted(f.name for f in (tmp_path / name).iterdir() if f.is_file())
    assert "manifest.json" in files
    assert not [f for f in files if f.endswith((".pkl", ".pickle", ".pt", ".pth", ".joblib"))], files

