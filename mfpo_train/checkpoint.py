"""Checkpoints: adapters (or full weights), optimizer, scheduler, RNG and the data position.

Written through `accelerate.Accelerator.save_state`, so optimizer, scheduler and RNG states are saved the
way accelerate saves them for every backend (sharded under FSDP / DeepSpeed). For single-device and
DDP runs the model part is replaced by a hook: LoRA runs save only the adapters (peft's safetensors
format, the "ref" adapter included when the reference is refreshed), not a copy of the base model.

```
OUT/checkpoints/step-00000040/
  model/                 adapter_model.safetensors (+ ref/), or model.safetensors without LoRA
  reference.safetensors  only for a full-copy reference that has been refreshed
  optimizer.bin  scheduler.bin  random_states_0.pkl    accelerate's own files
  trainer_state.json     {global_step, stage_index, epoch, step_in_epoch, ...}
```
A checkpoint directory is written under a `.tmp` name and renamed when complete, so `--resume` never
picks up a half-written one.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

from mfpo_train.errors import TrainingError


logger = logging.getLogger(__name__)

STATE_FILE = "trainer_state.json"


@dataclass
class TrainState:
    global_step: int = 0  # optimizer steps done
    stage_index: int = 0  # the stage being trained (== number of stages when done)
    epoch: int = 0  # epoch within the stage
    step_in_epoch: int = 0  # optimizer steps done in this (stage, epoch); the data position
    nonfinite_steps: int = 0
    dropped_rows: int = 0


def checkpoint_dir(output_dir: Path, step: int) -> Path:
    return Path(output_dir) / "checkpoints" / f"step-{step:08d}"


def latest_checkpoint(output_dir: Path) -> Path | None:
    root = Path(output_dir) / "checkpoints"
    done = sorted(p for p in root.glob("step-*") if p.is_dir() and (p / STATE_FILE).is_file()) if root.is_dir() else []
    return done[-1] if done else None


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


def save_checkpoint(accelerator, output_dir: Path, state: TrainState, reference_model=None) -> Path:
    final = checkpoint_dir(output_dir, state.global_step)
    tmp = final.with_name(final.name + ".tmp")
    if accelerator.is_main_process and tmp.exists():
        shutil.rmtree(tmp)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    if accelerator.is_main_process:
        if reference_model is not None:
            from safetensors.torch import save_model

            save_model(reference_model, str(tmp / "reference.safetensors"))
        (tmp / STATE_FILE).write_text(json.dumps(asdict(state), indent=2))
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
    accelerator.wait_for_everyone()
    logger.info("saved checkpoint %s", final)
    return final


def load_checkpoint(accelerator, path: Path, reference_model=None) -> TrainState:
    accelerator.load_state(str(path))
    if reference_model is not None and (path / "reference.safetensors").is_file():
        from safetensors.torch import load_model

        load_model(reference_model, str(path / "reference.safetensors"))
    state = TrainState(**json.loads((path / STATE_FILE).read_text()))
    logger.info("resumed from %s at step %d", path, state.global_step)
    return state
