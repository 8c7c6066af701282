"""The output folder of a build: which folders a build may write into, one build at a time, and the
manifest of what the build wrote.

- `check_output_folder` refuses `/`, the home folder (and any folder above it), a path that is a
  file, and a non-empty folder that holds no mfpo build: a build never writes among a user's files.
- `BuildLock` is an exclusive `flock` on `OUT/.mfpo.lock` for as long as the launcher runs; a second
  build into the same folder gets one line naming the holder's pid. Both are `mfpo_data.folders`',
  which `mfpo-eval run` and `mfpo-train` use too.
- `manifest.json` marks the folder as an mfpo build from the moment it is claimed, records the
  fingerprint of the source index (inputs that change between a crash and the rerun are detected)
  and, after finalize, every final file with its size, rows and sha256: publish verifies those, and
  only files the manifest lists are ever deleted.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from mfpo_data.errors import MfpoError
from mfpo_data.folders import LOCK_NAME, FolderLock, FolderLockedError, OutputFolderError, output_root  # noqa: F401
from mfpo_data.folders import check_output_folder as check_folder
from mfpo_data.layout import OutputLayout, atomic_write, sha256_file


MANIFEST_FORMAT = "mfpo-build/1"
_RANK_FILE = re.compile(r"\d{5}(\.arrow|\.rejects\.jsonl|\.stats\.json|\.pid|\.answers\.jsonl)(\.tmp)?"
                        r"|source_index(\.next)?\.jsonl(\.tmp)?|source_stats\.json(\.tmp)?")


BuildLockedError = FolderLockedError  # another build holds the output folder's lock


class InputsChangedError(MfpoError):
    """The source's inputs differ from those of the interrupted build in the folder."""


def is_mfpo_build(root: Path) -> bool:
    """A folder an mfpo build claimed: it holds our manifest or lock (or the recipe file of an older build)."""
    layout = OutputLayout(root)
    return layout.manifest_file.is_file() or layout.recipe_file.is_file() or (Path(root) / LOCK_NAME).is_file()


def check_output_folder(root: Path) -> None:
    """Refuse a folder a build must not write into (see the module docstring); `root` is absolute."""
    check_folder(root, is_mfpo_build, ours="mfpo build", choose="choose a new folder for the build (output.dir or --output)")


class BuildLock(FolderLock):
    """`with BuildLock(root):` one build at a time in `root` (`folders.FolderLock`)."""

    def __init__(self, root: Path):
        super().__init__(root, "build")


# ----------------------------------------------------------------------------------------------- manifest


def read_manifest(layout: OutputLayout) -> dict:
    try:
        data = json.loads(layout.manifest_file.read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError, RecursionError):  # not JSON, not UTF-8, nested too deeply
        return {"format": MANIFEST_FORMAT, "files": {}}
    return data if isinstance(data, dict) else {"format": MANIFEST_FORMAT, "files": {}}


def read_resolved_recipe(layout: OutputLayout) -> tuple[str, dict]:
    """(text, mapping) of the recipe.resolved.yaml a build wrote; a damaged one (not UTF-8, not YAML, not a
    mapping) is one line that says how to go on."""
    import yaml

    from mfpo_data.textfile import RecordError, read_text

    path = layout.recipe_file
    fix = "rerun the build with --restart, or choose another output folder"
    try:
        text = read_text(path, "resolved recipe")
        data = yaml.safe_load(text)
    except RecordError as e:
        raise MfpoError(f"{e}; the build folder is damaged: {fix}") from None
    except (yaml.YAMLError, ValueError, RecursionError) as e:
        raise MfpoError(f"{path}: not valid YAML ({' '.join(str(e).split())[:120]}); the build folder is damaged: "
                        f"{fix}") from None
    if not isinstance(data, dict):
        raise MfpoError(f"{path}: not a recipe (a mapping), got {type(data).__name__}; the build folder is damaged: "
                        f"{fix}")
    return text, data


def write_manifest(layout: OutputLayout, manifest: dict) -> None:
    atomic_write(layout.manifest_file, json.dumps({**manifest, "format": MANIFEST_FORMAT}, indent=2, sort_keys=True))


def file_entry(path: Path, rows: int | None = None) -> dict:
    entry = {"bytes": path.stat().st_size, "sha256": sha256_file(path)}
    return entry if rows is None else {**entry, "rows": rows}


def has_progress(layout: OutputLayout, tasks: int) -> bool:
    """Whether ranks of a build in the folder have finished (their rows depend on the index)."""
    return len(layout.missing_ranks(tasks)) < tasks or bool(read_manifest(layout).get("files"))


def check_same_inputs(layout: OutputLayout, fingerprint: str, items: int, tasks: int) -> None:
    """Refuse to resume a build whose finished ranks read a different index than the inputs give now."""
    previous = read_manifest(layout).get("index") or {}
    if previous.get("sha256") not in (None, fingerprint) and has_progress(layout, tasks):
        raise InputsChangedError(
            f"the inputs changed since the build in {layout.root} started ({previous.get('items')} -> {items} "
            "source items, index fingerprint differs): resuming would mix two inputs; rerun with --restart "
            "to build again from the start"
        )


def remove_staging(layout: OutputLayout) -> None:
    """After a finished build: delete the rank files and the index that staging/ holds (all of them ours),
    then the folder if nothing else is in it. The final shards, stats and rejects hold everything."""
    if not layout.staging_dir.is_dir():
        return
    for path in layout.staging_dir.iterdir():
        if path.is_file() and _RANK_FILE.fullmatch(path.name):
            path.unlink(missing_ok=True)
    try:
        layout.staging_dir.rmdir()
    except OSError:  # a file we did not write is there: it stays, and so does the folder
        pass


def remove_build(layout: OutputLayout) -> list[Path]:
    """`--restart`: delete what a build wrote (manifest files, rank files in staging/, completion
    markers, the recipe, stats and rejects), nothing else. Returns the removed paths."""
    removed = []
    for name in read_manifest(layout).get("files", {}):
        path = layout.root / name
        if path.is_file() and layout.root in path.resolve().parents:
            removed.append(path)
    removed += [layout.stats_file, layout.rejects_file, layout.recipe_file, layout.manifest_file]
    if layout.staging_dir.is_dir():
        removed += [p for p in layout.staging_dir.iterdir() if p.is_file() and _RANK_FILE.fullmatch(p.name)]
    completions = layout.completion_marker(0).parent
    if completions.is_dir():
        removed += [p for p in completions.iterdir() if p.is_file() and re.fullmatch(r"\d{5}", p.name)]
    for path in removed:
        path.unlink(missing_ok=True)
    return removed
