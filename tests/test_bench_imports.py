"""Bench scripts use the installed `shiftrec` package only: no sys.path / PYTHONPATH edits, no
imports of other bench scripts, and every `shiftrec` name they import exists in the library."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"
FILES = sorted(BENCH.glob("*.py"))


def path_hacks(tree: ast.AST) -> list[tuple[int, str]]:
    """Lines that touch the import path: any use of sys.path (insert, append, assignment, ...),
    site.addsitedir, or a PYTHONPATH string (e.g. set for a child process)."""
    bad = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr == "path" and \
                isinstance(node.value, ast.Name) and node.value.id == "sys":
            bad.append((node.lineno, "sys.path"))
        elif isinstance(node, ast.Attribute) and node.attr == "addsitedir":
            bad.append((node.lineno, "site.addsitedir"))
        elif isinstance(node, ast.ImportFrom) and node.module == "sys" and \
                any(a.name == "path" for a in node.names):
            bad.append((node.lineno, "from sys import path"))
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and \
                "PYTHONPATH" in node.value:
            bad.append((node.lineno, "PYTHONPATH"))
    return bad


def shiftrec_imports(tree: ast.AST) -> list[tuple[int, str, str | None]]:
    out: list[tuple[int, str, str | None]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 and \
                node.module.split(".")[0] == "shiftrec":
            out += [(node.lineno, node.module, a.name) for a in node.names]
        elif isinstance(node, ast.Import):
            out += [(node.lineno, a.name, None) for a in node.names if a.name.split(".")[0] == "shiftrec"]
    return out


def test_there_are_bench_files() -> None:
    assert len(FILES) >= 5


def test_the_checker_catches_path_edits() -> None:
    src = ("import sys, site\nsys.path.insert(0, 'src')\nsys.path.append('x')\nsys.path = []\n"
           "site.addsitedir('y')\nenv = {'PYTHONPATH': 'src'}\nfrom sys import path\n")
    assert sorted(line for line, _ in path_hacks(ast.parse(src))) == [2, 3, 4, 5, 6, 7]
    assert path_hacks(ast.parse("import sys\nprint(sys.executable, sys.argv)\n")) == []


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_no_import_path_edits(path: Path) -> None:
    assert path_hacks(ast.parse(path.read_text(encoding="utf-8"))) == [], \
        f"{path.name} edits the import path; import the installed shiftrec package instead"


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_no_imports_between_bench_scripts(path: Path) -> None:
    scripts = {p.stem for p in FILES} | {"bench"}
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                 [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
        for n in names:
            assert n.split(".")[0] not in scripts, \
                f"{path.name}:{node.lineno} imports bench script '{n}'; shared helpers belong in the library"


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_shiftrec_names_exist(path: Path) -> None:
    """Every `from shiftrec.x import y` in a bench script resolves (modules import lazily, so
    this does not load torch)."""
    for line, module, name in shiftrec_imports(ast.parse(path.read_text(encoding="utf-8"))):
        mod = importlib.import_module(module)
        if name is not None and not hasattr(mod, name):
            try:
                importlib.import_module(f"{module}.{name}")  # a submodule
            except ModuleNotFoundError:
                pytest.fail(f"{path.name}:{line}: shiftrec has no '{module}.{name}'")
