"""Where a heavy backend's model lives and how often it loads.

`load_once(key, loader)` keeps one object per key in the worker process. datatrove gives every task
a fresh copy of the pipeline (deepcopy or pickle), so a model kept on the backend instance would load
again for every task; kept here, it loads once per process. Heavy backends call it from their lazy
load, with a key that names everything that decides the weights (model id, revision, device, dtype).

`device_for_rank(device, rank)`: "auto" is `cuda:{rank % n}` with n visible GPUs, else "cpu". Locally,
run `workers` = n GPUs (and `tasks` = `workers`, so no two running tasks share a GPU); on Slurm and
Ray each task sees only its own GPU(s), so every rank gets `cuda:0` of its own allocation.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any


_LOADED: dict[Hashable, Any] = {}


def load_once(key: Hashable, loader: Callable[[], Any]) -> Any:
    """`loader()` the first time `key` is asked for in this process; the same object afterwards."""
    if key not in _LOADED:
        _LOADED[key] = loader()
    return _LOADED[key]


def device_for_rank(device: str, rank: int) -> str:
    """Resolve "auto" for `rank`: GPU `rank % n` when n GPUs are visible, else the CPU."""
    if device != "auto":
        return device
    import torch

    n = torch.cuda.device_count()
    return f"cuda:{rank % n}" if n else "cpu"
