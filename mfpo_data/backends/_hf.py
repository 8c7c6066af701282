"""Shared plumbing of the model backends: dtype choice, the missing-extra error, loading by model id.

Loading once per process and the "auto" device live in `backends/loading.py`. Nothing here imports
torch at module level: config validation imports backend modules to read their signatures.
"""

from __future__ import annotations

from mfpo_data._deps import require
from mfpo_data.backends.loading import device_for_rank, load_once


DTYPES = ("auto", "float32", "float16", "bfloat16")


def resolve_dtype(dtype: str, device: str, auto_on_cuda: str = "float16"):
    """A torch dtype; `auto` is `auto_on_cuda` on a GPU and float32 on the CPU."""
    import torch

    if dtype == "auto":
        dtype = auto_on_cuda if device.startswith("cuda") else "float32"
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")
    return getattr(torch, dtype)


class ModelBackend:
    """Base of the backends that load a model: keeps the rank that `MapStage` hands over in `setup`,
    to place the model on that rank's device. Subclasses set `self.device` and `self.dtype`."""

    device: str
    dtype: str
    _rank = 0

    def setup(self, rank: int, world_size: int) -> None:
        self._rank = rank

    def device_and_dtype(self, auto_on_cuda: str):
        """This rank's device (`device_for_rank`) and the torch dtype to load the model in there."""
        device = device_for_rank(self.device, self._rank)
        return device, resolve_dtype(self.dtype, device, auto_on_cuda=auto_on_cuda)


def require_extra(extra: str, feature: str, *modules: str) -> None:
    """A one-line `MissingExtraError` naming `pip install "mfpo[extra]"` unless the modules import."""
    require(*(modules or ("torch", "transformers")), extra=extra, feature=feature)


def load_pretrained(
    model_class: str, model_id: str, revision: str | None, device: str, dtype, trust_remote_code: bool
):
    """`transformers.<model_class>` and its `AutoProcessor`, on `device`, in eval mode, once per process."""

    def load():
        import transformers

        kw = dict(revision=revision, trust_remote_code=trust_remote_code)
        processor = transformers.AutoProcessor.from_pretrained(model_id, **kw)
        model = getattr(transformers, model_class).from_pretrained(model_id, dtype=dtype, **kw)
        return model.to(device).eval(), processor

    return load_once((model_class, model_id, revision, device, str(dtype)), load)
