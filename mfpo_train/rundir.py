"""The output folder of a training run: never a folder of the user's files, one run at a time, resumed only
with the settings it was trained with.

- `check_run_folder` refuses `/`, the home folder, a file, and a non-empty folder that holds no run of ours
  (`mfpo_data.folders.check_output_folder`): `train.output_dir` pointed at a model folder is refused before its
  `config.json` could be replaced. A fresh run (no `--resume`) also refuses a folder that holds a run already.
- `claim_run_folder` checks the folder and holds its lock (`mfpo_data.folders.FolderLock`) on the main process
  for the whole run: a second `mfpo-train` into the folder gets one line naming the first one's pid. With
  several processes the others wait for the main one's verdict: they neither check the folder while it is being
  written nor take the lock, and a refusal is raised on every process (`processes.main_decides`).
- `check_same_run` refuses `--resume` with a config that changes what the checkpoint's tensors or data
  position mean (the LoRA rank, the model, the data, the batch size, ...), naming the key.
- `check_processes` lets a run resume with another number of processes only where that is exact: the same pairs
  per optimizer step (processes x batch_size x gradient_accumulation_steps), every stage a whole number of such
  steps, and no dropout (its masks come from each process's random stream); otherwise it refuses in one line.

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
    "train.batch_size", "train.seed",
)  # fmt: skip
# train.gradient_accumulation_steps may change with the number of processes, as long as the pairs per optimizer
# step stay the same (`check_processes`).


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
def claim_run_folder(output_dir: str | Path, resume: bool, accelerator) -> Iterator[None]:
    """`check_run_folder` and the folder's lock, on the main process, for as long as the run lasts; the other
    processes write in its shadow (see the module notes)."""
    from mfpo_train.processes import main_decides

    with contextlib.ExitStack() as stack:

        def claim() -> None:
            root = check_run_folder(output_dir, resume)
            root.mkdir(parents=True, exist_ok=True)
            stack.enter_context(FolderLock(root, "mfpo-train run"))

        main_decides(accelerator, claim)
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


def check_processes(root: Path, saved_world: int, world: int, train_cfg, lora_dropout: float,
                    stage_rows: list[int]) -> None:
    """Refuse a resume in `root` whose pairs per optimizer step differ from the checkpoint's, or that changes the
    number of processes where the continued run would not be exact (see the module notes).

    `saved_world`: the processes that wrote the checkpoint; `world`: those resuming it; `train_cfg`: the config's
    `train` section now; `stage_rows`: the rows of each curriculum stage.
    """
    previous = (read_run_config(root) or {}).get("train", {})
    batch, accum = train_cfg.batch_size, train_cfg.gradient_accumulation_steps
    accum_before = previous.get("gradient_accumulation_steps", accum)
    before, now = saved_world * batch * accum_before, world * batch * accum
    where = scrub(str(root))
    if before != now:
        fix = (f"set train.gradient_accumulation_steps={before // (world * batch)}" if before % (world * batch) == 0
               else f"resume with {saved_world} processes")
        raise TrainingError(f"--resume: the run in {where} took {before} pairs per optimizer step ({saved_world} processes x "
                            f"batch_size {batch} x gradient_accumulation_steps {accum_before}), now {now} ({world} x {batch} "
                            f"x {accum}); its data position and schedule count steps of {before} pairs: {fix}")
    if saved_world == world:
        return
    uneven = next((n for n in stage_rows if n % now), None)
    if uneven is not None:
        raise TrainingError(f"--resume with {world} processes instead of {saved_world}: a stage of {uneven} rows is not a "
                            f"whole number of steps of {now} pairs, so its last step would group the pairs differently "
                            f"and the run would not continue exactly; resume the run in {where} with {saved_world} processes")
    if lora_dropout > 0:
        raise TrainingError(f"--resume with {world} processes instead of {saved_world}: lora.dropout {lora_dropout} draws "
                            "its masks from each process's random stream, which cannot be carried over to another number "
                            f"of processes; resume the run in {where} with {saved_world} processes")
