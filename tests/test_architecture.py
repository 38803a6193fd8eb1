"""The layout's promises: imports point one way, and the library never needs the server."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE_ROOT = Path(__file__).resolve().parents[1] / "mlcdseg"
FOUNDATION = {"errors", "urls", "atomic_files", "json_depth", "log_lines", "__init__"}
#: What each part of mlcdseg may import besides itself and the foundation modules.
ALLOWED = {
    "masks": set(),
    "model": {"masks", "engine"},
    "engine": set(),
    "labelstudio": {"masks"},
    "evaluation": {"labelstudio", "masks"},
    "refcoco": {"evaluation", "labelstudio", "masks"},
    "prelabel": {"labelstudio", "model", "masks"},
    "demo": {"labelstudio", "model"},
    "cli": {"masks", "model", "labelstudio", "evaluation", "refcoco", "demo", "prelabel"},
    "__main__": {"cli"},
}


def _part(path: Path) -> str:
    relative = path.relative_to(PACKAGE_ROOT).parts
    return relative[0].removesuffix(".py")


def _imported_modules(path: Path) -> list[str]:
    modules = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            modules.append(node.module)
        elif isinstance(node, ast.Import):
            modules.extend(alias.name for alias in node.names)
    return modules


LIBRARY_FILES = sorted(PACKAGE_ROOT.rglob("*.py"))


@pytest.mark.parametrize("path", LIBRARY_FILES, ids=lambda path: str(path.relative_to(PACKAGE_ROOT)))
def test_a_library_module_imports_only_the_layers_below_it_and_never_the_backend(path):
    part = _part(path)
    for module in _imported_modules(path):
        top, _, rest = module.partition(".")
        assert top not in ("backend", "flask", "gunicorn"), f"{path.name} imports {module}"
        if top != "mlcdseg" or not rest:
            continue
        target = rest.split(".")[0]
        if target == part or target in FOUNDATION:
            continue
        assert target in ALLOWED.get(part, set()), f"{part} ({path.name}) must not import mlcdseg.{target}"


def test_the_layer_table_names_every_part_of_the_library():
    parts = {_part(path) for path in LIBRARY_FILES} - FOUNDATION
    assert parts == set(ALLOWED)


def test_importing_the_library_and_its_command_line_loads_neither_the_backend_nor_flask():
    code = (
        "import sys, mlcdseg, mlcdseg.cli, mlcdseg.model, mlcdseg.evaluation.evaluate, mlcdseg.refcoco.exporter;"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('backend', 'flask', 'torch')))"
    )
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert loaded.strip() == "[]"


def test_the_backend_adds_serve_to_the_command_line_through_an_entry_point():
    from mlcdseg.cli import build_parser

    help_text = build_parser().format_help()
    assert "serve" in help_text and "run the Label Studio ML backend" in help_text
