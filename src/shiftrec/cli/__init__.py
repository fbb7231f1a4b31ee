"""The `shiftrec` command: thin Typer commands that parse, build a config, call the library, print.

Every command module registers itself on the one `app`; `main` turns every `ShiftrecError` into
one line on stderr and exit code 2.
"""

from __future__ import annotations

from shiftrec.cli.app import app, main

__all__ = ["app", "main"]
