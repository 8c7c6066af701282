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
    invalid_rows: int = 0  # rows data.row_problem refuses: empty answers, images that do not match
    world_size: int = 1  # the processes that trained the last steps (checkpoints before it was recorded: 1)


def saved_world_size(path: Path) -> int:
    """The number of processes a checkpoint was written by, read before `read_state` checks the rest (1 when the
    state does not say; a damaged state is refused by `read_state`)."""
    try:
        value = json.loads((Path(path) / STATE_FILE).read_text(encoding="utf-8")).get("world_size", 1)
    except (OSError, ValueError, AttributeError, RecursionError):
        return 1
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 1 else 1


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


def check_metrics(path: Path) -> list[tuple[int, int]]:
    """(line, step) of every logged step of a run's metrics file; a damaged line is one line to fix or delete.

    A last line without its newline (the crash came while it was written) is not read: `trim_metrics` cuts it.
    """
    from mfpo_data.scorers.io import RecordError, decode, parse_objects, where

    if not path.is_file():
        return []
    data = path.read_bytes()
    complete = data[: data.rfind(b"\n") + 1]  # a torn last line is left out
    steps = []
    try:
        for line, row in parse_objects(decode(complete, path, "metrics file"), path):
            step = row.get("step")
            if not isinstance(step, int) or isinstance(step, bool) or step < 0:
                raise RecordError(f"{where(path, line)}: 'step' must be a whole number >= 0, got {step!r}", path, line)
            steps.append((line, step))
    except RecordError as e:
        raise TrainingError(f"{e}; fix line {e.line} of the metrics file, or delete it, and rerun with --resume") from None
    return steps


def trim_metrics(path: Path, step: int) -> None:
    """Keep the logged steps up to `step` (the checkpoint resumed from): later ones are trained and logged again."""
    if not path.is_file():
        return
    logged = check_metrics(path)
    lines = path.read_bytes().split(b"\n")
    keep = {line for line, logged_step in logged if logged_step <= step}
    kept = [raw + b"\n" for i, raw in enumerate(lines, 1) if i in keep]
    if sum(1 for raw in lines if raw.strip()) != len(kept):
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(b"".join(kept))
        tmp.replace(path)
        logger.info("resume at step %d: dropped %d logged lines after it from %s", step,
                    sum(1 for raw in lines if raw.strip()) - len(kept), path)


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
    # accelerate's pickled RNG state, which ours replaces; each process removes its own (another's may be gone already)
    (tmp / f"random_states_{accelerator.process_index}.pkl").unlink(missing_ok=True)
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


def read_state(path: Path, steps_per_epoch: list[int], epochs_per_stage: int) -> TrainState:
    """The checkpoint's trainer state, every field checked before anything is loaded or written.

    Each field must be a whole number >= 0; the position (stage, epoch, step in the epoch) must lie inside
    this run's curriculum (`steps_per_epoch` per stage) and add up to `global_step`, which must be the step
    the checkpoint's folder is named after. A damaged state is one line, never a run that restarts or ends.
    """
    from mfpo_data.scorers.io import RecordError, read_json

    path = Path(path)
    verify_checkpoint(path)
    file = path / STATE_FILE
    try:
        data = read_json(file, "trainer state")
    except RecordError as e:
        raise TrainingError(f"{e}; the checkpoint cannot be resumed") from None
    fields = list(TrainState.__dataclass_fields__)
    if not isinstance(data, dict) or set(data) - set(fields) or not set(fields[:4]) <= set(data):
        raise TrainingError(f"{file}: not a trainer state (a JSON object with {', '.join(fields)})")
    for name, value in data.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise TrainingError(f"{file}: {name} must be a whole number >= 0, got {value!r}")
    state = TrainState(**data)
    if state.world_size < 1:
        raise TrainingError(f"{file}: world_size must be >= 1, got {state.world_size}")
    stages = len(steps_per_epoch)

    def refuse(why: str) -> TrainingError:
        return TrainingError(f"{file}: {why}; the checkpoint does not belong to this run's data and curriculum "
                             f"({stages} stages of {steps_per_epoch} steps, {epochs_per_stage} epochs each)")

    if state.stage_index > stages:
        raise refuse(f"stage_index {state.stage_index} is past the last stage")
    if state.stage_index == stages and (state.epoch or state.step_in_epoch):
        raise refuse(f"a finished run cannot be at epoch {state.epoch}, step {state.step_in_epoch}")
    if state.stage_index < stages and state.epoch >= epochs_per_stage:
        raise refuse(f"epoch {state.epoch} is past the stage's last epoch")
    if state.stage_index < stages and state.step_in_epoch > steps_per_epoch[state.stage_index]:
        raise refuse(f"step_in_epoch {state.step_in_epoch} is past the epoch's {steps_per_epoch[state.stage_index]}")
    position = sum(steps_per_epoch[: state.stage_index]) * epochs_per_stage + state.step_in_epoch + (
        state.epoch * steps_per_epoch[state.stage_index] if state.stage_index < stages else 0)
    if position != state.global_step:
        raise refuse(f"global_step {state.global_step} is not the step its position gives ({position})")
    if path.name != checkpoint_dir(path.parent.parent, state.global_step).name:
        raise TrainingError(f"{file}: global_step {state.global_step} does not match the checkpoint's name {path.name}")
    if state.nonfinite_steps > state.global_step:
        raise TrainingError(f"{file}: nonfinite_steps {state.nonfinite_steps} exceeds global_step {state.global_step}")
    return state


def check_same_shapes(path: Path, lora) -> None:
    """Refuse a checkpoint whose LoRA adapters have another rank or alpha than the config asks for."""
    from mfpo_data.scorers.io import RecordError, read_json

    file = Path(path) / "model" / "adapter_config.json"
    if not file.is_file():
        if lora.enabled and (Path(path) / "model" / "model.safetensors").is_file():
            raise TrainingError(f"checkpoint {path} holds full model weights (trained without LoRA), but "
                                "lora.enabled is true; resume with the run's settings")
        return
    try:
        saved = read_json(file, "adapter config")
    except RecordError as e:
        raise TrainingError(str(e)) from None
    if not lora.enabled:
        raise TrainingError(f"checkpoint {path} holds LoRA adapters, but lora.enabled is false; resume with LoRA on")
    for key, value in (("r", lora.r), ("lora_alpha", lora.alpha)):
        if isinstance(saved, dict) and saved.get(key) != value:
            raise TrainingError(f"checkpoint {path} has LoRA {key}={saved.get(key)!r}, the config asks for "
                                f"{'lora.r' if key == 'r' else 'lora.alpha'}={value!r}; resume with the run's LoRA "
                                "settings, or set train.output_dir to a new folder")


def load_checkpoint(accelerator, path: Path, state: TrainState, reference_model=None, *, scheduler=None,
                    restore_rng: bool = True) -> TrainState:
    """Load a checkpoint whose state `read_state` checked: the scheduler's state is checked against the
    scheduler's own before it is loaded, and whatever accelerate or safetensors cannot read is one line.

    `restore_rng=False` (another number of processes than the checkpoint's, allowed only without dropout):
    the per-process random states are not restored."""
    path = Path(path)
    saved_scheduler = _scheduler_state(path, scheduler, state.global_step) if scheduler is not None else None
    try:
        accelerator.load_state(str(path))
        if reference_model is not None and (path / "reference.safetensors").is_file():
            from safetensors.torch import load_model

            load_model(reference_model, str(path / "reference.safetensors"))
    except Exception as e:  # noqa: BLE001 - torch, accelerate and safetensors each raise their own types
        detail = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise TrainingError(f"cannot load checkpoint {path} ({type(e).__name__}: {detail[:200]}); it is damaged or "
                            "from another model or config") from None
    if saved_scheduler is not None:
        scheduler.load_state_dict(saved_scheduler)
    if restore_rng:
        _load_rng_state(path, accelerator.process_index)
    logger.info("resumed from %s at step %d", path, state.global_step)
    return state


def _scheduler_state(path: Path, scheduler, global_step: int) -> dict:
    """scheduler.json, refused unless it has the keys and value types of `scheduler.state_dict()` and has
    stepped once per optimizer step."""
    from mfpo_data.scorers.io import RecordError, read_json

    file = path / SCHEDULER_FILE
    if not file.is_file():
        raise TrainingError(f"checkpoint {path} has no {SCHEDULER_FILE}: it cannot be resumed exactly")
    try:
        saved = read_json(file, "scheduler state")
    except RecordError as e:
        raise TrainingError(f"{e}; the checkpoint cannot be resumed") from None
    template = json.loads(json.dumps(scheduler.state_dict()))
    if not isinstance(saved, dict) or set(saved) != set(template):
        raise TrainingError(f"{file}: not the state of this run's scheduler (keys {sorted(template)})")
    for key, value in template.items():
        if not _same_shape(saved[key], value):
            raise TrainingError(f"{file}: {key} must look like {json.dumps(value)[:60]}, got {json.dumps(saved[key])[:60]}")
    if saved.get("last_epoch") != global_step:
        raise TrainingError(f"{file}: last_epoch {saved.get('last_epoch')!r} is not the checkpoint's step {global_step}")
    return saved


def _same_shape(value, template) -> bool:
    """`value` has `template`'s JSON type (a whole number for a whole number, any number for a fraction, a list
    of as many items of the same shapes)."""
    if isinstance(template, bool) or template is None:
        return type(value) is type(template)
    if isinstance(template, int):
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(template, float):
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if isinstance(template, list):
        return isinstance(value, list) and len(value) == len(template) and all(
            _same_shape(v, t) for v, t in zip(value, template, strict=True))
    if isinstance(template, dict):
        return isinstance(value, dict) and set(value) == set(template) and all(
            _same_shape(value[k], t) for k, t in template.items())
    return type(value) is type(template)


def verify_checkpoint(path: Path) -> None:
    """Refuse a checkpoint whose files are not exactly the ones its manifest lists, with the same sha256."""
    manifest = path / MANIFEST_FILE
    try:
        expected = json.loads(manifest.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise TrainingError(f"checkpoint {path} has no {MANIFEST_FILE}: refusing to load files nobody vouched "
                            "for (it was not written by this version of mfpo-train, or is incomplete)") from None
    except (ValueError, RecursionError) as e:  # not JSON, not UTF-8, nested too deeply
        raise TrainingError(f"{manifest} is not valid JSON ({str(e)[:120]}): refusing the checkpoint") from None
    if not isinstance(expected, dict):
        raise TrainingError(f"{manifest} is not a manifest (a JSON object of file -> sha256): refusing the checkpoint")
    pickles = sorted(f.relative_to(path).as_posix() for f in path.rglob("*.pkl"))
    if pickles:  # never written by mfpo-train (see the module notes), so never loaded, vouched for or not
        raise TrainingError(f"checkpoint {path} holds pickle files mfpo-train never writes ({', '.join(pickles)}); "
                            "refusing to load it")
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
