"""The README quick-start runs as written (CLI block and Python block)."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def block(tag: str) -> str:
    text = (ROOT / "README.md").read_text()
    m = re.search(rf"<!-- quickstart:{tag} -->\s*```\w*\n(.*?)```", text, re.S)
    assert m, f"README has no quickstart:{tag} block"
    return m.group(1)


def test_readme_cli_quickstart(tmp_path: Path) -> None:
    shiftrec = [sys.executable, "-m", "shiftrec.cli"]
    for line in block("cli").strip().splitlines():
        args = shlex.split(line)
        assert args[0] == "shiftrec"
        r = subprocess.run(shiftrec + args[1:], cwd=tmp_path, capture_output=True, text=True,
                           timeout=600, env={**os.environ, "COLUMNS": "120"})
        assert r.returncode == 0, f"{line}\n{r.stdout}\n{r.stderr}"


def test_readme_python_quickstart(tmp_path: Path) -> None:
    r = subprocess.run([sys.executable, "-c", block("python")], cwd=tmp_path, capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    assert "ndcg@10" in r.stdout
