"""Policy log-probs for the loss and the backward through them: one forward, or gradient caching.

`train.sequence_chunks` picks the mode:

* 1 (default): the policy's log-probs of the whole batch with grad (`model.batch_logps`: with the shared prefix,
  the 2N image-text rows y_w|m, y_w|m' and the N rejected answers after their prompt's cache), then one backward.
  Fastest; the activations of the whole batch live until the backward (about a DPO step's; without the shared
  prefix, one row per sequence: about S/2 times a DPO step's, 1.5x for MFPO).
* k > 1, gradient caching: the rows are cut into k contiguous chunks (k = S: one sequence block per chunk).
    1. each chunk's summed log-probs are computed without grad (no activations kept);
    2. the loss is computed on those (rows,) log-probs, and its gradient with respect to them by autograd on
       that small tensor (`torch.autograd.grad`);
    3. each chunk is forwarded again with grad and back-propagated with its slice of that gradient
       (`backward((logps_chunk * grad_chunk).sum())`, which is `logps_chunk.backward(grad_chunk)`), so the
       parameter gradients accumulate to exactly the single-forward ones.
  Only one chunk's activations are alive at a time (rows/k instead of rows), at the price of one extra
  no-grad forward of every row (about +1/3 of the step's compute).

Dropout: the recompute must draw the same masks as the no-grad pass. The RNG state is saved before each
chunk's no-grad forward and restored before its recompute, so dropout (e.g. `lora.dropout`) is allowed;
the masks are drawn per chunk, so they are not the masks the single forward would draw (same distribution).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import torch

from mfpo_train.losses import SequenceLogps
from mfpo_train.model import batch_logps, split_logps
from mfpo_train.scoring import DEFAULT_CHUNK_SIZE, sequence_logps


@dataclass
class PolicyLogps:
    """The policy's log-probs of one batch (`logps`, for the loss) and how to back-propagate a loss through them."""

    logps: SequenceLogps
    flat: torch.Tensor  # (rows,): the graph's output (single forward) or a leaf on the no-grad values (chunked)
    model: object = None
    chunks: list[dict] = field(default_factory=list)  # chunked mode: the row slices of the batch
    rng_states: list = field(default_factory=list)  # chunked mode: RNG state before each chunk's no-grad forward
    chunk_size: int = DEFAULT_CHUNK_SIZE  # LM-head chunk of the re-forwards (scoring.sequence_logps)

    def backward(self, loss: torch.Tensor, accelerator, sync: bool = True) -> None:
        """Back-propagate `loss` (a function of `self.logps`) into the policy's parameter gradients.

        `sync=False` keeps DDP from all-reducing (gradient accumulation: every micro-batch but the last).
        """
        if not self.chunks:
            accelerator.backward(loss)
            return
        (grad,) = torch.autograd.grad(loss, self.flat)  # d loss / d logps: (rows,), closed form on a tiny graph
        grads = grad.detach().split([int(c["input_ids"].shape[0]) for c in self.chunks])
        end_state = _get_rng_state()
        for i, (chunk, g, state) in enumerate(zip(self.chunks, grads, self.rng_states, strict=True)):
            last = sync and i == len(self.chunks) - 1
            _set_rng_state(state)  # the same dropout masks as this chunk's no-grad forward
            with (contextlib.nullcontext() if last else accelerator.no_sync(self.model)), accelerator.autocast():
                surrogate = (sequence_logps(self.model, chunk, self.chunk_size) * g.to(torch.float32)).sum()
            accelerator.backward(surrogate)
        _set_rng_state(end_state)


def policy_logps(model, batch: dict, sequences: tuple[str, ...], chunks: int = 1, shared_prefix: bool = True,
                 chunk_size: int = DEFAULT_CHUNK_SIZE) -> PolicyLogps:
    """Policy log-probs of `batch` (collator layout); `chunks > 1` is gradient caching (see the module docstring).

    `shared_prefix` and `chunk_size` are `model.batch_logps`'s. Gradient caching cuts the batch into row chunks,
    one row per sequence, so it scores without the shared prefix (the chunked LM head still applies).

    Call it under the `accelerator.autocast()` that `PolicyLogps.backward` re-forwards under (as `train._step`
    does), or the recomputed log-probs would not be the ones the loss saw.
    """
    if chunks <= 1:
        flat = batch_logps(model, batch, sequences, shared_prefix=shared_prefix, chunk_size=chunk_size)
        return PolicyLogps(logps=split_logps(flat, sequences), flat=flat)
    rows = int(batch["input_ids"].shape[0])
    parts = [slice_rows(batch, int(idx[0]), int(idx[-1]) + 1)
             for idx in torch.arange(rows).tensor_split(min(chunks, rows)) if len(idx)]
    states, values = [], []
    with torch.no_grad():
        for part in parts:
            states.append(_get_rng_state())
            values.append(sequence_logps(model, part, chunk_size))
    flat = torch.cat(values).detach().requires_grad_(True)
    return PolicyLogps(logps=split_logps(flat, sequences), flat=flat, model=model, chunks=parts, rng_states=states,
                       chunk_size=chunk_size)


def slice_rows(batch: dict, start: int, stop: int) -> dict:
    """Rows [start, stop) of a collated batch: every tensor whose first axis is the row axis is sliced.

    Models that flatten image patches across the batch (Qwen2-VL's `pixel_values` with one
    `image_grid_thw` row per sequence) are sliced by patch offsets. Any other tensor that is not
    row-major is refused: cutting it blindly would pair rows with the wrong images.
    """
    rows = int(batch["input_ids"].shape[0])
    out = {}
    grid = batch.get("image_grid_thw")
    for key, value in batch.items():
        if not torch.is_tensor(value) or value.dim() == 0:
            out[key] = value
        elif key in ("ref_logps", "image_pair_mask"):  # per pair, not per row: not model inputs, not needed per chunk
            continue
        elif key == "pixel_values" and grid is not None and value.shape[0] != rows:
            if grid.shape[0] != rows:
                raise ValueError(f"train.sequence_chunks > 1 needs one image per sequence; image_grid_thw has "
                                 f"{grid.shape[0]} rows for {rows} sequences (use sequence_chunks: 1)")
            offsets = torch.cat([grid.new_zeros(1), grid.prod(-1).cumsum(0)]).tolist()
            out[key] = value[offsets[start] : offsets[stop]]
        elif value.shape[0] == rows:
            out[key] = value[start:stop]
        else:
            raise ValueError(f"train.sequence_chunks > 1 cannot split the batch's {key!r} (shape "
                             f"{tuple(value.shape)}) into rows for this model; use sequence_chunks: 1")
    return out


def _get_rng_state():
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else None
    return torch.get_rng_state(), cuda


def _set_rng_state(state) -> None:
    cpu, cuda = state
    torch.set_rng_state(cpu)
    if cuda is not None:
        torch.cuda.set_rng_state_all(cuda)
