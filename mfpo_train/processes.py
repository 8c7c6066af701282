"""Several processes (`torchrun`, `accelerate launch`): which process this is, and decisions the main one takes.

- `launch_rank()`: the rank the launcher gave this process (`RANK`; 0 when it runs alone), known before any
  `Accelerator` exists, so the commands print their results and log their progress on the main process only
  (`quiet_other_ranks`).
- `make_accelerator(...)`: accelerate's `Accelerator`, refused when the launcher started several processes but
  accelerate sees one. On a machine without GPUs that happens unless `ACCELERATE_USE_CPU=true` is set: each
  process would then train on all the data by itself, into the same folder.
- `main_decides(accelerator, fn)`: `fn()` runs on the main process only (a folder check and its lock); a refusal
  there is raised on every process, so no rank races the main one into the folder or waits for it forever.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import TypeVar

from mfpo_data.errors import MfpoError
from mfpo_train.errors import TrainingError


T = TypeVar("T")


def launch_rank() -> int:
    """This process's global rank as the launcher set it (`RANK`), 0 when launched alone."""
    try:
        return int(os.environ.get("RANK", "0"))
    except ValueError:
        return 0


def launch_world_size() -> int:
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        return 1


def quiet_other_ranks() -> None:
    """On a process other than the main one: log warnings and errors only, each line naming the rank, and no
    progress bars (datasets, transformers); the main process logs and prints for the run."""
    rank = launch_rank()
    if rank == 0:
        return
    root = logging.getLogger()
    root.setLevel(logging.WARNING)
    for handler in root.handlers:
        handler.setFormatter(logging.Formatter(f"%(asctime)s %(levelname)s [rank {rank}] %(name)s: %(message)s"))
    import warnings

    warnings.filterwarnings("ignore")  # the main process shows each library warning once
    os.environ.update(HF_DATASETS_DISABLE_PROGRESS_BARS="1", HF_HUB_DISABLE_PROGRESS_BARS="1",
                      TRANSFORMERS_VERBOSITY="error")
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()


def make_accelerator(**kwargs):
    """`accelerate.Accelerator(**kwargs)`, refused (one line) when it runs fewer processes than were launched."""
    from accelerate import Accelerator

    accelerator = Accelerator(**kwargs)
    launched = launch_world_size()
    if launched > 1 and accelerator.num_processes != launched:
        raise TrainingError(
            f"launched as {launched} processes (WORLD_SIZE={launched}), but accelerate runs "
            f"{accelerator.num_processes} ({accelerator.distributed_type}): each would train on all the data into one "
            "folder. Without GPUs set ACCELERATE_USE_CPU=true (torchrun --nproc_per_node N with it trains on N CPU "
            "processes over gloo); with GPUs check that CUDA is visible")
    return accelerator


def main_decides(accelerator, fn: Callable[[], T]) -> T | None:
    """`fn()` on the main process; every process raises the refusal (`MfpoError`) it met, with its one line.

    Returns `fn()`'s result on the main process, None on the others.
    """
    result, refusal = None, None
    if accelerator.is_main_process:
        try:
            result = fn()
        except MfpoError as e:
            refusal = e
    if accelerator.num_processes > 1:
        from accelerate.utils import broadcast_object_list

        shared = broadcast_object_list([None if refusal is None else str(refusal)], from_process=0)[0]
        if shared is not None and refusal is None:
            raise TrainingError(shared)
    if refusal is not None:
        raise refusal
    return result
