"""The readers of every file `mfpo-eval` is given, and its writers.

One reader for answers files (`read_answers`) serves every scorer's command, the Python API and the
resume of generation (`backends/vlm.py`: `mfpo-eval run` and the on-policy build), so a file is judged
the same way wherever it comes in. A file is JSON
lines or one JSON list (told apart by its first character, not its name: POPE's `.json` files are
JSON lines). Whatever is wrong with it ends in one `RecordError` line that names the file, the line
and the field or id:

- a missing path, a folder, bytes that are not UTF-8, a line that is not JSON (nested too deeply, a
  number of more digits than Python converts) or not a JSON object;
- an id of the wrong JSON type (a list, an object, a boolean, a fraction), a missing or non-text
  answer, an answer longer than `MAX_ANSWER_CHARS` (the tokenizer would take minutes on it);
- an id that appears twice (a `cat run1.jsonl run2.jsonl`) or that is not in the benchmark.

Paths in messages pass through publish's redaction (`mfpo_data.secrets.scrub`), so a token inside a
URL-like path is never printed. Writers go through a temp file and a rename.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from mfpo_data.errors import MfpoError
from mfpo_data.layout import atomic_write
from mfpo_data.textfile import RecordError, decode, read_text, shown, where  # noqa: F401 (this module's API)


# A model answer of 512 new tokens is about 3,000 characters; tokenising 1,000,000 takes about 20 s.
MAX_ANSWER_CHARS = 100_000
_WHITESPACE = re.compile(r"[ \t\n\r]*")


def _loads(text: str, path: Path, line: int | None) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        at = e.lineno + (line - 1 if line else 0)
        raise RecordError(f"{where(path, at)}: not valid JSON ({e.msg}, column {e.colno})", path, at) from None
    except RecursionError:
        raise RecordError(f"{where(path, line)}: JSON nested too deeply to read", path, line) from None
    except ValueError as e:  # an integer of more than 4300 digits, ...
        raise RecordError(f"{where(path, line)}: not valid JSON ({str(e).splitlines()[0]})", path, line) from None


def read_json(path: str | Path, what: str = "file") -> Any:
    """A whole JSON file (run.json, AMBER's annotations, COCO's instances); any fault is one line."""
    return _loads(read_text(path, what), Path(path), None)


def read_objects(path: str | Path, what: str = "file") -> list[tuple[int, dict]]:
    """(line, object) for every JSON object of a JSON-lines file or of a file holding one JSON list.

    Blank lines are skipped; an item that is not a JSON object is refused with its line.
    """
    return parse_objects(read_text(path, what), Path(path))


def parse_objects(text: str, path: Path) -> list[tuple[int, dict]]:
    """`read_objects` of a file's text, already read (and decoded) from `path`."""
    items = _array_items(text, path) if text.lstrip().startswith("[") else _lines(text, path)
    for line, row in items:
        if not isinstance(row, dict):
            raise RecordError(f"{where(path, line)}: expected a JSON object, got {_json_type(row)}", path, line)
    return items


def _lines(text: str, path: Path) -> list[tuple[int, Any]]:
    out = []
    for line, raw in enumerate(text.split("\n"), 1):
        raw = raw.removesuffix("\r")
        if raw.strip():
            out.append((line, _loads(raw, path, line)))
    return out


def _array_items(text: str, path: Path) -> list[tuple[int, Any]]:
    """The items of one JSON list, each with the line it starts on."""
    decoder = json.JSONDecoder()
    pos = _WHITESPACE.match(text).end() + 1  # past "["
    out: list[tuple[int, Any]] = []

    def line_at(i: int) -> int:
        return text.count("\n", 0, i) + 1

    pos = _WHITESPACE.match(text, pos).end()
    if text.startswith("]", pos):
        pos += 1
    else:
        while True:
            line = line_at(pos)
            try:
                item, pos = decoder.raw_decode(text, pos)
            except json.JSONDecodeError as e:
                raise RecordError(f"{where(path, e.lineno)}: not valid JSON ({e.msg}, column {e.colno})", path,
                                  e.lineno) from None
            except RecursionError:
                raise RecordError(f"{where(path, line)}: JSON nested too deeply to read", path, line) from None
            except ValueError as e:
                raise RecordError(f"{where(path, line)}: not valid JSON ({str(e).splitlines()[0]})", path,
                                  line) from None
            out.append((line, item))
            pos = _WHITESPACE.match(text, pos).end()
            if text.startswith(",", pos):
                pos = _WHITESPACE.match(text, pos + 1).end()
                continue
            if text.startswith("]", pos):
                pos += 1
                break
            line = line_at(pos)
            raise RecordError(f"{where(path, line)}: not valid JSON (expected ',' or ']' after an item)", path, line)
    rest = _WHITESPACE.match(text, pos).end()
    if rest != len(text):
        line = line_at(rest)
        raise RecordError(f"{where(path, line)}: not valid JSON (extra data after the list)", path, line)
    return out


def _json_type(value: Any) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null",
             int: "an integer", float: "a number"}
    return names.get(type(value), type(value).__name__)


# -- fields ------------------------------------------------------------------------------------------
def text_field(row: Mapping, names: Sequence[str], path: Path, line: int, *, limit: int | None = None) -> str:
    """The first of `names` that `row` has; it must be a string (of at most `limit` characters)."""
    name = next((n for n in names if n in row), None)
    if name is None:
        alternatives = " or ".join(repr(n) for n in names)
        raise RecordError(f"{where(path, line)}: missing field {alternatives}", path, line)
    value = row[name]
    if not isinstance(value, str):
        raise RecordError(f"{where(path, line)}: field {name!r} must be a string, got {_json_type(value)}", path, line)
    if limit is not None and len(value) > limit:
        raise RecordError(f"{where(path, line)}: field {name!r} holds {len(value):,} characters, more than the "
                          f"{limit:,} an answer may have", path, line)
    return value


def id_field(row: Mapping, key: str, path: Path, line: int, *, text: bool = True, number: bool = True) -> int | str:
    """`row[key]` as an id: an integer (a string of digits counts as one when `number` and not `text`), or
    a non-empty string when `text`. Lists, objects, booleans, fractions and null are refused."""
    if key not in row:
        raise RecordError(f"{where(path, line)}: missing field {key!r}", path, line)
    value = row[key]
    if number and isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip():
        if text:
            return value
        if number and value.strip().isdigit():
            return int(value)
    kinds = " or ".join(k for k, on in (("an integer", number), ("a string", text)) if on)
    raise RecordError(f"{where(path, line)}: {key} must be {kinds}, got {_described(value)}", path, line)


def _described(value: Any) -> str:
    """`a list`, `a number 2.5`, `a string "x"`, `null`: what a wrong value is, short."""
    if value is None or isinstance(value, (dict, list)):
        return _json_type(value)
    text = json.dumps(value, ensure_ascii=False)
    return f"{_json_type(value)} {text if len(text) <= 40 else text[:37] + '...'}"


# Which ids each answers key takes: COCO image ids and AMBER ids are integers; POPE's question ids
# are integers in the official files, strings in some others; `mfpo-eval run` keys are strings.
ID_KINDS = {"image_id": dict(text=False), "id": dict(text=False), "question_id": {}, "key": dict(number=False)}


def read_answers(path: str | Path, key: str, *, ids: Collection | None = None, benchmark: str = "the benchmark",
                 text: Sequence[str] = ("answer", "text"), what: str = "answers file") -> list[dict]:
    """Every answer of an answers file, in file order: the row with `key` and `answer` normalised.

    `key` names the id field (`image_id`, `question_id`, `id`, or generation's `key`); `text` the fields
    the answer may be in, first one present wins (LLaVA's files use `text`). With `ids` (the benchmark's
    items), an id outside them is refused; an id given as text ("42") is matched to the item 42. Every
    problem is one `RecordError` naming the file, the line and the field or id (see the module notes).
    """
    return [row for _, row in answer_records(path, key, ids=ids, benchmark=benchmark, text=text, what=what)]


def answer_records(path: str | Path, key: str, *, ids: Collection | None = None, benchmark: str = "the benchmark",
                   text: Sequence[str] = ("answer", "text"), what: str = "answers file") -> list[tuple[int, dict]]:
    """`read_answers` with the line each answer is on: (line, row) pairs.

    """
    path = Path(path)
    lookup = None if ids is None else {_canonical(i): i for i in ids}
    first_line: dict[Any, int] = {}
    rows = []
    for line, row in read_objects(path, what):
        item_id = id_field(row, key, path, line, **ID_KINDS.get(key, {}))
        if lookup is not None:
            if _canonical(item_id) not in lookup:
                raise RecordError(f"{where(path, line)}: {key} {item_id!r} is not in {benchmark} "
                                  f"({len(lookup)} items): the file answers another question set", path, line)
            item_id = lookup[_canonical(item_id)]
        if item_id in first_line:
            raise RecordError(f"{where(path, line)}: {key} {item_id!r} is answered again (first on line "
                              f"{first_line[item_id]}); each item must be answered once (two files joined?)",
                              path, line)
        first_line[item_id] = line
        answer = text_field(row, text, path, line, limit=MAX_ANSWER_CHARS)
        rows.append((line, {**row, key: item_id, "answer": answer}))
    return rows


def _canonical(item_id: Any) -> str:
    return str(item_id)


def refuse_duplicates(rows: Iterable[Mapping], key: str, scorer: str) -> None:
    """For the pure scorers: the rows they are given must name each item once."""
    seen: dict = {}
    for i, row in enumerate(rows, 1):
        if row[key] in seen:
            raise MfpoError(f"{scorer}: {key} {row[key]!r} is answered twice (answers {seen[row[key]]} and {i}); "
                            "each item must be answered once")
        seen[row[key]] = i


# -- questions and other record files ----------------------------------------------------------------
def numbered_records(path: str | Path, required: Iterable[str] = (), what: str = "file") -> list[tuple[int, dict]]:
    """(line, object) of a JSON-lines or JSON-list file; a missing `required` key is one line naming it."""
    path = Path(path)
    required = tuple(required)
    rows = read_objects(path, what)
    for line, row in rows:
        missing = [k for k in required if k not in row]
        if missing:
            raise RecordError(f"{where(path, line)}: missing field {missing[0]!r}", path, line)
    return rows


def read_records(path: str | Path, required: Iterable[str] = (), what: str = "file") -> list[dict]:
    """Every JSON object of a JSON-lines (or JSON list) file, in order, each checked for `required` keys."""
    return [row for _, row in numbered_records(path, required, what)]


read_jsonl = read_records


# -- writing -----------------------------------------------------------------------------------------
def write_text(text: str, path: str | Path) -> Path:
    """`text` to `path` through a temp file and a rename (a reader sees the old file or the new one)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, text)
    return path


def jsonl_text(rows: Iterable[Mapping]) -> str:
    """The text `write_jsonl` writes (so a caller can hash a file before or without writing it)."""
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


def write_jsonl(rows: Iterable[Mapping], path: str | Path) -> Path:
    return write_text(jsonl_text(rows), path)


def write_json(obj: Any, path: str | Path) -> Path:
    return write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", path)
