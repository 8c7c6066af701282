"""Reading answer and question files with one-line errors that name the file and line; writing results."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from mfpo_data.errors import MfpoError


def read_jsonl(path: str | Path, required: Iterable[str] = (), what: str = "file") -> list[dict]:
    """Every JSON object of a JSON-lines file, in order; blank lines are skipped.

    A missing file, a line that is not a JSON object or a line without a `required` key raises
    `MfpoError` naming the file and line. Each dict gets no extra keys.
    """
    path = Path(path)
    if not path.is_file():
        raise MfpoError(f"{what} not found: {path}")
    required = tuple(required)
    rows = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise MfpoError(f"{path}:{lineno}: not valid JSON ({e.msg})") from None
            if not isinstance(row, dict):
                raise MfpoError(f"{path}:{lineno}: expected a JSON object, got {type(row).__name__}")
            missing = [k for k in required if k not in row]
            if missing:
                raise MfpoError(f"{path}:{lineno}: missing key {missing[0]!r}")
            rows.append(row)
    return rows


def read_json(path: str | Path, what: str = "file") -> Any:
    """A whole JSON file; a missing or malformed file raises `MfpoError` naming it (and the line)."""
    path = Path(path)
    if not path.is_file():
        raise MfpoError(f"{what} not found: {path}")
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise MfpoError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from None


def read_records(path: str | Path, required: Iterable[str] = (), what: str = "file") -> list[dict]:
    """A JSON list of objects (`.json`) or JSON lines (anything else), each checked for `required` keys."""
    path = Path(path)
    if path.suffix == ".json":
        data = read_json(path, what)
        if not isinstance(data, list):
            raise MfpoError(f"{path}: expected a JSON list of objects")
        required = tuple(required)
        for i, row in enumerate(data):
            if not isinstance(row, dict):
                raise MfpoError(f"{path}: item {i}: expected a JSON object")
            missing = [k for k in required if k not in row]
            if missing:
                raise MfpoError(f"{path}: item {i}: missing key {missing[0]!r}")
        return data
    return read_jsonl(path, required, what)


def read_answers(path: str | Path, key: str) -> list[dict]:
    """`{key, "answer"}` items (the runner's output); `key` is `image_id` or `question_id`.

    LLaVA-style answer files, which put the answer in `text`, are read as well.
    """
    rows = read_records(path, (key,), "answers file")
    for i, row in enumerate(rows):
        if "answer" not in row and "text" in row:
            row["answer"] = row["text"]
        if not isinstance(row.get("answer"), str):
            raise MfpoError(f"{path}: item {i + 1}: needs a string 'answer' (or 'text')")
    return rows


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def write_jsonl(rows: Iterable[Mapping], path: str | Path) -> Path:
    path = Path(path)
    _atomic_write(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return path


def write_json(obj: Any, path: str | Path) -> Path:
    path = Path(path)
    _atomic_write(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")
    return path
