"""Output folders: a command writes only into a new, empty or its own folder, one process at a time.

Shared by `mfpo-data build` (`pipeline/outdir.py`), `mfpo-eval run` and `mfpo-train`:

- `output_root` expands `~` and makes the path absolute, so `out`, `./out/`, `$PWD/out` and `~/out`
  name one folder.
- `check_output_folder` refuses `/`, the home folder (and any folder above it), a path that is a
  file, and a non-empty folder that the command's `is_ours` does not recognise: a command never
  writes among a user's files. A folder that holds nothing but our lock file counts as empty.
- `FolderLock` is an exclusive `flock` on `OUT/.mfpo.lock` for as long as the command runs; a second
  process that wants the folder gets one line naming the holder's pid. The kernel releases the lock
  when the process ends, however it ends, so a killed run never leaves the folder locked.

Paths in messages pass through publish's redaction (`secrets.scrub`).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from mfpo_data.errors import MfpoError
from mfpo_data.secrets import scrub


LOCK_NAME = ".mfpo.lock"


class OutputFolderError(MfpoError):
    """An output folder that a command must not write into."""


class FolderLockedError(MfpoError):
    """Another process holds the output folder's lock."""


def output_root(path: str | Path) -> Path:
    """`path` with `~` expanded, absolute and normalised (symlinks resolved; a symlink loop is one line)."""
    try:
        return Path(path).expanduser().resolve()
    except (RuntimeError, OSError) as e:  # a symlink loop: RuntimeError before Python 3.13, OSError after
        raise OutputFolderError(f"output folder {scrub(str(path))} cannot be resolved ({e})") from None


def check_output_folder(root: Path, is_ours: Callable[[Path], bool], *, ours: str, choose: str) -> None:
    """Refuse a folder the command must not write into (see the module notes); `root` is absolute.

    `ours` names what `is_ours` recognises ("mfpo build"); `choose` says what to do instead.
    """
    home = Path.home().resolve()
    shown = scrub(str(root))
    if root == Path(root.anchor) or root == home or root in home.parents:
        raise OutputFolderError(f"output folder {shown} is {'the home folder' if root == home else 'a system folder'}: "
                                f"{choose}")  # fmt: skip
    if root.exists() and not root.is_dir():
        raise OutputFolderError(f"output folder {shown} is a file, not a folder: {choose}")
    if root.is_dir() and not is_ours(root):
        first = next(iter(sorted(p.name for p in root.iterdir() if p.name != LOCK_NAME)), None)
        if first is not None:
            raise OutputFolderError(f"output folder {shown} is not empty and holds no {ours} (e.g. {first!r}); "
                                    "choose a new or empty folder")  # fmt: skip


class FolderLock:
    """`with FolderLock(root, "build"):` one process at a time writes into `root` (an exclusive,
    non-blocking `flock` on `root/.mfpo.lock`; `what` names the holder in the refusal)."""

    def __init__(self, root: Path, what: str = "build"):
        self.path = Path(root) / LOCK_NAME
        self.what = what
        self._fd: int | None = None

    def __enter__(self) -> FolderLock:
        import fcntl

        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise FolderLockedError(f"another {self.what} (pid {holder}) is writing to {scrub(str(self.path.parent))}; "
                                    "wait for it to end or choose another output folder") from None  # fmt: skip
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd
        return self

    def __exit__(self, *exc) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing releases the lock; the file stays (removing it would race a waiter)
            self._fd = None
