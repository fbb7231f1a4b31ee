"""Where shared datasets live: $SHIFTREC_DATA, else ../shared/data beside the project root."""

from __future__ import annotations

import os
from pathlib import Path

ENV_VAR = "SHIFTREC_DATA"


def project_root() -> Path:
    return Path(__file__).resolve().parents[2]


def data_root(explicit: str | Path | None = None) -> Path | None:
    """The shared data folder, or None when it is absent."""
    for cand in (explicit, os.environ.get(ENV_VAR), project_root().parent / "shared" / "data",
                 Path.cwd().parent / "shared" / "data"):
        if cand and Path(cand).is_dir():
            return Path(cand)
    return None
