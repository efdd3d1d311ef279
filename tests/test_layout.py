"""The design card's layering: ``search`` is the core and imports nothing from
``indexer`` or ``web``; importing any package does no heavy work."""

import ast
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_search_imports_nothing_from_indexer_or_web():
    offenders = {str(p.relative_to(REPO)): _imports(p) & {"indexer", "web"} for p in (REPO / "search").rglob("*.py")}
    assert {k: v for k, v in offenders.items() if v} == {}


def test_web_does_not_import_indexer():
    offenders = {str(p.relative_to(REPO)): _imports(p) & {"indexer"} for p in (REPO / "web").rglob("*.py")}
    assert {k: v for k, v in offenders.items() if v} == {}


def test_importing_the_packages_loads_no_model_library():
    code = ("import sys, search, search.engine, search.store, search.models, indexer.cli, indexer.pipeline; "
            "print(sorted(m for m in ('torch', 'open_clip', 'faiss') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
