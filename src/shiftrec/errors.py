"""Errors that end a command with one clear line (file, row, column) and a non-zero exit."""

from __future__ import annotations


class ShiftrecError(Exception):
    """A user-facing error. `str(err)` is a single line fit to print as-is."""

    def __init__(self, message: str, *, path: object = None, row: int | None = None,
                 column: str | None = None) -> None:
        self.message = message
        self.path = None if path is None else str(path)
        self.row = row
        self.column = column
        super().__init__(self.one_line())

    def one_line(self) -> str:
        where = []
        if self.path is not None:
            where.append(self.path)
        if self.row is not None:
            where.append(f"row {self.row}")
        if self.column is not None:
            where.append(f"column '{self.column}'")
        prefix = ": ".join([", ".join(where)]) + ": " if where else ""
        return (prefix + self.message).replace("\n", " ")


class InputError(ShiftrecError):
    """Bad input data or file."""


class ConfigError(ShiftrecError):
    """Bad configuration (unknown keys, bad values, unknown names)."""


class ArtifactError(ShiftrecError):
    """A checkpoint or artifact that is incompatible or corrupt."""


def unknown_name(kind: str, name: str, valid: object) -> ConfigError:
    names = ", ".join(sorted(valid))  # type: ignore[arg-type]
    return ConfigError(f"unknown {kind} '{name}'; valid {kind}s: {names}")
