"""`build_dataset`: the whole build in reading order. The recipe and inputs are checked and the stage list
is assembled (`assemble.py`) before the output folder is claimed and locked (`outdir.py`); the recipe is
checked against an existing output, the source is indexed once (its fingerprint checked against a build
being resumed), the stages run on an executor (`run.py`) and are finalized (`finalize.py`). Rerunning
the same call resumes an interrupted build.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import yaml

from mfpo_data.config import Recipe, load_recipe
from mfpo_data.errors import MfpoError
from mfpo_data.layout import OutputLayout, atomic_write, sha256_file
from mfpo_data.pipeline.assemble import build_pipeline, check_models, make_source, worker_modules
from mfpo_data.pipeline.executors import start_local_workers_early
from mfpo_data.pipeline.outdir import (BuildLock, InputsChangedError, check_output_folder, check_same_inputs, output_root,
                                       read_manifest, read_resolved_recipe, remove_build, remove_staging,
                                       write_manifest)  # fmt: skip
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
    """What decides the rows: the recipe less how it runs (workers, progress bars, package versions) and
    where it writes (a relative, absolute or moved output folder holds the same build)."""
    out = json.loads(json.dumps(resolved, default=str))
    out.pop("versions", None)
    executor = out.get("executor") if isinstance(out.get("executor"), dict) else {}
    out["executor"] = {"tasks": executor.get("tasks", 1)}  # kind, workers, resources: how, not what
    output = out.get("output") if isinstance(out.get("output"), dict) else {}
    for key in ("progress", "keep_staging", "encode_threads", "dir"):
        output.pop(key, None)
    return out


def _check_same_recipe(layout: OutputLayout, resolved: dict) -> None:
    if not layout.recipe_file.is_file():
        return
    _, previous = read_resolved_recipe(layout)
    if _identity(previous) != _identity(resolved):
        raise MfpoError(
            f"{layout.root} holds a build of a different recipe; choose another output.dir, or rerun with --restart "
            "to replace that build"
        )


class EmptyBuildError(MfpoError):
    """A build that finished with no row: every input was dropped."""


def build_dataset(
    recipe: str | Path | Recipe = "coco",
    overrides: Sequence[str] = (),
    output_dir: str | Path | None = None,
    *,
    restart: bool = False,
) -> OutputLayout:
    """Build the dataset a recipe describes; rerunning the same call resumes an interrupted build.

    Everything that can fail on the recipe or the inputs (the source's folders, backend values) fails
    before the folder is touched. `restart=True` deletes what an earlier build wrote in the folder
    (`outdir.remove_build`) and starts over. Raises `EmptyBuildError`, with the drop counts, when no
    input gave a row."""
    if not isinstance(recipe, Recipe):
        recipe = load_recipe(recipe, tuple(overrides))
    if output_dir is not None:
        recipe.output.dir = str(output_dir)
    recipe.output.dir = str(output_root(recipe.output.dir))
    if recipe.executor.logging_dir:
        recipe.executor.logging_dir = str(output_root(recipe.executor.logging_dir))
    layout = recipe_layout(recipe)
    check_output_folder(layout.root)
    source = make_source(recipe)
    source.check()
    pipeline = build_pipeline(recipe, source=source)  # constructs every backend: bad values fail here
    for note in check_models(recipe):  # offline, a model that is not there fails here, before any rank
        logger.info(note)
    resolved = recipe.to_yaml_dict()
    layout.root.mkdir(parents=True, exist_ok=True)
    with BuildLock(layout.root):
        if restart:
            removed = remove_build(layout)
            logger.info("--restart: removed %d files of the earlier build in %s", len(removed), layout.root)
        _check_same_recipe(layout, resolved)
        manifest = read_manifest(layout)
        write_manifest(layout, manifest)  # the folder is an mfpo build from here on
        finished = layout.staging_removed() and not layout.missing_ranks(recipe.executor.tasks)
        if not finished:
            # Local workers that start from a forkserver: start it now, so that it imports their modules on
            # another core while this process indexes the source.
            start_local_workers_early(recipe.executor, worker_modules(recipe))
        _index(source, layout, recipe.executor.tasks, manifest)  # also for a finished build: inputs unchanged?
        if finished:  # its staging/ was removed after finalize: nothing to resume, nothing to redo
            remove_staging(layout)
            logger.info("%s holds this build, finished already (rerun with --restart to build it again)", layout.root)
        else:
            atomic_write(layout.recipe_file, yaml.safe_dump({**resolved, "versions": package_versions()}, sort_keys=False))
            forget_ranks_without_shards(layout, recipe.executor.tasks)
            run_executor(recipe, pipeline, layout)
    if recipe.executor.kind != "slurm":
        stats = layout.read_stats()
        if stats["rows"] == 0:
            dropped = stats.get("dropped") or {}
            counts = ", ".join(f"{k} {v}" for k, v in sorted(dropped.items(), key=lambda kv: (-kv[1], kv[0])))
            raise EmptyBuildError(f"the build gave 0 rows: {sum(dropped.values())} inputs dropped ({counts or 'none'}); "
                                  f"see {layout.rejects_file}")  # fmt: skip
    return layout


def _index(source, layout: OutputLayout, tasks: int, manifest: dict) -> None:
    """Index the source; refuse to resume finished ranks over inputs that changed since they ran."""
    index = layout.source_index
    fresh = index.with_name("source_index.next.jsonl")
    n_items = source.prepare(fresh)
    fingerprint = sha256_file(fresh)
    try:
        check_same_inputs(layout, fingerprint, n_items, tasks)
    except InputsChangedError:
        fresh.unlink(missing_ok=True)
        raise
    os.replace(fresh, index)
    source.index_path = str(index)
    if manifest.get("index") != {"sha256": fingerprint, "items": n_items}:
        manifest["index"] = {"sha256": fingerprint, "items": n_items}
        write_manifest(layout, manifest)
    logger.info("indexed %d source items into %d tasks", n_items, tasks)


def recipe_layout(recipe: Recipe) -> OutputLayout:
    """The output folder of `recipe`, with datatrove's logging dir where `executor.logging_dir` puts it."""
    return OutputLayout(output_root(recipe.output.dir),
                        output_root(recipe.executor.logging_dir) if recipe.executor.logging_dir else None)  # fmt: skip
