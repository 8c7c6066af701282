"""The output folder of a build: which folders a build may write into, one build at a time, and the
manifest of what the build wrote.

- `output_root` expands `~` and makes the path absolute, so `out`, `./out/`, `$PWD/out` and `~/out`
  name one folder.
- `check_output_folder` refuses `/`, the home folder (and any folder above it), a path that is a
  file, and a non-empty folder that holds no mfpo build: a build never writes among a user's files.
- `BuildLock` is an exclusive `flock` on `OUT/.mfpo.lock` for as long as the launcher runs; a second
  build into the same folder gets one line naming the holder's pid.
- `manifest.json` marks the folder as an mfpo build from the moment it is claimed, records the
  fingerprint of the source index (inputs that change between a crash and the rerun are detected)
  and, after finalize, every final file with its size, rows and sha256: publish verifies those, and
  only files the manifest lists are ever deleted.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from mfpo_data.errors import MfpoError
from mfpo_data.layout import OutputLayout, atomic_write, sha256_file


MANIFEST_FORMAT = "mfpo-build/1"
LOCK_NAME = ".mfpo.lock"
_RANK_FILE = re.compile(r"\d{5}(\.arrow|\.rejects\.jsonl|\.stats\.json|\.pid|\.answers\.jsonl)(\.tmp)?"
                        r"|source_index(\.next)?\.jsonl(\.tmp)?|source_stats\.json(\.tmp)?")


class OutputFolderError(MfpoError):
    """An output folder that a build must not write into."""


class BuildLockedError(MfpoError):
    """Another build holds the output folder's lock."""


class InputsChangedError(MfpoError):
    """The source's inputs differ from those of the interrupted build in the folder."""


def output_root(path: str | Path) -> Path:
    """`path` with `~` expanded, absolute and normalised (symlinks resolved)."""
    return Path(path).expanduser().resolve()


def is_mfpo_build(root: Path) -> bool:
    """A folder an mfpo build claimed: it holds our manifest or lock (or the recipe file of an older build)."""
    layout = OutputLayout(root)
    return layout.manifest_file.is_file() or layout.recipe_file.is_file() or (Path(root) / LOCK_NAME).is_file()


def check_output_folder(root: Path) -> None:
    """Refuse a folder a build must not write into (see the module docstring); `root` is absolute."""
    home = Path.home().resolve()
    if root == Path(root.anchor) or root == home or root in home.parents:
        raise OutputFolderError(f"output folder {root} is {'the home folder' if root == home else 'a system folder'}: "
                                "choose a new folder for the build (output.dir or --output)")  # fmt: skip
    if root.exists() and not root.is_dir():
        raise OutputFolderError(f"output folder {root} is a file, not a folder")
    if root.is_dir() and not is_mfpo_build(root):
        first = next(iter(sorted(p.name for p in root.iterdir())), None)
        if first is not None:
            raise OutputFolderError(f"output folder {root} is not empty and holds no mfpo build (e.g. {first!r}); "
                                    "choose a new or empty folder")  # fmt: skip


class BuildLock:
    """`with BuildLock(root):` one build at a time in `root` (an exclusive, non-blocking `flock`; the
    kernel releases it when the process ends, however it ends)."""

    def __init__(self, root: Path):
        self.path = Path(root) / LOCK_NAME
        self._fd: int | None = None

    def __enter__(self) -> BuildLock:
        import fcntl

        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise BuildLockedError(f"another build (pid {holder}) is writing to {self.path.parent}; "
                                   "wait for it to end or choose another output folder") from None  # fmt: skip
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd
        return self

    def __exit__(self, *exc) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing releases the lock; the file stays (removing it would race a waiter)
            self._fd = None


# ----------------------------------------------------------------------------------------------- manifest


def read_manifest(layout: OutputLayout) -> dict:
    try:
        data = json.loads(layout.manifest_file.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {"format": MANIFEST_FORMAT, "files": {}}
    return data if isinstance(data, dict) else {"format": MANIFEST_FORMAT, "files": {}}


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
