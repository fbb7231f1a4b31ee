"""Frozen-dataclass config with strict YAML overlay (unknown keys are errors, choices are enums)."""

from __future__ import annotations

import dataclasses
import enum
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

from shiftrec.errors import ConfigError

T = TypeVar("T")


def _coerce(tp: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _coerce(args[0], value, where)
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        try:
            return tp(value)
        except ValueError:
            valid = ", ".join(str(m.value) for m in tp)
            raise ConfigError(f"{where}: invalid choice '{value}'; valid: {valid}") from None
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping")
        return from_dict(tp, value, where)
    if origin in (tuple, list):
        args = typing.get_args(tp)
        inner = args[0] if args else Any
        seq = [_coerce(inner, v, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(seq) if origin is tuple else seq
    if origin is dict:
        return dict(value)
    if tp is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if tp in (int, str, bool) and not isinstance(value, tp):
        raise ConfigError(f"{where}: expected {tp.__name__}, got {type(value).__name__} {value!r}")
    return value


def from_dict(cls: type[T], data: dict[str, Any], where: str = "config") -> T:
    """Build a frozen dataclass from a dict; unknown keys raise ConfigError."""
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; valid keys: {sorted(fields)}")
    hints = typing.get_type_hints(cls)
    kwargs = {k: _coerce(hints[k], v, f"{where}.{k}") for k, v in data.items()}
    return cls(**kwargs)


def overlay(base: T, data: dict[str, Any], where: str = "config") -> T:
    """Return `base` with the keys in `data` replaced (recursively for nested dataclasses)."""
    fields = {f.name for f in dataclasses.fields(base)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - fields)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; valid keys: {sorted(fields)}")
    hints = typing.get_type_hints(type(base))
    changes = {}
    for k, v in data.items():
        cur = getattr(base, k)
        if dataclasses.is_dataclass(cur) and isinstance(v, dict):
            changes[k] = overlay(cur, v, f"{where}.{k}")
        else:
            changes[k] = _coerce(hints[k], v, f"{where}.{k}")
    return dataclasses.replace(base, **changes)  # type: ignore[type-var]


def read_yaml_mapping(path: str | Path, what: str = "a mapping") -> dict[str, Any]:
    """The top-level mapping of a YAML file; a missing file, invalid YAML or another top-level
    type is one ConfigError line naming the file (and the YAML's line where it has one)."""
    import yaml

    p = Path(path)
    if not p.exists():
        raise ConfigError("config file not found", path=p)
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"invalid YAML: {str(e).splitlines()[0]}", path=p) from None
    if not isinstance(data, dict):
        raise ConfigError(f"top level must be {what}", path=p)
    return data


def load_yaml(base: T, path: str | Path | None) -> T:
    if path is None:
        return base
    return overlay(base, read_yaml_mapping(path), where=str(path))


def to_dict(cfg: Any) -> dict[str, Any]:
    def conv(v: Any) -> Any:
        if isinstance(v, enum.Enum):
            return v.value
        if dataclasses.is_dataclass(v):
            return {f.name: conv(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, tuple | list):
            return [conv(x) for x in v]
        if isinstance(v, Path):
            return str(v)
        return v

    return conv(cfg)
