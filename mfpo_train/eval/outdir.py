"""The output folder of an evaluation: claimed, locked and guarded the way `mfpo-data build` guards its own.

- `claim(out)` (a context manager) refuses `/`, the home folder, a path that is a file and a non-empty
  folder that holds no `run.json` of ours (`mfpo_data.folders.check_output_folder`), then holds the
  folder's lock for the whole run, so a second `mfpo-eval run` into it gets one line naming the first
  one's pid (`mfpo_data.folders.FolderLock`), and marks the folder as ours with `OUT/run.json`.
- `check_settings(folder, settings)` writes the settings that decide the answers to `folder/run.json`,
  or refuses a folder whose run.json holds other settings, or one that is damaged (one line each).

Every run.json we write carries `"format": "mfpo-eval/1"`; that is how a folder is recognised as ours.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path

from mfpo_data.errors import MfpoError
from mfpo_data.folders import FolderLock, check_output_folder, output_root
from mfpo_data.scorers.io import RecordError, read_json, shown, write_json


SETTINGS_FILE = "run.json"
RUN_FORMAT = "mfpo-eval/1"
ROLES = ("model", "base")  # the per-model folders of `mfpo-eval run`


class EvalError(MfpoError):
    """An evaluation that cannot run as asked: other settings in the output folder, a damaged run.json.

    (A damaged answers file is `mfpo_data.backends.vlm.GenerationError`: generation resumes it.)"""


def read_settings(folder: Path) -> dict | None:
    """`folder/run.json` when it is ours (None when there is none); a damaged or foreign one is one line."""
    path = Path(folder) / SETTINGS_FILE
    if not path.exists():
        return None
    try:
        data = read_json(path, "run.json")
    except RecordError as e:
        raise EvalError(f"{e}; this run.json is damaged: remove {shown(path.parent)} to start over, "
                              "or choose another --out folder") from None
    if not isinstance(data, dict) or ("format" in data and data["format"] != RUN_FORMAT) or (
            "format" not in data and "suite" not in data):  # older runs wrote the settings without "format"
        raise EvalError(f"{shown(path)} is not a run.json of mfpo-eval (no \"format\": \"{RUN_FORMAT}\"); "
                              "choose another --out folder")
    return data


def is_eval_folder(root: Path) -> bool:
    """A folder an evaluation claimed: run.json of ours in it (or, from older runs, in model/ or base/)."""
    for folder in (root, *(root / r for r in ROLES)):
        with contextlib.suppress(EvalError):
            if read_settings(folder) is not None:
                return True
    return False


@contextlib.contextmanager
def claim(out: str | Path, what: str = "mfpo-eval run") -> Iterator[Path]:
    """Check, create and lock the output folder `out`; yields its absolute path (see the module notes)."""
    root = check_folder(out)
    root.mkdir(parents=True, exist_ok=True)
    with FolderLock(root, what):
        if (root / SETTINGS_FILE).exists():
            read_settings(root)  # damaged or foreign: one line before anything is written
        else:
            write_json({"format": RUN_FORMAT}, root / SETTINGS_FILE)
        yield root


def check_folder(out: str | Path) -> Path:
    """The absolute output folder, refused when an evaluation must not write there (nothing is created)."""
    root = output_root(out)
    check_output_folder(root, is_eval_folder, ours="mfpo-eval run (run.json)", choose="choose another --out folder")
    return root


def check_settings(folder: str | Path, settings: dict, *, write: bool = True) -> None:
    """Write `settings` to FOLDER/run.json, or refuse when the folder holds a run with other settings.

    `write=False` only checks (nothing is created).
    """
    folder = Path(folder)
    settings = json.loads(json.dumps(settings))  # normalise tuples, paths
    previous = read_settings(folder)
    if previous is not None and set(previous) != {"format"}:
        previous.pop("format", None)
        if previous != settings:
            diff = "; ".join(differences(previous, settings))
            raise EvalError(f"{shown(folder)} holds a run with other settings ({diff}; see "
                            f"{shown(folder / SETTINGS_FILE)}); use another --out folder, or remove it to start over")
        return
    if write:
        write_json({"format": RUN_FORMAT, **settings}, folder / SETTINGS_FILE)


def differences(there: dict, now: dict) -> list[str]:
    """`key: <value in the folder> there, <value asked> now` for every setting that differs, nested ones
    (the suite's) by their own name."""
    out = []
    for key in sorted(set(there) | set(now)):
        a, b = there.get(key, _UNSET), now.get(key, _UNSET)
        if a == b:
            continue
        if isinstance(a, dict) and isinstance(b, dict):
            out.extend(differences(a, b))
        else:
            out.append(f"{key}: {_value(a)} there, {_value(b)} now")
    return out


_UNSET = object()


def _value(value) -> str:
    return "(not set)" if value is _UNSET else shown(value) if isinstance(value, str) else json.dumps(value)


def check_scope(root: Path, benchmarks: list[str], roles: list[str]) -> None:
    """Refuse a rerun into `root` that would rewrite its results.json and results.md without some of the
    benchmarks or models (`--base`) they hold: a subset run would silently drop the earlier numbers."""
    path = root / "results.json"
    if not path.is_file():
        return
    try:
        data = read_json(path, "results.json")
        held = list(data["mfpo_eval"]["benchmarks"])
        held_roles = [m["role"] for m in data["models"]]
    except (RecordError, KeyError, TypeError):
        raise EvalError(f"{shown(path)} is damaged (no mfpo_eval.benchmarks or models[].role); use another --out "
                        "folder") from None
    dropped = [b for b in held if b not in benchmarks] + [f"the {r} model" for r in held_roles if r not in roles]
    if dropped:
        raise EvalError(f"{shown(root)} holds a run of benchmarks {', '.join(held)} for {' and '.join(held_roles)}; "
                        f"this run would rewrite its results without {', '.join(dropped)}: use another --out folder, "
                        "or the same --benchmarks and models")
