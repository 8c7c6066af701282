"""Every recipe loads, and every command line in recipes/README.md parses with the real command and
its recipe or train config validates (keys, types, backends), so the ablation table cannot rot.

Inputs are not downloaded here, so a command is checked as `mfpo-data validate` checks a recipe
short of opening the source's files, and as `mfpo-train --dry-run` checks a config short of loading
the dataset. A command that names a key or command another part of mfpo has not shipped yet is
skipped with the reason, and runs as soon as it exists.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import typer

from mfpo_data.config import load_recipe
from mfpo_data.errors import ConfigError
from mfpo_data.pipeline.assemble import make_source
from mfpo_train.config import load_config
from tests.paths import REPO


README = REPO / "recipes" / "README.md"
BUILD_RECIPES = sorted((REPO / "recipes").glob("*.yaml"))
TRAIN_RECIPES = sorted((REPO / "recipes" / "train").glob("*.yaml"))


def readme_commands() -> list[str]:
    """The command lines of the README: fenced lines and table cells that start with an mfpo command."""
    text = README.read_text()
    fenced = [ln.strip() for block in re.findall(r"```\n(.*?)```", text, re.S) for ln in block.splitlines()]
    rows = "\n".join(ln for ln in text.splitlines() if ln.startswith("|"))
    spans = re.findall(r"`(mfpo-[a-z]+ [^`]+)`", rows)
    return [c for c in dict.fromkeys(fenced + spans) if c.startswith("mfpo-")]


def _sets(params: dict) -> list[str]:
    return list(params.get("set_") or params.get("overrides") or [])


def check_command(line: str) -> None:
    args = shlex.split(line)
    program, rest = args[0], args[1:]
    if program == "mfpo-data":
        from mfpo_data.cli import app

        group = typer.main.get_command(app)
        sub = group.get_command(None, rest[0])
        assert sub is not None, f"mfpo-data has no command {rest[0]!r}"
        params = sub.make_context(rest[0], rest[1:]).params
        recipe = load_recipe(params["recipe"], tuple(_sets(params)))
        make_source(recipe)  # the source's constructor checks its options (preset, columns, ...)
    elif program == "mfpo-train":
        from mfpo_train.cli import app

        params = typer.main.get_command(app).make_context(program, rest).params
        cfg = load_config(REPO / params["config"], _sets(params))
        assert cfg.model.name_or_path and cfg.data.dataset
    elif program == "mfpo-eval":
        cli = pytest.importorskip("mfpo_train.eval.cli", reason="mfpo-eval is not in this checkout yet")
        group = typer.main.get_command(cli.app)
        sub = group.get_command(None, rest[0])
        if sub is None:
            pytest.skip(f"mfpo-eval {rest[0]} is not in this checkout yet")
        sub.make_context(rest[0], rest[1:])
    else:
        raise AssertionError(f"unknown program {program!r} in {line!r}")


COMMANDS = readme_commands()


def test_the_readme_lists_every_ablation_table():
    text = README.read_text()
    for table in range(4, 10):
        assert re.search(rf"^\| {table} \|", text, re.M), f"Table {table} has no row"
    assert len(COMMANDS) >= 30 and sum(c.startswith("mfpo-eval run") for c in COMMANDS) >= 10


@pytest.mark.parametrize("line", COMMANDS, ids=range(len(COMMANDS)))
def test_readme_command_validates(line):
    try:
        check_command(line)
    except ConfigError as e:
        if "perturbation.region" in line and "region" in str(e):
            pytest.skip(f"perturbation.region is not in this checkout yet: {e}")
        raise


@pytest.mark.parametrize("path", BUILD_RECIPES, ids=lambda p: p.name)
def test_build_recipe_validates(path):
    make_source(load_recipe(path))


@pytest.mark.parametrize("path", TRAIN_RECIPES, ids=lambda p: p.name)
def test_train_recipe_loads(path):
    cfg = load_config(path)
    assert cfg.model.name_or_path and cfg.data.dataset and cfg.model.trust_remote_code is False


def test_the_paper_recipes_hold_the_paper_choices_and_name_their_unknowns():
    build = load_recipe("mfpo_rlhf_v")
    assert (build.source.kind, build.source.options["preset"]) == ("hf", "rlhf_v")
    assert build.source.options["path"] == "openbmb/RLHF-V-Dataset"
    assert (build.keywords.backend, build.grounding.backend, build.segmentation.backend) == ("graph", "grounding_dino", "sam")
    assert build.perturbation.backend == "diffusion_noise" and build.perturbation.options["t"] == 500
    assert build.filters.no_region == "fallback" and build.scoring.backend == "entropy"
    train = load_config(REPO / "recipes" / "train" / "llava15_7b_mfpo.yaml")
    assert (train.loss.text_weight, train.loss.image_weight, train.loss.margin_weight, train.loss.eta) == (1.0, 1.0, 1.0, 0.0)
    assert train.curriculum == ["easy", "medium", "hard"] and train.data.dataset == build.output.dir
    assert train.model.name_or_path == "llava-hf/llava-1.5-7b-hf"
    header = (REPO / "recipes" / "train" / "llava15_7b_mfpo.yaml").read_text().split("\nmodel:")[0]
    for unknown in ("beta", "lr", "epochs_per_stage", "refresh_reference", "LoRA"):
        assert unknown in header, f"the header does not say what was chosen for {unknown}"


# Where the project's own files may not send a reader: a folder beside the checkout (a relative path that climbs out
# of the repository into a sibling, or an absolute one under the folder that holds the checkout), or the developers'
# research notes, which users never get.
NOTES = ("research/", "offline-stack.md")
TEXT_FILES = ("*.py", "*.md", "*.yaml", "*.toml", "*.sh", "*.txt", "*.cfg")
_CLIMB = re.compile(r"(?<![\w./])(?:\.\./)+[\w.-]+")


def outside_pointers(path: Path, text: str, repo: Path = REPO) -> list[str]:
    """The places in `text` (a file of the repository at `path`) that send a reader outside the repository. A climb
    past the filesystem root (a hostile input such as ../../../../etc/passwd) names no folder beside the checkout."""
    found = [m.group() for m in _CLIMB.finditer(text) if (path.parent / m.group()).resolve().parent == repo.parent
             and (path.parent / m.group()).resolve() != repo]
    found += [m.group() for m in re.finditer(re.escape(str(repo.parent)) + r"/[\w.-]+", text)
              if not m.group().startswith(str(repo))]
    return found + [n for n in NOTES if n in text]


def test_no_file_points_at_a_folder_outside_the_repository():
    skip = {".git", ".venv", "build", "dist", "__pycache__", "runs", "outputs"}
    found = []
    for pattern in TEXT_FILES:
        for path in REPO.rglob(pattern):
            if skip & set(path.relative_to(REPO).parts) or path.resolve() == Path(__file__).resolve():
                continue
            text = path.read_text(encoding="utf-8", errors="replace")
            found += [f"{path.relative_to(REPO)}: {o}" for o in outside_pointers(path, text)]
    assert found == []


def test_outside_pointers_are_found(tmp_path):
    repo = tmp_path / "checkout"
    doc = repo / "recipes" / "README.md"
    doc.parent.mkdir(parents=True)
    text = ("see ../../notes/paper.md, " + str(tmp_path / "notes" / "x.md") + ", the research/ folder; "
            "not ../coco.yaml, " + str(repo / "recipes") + " or ../../../../../../../etc/passwd")
    assert outside_pointers(doc, text, repo) == ["../../notes", str(tmp_path / "notes"), "research/"]


@pytest.mark.parametrize("subdir", ["", "train"])
def test_recipe_descriptions_are_whole_sentences(subdir):
    """What `mfpo-data recipes` and `mfpo-train configs` print: each recipe's first header line, a sentence that
    stands alone (capital first, a full stop last, brackets closed), not the first line of a longer one."""
    from mfpo_data.config import list_recipes

    listed = {name: header for name, _, header in list_recipes(subdir)}
    assert listed, subdir
    for name, header in listed.items():
        assert header[:1].isupper() and header.endswith("."), (name, header)
        assert header.count("(") == header.count(")"), (name, header)
        assert not header.rstrip(".").endswith((",", ":", ";", " and", " or", " the", " of")), (name, header)
