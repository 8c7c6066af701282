"""How a heavy backend loads its model: which device and dtype, once per process, by model id.

`load_once(key, loader)` keeps one object per key in the worker process. datatrove gives every task
a fresh copy of the pipeline (deepcopy or pickle), so a model kept on the backend instance would load
again for every task; kept here, it loads once per process. Heavy backends call it from their lazy
load, with a key that names everything that decides the weights (model id, revision, device, dtype).

`device_for_rank(device, rank)`: "auto" is `cuda:{rank % n}` with n visible GPUs, else "cpu". Locally,
run `workers` = n GPUs (and `tasks` = `workers`, so no two running tasks share a GPU); on Slurm and
Ray each task sees only its own GPU(s), so every rank gets `cuda:0` of its own allocation.

`device_turn(device)`: one model stage on a GPU at a time (the stages of a rank run in threads).

`ModelBackend` keeps the rank a stage hands over and turns `device` / `dtype` options into torch
values; `load_pretrained` is the one transformers loader (model + processor). Nothing here imports
torch at module level: config validation imports backend modules to read their signatures.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Hashable, Iterator
from typing import Any

from mfpo_data._deps import hub_offline, loading_model, missing_model_message, model_in_reach, require
from mfpo_data.backends.base import Described
from mfpo_data.errors import MissingModelError


logger = logging.getLogger(__name__)

_LOADED: dict[Hashable, Any] = {}
_LOCKS: dict[Hashable, threading.Lock] = {}
_LOCKS_GUARD = threading.Lock()


def lock_for(key: Hashable) -> threading.Lock:
    """The one lock of `key` in this process (stages run in threads of their own, `pipeline/overlap.py`)."""
    with _LOCKS_GUARD:
        return _LOCKS.setdefault(key, threading.Lock())


@contextlib.contextmanager
def device_turn(device) -> Iterator[None]:
    """One model stage on an accelerator at a time. A rank's model stages run in threads of their own
    (`pipeline/overlap.py`), so without this a batch of one (SAM's) and a batch of another (SD inpainting's)
    would hold their activations on the GPU together and run out of memory where either alone fits. Backends
    hold it around their model calls only, so their CPU work (processors, post-processing) still overlaps;
    the device's peak is the largest stage's batch, not the sum. A CPU device is not held."""
    name = str(device)
    if not name.startswith(("cuda", "mps")):
        yield
        return
    with lock_for(("device", name)):
        yield


def load_once(key: Hashable, loader: Callable[[], Any]) -> Any:
    """`loader()` the first time `key` is asked for in this process; the same object afterwards. Two stage
    threads that share a model wait for one load of it."""
    if key in _LOADED:
        return _LOADED[key]
    with lock_for(("load", key)):
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


DTYPES = ("auto", "float32", "float16", "bfloat16")


def resolve_dtype(dtype: str, device: str, half: str | None = "bfloat16"):
    """A torch dtype. `auto` is the model's half precision `half` on a CUDA GPU and float32 on the CPU
    and on Apple's MPS. `half="bfloat16"` (models whose activations outgrow float16's range: language
    models) is bfloat16 where the card computes in it natively (Ampere and later) and float16 on older
    cards; `"float16"` (vision models: 3 more bits of mantissa keep boxes and mask edges in place) is
    float16 on every card; None (a model that does not run in half precision) is float32."""
    import torch

    if dtype == "auto":
        dtype = "float32"
        if half is not None and device.startswith("cuda"):
            dtype = "bfloat16" if half == "bfloat16" and _native_bf16(torch) else "float16"
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")
    return getattr(torch, dtype)


def _native_bf16(torch) -> bool:
    """Whether the current CUDA card computes in bfloat16 itself; torch >= 2.4 otherwise counts an
    emulation that is slower than float16 (T4, V100) as support."""
    try:
        return bool(torch.cuda.is_bf16_supported(including_emulation=False))
    except TypeError:  # torch < 2.4: no emulation to exclude
        return bool(torch.cuda.is_bf16_supported())


class ModelBackend(Described):
    """Base of the backends that load a model: keeps the rank that `MapStage` hands over in `setup`,
    to place the model on that rank's device. Subclasses set `self.device`, `self.dtype`,
    `self.model_id` and `self.revision`, and say which recipe section they serve (`SECTION`) and which
    pip extra brings their libraries (`EXTRA`, `MODULES`)."""

    SECTION = ""
    EXTRA = ""
    MODULES: tuple[str, ...] = ("torch", "transformers")
    device: str
    dtype: str
    model_id: str
    revision: str | None = None
    HALF: str | None = "bfloat16"  # `dtype: auto` on a GPU, see `resolve_dtype`
    _rank = 0

    @property
    def model_key(self) -> str:
        return f"{self.SECTION}.model_id"

    def require(self) -> None:
        """A one-line `MissingExtraError` naming `pip install -e ".[EXTRA]"` unless the libraries import."""
        require_extra(self.EXTRA, f"{self.SECTION} backend '{self.backend}'", *self.MODULES)

    def check_available(self) -> str | None:
        """What `validate` checks without loading anything: the libraries import (else `MissingExtraError`)
        and the model is a local folder or in the Hub cache. Returns None when it is; else a note when the
        model will be downloaded, and `MissingModelError` when the Hub is offline."""
        self.require()
        if model_in_reach(self.model_id, self.revision):
            return None
        if hub_offline():
            raise MissingModelError(missing_model_message(self.model_id, self.model_key))
        return f"{self.model_key}: {self.model_id} is not in the Hugging Face cache; the build will download it"

    def setup(self, rank: int, world_size: int) -> None:
        self._rank = rank

    def half_precision(self) -> str | None:
        """What `dtype: auto` is on a GPU (`resolve_dtype`'s `half`): the class's `HALF`."""
        return self.HALF

    def device_and_dtype(self):
        """This rank's device (`device_for_rank`) and the torch dtype to load the model in there."""
        device = device_for_rank(self.device, self._rank)
        return device, resolve_dtype(self.dtype, device, half=self.half_precision())


def require_extra(extra: str, feature: str, *modules: str) -> None:
    """A one-line `MissingExtraError` naming `pip install -e ".[extra]"` unless the modules import."""
    require(*(modules or ("torch", "transformers")), extra=extra, feature=feature)


def load_pretrained(
    model_class: str, model_id: str, revision: str | None, device: str, dtype, trust_remote_code: bool,
    key: str = "model_id",
):
    """`transformers.<model_class>` and its `AutoProcessor`, on `device`, in eval mode, once per process.
    A model that is not there is one `MissingModelError` line naming the recipe `key`."""

    def load():
        import transformers

        kw = dict(revision=revision, trust_remote_code=trust_remote_code)
        with loading_model(model_id, key):
            processor = transformers.AutoProcessor.from_pretrained(model_id, **kw)
            model = getattr(transformers, model_class).from_pretrained(model_id, dtype=dtype, **kw)
        log_loaded(key, model_id, device, dtype)
        return model.to(device).eval(), processor

    return load_once((model_class, model_id, revision, device, str(dtype)), load)


def log_loaded(key: str, model_id: str, device: str, dtype) -> None:
    """One line per model a process loads: where it runs and in which precision (`dtype: auto` resolved)."""
    logger.info("%s: %s on %s in %s", key, model_id, device, str(dtype).removeprefix("torch."))


def load_checkpoint_file(path: str, sha256_prefix: str | None, key: str) -> dict:
    """The tensors of a `.pth` checkpoint file (the original Grounded-SAM packages' weights), read with
    `torch.load(weights_only=True)`: tensors and plain containers only, never other pickled objects. With
    `sha256_prefix` the file's sha256 must start with it. A missing, unreadable or mismatched file is one
    `MissingModelError` line naming the recipe `key`."""
    import hashlib
    from pathlib import Path

    import torch

    file = Path(path).expanduser()
    if not file.is_file():
        raise MissingModelError(f"no checkpoint file at {path} ({key}): download the .pth file and point {key} at it")
    if sha256_prefix:
        digest = hashlib.sha256()
        with file.open("rb") as f:
            for block in iter(lambda: f.read(1 << 22), b""):
                digest.update(block)
        if not digest.hexdigest().startswith(sha256_prefix.lower()):
            raise MissingModelError(f"{path} ({key}): its sha256 {digest.hexdigest()[:16]}... does not start with the "
                                    f"revision {sha256_prefix!r}")
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as e:  # pickle.UnpicklingError for other objects, RuntimeError for a file that is not a checkpoint
        first = (str(e).strip().splitlines() or [""])[0]
        raise MissingModelError(f"cannot read {path} ({key}) as a checkpoint of tensors (torch.load weights_only): "
                                f"{type(e).__name__}: {first[:200]}") from None
    if not isinstance(state, dict):
        raise MissingModelError(f"{path} ({key}) holds a {type(state).__name__}, not a dict of tensors")
    return state
