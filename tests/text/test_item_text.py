from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from shiftrec.config import from_dict
from shiftrec.data.splits import IdMap
from shiftrec.errors import ConfigError, InputError
from shiftrec.text import TextConfig, TextField, build_texts, item_texts, parse_fields

ITEMS = pl.DataFrame({
    "item_id": ["a", "b", "c", "a"],
    "domain": ["toys", "toys", "toys", "toys"],
    "title": ["  Lego   Star Wars ", None, "Garden Hose", "duplicate row"],
    "category": ["Toys > Building", "Toys > Dolls", None, "x"],
    "brand": ["LEGO", "Barbie", "", "y"],
    "description": ["A set.", None, "Long hose", None],
})


def test_default_fields_and_whitespace():
    texts = build_texts(ITEMS.head(3))
    assert texts == ["Lego Star Wars. Toys > Building. LEGO", "Toys > Dolls. Barbie", "Garden Hose"]


def test_field_choice_order_lowercase_and_cut():
    cfg = TextConfig(fields=(TextField.BRAND, TextField.TITLE), lowercase=True, max_chars=12, sep=" | ")
    assert build_texts(ITEMS.head(3), cfg) == ["lego | lego", "barbie", "garden hose"]
    only_desc = TextConfig(fields=("description",))
    assert only_desc.fields == (TextField.DESCRIPTION,)
    assert build_texts(ITEMS.head(3), only_desc) == ["A set.", "", "Long hose"]


def test_config_from_yaml_dict_and_bad_values():
    cfg = from_dict(TextConfig, {"fields": ["title", "brand"], "lowercase": True})
    assert cfg.fields == (TextField.TITLE, TextField.BRAND) and cfg.lowercase
    with pytest.raises(ConfigError, match="valid"):
        from_dict(TextConfig, {"fields": ["colour"]})
    with pytest.raises(ConfigError):
        TextConfig(fields=())
    with pytest.raises(ConfigError):
        TextConfig(max_chars=0)


def test_parse_fields():
    assert parse_fields("title, Brand") == (TextField.TITLE, TextField.BRAND)
    with pytest.raises(ConfigError, match="valid text fields: title, category, brand, description"):
        parse_fields("title,colour")


def test_missing_columns_count_as_empty_but_none_present_is_an_error():
    df = pl.DataFrame({"item_id": ["1"], "title": ["Kite"]})
    assert build_texts(df) == ["Kite"]
    with pytest.raises(InputError):
        build_texts(df, TextConfig(fields=("brand",)))


def test_item_texts_aligned_with_id_map():
    imap = IdMap(np.array(["<pad>", "toys/c", "toys/a", "toys/zzz"], dtype=object))
    texts = item_texts(ITEMS, imap, TextConfig(fields=("title",)))
    # aligned with indices 1..3; duplicate rows keep the first; unknown items get ""
    assert texts == ["Garden Hose", "Lego Star Wars", ""]
