"""`build_dataset`: the whole build in reading order. The recipe is checked against an existing
output, the source is indexed once, the stage list is assembled (`assemble.py`), run on an executor
(`run.py`), and finalized (`finalize.py`). Rerunning the same call resumes an interrupted build.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path

import yaml

from mfpo_data.config import Recipe, load_recipe
from mfpo_data.errors import MfpoError
from mfpo_data.layout import OutputLayout, atomic_write
from mfpo_data.pipeline.assemble import build_pipeline, check_models, make_source, worker_modules
from mfpo_data.pipeline.executors import start_local_workers_early
from mfpo_data.pipeline.run import forget_ranks_without_shards, run_executor


logger = logging.getLogger(__name__)

VERSIONED_PACKAGES = ("mfpo", "datasets", "datatrove", "numpy", "pillow", "pyarrow", "opencv-python-headless",
                      "pycocotools", "torch", "transformers", "diffusers")  # fmt: skip


def package_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in VERSIONED_PACKAGES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            continue
    return out


def _identity(resolved: dict) -> dict:
    """What decides the rows: the recipe less how it runs (workers, progress bars, package versions)."""
    out = json.loads(json.dumps(resolved, default=str))
    out.pop("versions", None)
    out["executor"] = {"tasks": out.get("executor", {}).get("tasks", 1)}  # kind, workers, resources: how, not what
    out.get("output", {}).pop("progress", None)
    return out


def _check_same_recipe(layout: OutputLayout, resolved: dict) -> None:
    if not layout.recipe_file.is_file():
        return
    previous = yaml.safe_load(layout.recipe_file.read_text()) or {}
    if _identity(previous) != _identity(resolved):
        raise MfpoError(
            f"{layout.root} holds a build of a different recipe; choose another output.dir or remove the folder"
        )


def build_dataset(
    recipe: str | Path | Recipe = "coco",
    overrides: Sequence[str] = (),
    output_dir: str | Path | None = None,
) -> OutputLayout:
    """Build the dataset a recipe describes; rerunning the same call resumes an interrupted build."""
    if not isinstance(recipe, Recipe):
        recipe = load_recipe(recipe, tuple(overrides))
    if output_dir is not None:
        recipe.output.dir = str(output_dir)
    layout = recipe_layout(recipe)
    resolved = recipe.to_yaml_dict()
    _check_same_recipe(layout, resolved)
    for note in check_models(recipe):  # offline, a model that is not there fails here, before any rank
        logger.info(note)
    layout.root.mkdir(parents=True, exist_ok=True)
    # Local workers that start from a forkserver: start it now, so that it imports their modules on
    # another core while this process indexes the source and builds the pipeline.
    start_local_workers_early(recipe.executor, worker_modules(recipe))
    atomic_write(layout.recipe_file, yaml.safe_dump({**resolved, "versions": package_versions()}, sort_keys=False))

    source = make_source(recipe)
    n_items = source.prepare(layout.source_index)
    logger.info("indexed %d source items into %d tasks", n_items, recipe.executor.tasks)
    pipeline = build_pipeline(recipe, source=source)
    forget_ranks_without_shards(layout, recipe.executor.tasks)
    run_executor(recipe, pipeline, layout)
    return layout


def recipe_layout(recipe: Recipe) -> OutputLayout:
    """The output folder of `recipe`, with datatrove's logging dir where `executor.logging_dir` puts it."""
    return OutputLayout(Path(recipe.output.dir), recipe.executor.logging_dir)
