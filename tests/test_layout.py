"""The package's shape: small modules, imports that only point down (docs/DESIGN.md)."""

import ast
from pathlib import Path

import pytest

from pcam.core.paths import PROJ_ROOT

PACKAGE = PROJ_ROOT / "pcam"
# Layers from the top; a module may import its own layer or any layer below it
# (docs/DESIGN.md draws them). `pcam` itself (the version) is at the bottom.
LAYERS = (
    ("app", ("pcam.app", "pcam.__main__")),
    ("study", ("pcam.study",)),
    ("report", ("pcam.report",)),
    ("execute", ("pcam.execute",)),
    ("plots", ("pcam.plots",)),
    ("train", ("pcam.train",)),
    ("evaluation", ("pcam.evaluation",)),
    ("models", ("pcam.models",)),
    ("run", ("pcam.run",)),
    ("data", ("pcam.data",)),
    ("core", ("pcam.core", "pcam")),
)
# A module does one thing and is named for it; cohesion, not a line count, decides
# where code goes. This is only a guard against a module that has grown several
# concerns without anyone noticing, far above where a single-purpose module ends.
MAX_LINES = 500


def _modules() -> list[tuple[str, Path]]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PROJ_ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found.append((name, path))
    return found


def _layer(module: str) -> int:
    best = None
    for rank, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if module == prefix or module.startswith(prefix + "."):
                if best is None or len(prefix) > best[1]:
                    best = (rank, len(prefix))
    assert best is not None, f"{module} is in no layer of tests/test_layout.py"
    return best[0]


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)
    return {n for n in names if n == "pcam" or n.startswith("pcam.")}


@pytest.mark.parametrize(("name", "path"), _modules(), ids=lambda v: str(v))
def test_no_module_outgrows_one_concern(name, path):
    lines = len(path.read_text().splitlines())
    assert lines <= MAX_LINES, (f"{name} has {lines} lines: it has likely grown a second "
                                "concern; split it where the concerns part")


def test_imports_point_down():
    known = {name for name, _ in _modules()}
    upward = []
    for name, path in _modules():
        for target in _imports(path):
            if target not in known:  # `from pcam.x import function`: the module is pcam.x
                continue
            if _layer(target) < _layer(name):
                upward.append(f"{name} -> {target}")
    assert not upward, "imports pointing up a layer: " + ", ".join(sorted(upward))


def test_design_names_every_folder_of_the_package_and_its_layer():
    """docs/DESIGN.md's folder table and layer diagram cover the package as it is."""
    design = (PROJ_ROOT / "docs" / "DESIGN.md").read_text()
    folders = sorted(p.name for p in PACKAGE.iterdir()
                     if p.is_dir() and not p.name.startswith(("_", ".")))
    missing = [f for f in folders if f"| `pcam/{f}/` |" not in design]
    assert not missing, f"docs/DESIGN.md's folder table lacks pcam/{missing}/"
    diagram = design.split("## Layers: imports point down", 1)[1].split("```")[1]
    drawn = [line.split()[0] for line in diagram.strip().splitlines()]
    assert drawn == [layer for layer, _ in LAYERS], "the layers of DESIGN.md and LAYERS differ"
