"""Checkpoints: adapters (or full weights), optimizer, scheduler, RNG and the data position.

Model and optimizer go through `accelerate.Accelerator.save_state`, so they are saved the way accelerate
saves them for every backend (sharded under FSDP / DeepSpeed). For single-device and DDP runs the model
part is replaced by a hook: LoRA runs save only the adapters (peft's safetensors format, the "ref"
adapter included when the reference is refreshed), not a copy of the base model.

Resuming loads no code. accelerate pickles registered objects (`custom_checkpoint_*.pkl`, read back with
`weights_only=False`) and RNG states (`random_states_*.pkl`); we register nothing and write the scheduler
state as JSON and the RNG states as safetensors + JSON ourselves. The optimizer file is read by
accelerate with `weights_only=True`. Every file's sha256 is listed in `manifest.json`, written last: a
checkpoint with a changed, missing or extra file (a planted pickle, a flipped byte) is refused before
anything in it is read.

```
OUT/checkpoints/step-00000040/
  model/                 adapter_model.safetensors (+ ref/), or model.safetensors without LoRA
  reference.safetensors  only for a full-copy reference that has been refreshed
  optimizer.bin          accelerate's (tensors only; loaded with weights_only=True)
  scheduler.json         the LR scheduler's state_dict
  rng_state_{rank}.safetensors / .json   torch (CPU, CUDA) / Python and NumPy generator states
  trainer_state.json     {global_step, stage_index, epoch, step_in_epoch, ...}
  manifest.json          {file: sha256} of everything above
```
A checkpoint directory is written under a `.tmp` name and renamed when complete, so `--resume` never
picks up a half-written one. `train.save_total_limit` keeps the newest N.
"""

from __future__ import annotations

import json
import logging
import random
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

from mfpo_data.layout import sha256_file
from mfpo_train.errors import TrainingError


logger = logging.getLogger(__name__)

STATE_FILE = "trainer_state.json"
MANIFEST_FILE = "manifest.json"
SCHEDULER_FILE = "scheduler.json"


@dataclass
class TrainState:
    global_step: int = 0  # optimizer steps done
    stage_index: int = 0  # the stage being trained (== number of stages when done)
    epoch: int = 0  # epoch within the stage
    step_in_epoch: int = 0  # optimizer steps done in this (stage, epoch); the data position
    nonfinite_steps: int = 0
    dropped_rows: int = 0  # prompt with image tokens >= max_length
    undecodable_rows: int = 0  # image bytes that cannot be decoded


def checkpoint_dir(output_dir: Path, step: int) -> Path:
    return Path(output_dir) / "checkpoints" / f"step-{step:08d}"


def latest_checkpoint(output_dir: Path) -> Path | None:
    root = Path(output_dir) / "checkpoints"
    return (finished_checkpoints(output_dir) or [None])[-1]


def finished_checkpoints(output_dir: Path) -> list[Path]:
    """The complete checkpoints in `output_dir`, oldest first (`.tmp` folders are half-written ones)."""
    root = Path(output_dir) / "checkpoints"
    if not root.is_dir():
        return []
    return sorted(p for p in root.glob("step-*") if p.is_dir() and not p.name.endswith(".tmp")
                  and (p / STATE_FILE).is_file())


def resolve_resume(resume: bool | str | Path, output_dir: Path) -> Path | None:
    """`True`: the latest checkpoint in `output_dir` (none: start fresh); a path: that checkpoint."""
    if not resume:
        return None
    if resume is True:
        found = latest_checkpoint(output_dir)
        if found is None:
            logger.warning("--resume: no checkpoint in %s; starting from the beginning", output_dir)
        return found
    path = Path(resume)
    if not (path / STATE_FILE).is_file():
        raise TrainingError(f"not a checkpoint (no {STATE_FILE}): {path}")
    return path


# What a run that trained at least one step leaves in its output folder. config.json alone is not one: a run
# that failed before its first step (a wrong model path) must not claim the folder for the corrected command.
RUN_MARKERS = ("metrics.jsonl", "checkpoints", "final")


def refuse_existing_run(output_dir: Path) -> None:
    """A fresh run never writes into a folder that holds another run (it would append to its metrics)."""
    found = [name for name in RUN_MARKERS if (Path(output_dir) / name).exists()]
    if found:
        raise TrainingError(f"{output_dir} holds a training run already ({', '.join(found)}): pass --resume to "
                            "continue it, or set train.output_dir to a new folder")


def trim_metrics(path: Path, step: int) -> None:
    """Keep the logged steps up to `step` (the checkpoint resumed from): later ones are trained and logged again."""
    if not path.is_file():
        return
    lines = path.read_text().splitlines(keepends=True)
    kept = [line for line in lines if line.strip() and _logged_step(line) <= step]
    if len(kept) != len(lines):
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text("".join(kept))
        tmp.replace(path)
        logger.info("resume at step %d: dropped %d logged steps after it from %s", step, len(lines) - len(kept), path)


def _logged_step(line: str) -> float:
    try:
        return json.loads(line).get("step", float("inf"))
    except ValueError:  # a line cut short by the crash
        return float("inf")


def register_hooks(accelerator) -> None:
    """Replace accelerate's full-model save/load with adapter-only files (single device and DDP)."""

    def save_hook(models, weights, output_dir):
        if not weights:  # FSDP / DeepSpeed: accelerate saves the (sharded) model itself
            return
        for model in models:
            unwrapped = accelerator.unwrap_model(model)
            if accelerator.is_main_process:
                _save_model(unwrapped, Path(output_dir) / "model")
        weights.clear()

    def load_hook(models, input_dir):
        folder = Path(input_dir) / "model"
        if not folder.is_dir():
            return
        while models:
            _load_model(accelerator.unwrap_model(models.pop()), folder)

    accelerator.register_save_state_pre_hook(save_hook)
    accelerator.register_load_state_pre_hook(load_hook)


def _save_model(model, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    if hasattr(model, "peft_config"):
        model.save_pretrained(folder)  # every adapter; non-default ones in sub-folders
    else:
        from safetensors.torch import save_model

        save_model(model, str(folder / "model.safetensors"))


def _load_model(model, folder: Path) -> None:
    from safetensors.torch import load_file, load_model

    if hasattr(model, "peft_config"):
        from peft import set_peft_model_state_dict

        for name in model.peft_config:
            sub = folder if name == "default" else folder / name
            set_peft_model_state_dict(model, load_file(str(sub / "adapter_model.safetensors")), adapter_name=name)
    else:
        load_model(model, str(folder / "model.safetensors"))


def save_checkpoint(accelerator, output_dir: Path, state: TrainState, reference_model=None, *, scheduler=None,
                    keep: int | None = None) -> Path:
    final = checkpoint_dir(output_dir, state.global_step)
    tmp = final.with_name(final.name + ".tmp")
    if accelerator.is_main_process and tmp.exists():
        shutil.rmtree(tmp)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    for stale in tmp.glob("random_states_*.pkl"):  # accelerate's pickled RNG states: ours replace them
        stale.unlink()
    _save_rng_state(tmp, accelerator.process_index)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        if reference_model is not None:
            from safetensors.torch import save_model

            save_model(reference_model, str(tmp / "reference.safetensors"))
        if scheduler is not None:
            (tmp / SCHEDULER_FILE).write_text(json.dumps(scheduler.state_dict(), indent=2))
        (tmp / STATE_FILE).write_text(json.dumps(asdict(state), indent=2))
        (tmp / MANIFEST_FILE).write_text(json.dumps(_file_hashes(tmp), indent=2, sort_keys=True))
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
        if keep is not None:
            for old in finished_checkpoints(output_dir)[:-keep]:
                shutil.rmtree(old)
                logger.info("removed checkpoint %s (train.save_total_limit=%d)", old, keep)
    accelerator.wait_for_everyone()
    logger.info("saved checkpoint %s", final)
    return final


def load_checkpoint(accelerator, path: Path, reference_model=None, *, scheduler=None) -> TrainState:
    path = Path(path)
    verify_checkpoint(path)
    try:
        state = TrainState(**json.loads((path / STATE_FILE).read_text()))
    except (ValueError, TypeError) as e:
        raise TrainingError(f"{path / STATE_FILE} is not a valid trainer state: {e}") from None
    accelerator.load_state(str(path))
    if reference_model is not None and (path / "reference.safetensors").is_file():
        from safetensors.torch import load_model

        load_model(reference_model, str(path / "reference.safetensors"))
    if scheduler is not None:
        if not (path / SCHEDULER_FILE).is_file():
            raise TrainingError(f"checkpoint {path} has no {SCHEDULER_FILE}: it cannot be resumed exactly")
        scheduler.load_state_dict(json.loads((path / SCHEDULER_FILE).read_text()))
    _load_rng_state(path, accelerator.process_index)
    logger.info("resumed from %s at step %d", path, state.global_step)
    return state


def verify_checkpoint(path: Path) -> None:
    """Refuse a checkpoint whose files are not exactly the ones its manifest lists, with the same sha256."""
    manifest = path / MANIFEST_FILE
    try:
        expected = json.loads(manifest.read_text())
    except FileNotFoundError:
        raise TrainingError(f"checkpoint {path} has no {MANIFEST_FILE}: refusing to load files nobody vouched "
                            "for (it was not written by this version of mfpo-train, or is incomplete)") from None
    except ValueError as e:
        raise TrainingError(f"{manifest} is not valid JSON ({e}): refusing the checkpoint") from None
    got = _file_hashes(path)
    extra = sorted(set(got) - set(expected))
    missing = sorted(set(expected) - set(got))
    changed = sorted(f for f in set(got) & set(expected) if got[f] != expected[f])
    if extra or missing or changed:
        what = "; ".join(f"{label}: {', '.join(names)}" for label, names in
                         (("unexpected files", extra), ("missing files", missing), ("changed files", changed)) if names)
        raise TrainingError(f"checkpoint {path} does not match its manifest ({what}); refusing to load it")


def _file_hashes(folder: Path) -> dict[str, str]:
    out = {}
    for f in sorted(folder.rglob("*")):
        if f.is_file() and f.name != MANIFEST_FILE:
            out[f.relative_to(folder).as_posix()] = sha256_file(f)
    return out


def _save_rng_state(folder: Path, rank: int) -> None:
    import numpy as np
    import torch
    from safetensors.torch import save_file

    tensors = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, t in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"cuda_{i}"] = t
    save_file(tensors, str(folder / f"rng_state_{rank}.safetensors"))
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss = random.getstate()
    (folder / f"rng_state_{rank}.json").write_text(json.dumps({
        "python": [version, list(internal), gauss],
        "numpy": [kind, keys.tolist(), int(pos), int(has_gauss), float(cached)],
    }))


def _load_rng_state(folder: Path, rank: int) -> None:
    """Restore the generators; a missing or corrupt file is an error, never a silently inexact resume."""
    import numpy as np
    import torch
    from safetensors.torch import load_file

    files = (folder / f"rng_state_{rank}.safetensors", folder / f"rng_state_{rank}.json")
    try:
        tensors = load_file(str(files[0]))
        saved = json.loads(files[1].read_text())
        version, internal, gauss = saved["python"]
        kind, keys, pos, has_gauss, cached = saved["numpy"]
        py_state = (version, tuple(internal), gauss)
        np_state = (kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached)
        cuda = [tensors[f"cuda_{i}"] for i in range(torch.cuda.device_count()) if f"cuda_{i}" in tensors]
        random.setstate(py_state)
        np.random.set_state(np_state)
        torch.set_rng_state(tensors["torch"])
        if cuda and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(cuda)
    except Exception as e:  # safetensors, json, and the generators each raise their own types
        raise TrainingError(f"cannot restore the random state of rank {rank} from {folder} "
                            f"({type(e).__name__}: {e}); the run cannot be resumed exactly") from None
