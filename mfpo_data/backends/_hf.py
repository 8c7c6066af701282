"""Shared plumbing of the model backends: dtype choice and the missing-extra error.

Loading once per process and the "auto" device live in `backends/loading.py`. Nothing here imports
torch at module level: config validation imports backend modules to read their signatures.
"""

from __future__ import annotations

from mfpo_data._deps import require


DTYPES = ("auto", "float32", "float16", "bfloat16")


def resolve_dtype(dtype: str, device: str, auto_on_cuda: str = "float16"):
    """A torch dtype; `auto` is `auto_on_cuda` on a GPU and float32 on the CPU."""
    import torch

    if dtype == "auto":
        dtype = auto_on_cuda if device.startswith("cuda") else "float32"
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")
    return getattr(torch, dtype)


def require_extra(extra: str, feature: str, *modules: str) -> None:
    """A one-line `MissingExtraError` naming `pip install "mfpo[extra]"` unless the modules import."""
    require(*(modules or ("torch", "transformers")), extra=extra, feature=feature)
