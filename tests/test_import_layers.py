"""Imports run one way, top to bottom: apps -> pipeline -> config -> sources -> stages -> backends -> the
foundation modules (schema, imaging, layout, ..., scorers/), mfpo_data never imports mfpo_train, and
neither the packages nor the benchmarks import the tests (a user's install has no `tests`). Lazy imports
inside functions count too."""

import ast
import subprocess
import sys
from pathlib import Path

from tests.paths import REPO


LAYERS = {  # mfpo_data's subpackage or module -> its layer; anything else is foundation (0)
    "backends": 1, "stages": 2, "sources": 3, "config": 4, "pipeline": 5,
    "cli": 6, "cli_publish": 6, "publish": 6, "export": 6, "inspect": 6, "validate": 6, "card": 6,
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
