"""Imports run one way, top to bottom: apps -> pipeline -> config -> sources -> stages -> backends -> the
foundation modules (schema, imaging, layout, ..., scorers/), mfpo_data never imports mfpo_train, and
neither the packages nor the benchmarks import the tests (a user's install has no `tests`). Lazy imports
inside functions count too."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from tests.paths import REPO


LAYERS = {  # mfpo_data's subpackage or module -> its layer; anything else is foundation (0)
    "backends": 1, "stages": 2, "sources": 3, "config": 4, "pipeline": 5,
    "cli": 6, "publishing": 6, "inspect": 6, "validate": 6,
}  # fmt: skip


def _layer(module: str) -> int:
    parts = module.split(".")
    if parts[0] == "mfpo_train":
        return 7
    return LAYERS.get(parts[1], 0) if len(parts) > 1 else 0


def _imports(path: Path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module


def test_no_import_points_up_a_layer():
    upward = []
    for path in sorted((REPO / "mfpo_data").rglob("*.py")) + sorted((REPO / "mfpo_train").rglob("*.py")):
        module = ".".join(path.relative_to(REPO).with_suffix("").parts)
        for target in _imports(path):
            if target.split(".")[0] in ("mfpo_data", "mfpo_train") and _layer(target) > _layer(module):
                upward.append(f"{module} -> {target}")
    assert upward == []


def test_layers_catch_an_upward_import():
    assert _layer("mfpo_data.pipeline.build") > _layer("mfpo_data.stages.base") > _layer("mfpo_data.backends.base")
    assert _layer("mfpo_data.sources.coco") > _layer("mfpo_data.stages.base") > _layer("mfpo_data.schema")
    # The scorers are foundation: any layer of the build and mfpo_train.eval may use them, they use neither.
    assert _layer("mfpo_data.scorers.chair") == _layer("mfpo_data.schema") == 0
    assert _layer("mfpo_train.eval.suite") > _layer("mfpo_data.sources.coco") > _layer("mfpo_data.scorers.chair")


def test_the_scorers_live_in_mfpo_data_only():
    """One copy of each scorer: the build and mfpo-eval import the same module."""
    moved = ("chair", "text", "coco", "pope", "results", "io")
    assert [m for m in moved if (REPO / "mfpo_train" / "eval" / f"{m}.py").exists()] == []
    assert all((REPO / "mfpo_data" / "scorers" / f"{m}.py").is_file() for m in moved)
    assert not (REPO / "mfpo_train" / "eval" / "data").exists()


def test_the_scorers_import_no_model_library():
    """The core install has no torch: scoring an answer must not need it."""
    code = ("import sys; from mfpo_data.scorers import chair, coco, pope, text; "
            "print(sorted(m for m in ('torch', 'transformers', 'mfpo_train') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_nothing_outside_the_tests_imports_them():
    importers = []
    for folder in ("mfpo_data", "mfpo_train", "benchmarks"):
        for path in sorted((REPO / folder).rglob("*.py")):
            importers += [f"{path.relative_to(REPO)} -> {t}" for t in _imports(path) if t.split(".")[0] == "tests"]
    assert importers == []


def test_imports_are_found_inside_functions(tmp_path):
    path = tmp_path / "bench.py"
    path.write_text("def main():\n    from tests.data.x import Y\n    import tests.fixtures\n")
    assert list(_imports(path)) == ["tests.data.x", "tests.fixtures"]


def _edits_sys_path(path: Path) -> bool:
    """Whether a file changes the import path (`sys.path.insert/append/...`, `sys.path = ...`, `site.addsitedir`)."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            owner = node.func.value
            if isinstance(owner, ast.Attribute) and owner.attr == "path" and getattr(owner.value, "id", None) == "sys":
                return True
            if node.func.attr == "addsitedir":
                return True
        if isinstance(node, (ast.Assign, ast.AugAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(isinstance(t, ast.Attribute) and t.attr == "path" and getattr(t.value, "id", None) == "sys"
                   for t in targets):
                return True
    return False


def test_nothing_edits_the_import_path():
    """The packages, the benchmarks and the tests run as installed modules (`python -m benchmarks.x`, pytest from
    the root): none of them reaches around the install by editing `sys.path` (the programs below that do are
    strings, written to a temporary file)."""
    editors = [str(path.relative_to(REPO)) for folder in ("mfpo_data", "mfpo_train", "benchmarks", "tests")
               for path in sorted((REPO / folder).rglob("*.py")) if _edits_sys_path(path)]
    assert editors == []


@pytest.mark.parametrize("code", ["import sys\nsys.path.insert(0, 'x')\n", "import sys\nsys.path += ['x']\n",
                                  "import sys\nsys.path = ['x']\n", "import site\nsite.addsitedir('x')\n",
                                  "def f():\n    import sys\n    sys.path.append('x')\n"])
def test_an_import_path_edit_is_found(tmp_path, code):
    path = tmp_path / "bench.py"
    path.write_text(code)
    assert _edits_sys_path(path)
