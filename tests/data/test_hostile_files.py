"""Hostile recipes, build folders, COCO id orders and shards, generated here: each ends in the exit code and the one
line the build promises (no traceback), or, for records and rows, in a counted reject or a labelled row."""

from __future__ import annotations

import json
import subprocess
import sys

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from mfpo_data.cli import app
from mfpo_data.config import recipe_from_dict
from mfpo_data.pipeline.build import build_dataset
from tests.fixtures.coco_folder import make_coco_folder
from tests.fixtures.fake_build import make_fake_build
from tests.fixtures.hostile import one_error_line
from tests.paths import REPO



BIG = "9" * 5000
RECIPE_CASES = {  # recipe bytes -> the one line's end
    "not UTF-8": (b"seed: 0\n# caf\xe9\n", ":2: not UTF-8 text (byte 0xe9 at column 6); save the config file as UTF-8"),
    "a number of 5000 digits": (f"seed: 0\nexecutor:\n  tasks: {BIG}\n".encode(),
                                ": line 3: a number of 5000 digits (at most 4300)"),
    "not a mapping": (b"- seed\n- 0\n", ": the top level must be a mapping, got list"),
    "a folder": (None, " is a folder, not a file"),
}


@pytest.mark.parametrize("case", list(RECIPE_CASES))
@pytest.mark.parametrize("command", ["validate", "build"])
def test_hostile_recipe_files_are_one_line(tmp_path, case, command):
    data, end = RECIPE_CASES[case]
    path = tmp_path / "recipe.yaml"
    if data is None:
        path.mkdir()
    else:
        path.write_bytes(data)
    args = ["--output", str(tmp_path / "out")] if command == "build" else []
    line = one_error_line(CliRunner().invoke(app, [command, "--recipe", str(path), *args]))
    assert str(path) in line and line.endswith(end), line
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("key", ["seed", "executor.tasks", "perturbation.t"])
def test_a_set_number_of_5000_digits_is_one_short_line(key):
    line = one_error_line(CliRunner().invoke(app, ["validate", "--set", f"{key}={BIG}"]))
    assert f"'{key}' must be" in line and "(5,002 characters)" in line and len(line) < 200, line


def test_train_configs_share_the_checks(tmp_path):
    from mfpo_train.cli import app as train_app

    path = tmp_path / "config.yaml"
    path.write_bytes(b"model:\n  name_or_path: m\n# \xff\n")
    line = one_error_line(CliRunner().invoke(train_app, ["--config", str(path), "--dry-run"]))
    assert line == f"error: {path}:3: not UTF-8 text (byte 0xff at column 3); save the config file as UTF-8"


def test_an_alias_bomb_with_a_duplicate_key_is_one_line_at_once(tmp_path):
    """9 levels of 9 aliases: walking every path to name the duplicate key would visit 9**9 nodes."""
    lines = ['a: &a ["x", "x", "x", "x", "x", "x", "x", "x", "x"]']
    for i in range(1, 9):
        prev, cur = chr(ord("a") + i - 1), chr(ord("a") + i)
        lines.append(f"{cur}: &{cur} [" + ", ".join([f"*{prev}"] * 9) + "]")
    path = tmp_path / "bomb.yaml"
    path.write_text("\n".join([*lines, "seed: 0", "seed: 1"]) + "\n")
    done = subprocess.run([sys.executable, "-m", "mfpo_data.cli", "validate", "--recipe", str(path)], cwd=REPO,
                          capture_output=True, text=True, timeout=120)  # a hang guard, not a timing check
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == ["error: duplicate key 'seed' (line 11)"]


RESOLVED_CASES = {
    "not a mapping": (b"- a\n- b\n", "not a recipe (a mapping), got list"),
    "not UTF-8": (b"seed: 0\nx: \xe9\n", ":2: not UTF-8 text"),
    "not YAML": (b"seed: [0\n", "not valid YAML"),
}


@pytest.mark.parametrize("case", list(RESOLVED_CASES))
def test_a_damaged_resolved_recipe_is_one_line_for_build_and_publish(tmp_path, case):
    data, message = RESOLVED_CASES[case]
    layout = make_fake_build(tmp_path / "out", rows=4, tasks=1)
    layout.recipe_file.write_bytes(data)
    before = {p: p.read_bytes() for p in layout.root.rglob("*") if p.is_file()}
    built = one_error_line(CliRunner().invoke(app, ["build", "--output", str(layout.root)]))
    assert message in built and "the build folder is damaged: rerun the build with --restart" in built, built
    published = one_error_line(CliRunner().invoke(app, ["publish", "--from", str(layout.root), "--repo-id", "me/x",
                                                         "--dry-run", str(tmp_path / "pub")]))
    assert message in published, published
    assert {p: p.read_bytes() for p in layout.root.rglob("*") if p.is_file() and p.name != ".mfpo.lock"} == {
        p: b for p, b in before.items() if p.name != ".mfpo.lock"}


@pytest.mark.parametrize("odd_id", ["img-7", 7.5, [7]], ids=["string", "fraction", "list"])
@pytest.mark.parametrize("where", ["first", "last"])
def test_one_odd_image_id_rejects_that_image_only_wherever_it_is(tmp_path, odd_id, where):
    root = make_coco_folder(tmp_path / "coco", n_images=4)
    path = root / "annotations" / "instances_val2017.json"
    instances = json.loads(path.read_text())
    odd = {**instances["images"][0], "id": odd_id}
    instances["images"].insert(0 if where == "first" else len(instances["images"]), odd)
    path.write_text(json.dumps(instances))
    recipe = recipe_from_dict({"source": {"kind": "coco", "root": str(root), "split": "val2017"},
                               "output": {"dir": str(tmp_path / "out"), "progress": False}, "executor": {"tasks": 1}})
    stats = build_dataset(recipe).read_stats()
    assert stats["dropped"].get("bad_id") == 1
    good = recipe_from_dict({"source": {"kind": "coco", "root": str(make_coco_folder(tmp_path / "plain", n_images=4)),
                                        "split": "val2017"},
                             "output": {"dir": str(tmp_path / "plain-out"), "progress": False}, "executor": {"tasks": 1}})
    assert stats["rows"] == build_dataset(good).read_stats()["rows"] > 0  # every good image still gives its rows


def test_inspect_draws_a_shard_with_bad_images_and_labels_those_rows(tmp_path):
    import io

    from PIL import Image

    from mfpo_data.inspect import _tiles, read_rows

    layout = make_fake_build(tmp_path / "out", rows=4, tasks=1)
    [shard] = layout.final_shards()
    table = pq.read_table(shard).to_pylist()
    bomb = io.BytesIO()
    Image.new("1", (20_000, 20_000)).save(bomb, format="PNG")  # 400 million pixels, a few KB
    table[0]["images"] = [{"bytes": b"not an image", "path": None}]
    table[1]["rejected_images"] = [{"bytes": bomb.getvalue(), "path": None}]
    table[2]["images"] = []
    import pyarrow as pa

    pq.write_table(pa.Table.from_pylist(table, schema=pq.read_schema(shard)), shard)
    result = CliRunner().invoke(app, ["inspect", str(layout.root), "--out", str(tmp_path / "grid.png")])
    assert result.exit_code == 0, result.output[-2000:]
    assert Image.open(tmp_path / "grid.png").size[1] > 4 * 100
    problems = [_tiles(row)[1] for row in read_rows(layout.root, n=4)]
    assert problems[0] == ["images: undecodable_image: UnidentifiedImageError: cannot identify image file"]
    assert len(problems[1]) == 1 and problems[1][0].startswith("rejected_images: too_many_pixels")
    assert problems[2] == ["images: missing_image: no image bytes (NoneType)"] and problems[3] == []
