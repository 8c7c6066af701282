"""The output folder of a training run: never a folder of the user's files, one run at a time, resumed only
with the settings it was trained with.

- `check_run_folder` refuses `/`, the home folder, a file, and a non-empty folder that holds no run of ours
  (`mfpo_data.folders.check_output_folder`): `train.output_dir` pointed at a model folder is refused before its
  `config.json` could be replaced. A fresh run (no `--resume`) also refuses a folder that holds a run already.
- `claim_run_folder` holds the folder's lock (`mfpo_data.folders.FolderLock`) on the main process for the
  whole run: a second `mfpo-train` into the folder gets one line naming the first one's pid.
- `check_same_run` refuses `--resume` with a config that changes what the checkpoint's tensors or data
  position mean (the LoRA rank, the model, the data, the batch size, ...), naming the key.

A folder is ours when its `config.json` is a training config (`model`, `train`, `loss` sections), which
every run writes before its first step.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from mfpo_data.folders import FolderLock, check_output_folder, output_root
from mfpo_data.secrets import scrub
from mfpo_train.errors import TrainingError


CONFIG_FILE = "config.json"
# What a run that trained at least one step leaves in its output folder. config.json alone is not one: a run
# that failed before its first step (a wrong model path) must not claim the folder for the corrected command.
RUN_MARKERS = ("metrics.jsonl", "checkpoints", "final")
# The config keys a resumed run must share with the run it continues: they decide the tensors' shapes and
# what the saved data position, optimizer and scheduler states mean. The rest (max_steps, save_every, lr,
# logging, workers, ...) may change between a run and its resume.
RESUME_KEYS = (
    "model.name_or_path", "model.revision", "lora.enabled", "lora.r", "lora.alpha", "lora.target_modules",
    "lora.exclude_modules", "data.dataset", "data.revision", "data.split", "data.max_length", "data.max_samples",
    "reference", "curriculum", "refresh_reference", "epochs_per_stage", "optim.scheduler", "optim.warmup_ratio",
    "train.batch_size", "train.gradient_accumulation_steps", "train.seed",
)  # fmt: skip


def read_run_config(root: Path) -> dict | None:
    """The training config a run wrote to `root/config.json`; None when there is none or it is not ours."""
    from mfpo_data.scorers.io import RecordError, read_json

    path = Path(root) / CONFIG_FILE
    if not path.is_file():
        return None
    try:
        data = read_json(path, "run config")
    except RecordError:
        return None
    ours = isinstance(data, dict) and all(isinstance(data.get(k), dict) for k in ("model", "train", "loss"))
    return data if ours and "output_dir" in data["train"] else None


def is_run_folder(root: Path) -> bool:
    return read_run_config(root) is not None


def check_run_folder(output_dir: str | Path, resume: bool) -> Path:
    """Refuse a folder a run must not write into (see the module notes); returns it, absolute."""
    root = output_root(output_dir)
    check_output_folder(root, is_run_folder, ours="mfpo-train run (config.json)",
                        choose="set train.output_dir to a new folder")
    if not resume:
        found = [name for name in RUN_MARKERS if (root / name).exists()]
        if found:
            raise TrainingError(f"{scrub(str(output_dir))} holds a training run already ({', '.join(found)}): pass "
                                "--resume to continue it, or set train.output_dir to a new folder")
    return root


@contextlib.contextmanager
def claim_run_folder(root: Path, main_process: bool) -> Iterator[None]:
    """The folder's lock, held by the main process while the run lasts (the other ranks write in its shadow)."""
    if not main_process:
        yield
        return
    root.mkdir(parents=True, exist_ok=True)
    with FolderLock(root, "mfpo-train run"):
        yield


def check_same_run(root: Path, config: dict) -> None:
    """Refuse to resume the run in `root` with a config that differs from its own in a `RESUME_KEYS` key."""
    previous = read_run_config(root)
    if previous is None:
        return
    for key in RESUME_KEYS:
        before, now = _get(previous, key), _get(config, key)
        if before != now:
            raise TrainingError(f"--resume: the run in {scrub(str(root))} was trained with {key}={before!r}, the "
                                f"config now says {now!r} (see {scrub(str(root / CONFIG_FILE))}); resume with the "
                                "run's settings, or set train.output_dir to a new folder")


def _get(config: dict, key: str):
    value = config
    for part in key.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return list(value) if isinstance(value, tuple) else value
