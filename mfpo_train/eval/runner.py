"""The folder of one model's evaluation: the settings that decide its answers, guarded across reruns.

Generation itself (loading any image-text-to-text model + a LoRA adapter, the chat template, batched
decoding, answers files written as they come and resumed after a kill) is `mfpo_data.backends.vlm`,
which the build's on-policy source shares. The settings that decide the answers (model, adapter,
decoding, prompts) are written beside the answers on the first run; a rerun with other settings into
the same folder is refused.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

from mfpo_data.errors import MfpoError


SETTINGS_FILE = "run.json"


class EvalError(MfpoError):
    """An evaluation that cannot run as asked: other settings in the output folder."""


def check_settings(folder: str | Path, settings: dict) -> None:
    """Write `settings` to FOLDER/run.json, or refuse when the folder holds a run with other settings."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / SETTINGS_FILE
    settings = json.loads(json.dumps(settings))  # normalise tuples, paths
    if path.is_file():
        previous = json.loads(path.read_text())
        if previous != settings:
            diff = sorted(k for k in set(previous) | set(settings) if previous.get(k) != settings.get(k))
            raise EvalError(f"{folder} holds a run with other settings ({', '.join(diff)} differ, see {path}); "
                            "use another --out folder, or remove it to start over")
        return
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(settings, indent=2, sort_keys=True))
    tmp.replace(path)


def items_hash(items: Sequence[dict]) -> str:
    """sha256 over the items' keys and prompts (the images are named by the keys)."""
    h = hashlib.sha256()
    for it in items:
        h.update(f"{it['key']}\t{it['prompt']}\n".encode())
    return h.hexdigest()
