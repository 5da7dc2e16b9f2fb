"""The project's layering holds: every module has a floor, no import climbs one, no import cycle,
no module past 600 lines, no private name imported across modules, ``models/`` liftable."""
import ast
import os
import subprocess
import sys

import pytest

from tests import layering as L


@pytest.fixture(scope="module")
def edges():
    return L.import_edges()


def test_every_module_has_a_floor():
    assert [m for m in L.module_files() if L.floor_of(m) is None] == []


def test_no_import_climbs_a_floor(edges):
    bad = [f"{e.src}:{e.line} ({L.floor_of(e.src)}) imports {e.dst} ({L.floor_of(e.dst)})" for e in L.climbing(edges)]
    assert bad == []


def test_no_import_cycle(edges):
    assert L.cycles(edges) == []


def test_the_checker_sees_function_local_imports_and_cycles(tmp_path):
    """The graph reads imports inside functions too: a circle closed by one is a cycle, and a climb."""
    for pkg in ("models", "utils", "tools"):
        (tmp_path / pkg).mkdir()
        (tmp_path / pkg / "__init__.py").write_text("")
    (tmp_path / "utils" / "config.py").write_text("from utils import trainer\n")
    (tmp_path / "utils" / "trainer.py").write_text("def f():\n    from utils.config import x\n")
    edges = L.import_edges(str(tmp_path))
    assert {(e.src, e.dst, e.local) for e in edges} == {("utils.config", "utils.trainer", False),
                                                        ("utils.trainer", "utils.config", True)}
    assert L.cycles(edges) == [["utils.config", "utils.trainer"]]
    assert [(e.src, e.dst) for e in L.climbing(edges)] == [("utils.config", "utils.trainer")]


def test_no_module_past_600_lines():
    sizes = {m: sum(1 for _ in open(p, encoding="utf-8")) for m, p in L.module_files().items()}
    assert {m: n for m, n in sizes.items() if n > 600} == {}


def test_no_private_name_imported_across_modules():
    bad = []
    for mod, path in L.module_files().items():
        tree = ast.parse(open(path, encoding="utf-8").read(), path)
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in L.PACKAGES:
                bad += [f"{mod}:{node.lineno} {node.module}.{a.name}" for a in node.names
                        if a.name.startswith("_") and not a.name.startswith("__")]
    assert bad == []


def test_models_import_nothing_of_the_project_but_errors(edges):
    outside = {e.dst for e in edges if e.src.startswith("models") and not e.dst.startswith("models")}
    assert outside <= {"utils.errors"}
    # and utils/errors.py itself needs only the standard library
    tree = ast.parse(open(os.path.join(L.ROOT, "utils", "errors.py"), encoding="utf-8").read())
    imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert imported <= {"functools", "os", "sys", "difflib", "__future__", "typing", "errno", "signal"}


def test_ruff_passes():
    """The README's lint command, as written (ruff.toml: pyflakes and import order)."""
    r = subprocess.run([sys.executable, "-m", "ruff", "check", "."], cwd=L.ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
