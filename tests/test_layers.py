"""Imports run one way: a module may import only from its own layer or the layers below it.

Lowest first. `train` sits below `models` (the trainer knows no concrete model; models use it)
and `evaluate` below `train` (early stopping ranks all items with the pure metrics).
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "shiftrec"

LAYERS = [
    {"__init__", "errors", "paths", "config", "manifest", "assets"},
    {"data"},
    {"text"},
    {"interest"},
    {"evaluate"},
    {"train"},
    {"models"},
    {"pipelines"},
    {"serve"},
    {"report"},
    {"cli"},
]
RANK = {name: i for i, names in enumerate(LAYERS) for name in names}


def _top(rel: Path) -> str:
    return rel.parts[0].removesuffix(".py")


def _imported(tree: ast.AST, rel: Path) -> list[tuple[int, str]]:
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                pkg = list(rel.parts[:-1])[: len(rel.parts) - node.level]
                mod = ".".join(pkg + ([node.module] if node.module else []))
                out.append((node.lineno, mod))
            elif node.module and node.module.startswith("shiftrec."):
                out.append((node.lineno, node.module[len("shiftrec."):]))
            elif node.module == "shiftrec":
                out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.Import):
            out += [(node.lineno, a.name[len("shiftrec."):]) for a in node.names
                    if a.name.startswith("shiftrec.")]
    return out


def violations(src: Path = SRC) -> list[str]:
    bad = []
    for f in sorted(src.rglob("*.py")):
        rel = f.relative_to(src)
        me = _top(rel)
        assert me in RANK, f"{rel}: top-level module '{me}' has no layer; add it to LAYERS"
        for line, mod in _imported(ast.parse(f.read_text(encoding="utf-8")), rel):
            target = mod.split(".")[0]
            if target in RANK and RANK[target] > RANK[me]:
                bad.append(f"{rel}:{line}: {me} imports {mod} (a higher layer)")
    return bad


def test_imports_run_one_way() -> None:
    assert violations() == []


def test_the_check_catches_a_back_edge(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "x.py").write_text("from shiftrec.models.registry import build_model\n")
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "y.py").write_text("from shiftrec.data.schema import Dataset\n")
    assert violations(tmp_path) == ["data/x.py:1: data imports models.registry (a higher layer)"]
