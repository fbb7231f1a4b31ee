"""Item text: one string per item built from configurable catalogue fields."""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

import polars as pl

from shiftrec.data.splits import IdMap
from shiftrec.errors import ConfigError, InputError


class TextField(enum.StrEnum):
    TITLE = "title"
    CATEGORY = "category"
    BRAND = "brand"
    DESCRIPTION = "description"


@dataclass(frozen=True)
class TextConfig:
    """How item text is built: the non-empty `fields` in order, joined by `sep`, whitespace
    collapsed, optionally lower-cased, cut to `max_chars` characters."""

    fields: tuple[TextField, ...] = (TextField.TITLE, TextField.CATEGORY, TextField.BRAND)
    max_chars: int = 512
    lowercase: bool = False
    sep: str = ". "

    def __post_init__(self) -> None:
        if not self.fields:
            raise ConfigError("text config: fields must name at least one of "
                              + ", ".join(f.value for f in TextField))
        try:
            object.__setattr__(self, "fields", tuple(TextField(f) for f in self.fields))
        except ValueError as e:
            raise ConfigError(f"text config: {e}; valid fields: "
                              + ", ".join(f.value for f in TextField)) from None
        if self.max_chars < 1:
            raise ConfigError(f"text config: max_chars must be >= 1, got {self.max_chars}")


def parse_fields(spec: str) -> tuple[TextField, ...]:
    """'title,brand' -> (TITLE, BRAND); unknown names raise ConfigError listing the valid ones."""
    out = []
    for raw in spec.split(","):
        name = raw.strip().lower()
        if not name:
            continue
        try:
            out.append(TextField(name))
        except ValueError:
            raise ConfigError(f"unknown text field '{name}'; valid text fields: "
                              + ", ".join(f.value for f in TextField)) from None
    if not out:
        raise ConfigError("no text fields given; valid text fields: "
                          + ", ".join(f.value for f in TextField))
    return tuple(out)


_WS = re.compile(r"\s+")


def _clean(s: str | None) -> str:
    return _WS.sub(" ", s).strip() if s else ""


def build_texts(items: pl.DataFrame, cfg: TextConfig = TextConfig()) -> list[str]:
    """One text per row of `items` (same order). Missing columns and nulls count as empty."""
    cols = [f.value for f in cfg.fields]
    present = [c for c in cols if c in items.columns]
    if not present:
        raise InputError(f"items have none of the text fields {cols}; columns: {items.columns}")
    data = {c: items[c].cast(pl.String).to_list() for c in present}
    out = []
    for i in range(items.height):
        parts = [p for p in (_clean(data[c][i]) for c in present) if p]
        text = cfg.sep.join(parts)
        if cfg.lowercase:
            text = text.lower()
        if len(text) > cfg.max_chars:
            text = text[:cfg.max_chars].rstrip()
        out.append(text)
    return out


def item_texts(items: pl.DataFrame, item_map: IdMap, cfg: TextConfig = TextConfig()) -> list[str]:
    """Texts aligned with `item_map`: entry i-1 is the text of item index i (1..n_items).

    `items` needs `domain` and `item_id` columns (the Dataset items frame). Items of the map that
    the catalogue lacks get an empty text; duplicate catalogue rows keep the first.
    """
    for c in ("domain", "item_id"):
        if c not in items.columns:
            raise InputError(f"items frame lacks column '{c}'", column=c)
    cat = items.unique(["domain", "item_id"], keep="first", maintain_order=True)
    texts = build_texts(cat, cfg) if cat.height else []
    by_key = dict(zip((cat["domain"] + "/" + cat["item_id"]).to_list(), texts, strict=True))
    return [by_key.get(k, "") for k in item_map.keys[1:]]
