"""What a stage needs to survive a failed backend call: put its samples back as they were, tell an
out-of-memory error from other errors, free memory, and turn an exception into a drop reason.

Nothing here imports torch: an out-of-memory error is recognised by its class name (torch's
`OutOfMemoryError`) or its message ("CUDA out of memory", MPS's "out of memory"), and torch's cache
is emptied only when torch is already loaded.
"""

from __future__ import annotations

import copy
import dataclasses
import gc
import sys
from typing import Any

from mfpo_data.schema import Sample


_FIELDS = tuple(f.name for f in dataclasses.fields(Sample))
REASON_DETAIL_CHARS = 300  # a reason keeps the first line of the error's message, cut to this length


def snapshot(sample: Sample) -> dict[str, Any]:
    """The sample's fields, copied deep enough that a failed `process_batch` cannot reach the copy:
    lists and dicts are copied, key objects one by one (segmentation sets their `mask`). Arrays are
    not copied: stages replace a sample's arrays, never write into them."""
    return {name: _copy(getattr(sample, name)) for name in _FIELDS}


def restore(sample: Sample, saved: dict[str, Any]) -> None:
    """Put back the fields `snapshot` saved, so that a retry starts from the sample as it was."""
    for name, value in saved.items():
        setattr(sample, name, _copy(value))


def _copy(value: Any) -> Any:
    if isinstance(value, list):
        return [copy.copy(v) for v in value]
    if isinstance(value, dict):
        return dict(value)
    return value


def is_out_of_memory(error: BaseException) -> bool:
    """torch's `OutOfMemoryError` (CUDA), or a RuntimeError that says "out of memory" (MPS, older CUDA)."""
    if any(c.__name__ == "OutOfMemoryError" for c in type(error).__mro__):
        return True
    return isinstance(error, RuntimeError) and "out of memory" in str(error).lower()


# CUDA errors after which the process's CUDA context is unusable: every later call fails as well.
STICKY_CUDA_ERRORS = ("device-side assert", "illegal memory access", "misaligned address", "illegal instruction",
                      "unspecified launch failure")  # fmt: skip


def breaks_the_device(error: BaseException) -> bool:
    """A CUDA error that leaves the device unusable in this process (a device-side assert, an illegal
    memory access): retrying the samples one by one would only fail each of them."""
    text = str(error)
    return isinstance(error, RuntimeError) and "CUDA" in text and any(m in text for m in STICKY_CUDA_ERRORS)


def free_memory() -> None:
    """Collect garbage, then return torch's cached GPU blocks to the device, when torch is loaded."""
    gc.collect()
    torch = sys.modules.get("torch")
    if torch is None:
        return
    cuda = getattr(torch, "cuda", None)
    if cuda is not None and cuda.is_available() and cuda.is_initialized():
        cuda.empty_cache()
    mps = getattr(torch, "mps", None)
    backends_mps = getattr(getattr(torch, "backends", None), "mps", None)
    if mps is not None and backends_mps is not None and backends_mps.is_available():
        mps.empty_cache()


def error_reason(code: str, error: BaseException) -> str:
    """`code: ExceptionType: first line of its message` (cut to `REASON_DETAIL_CHARS`)."""
    lines = str(error).strip().splitlines()
    first = lines[0].strip()[:REASON_DETAIL_CHARS] if lines else ""
    name = type(error).__name__
    return f"{code}: {name}: {first}" if first else f"{code}: {name}"
