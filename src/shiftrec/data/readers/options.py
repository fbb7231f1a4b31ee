"""The one options object every reader takes, and the table entry that describes a reader."""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING

from shiftrec.errors import ConfigError

if TYPE_CHECKING:
    from shiftrec.data.readers._common import ReadResult


@dataclass(frozen=True)
class ColumnMap:
    """Which source column holds each canonical field (None = absent)."""

    user_id: str = "user_id"
    item_id: str = "item_id"
    timestamp: str = "timestamp"
    event_type: str | None = None
    value: str | None = None
    domain: str | None = None
    session_id: str | None = None
    timestamp_unit: str = "auto"  # auto | s | ms | iso | strftime format
    default_event_type: str = "purchase"
    default_domain: str = "default"


@dataclass(frozen=True)
class ItemColumnMap:
    item_id: str = "item_id"
    title: str | None = "title"
    category: str | None = None
    brand: str | None = None
    description: str | None = None
    price: str | None = None
    domain: str | None = None


class TieOrder(enum.StrEnum):
    """Order of events that share (user, timestamp): the file's order, or a seeded shuffle."""

    FILE = "file"
    SHUFFLE = "shuffle"


class Recipe(enum.StrEnum):
    """Online Retail: the store's own rules (default) or UniSRec's recipe."""

    STORE = "store"
    UNISREC = "unisrec"


@dataclass(frozen=True)
class ReadOptions:
    """Everything a reader may need. Each reader uses the fields its ReaderSpec lists in `options`;
    setting another field away from its default is a ConfigError (see `check_options`)."""

    path: Path
    items: Path | None = None  # item catalogue / metadata file (generic, amazon-csv, amazon-2018)
    columns: ColumnMap = field(default_factory=ColumnMap)  # generic
    item_columns: ItemColumnMap = field(default_factory=ItemColumnMap)  # generic
    file_format: str | None = None  # generic: csv | tsv | parquet | jsonl (None = from the name)
    domain: str | None = None  # amazon-csv, amazon-2018, recbole: domain name (None = from the name)
    name: str | None = None  # unisrec: file stem (None = the *.test.inter found)
    recipe: Recipe = Recipe.STORE  # online-retail
    tie_order: TieOrder = TieOrder.FILE  # online-retail: order of events sharing (user, time)
    seed: int = 0  # online-retail: seed of the tie shuffle

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))
        if self.items is not None:
            object.__setattr__(self, "items", Path(self.items))
        for f, enum_t in (("recipe", Recipe), ("tie_order", TieOrder)):
            v = getattr(self, f)
            try:
                object.__setattr__(self, f, enum_t(v))
            except ValueError:
                raise ConfigError(f"unknown {f.replace('_', '-')} '{v}'; valid: "
                                  f"{', '.join(e.value for e in enum_t)}") from None


@dataclass(frozen=True)
class ReaderSpec:
    """One row of the reader table: how to read a format and what the user must know about it."""

    read: Callable[[ReadOptions], ReadResult]
    description: str
    path_is: str  # what PATH names: "a file", "a folder", ...
    required_columns: tuple[str, ...]
    timestamp_units: str
    companion_files: tuple[str, ...] = ()
    options: frozenset[str] = frozenset()  # ReadOptions fields this reader uses besides path

    def help_text(self, name: str) -> str:
        opts = ", ".join(sorted(f"--{o.replace('_', '-')}" for o in self.options)) or "none"
        lines = [f"format '{name}': {self.description}",
                 f"  PATH: {self.path_is}",
                 f"  required columns: {', '.join(self.required_columns)}",
                 f"  timestamp units: {self.timestamp_units}",
                 "  companion files: " + ("; ".join(self.companion_files) or "none"),
                 f"  format options: {opts}"]
        return "\n".join(lines)


_OPTION_FLAGS = {"items": "--items", "columns": "--map/--mapping", "item_columns": "--map item_*",
                 "file_format": "file format", "domain": "--domain", "name": "--name",
                 "recipe": "--recipe", "tie_order": "--tie-order", "seed": "--seed"}


def check_options(fmt: str, spec: ReaderSpec, opts: ReadOptions) -> None:
    """A ConfigError naming the first option set away from its default that `fmt` does not use."""
    defaults = ReadOptions(path=opts.path)
    for f in fields(ReadOptions):
        if f.name == "path" or f.name in spec.options:
            continue
        if getattr(opts, f.name) != getattr(defaults, f.name):
            used = ", ".join(sorted(_OPTION_FLAGS[o] for o in spec.options)) or "none"
            raise ConfigError(f"{_OPTION_FLAGS[f.name]} does not apply to format '{fmt}' "
                              f"(its options: {used})")
