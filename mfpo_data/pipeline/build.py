"""`build_dataset`: the whole build in reading order. The recipe and inputs are checked and the stage list
is assembled (`assemble.py`) before the output folder is claimed (`folder.py`, which owns the folder from its
first check to the last); the source is indexed once (its fingerprint checked against a build being
resumed), the stages run on an executor (`run.py`) and are finalized (`finalize.py`). Rerunning the same
call resumes an interrupted build.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from mfpo_data.config import Recipe, load_recipe
from mfpo_data.errors import MfpoError
from mfpo_data.layout import OutputLayout
from mfpo_data.pipeline.assemble import build_pipeline, check_models, make_source, worker_modules
from mfpo_data.pipeline.executors import start_local_workers_early
from mfpo_data.pipeline.folder import BuildFolder
from mfpo_data.pipeline.run import run_executor


logger = logging.getLogger(__name__)


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
    folder = BuildFolder.open(recipe)  # a folder a build must not write into is refused here
    source = make_source(recipe)
    source.check()
    pipeline = build_pipeline(recipe, source=source)  # constructs every backend: bad values fail here
    for note in check_models(recipe):  # offline, a model that is not there fails here, before any rank
        logger.info(note)
    with folder.claim(recipe.to_yaml_dict(), restart=restart):
        if not folder.finished:
            # Local workers that start from a forkserver: start it now, so that it imports their modules on
            # another core while this process indexes the source.
            start_local_workers_early(recipe.executor, worker_modules(recipe))
        folder.index(source)
        if folder.finished:
            folder.keep_finished()
        else:
            folder.start()
            run_executor(recipe, pipeline, folder.layout)
    layout = folder.layout
    if recipe.executor.kind != "slurm":
        stats = layout.read_stats()
        if stats["rows"] == 0:
            dropped = stats.get("dropped") or {}
            counts = ", ".join(f"{k} {v}" for k, v in sorted(dropped.items(), key=lambda kv: (-kv[1], kv[0])))
            raise EmptyBuildError(f"the build gave 0 rows: {sum(dropped.values())} inputs dropped ({counts or 'none'}); "
                                  f"see {layout.rejects_file}")  # fmt: skip
    return layout

