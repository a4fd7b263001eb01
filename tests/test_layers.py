"""Imports point one way between trot's layers (DESIGN.md, "Layers").

Bottom: `trot.robots` and the shared modules of `trot/` (mapping, bundle schema); beside each other:
`trot.sim` + `trot.randomization` (training physics and task) and `trot.deploy` (the robot side); above
both: `trot.hil` (the robot's stand-ins); on top: `trot.train`, `trot.isaaclab` (above train) and the CLI.
Every import of every module, at any depth (lazy imports inside functions included), is checked against what
its layer may import.
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FOLDER_PACKAGE = {
    "trot": "trot",
    "robots": "trot.robots",
    "randomization": "trot.randomization",
    "sim": "trot.sim",
    "deploy": "trot.deploy",
    "hil": "trot.hil",
    "train": "trot.train",
    "isaaclab_trot": "trot.isaaclab",
}
BOTTOM = ("trot.robots", "trot.mapping", "trot.bundle", "trot.geometry", "trot.gate_record", "trot.revision")
# package -> the trot packages it may import (itself always)
ALLOWED = {
    "trot.robots": (),
    "trot.randomization": BOTTOM,
    "trot.sim": BOTTOM + ("trot.randomization",),
    "trot.deploy": BOTTOM,
    "trot.hil": BOTTOM + ("trot.randomization", "trot.sim", "trot.deploy"),
    "trot.train": BOTTOM + ("trot.randomization", "trot.sim", "trot.deploy", "trot.hil"),
    # trot's task for Isaac Lab: on top beside train (its runner settings and import table come from train)
    "trot.isaaclab": BOTTOM + ("trot.randomization", "trot.sim", "trot.train"),
}


def _modules():
    for folder, package in FOLDER_PACKAGE.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            rel = path.relative_to(ROOT / folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            yield path, ".".join([package, *parts]), path.name == "__init__.py"


def _imports(path: Path, module: str, is_package: bool):
    """(line, imported module) for every import in the file, relative ones resolved."""
    tree = ast.parse(path.read_text(), str(path))
    here = module.split(".") if is_package else module.split(".")[:-1]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = here[: len(here) - (node.level - 1)]
                base = ".".join(up + ([base] if base else []))
            yield node.lineno, base
            for alias in node.names:  # `from trot import sim` imports trot.sim
                yield node.lineno, f"{base}.{alias.name}"


def _layer(module: str) -> str | None:
    """The layer a trot module belongs to, or None for the shared modules of trot/ itself."""
    for package in ALLOWED:
        if module == package or module.startswith(package + "."):
            return package
    return None


def _is_trot_package(name: str) -> bool:
    return any(name == p or name.startswith(p + ".") for p in (*ALLOWED, *BOTTOM))


def wrong_way_imports() -> list[str]:
    """One line per import statement that points the wrong way."""
    bad = {}
    for path, module, is_package in _modules():
        layer = _layer(module)
        if module == "trot.cli" or module == "trot":
            continue  # the CLI sits on top and imports each stage when it runs
        for line, name in _imports(path, module, is_package):
            if not name.startswith("trot.") or not _is_trot_package(name):
                continue
            target = _layer(name) or name
            if layer is None:  # a bottom module of trot/: only other bottom modules
                ok = any(name == b or name.startswith(b + ".") for b in BOTTOM)
            else:
                ok = target == layer or any(name == a or name.startswith(a + ".") for a in ALLOWED[layer])
            if not ok:
                bad.setdefault((path, line), f"{path.relative_to(ROOT)}:{line}: {module} imports {name}")
    return list(bad.values())


def test_every_import_points_down_the_layers():
    bad = wrong_way_imports()
    assert not bad, "imports that point the wrong way:\n" + "\n".join(bad)


@pytest.mark.parametrize(
    "layer, snippet",
    [
        ("deploy", "from trot.sim.backend import MujocoBackend\n"),
        ("deploy", "def f():\n    from trot.hil import gate\n"),
        ("sim", "from trot.deploy import bundle\n"),
        ("robots", "import trot.sim.config\n"),
        ("trot", "from trot.train import runner\n"),
    ],
)
def test_the_check_catches_a_wrong_way_import(tmp_path, monkeypatch, layer, snippet):
    """Plant a wrong-way import in a copy of the layer's folder: the check names it."""
    fake_root = tmp_path / "repo"
    for folder in FOLDER_PACKAGE:
        (fake_root / folder).mkdir(parents=True)
    (fake_root / layer / "planted.py").write_text(snippet)
    monkeypatch.setattr(__import__(__name__), "ROOT", fake_root)
    bad = wrong_way_imports()
    assert len(bad) == 1 and "planted.py" in bad[0], bad
