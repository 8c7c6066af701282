"""The README's whole flow (build -> publish -> train -> evaluate), run as written: the fenced block under "The whole
flow on the bundled sample", each command in a fresh process in an empty folder, with the arguments as they stand
in the README. Each program runs as its `[project.scripts]` entry point (`python -m` its module), so the
checkout under test runs whatever is installed. The same commands head `recipes/train/debug.yaml`.

40 s to 2 minutes on a shared 2-core CPU; marked `e2e` (left out of `pytest -m quick`, run by CI).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys

import pytest

from tests.paths import DEBUG_TRAIN_RECIPE, REPO


pytestmark = pytest.mark.e2e

HEADING = "### The whole flow on the bundled sample"


def readme_flow() -> list[list[str]]:
    """The commands of the README's whole-flow block, continuation lines joined and comments dropped."""
    section = (REPO / "README.md").read_text(encoding="utf-8").split(HEADING, 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    return [shlex.split(line, comments=True) for line in block.replace("\\\n", " ").splitlines() if line.strip()]


def header_commands(path) -> list[list[str]]:
    """The commands a recipe's header comment lists (`#   mfpo-...` lines, continuation lines joined)."""
    lines = [ln[1:].strip() for ln in path.read_text(encoding="utf-8").splitlines() if ln.startswith("#")]
    text = "\n".join(lines).replace("\\\n", " ")
    return [shlex.split(ln, comments=True) for ln in text.splitlines() if ln.startswith("mfpo-")]


def entry_points() -> dict[str, str]:
    """`[project.scripts]` of pyproject.toml: program -> module (the `:app` part is the typer app `-m` runs)."""
    text = (REPO / "pyproject.toml").read_text()
    scripts = text.split("[project.scripts]", 1)[1].split("\n[", 1)[0]
    return {name: target.split(":")[0] for name, target in re.findall(r'^([\w-]+) = "([\w.:]+)"', scripts, re.M)}


def test_the_readme_flow_is_the_debug_configs_flow():
    flow = readme_flow()
    assert [c[:2] for c in flow] == [["mfpo-train", "make-tiny-model"], ["mfpo-data", "build"],
                                     ["mfpo-data", "publish"], ["mfpo-train", "--config"], ["mfpo-eval", "run"]]
    header = header_commands(DEBUG_TRAIN_RECIPE)
    assert all(c in header for c in flow), [c for c in flow if c not in header]
    assert "--max-new-tokens" in flow[-1]  # the default (512) makes the tiny random model write for an hour


def test_the_readme_flow_runs_as_written(tmp_path):
    programs = entry_points()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
           "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    for command in readme_flow():
        program, *args = command
        result = subprocess.run([sys.executable, "-m", programs[program], *args], cwd=tmp_path, env=env,
                                capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, f"{shlex.join(command)}:\n{result.stderr[-4000:]}"
    runs = tmp_path / "runs"
    import pyarrow.parquet as pq

    published = {p.name.split("-")[0]: pq.read_metadata(p).num_rows
                 for p in (runs / "coco-debug-published" / "data").glob("*.parquet")}
    build = json.loads((runs / "coco-debug" / "stats.json").read_text())
    assert sorted(published) == ["test", "train"] and sum(published.values()) == build["rows"]
    assert (runs / "debug" / "final" / "adapter_config.json").is_file()
    metrics = [json.loads(line) for line in (runs / "debug" / "metrics.jsonl").read_text().splitlines()]
    assert any(key.startswith("eval/") for m in metrics for key in m)  # the probes ran on the test split
    results = json.loads((runs / "debug-eval" / "results.json").read_text())
    assert results["settings"]["max_new_tokens"] == 16
    assert [m["role"] for m in results["models"]] == ["model", "base"]
    for model in results["models"]:
        scores = model["results"]
        assert scores["objhal"]["n"] == 15 and scores["pope"]["random"]["n"] == 30  # the sample's 15 images
        assert scores["probes"]["n"] == published["test"] and scores["probes"]["split"] == "test"
    assert (runs / "debug-eval" / "results.md").is_file()
