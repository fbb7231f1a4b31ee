from __future__ import annotations

import pytest

from shiftrec.errors import ArtifactError, ConfigError
from shiftrec.models.registry import MODELS, build_model, load_model


def test_unknown_model_lists_valid_names():
    with pytest.raises(ConfigError) as e:
        build_model("sasrek")
    for name in MODELS:
        assert name in str(e.value)


def test_kwargs_are_validated():
    assert build_model("sasrec", hidden=32).config.hidden == 32
    assert build_model("itemknn", window=3).config.window == 3
    with pytest.raises(ConfigError, match="unknown key"):
        build_model("itemknn", windw=3)
    with pytest.raises(ConfigError, match="no options"):
        build_model("popularity", k=3)


def test_load_model_needs_a_model_folder(tmp_path):
    with pytest.raises(ArtifactError, match="manifest.json missing"):
        load_model(tmp_path)
    (tmp_path / "manifest.json").write_text('{"model": "nope"}')
    with pytest.raises(ArtifactError, match="valid models: "):
        load_model(tmp_path)
