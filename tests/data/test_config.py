from pathlib import Path

import pytest
from typer.testing import CliRunner

from mfpo_data.cli import app
from mfpo_data.config import find_recipe, list_recipes, load_recipe
from mfpo_data.errors import ConfigError


RECIPES = sorted((Path(__file__).resolve().parents[2] / "recipes").glob("*.yaml"))


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_every_recipe_loads(path):
    recipe = load_recipe(path)
    assert recipe.to_yaml_dict()["perturbation"]["backend"]


def test_default_recipe_resolves():
    recipe = load_recipe("coco")
    assert recipe.perturbation.backend == "diffusion_noise" and recipe.perturbation.options == {"t": 500}
    assert recipe.source.kind == "coco" and recipe.grounding.backend == "coco_gt"
    assert find_recipe("coco").name == "coco.yaml"
    assert any(name == "coco" for name, _, _ in list_recipes())


def test_set_overrides_and_types():
    recipe = load_recipe("coco", ["perturbation.t=300", "executor.tasks=4", "source.pair_types=[presence]"])
    assert recipe.perturbation.options["t"] == 300 and recipe.executor.tasks == 4
    assert recipe.source.options["pair_types"] == ["presence"]


@pytest.mark.parametrize(
    "yaml_text,key",
    [
        ("perturbation:\n  backend: diffusion_noise\n  tt: 5\n", "perturbation.tt"),
        ("perturbation:\n  backend: diffusion_noise\n  t: 5\n  t: 6\n", "perturbation.t"),
        ("perturbation:\n  backend: diffusion_noise\n  t: lots\n", "perturbation.t"),
        ("executor:\n  tasks: two\n", "executor.tasks"),
        ("filters:\n  no_region: maybe\n", "filters.no_region"),
        ("perturbation:\n  backend: nope\n", "perturbation.backend"),
        ("sauce: {kind: coco}\n", "sauce"),
        ("source:\n  kind: coco\n  seed: 3\n", "source.seed"),
    ],
    ids=["unknown", "duplicate", "wrong_type", "wrong_type_top", "bad_choice", "bad_backend", "unknown_section", "reserved"],
)
def test_bad_recipes_fail_validate_with_one_line_naming_the_key(tmp_path, yaml_text, key):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml_text)
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_recipe(path)
    result = CliRunner().invoke(app, ["validate", "--recipe", str(path)])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and key in lines[0] and "Traceback" not in result.output


def test_validate_reports_a_missing_source_folder(tmp_path):
    result = CliRunner().invoke(app, ["validate", "--set", f"source.root={tmp_path / 'nope'}"])
    assert result.exit_code == 1 and "source.root" in result.output


def test_validate_ok_and_unknown_recipe():
    assert CliRunner().invoke(app, ["validate"]).exit_code == 0
    result = CliRunner().invoke(app, ["validate", "--recipe", "no_such_recipe"])
    assert result.exit_code == 1 and "no_such_recipe" in result.output


def test_yaml_numbers_follow_yaml_1_2():
    from mfpo_data.strict import apply_overrides, loads_yaml

    data = loads_yaml("time: 12:00:00\nlr: 1e-4\nn: 3\nhexish: 0x10\n")
    assert data == {"time": "12:00:00", "lr": 1e-4, "n": 3, "hexish": "0x10"}
    assert apply_overrides({}, ["executor.time=12:00:00"]) == {"executor": {"time": "12:00:00"}}
    recipe = load_recipe("coco", ["executor.kind=slurm", "executor.partition=gpu", "executor.time=12:00:00"])
    assert recipe.executor.time == "12:00:00"


def test_switching_a_backend_with_set_drops_the_recipes_options_it_does_not_take(caplog):
    recipe = load_recipe("coco", ["perturbation.backend=blur"])  # coco.yaml sets t: 500 for diffusion_noise
    assert recipe.perturbation.backend == "blur" and "t" not in recipe.perturbation.options
    assert "perturbation.backend=blur does not take the recipe's perturbation.t; dropped" in caplog.text
    same = load_recipe("coco", ["perturbation.backend=diffusion_noise", "perturbation.t=300"])  # no switch: kept
    assert same.perturbation.options == {"t": 300}
    with pytest.raises(ConfigError, match=r"unknown key 'perturbation.t' \(allowed: sigma\)"):
        load_recipe("coco", ["perturbation.backend=blur", "perturbation.t=3"])  # given on the command line: checked
    result = CliRunner().invoke(app, ["validate", "--recipe", "coco", "--set", "perturbation.backend=blur"])
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("raw,value", [
    ("source /shared/venv/bin/activate # gpu nodes", "source /shared/venv/bin/activate # gpu nodes"),
    ("#hash-first", "#hash-first"),
    ("x#y", "x#y"),
    ("[1, 2]", [1, 2]),
    ("'quoted # text'", "quoted # text"),
])
def test_set_keeps_text_after_a_hash(raw, value):
    from mfpo_data.strict import parse_override

    assert parse_override(f"executor.env_command={raw}") == (["executor", "env_command"], value)


def test_image_format_settings_are_checked(monkeypatch):
    assert load_recipe("coco").output.image_format == "webp"
    with pytest.raises(ConfigError, match=r"'output.webp_method' must be in \[0, 6\]"):
        load_recipe("coco", ("output.webp_method=7",))
    with pytest.raises(ConfigError, match="output.image_format"):
        load_recipe("coco", ("output.image_format=jpeg",))  # lossy: not a choice
    from PIL import features

    monkeypatch.setattr(features, "check", lambda name: name != "webp")
    with pytest.raises(ConfigError, match="built without WebP; .* or set output.image_format=png"):
        load_recipe("coco")
    assert load_recipe("coco", ("output.image_format=png",)).output.image_format == "png"
