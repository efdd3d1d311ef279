"""The design's layering, and the one namespaced distribution.

- ``sightline.search`` is the core and imports nothing above it;
- ``sightline.indexer`` and ``sightline.web`` are peers: neither imports the other;
- only ``sightline.cli`` knows both;
- no library module reads ``SIGHTLINE_*`` variables or writes ``os.environ``;
- importing any package does no heavy work;
- ``pip install .`` installs one top-level package, ``sightline``, with every
  subpackage and the UI's static files.
"""

import ast
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
#: Source folder of each layer, and the layers it must not import.
LAYERS = {
    "search": {"indexer", "web", "cli"},
    "indexer": {"web", "cli"},
    "web": {"indexer", "cli"},
}


def _sightline_imports(path: Path) -> set[str]:
    """The ``sightline.X`` layers a module imports (absolute imports only; the project uses no others)."""
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        modules = [alias.name for alias in node.names] if isinstance(node, ast.Import) else \
            [node.module] if isinstance(node, ast.ImportFrom) and node.module else []
        for module in modules:
            parts = module.split(".")
            if parts[0] == "sightline" and len(parts) > 1:
                names.add(parts[1])
    return names


def _library_files():
    for folder in LAYERS:
        yield from (REPO / folder).rglob("*.py")


@pytest.mark.parametrize("layer", sorted(LAYERS))
def test_each_layer_imports_only_what_is_below_it(layer):
    offenders = {str(p.relative_to(REPO)): _sightline_imports(p) & LAYERS[layer]
                 for p in (REPO / layer).rglob("*.py")}
    assert {k: v for k, v in offenders.items() if v} == {}


def test_the_cli_is_the_only_place_that_knows_both_indexer_and_web():
    both = [str(p.relative_to(REPO)) for p in _library_files()
            if {"indexer", "web"} <= _sightline_imports(p)]
    assert both == []
    cli = set().union(*(_sightline_imports(p) for p in (REPO / "sightline" / "cli").rglob("*.py")))
    assert {"indexer", "web", "search"} <= cli


def test_no_relative_imports():
    # Relative imports would hide a layer crossing from the check above.
    relative = [str(p.relative_to(REPO)) for p in [*_library_files(), *(REPO / "sightline").rglob("*.py")]
                if any(isinstance(n, ast.ImportFrom) and n.level for n in ast.walk(ast.parse(p.read_text())))]
    assert relative == []


def test_library_code_reads_no_sightline_environment_variables():
    # The core does not even name them (its messages name the options); the
    # indexer and the server take every setting as an argument.
    assert [str(p.relative_to(REPO)) for p in (REPO / "search").rglob("*.py") if "SIGHTLINE_" in p.read_text()] == []
    reads = re.compile(r"(environ\b[^\n]*|getenv\()[\"']SIGHTLINE_")
    readers = [str(p.relative_to(REPO)) for p in _library_files() if reads.search(p.read_text())]
    assert readers == []
    writers = [str(p.relative_to(REPO)) for p in [*_library_files(), *(REPO / "sightline").rglob("*.py")]
               if re.search(r"os\.environ\[[^]]+\]\s*=|os\.environ\.(update|setdefault)\(|os\.putenv\(",
                            p.read_text())]
    assert writers == []


def test_importing_the_packages_loads_no_model_library():
    code = ("import sys, sightline, sightline.search.engine, sightline.search.store, sightline.search.models, "
            "sightline.cli, sightline.indexer.pipeline, sightline.web.app; "
            "print(sorted(m for m in ('torch', 'open_clip', 'faiss') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_python_dash_m_sightline_is_the_cli():
    out = subprocess.run([sys.executable, "-m", "sightline", "--help"], capture_output=True, text=True, check=True)
    assert "Usage:" in out.stdout and "index" in out.stdout and "serve" in out.stdout


def test_the_wheel_holds_one_top_level_package_with_everything(tmp_path):
    """What `pip install .` installs: only ``sightline/`` (and its dist-info), every
    source file of the repository's library folders included."""
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(REPO)],
                   check=True, capture_output=True)
    (wheel,) = tmp_path.glob("sightline-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert {n.split("/")[0] for n in names} == {"sightline", wheel.name.split("-py3")[0] + ".dist-info"}
    expected = {f"sightline/{p.relative_to(REPO).as_posix()}" for p in _library_files()}
    expected |= {f"sightline/{p.relative_to(REPO / 'sightline').as_posix()}" for p in (REPO / "sightline").rglob("*.py")}
    expected |= {f"sightline/web/static/{p.name}" for p in (REPO / "web" / "static").iterdir()}
    assert expected - set(names) == set()


def test_the_lock_pins_every_dependency_within_its_range():
    """CI installs from requirements.lock: a dependency added to pyproject.toml without
    refreshing the lock (.ci/refresh-lock) would install whatever is newest that day."""
    import tomllib

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    wanted = [Requirement(r) for r in project["dependencies"] + project["optional-dependencies"]["test"]]
    pins = {canonicalize_name(name): version for name, version in
            (line.split("==") for line in (REPO / "requirements.lock").read_text().splitlines()
             if line and not line.startswith("#"))}
    unpinned = [str(r) for r in wanted if not r.specifier.contains(pins.get(canonicalize_name(r.name), "none"),
                                                                    prereleases=True)]
    assert unpinned == []
