"""`BuildFolder`: the output folder of one build, from the first check to the last, in one owner.

    folder = BuildFolder.open(recipe)              # refuses a folder a build must not write into
    with folder.claim(resolved, restart=restart):  # lock; --restart; same recipe; manifest
        folder.index(source)                       # inputs unchanged since an interrupted build?
        if not folder.finished:
            folder.start()                         # recipe file; ranks whose shards are gone run again
            ...                                    # the ranks and finalize write into folder.layout
        else:
            folder.keep_finished()

The primitives (the lock, the manifest, the removals) are `outdir.py`'s; this module decides their order.
"""

from __future__ import annotations

import json
import logging
import os
from contextlib import contextmanager
from pathlib import Path

from mfpo_data.config import Recipe
from mfpo_data.errors import MfpoError
from mfpo_data.layout import OutputLayout, atomic_write, sha256_file
from mfpo_data.pipeline.outdir import (BuildLock, InputsChangedError, check_output_folder, check_same_inputs, output_root,
                                       read_manifest, read_resolved_recipe, remove_build, remove_staging,
                                       write_manifest)  # fmt: skip
from mfpo_data.pipeline.run import forget_ranks_without_shards


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


def recipe_identity(resolved: dict) -> dict:
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


def recipe_layout(recipe: Recipe) -> OutputLayout:
    """The output folder of `recipe`, with datatrove's logging dir where `executor.logging_dir` puts it."""
    return OutputLayout(output_root(recipe.output.dir),
                        output_root(recipe.executor.logging_dir) if recipe.executor.logging_dir else None)  # fmt: skip


class BuildFolder:
    """One build's output folder: opened (checked, nothing written), claimed (locked, marked as ours),
    indexed, then either started or kept as the finished build it already holds."""

    def __init__(self, layout: OutputLayout, tasks: int):
        self.layout, self.tasks = layout, tasks
        self._manifest: dict | None = None
        self._resolved: dict = {}
        self.finished = False  # set when claimed: the folder holds this build finished (see `claim`)

    @classmethod
    def open(cls, recipe: Recipe) -> BuildFolder:
        """Make the recipe's folders absolute and refuse a folder a build must not write into
        (`outdir.check_output_folder`). Nothing is written."""
        recipe.output.dir = str(output_root(recipe.output.dir))
        if recipe.executor.logging_dir:
            recipe.executor.logging_dir = str(output_root(recipe.executor.logging_dir))
        layout = recipe_layout(recipe)
        check_output_folder(layout.root)
        return cls(layout, recipe.executor.tasks)

    @property
    def root(self) -> Path:
        return self.layout.root

    @contextmanager
    def claim(self, resolved: dict, *, restart: bool = False):
        """Hold the folder's lock; with `restart` delete what an earlier build wrote; refuse the build of
        another recipe; write the manifest (the folder is an mfpo build from here on)."""
        self.layout.root.mkdir(parents=True, exist_ok=True)
        with BuildLock(self.layout.root):
            if restart:
                removed = remove_build(self.layout)
                logger.info("--restart: removed %d files of the earlier build in %s", len(removed), self.root)
            self._check_same_recipe(resolved)
            self._resolved = resolved
            self._manifest = read_manifest(self.layout)
            write_manifest(self.layout, self._manifest)
            # Read once, here: indexing writes into staging/ again. Finished means every rank's shard is
            # there and finalize removed staging/.
            self.finished = self.layout.staging_removed() and not self.layout.missing_ranks(self.tasks)
            yield self

    def index(self, source) -> None:
        """Index the source (also for a finished build: are its inputs unchanged?); refuse to resume
        finished ranks over inputs that changed since they ran."""
        index = self.layout.source_index
        fresh = index.with_name("source_index.next.jsonl")
        n_items = source.prepare(fresh)
        fingerprint = sha256_file(fresh)
        try:
            check_same_inputs(self.layout, fingerprint, n_items, self.tasks)
        except InputsChangedError:
            fresh.unlink(missing_ok=True)
            raise
        os.replace(fresh, index)
        source.index_path = str(index)
        if self._manifest.get("index") != {"sha256": fingerprint, "items": n_items}:
            self._manifest["index"] = {"sha256": fingerprint, "items": n_items}
            write_manifest(self.layout, self._manifest)
        logger.info("indexed %d source items into %d tasks", n_items, self.tasks)

    def start(self) -> None:
        """Before the ranks run: the resolved recipe (with package versions) is written, and a rank whose
        staging shard is gone runs again."""
        import yaml

        atomic_write(self.layout.recipe_file,
                     yaml.safe_dump({**self._resolved, "versions": package_versions()}, sort_keys=False))  # fmt: skip
        forget_ranks_without_shards(self.layout, self.tasks)

    def keep_finished(self) -> None:
        """A finished build (staging/ removed after finalize): nothing to resume, nothing to redo."""
        remove_staging(self.layout)
        logger.info("%s holds this build, finished already (rerun with --restart to build it again)", self.root)

    def _check_same_recipe(self, resolved: dict) -> None:
        if not self.layout.recipe_file.is_file():
            return
        _, previous = read_resolved_recipe(self.layout)
        if recipe_identity(previous) != recipe_identity(resolved):
            raise MfpoError(f"{self.root} holds a build of a different recipe; choose another output.dir, or rerun "
                            "with --restart to replace that build")  # fmt: skip
