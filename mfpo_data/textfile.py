"""Reading a user's text file: one line for whatever is wrong with it, naming the file (redacted) and the line.

`read_text` refuses a missing path, a folder, an unreadable file and bytes that are not UTF-8 (with the line
and column of the first bad byte); `RecordError` carries the line at fault so a caller can say what to fix.
Used by the recipe and config loader (`strict.py`) and every reader of `mfpo-eval` and `mfpo-train`.
"""

from __future__ import annotations

from pathlib import Path

from mfpo_data.errors import MfpoError
from mfpo_data.secrets import scrub


class RecordError(MfpoError):
    """A file that cannot be read as asked; `line` is the 1-based line at fault (None: the whole file)."""

    def __init__(self, message: str, path: str | Path | None = None, line: int | None = None):
        super().__init__(message)
        self.path, self.line = path, line


def shown(path: str | Path) -> str:
    """A user-supplied path or URL as messages show it: tokens and credentials redacted."""
    return scrub(str(path))


def where(path: str | Path, line: int | None) -> str:
    return f"{shown(path)}:{line}" if line is not None else shown(path)


def read_text(path: str | Path, what: str = "file") -> str:
    """A whole UTF-8 file; a missing file, a folder and bytes that are not UTF-8 are one line each."""
    path = Path(path)
    if not path.exists():
        raise RecordError(f"{what} not found: {shown(path)}", path)
    if not path.is_file():
        raise RecordError(f"{what} {shown(path)} is {'a folder' if path.is_dir() else 'not a regular file'}, "
                          "not a file", path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise RecordError(f"{what} {shown(path)} cannot be read ({e.strerror or type(e).__name__})", path) from None
    return decode(data, path, what)


def decode(data: bytes, path: str | Path, what: str = "file") -> str:
    """`data` (read from `path`) as UTF-8 text; other bytes are one line naming the line and column."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        column = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
        raise RecordError(f"{where(path, line)}: not UTF-8 text (byte 0x{data[e.start]:02x} at column {column}); "
                          f"save the {what} as UTF-8", path, line) from None
    return text.removeprefix("\ufeff")
