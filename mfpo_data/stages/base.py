"""The stage protocol, on datatrove's `PipelineStep` contract: `run(data, rank, world_size) -> Iterator`.

Annotating stages (`MapStage`) add fields to each `Sample`; samples that an earlier stage dropped pass
through untouched so the writer can record them.

A failed batch does not fail the rank. Its samples are put back as they were before the call
(`recovery.snapshot`) and retried one by one; a sample that fails alone is dropped with the error as
its reason (`backend_error: RuntimeError: ...`, or a `SampleError`'s own reason) and the rest go on.
An out-of-memory error instead halves the batch and retries the halves; a single sample that runs out
of memory is retried once after freeing memory, then dropped (`out_of_memory: ...`). A halved batch size
doubles again, up to the recipe's, after `grow_back_after` calls in a row without a memory error (a
spike, another stage's batch, passes); if the grown size runs out of memory again, the wait before the
next try doubles, so a size that never fits is tried ever more rarely. A backend that has failed on `GIVE_UP_AFTER` samples alone and has not
worked on any in the rank is a broken setup rather than bad samples: the rank stops with one line
(`BackendFailure`), as it does at once after a CUDA error that leaves the device unusable (a
device-side assert, an illegal memory access), since every later call would fail too. With the
overlap on (`pipeline/overlap.py`) each stage runs in a thread of its own; all of this happens inside
the stage's thread, and a `BackendFailure` reaches the rank as any other error of a stage does.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import traceback
from collections.abc import Iterable, Iterator

from datatrove.pipeline.base import PipelineStep

from mfpo_data.backends.loading import lock_for
from mfpo_data.errors import MfpoError
from mfpo_data.schema import Sample
from mfpo_data.stages.recovery import breaks_the_device, error_reason, free_memory, is_out_of_memory, restore, snapshot


logger = logging.getLogger(__name__)

GIVE_UP_AFTER = 32  # failures alone, with no success before them in the rank, that stop the rank


class Stage(PipelineStep):
    """A build stage: consumes and yields `Sample`s."""

    type = "mfpo"

    def setup(self, rank: int, world_size: int) -> None:
        """Called once per rank before the first sample (pick a device, nothing heavy)."""


class MapStage(Stage):
    """Annotates each live sample. Override `process_batch`; `batch_size` groups backend calls.

    `backend` is the model behind the stage, if any: it is told its rank before the first batch
    (`backend.setup(rank, world_size)`), so it can pick its device.

    A batch is filled from consecutive live samples. With `batch_timeout_s` set and an upstream that can
    be polled (a `pipeline.overlap.Channel`), a partial batch goes to the backend when no sample came for
    that long, so a model does not sit idle while a slow stretch of input trickles in.
    """

    batch_timeout_s: float | None = None  # set per stage from the recipe section's `batch_timeout_s`
    grow_back_after = 64  # calls without a memory error before a halved batch size doubles again
    _succeeded = False  # a process_batch call returned in this rank
    _failures = 0  # samples dropped because the backend failed on them alone
    _first_failure = ""

    def __init__(self, backend: object | None = None, batch_size: int = 1):
        super().__init__()
        self.backend, self.batch_size = backend, batch_size
        self.full_batch_size = batch_size  # the recipe's: a halved size grows back to it
        self._calm_calls, self._grown = 0, False  # calls since the last memory error or growth; last change a growth

    def setup(self, rank: int, world_size: int) -> None:
        if self.backend is not None and hasattr(self.backend, "setup"):
            self.backend.setup(rank, world_size)

    def process_batch(self, batch: list[Sample]) -> None:
        raise NotImplementedError

    def run(self, data: Iterable[Sample], rank: int = 0, world_size: int = 1) -> Iterator[Sample]:
        self.setup(rank, world_size)
        pending: list[Sample] = []
        for sample in self._arrivals(data, pending):
            if sample is None:  # nothing came within the time-out: send what there is
                yield from self._flush(pending)
                pending.clear()
                self.stat_update("timeout_batches")
                continue
            if sample.dropped is not None:
                yield sample
                continue
            pending.append(sample)
            if len(pending) >= self.batch_size:
                yield from self._flush(pending)
                pending.clear()
        if pending:
            yield from self._flush(pending)

    def _arrivals(self, data: Iterable[Sample], pending: list[Sample]) -> Iterator[Sample | None]:
        """The upstream samples; with a time-out, None when a partial batch waited `batch_timeout_s`."""
        poll = getattr(data, "poll", None) if self.batch_timeout_s else None
        if poll is None:
            yield from data
            return
        iterator = iter(data)
        while True:
            try:
                sample = poll(self.batch_timeout_s) if pending else next(iterator)
            except StopIteration:
                return
            yield sample

    def _flush(self, batch: list[Sample]) -> Iterator[Sample]:
        with self.track_time("batch"):
            self._process(batch)
        for sample in batch:
            self.stat_update("dropped" if sample.dropped else "out")
            yield sample

    def _process(self, batch: list[Sample]) -> None:
        """`batch` in chunks of at most `batch_size`, which an out-of-memory error may lower meanwhile."""
        done = 0
        while done < len(batch):
            chunk = batch[done : done + max(1, self.batch_size)]
            self._attempt(chunk)
            done += len(chunk)

    def _attempt(self, batch: list[Sample], oom_retried: bool = False) -> None:
        """One `process_batch` call; on failure the samples are restored and retried (see the module doc)."""
        saved = [snapshot(s) for s in batch]
        try:
            with backend_lock(self.backend):
                self.process_batch(batch)
        except SampleError as e:  # names its sample: that one is dropped, the others go on
            sample_error, oom, reason, trace = str(e), False, "", None
        except Exception as e:
            oom = is_out_of_memory(e)
            sample_error, reason = None, error_reason("out_of_memory" if oom else "backend_error", e)
            if breaks_the_device(e):
                ids = ", ".join(s.id for s in batch[:3]) + (f" and {len(batch) - 3} more" if len(batch) > 3 else "")
                raise BackendFailure(f"{self.name}: backend '{self._backend_name()}' on {ids}: {reason} (the GPU "
                                     "cannot be used in this process after this error; the rank stops)") from e  # fmt: skip
            trace = traceback.format_exc() if len(batch) == 1 and not self._failures else None
        else:
            self._succeeded = True
            self._grow_back()
            return
        # Out of the except block: the exception, its traceback and the tensors its frames hold are gone.
        for sample, fields in zip(batch, saved, strict=True):
            restore(sample, fields)
        if oom:
            free_memory()
            self._calm_calls = 0
            if len(batch) > 1 or not oom_retried:
                self.stat_update("oom_retries")
            if len(batch) > 1:
                self._lower_batch_size(len(batch))
                self._process(batch)
            elif not oom_retried:
                self._attempt(batch, oom_retried=True)
            else:
                self._drop_failed(batch[0], reason, trace)
        elif len(batch) > 1:
            logger.debug("%s: a batch of %d failed (%s); retrying its samples one by one", self.name, len(batch),
                         sample_error or reason)  # fmt: skip
            self.stat_update("retried_batches")
            for sample in batch:
                self._attempt([sample])
        elif sample_error is not None:
            batch[0].drop(self.name, sample_error)
        else:
            self._drop_failed(batch[0], reason, trace)

    def _lower_batch_size(self, failed: int) -> None:
        size = min(self.batch_size, (failed + 1) // 2)
        if self._grown:  # the size it grew back to does not fit: wait twice as long before the next try
            self.grow_back_after *= 2
            self._grown = False
        if size < self.batch_size:
            logger.warning("%s: out of memory at batch %d; batch_size is %d from now on", self.name, failed, size)
            self.batch_size = size

    def _grow_back(self) -> None:
        """After `grow_back_after` calls in a row without a memory error, double a halved batch size (at most to
        the recipe's)."""
        if self.batch_size >= self.full_batch_size:
            return
        self._calm_calls += 1
        if self._calm_calls >= self.grow_back_after:
            self.batch_size = min(self.full_batch_size, 2 * self.batch_size)
            self._calm_calls, self._grown = 0, True
            self.stat_update("batch_size_grown")
            logger.info("%s: %d batches without running out of memory; batch_size is %d again", self.name,
                        self.grow_back_after, self.batch_size)  # fmt: skip

    def _drop_failed(self, sample: Sample, reason: str, trace: str | None) -> None:
        """Drop a sample the backend failed on alone; stop the rank when the backend never worked in it."""
        sample.drop(self.name, reason)
        self.stat_update("backend_errors")
        self._failures += 1
        if self._failures == 1:
            logger.warning("%s: dropped %s (%s); further failures of this stage are logged at debug level\n%s",
                           self.name, sample.id, reason, trace or "")  # fmt: skip
            self._first_failure = reason
        else:
            logger.debug("%s: dropped %s (%s)", self.name, sample.id, reason)
        if not self._succeeded and self._failures >= GIVE_UP_AFTER:
            raise BackendFailure(
                f"{self.name}: backend '{self._backend_name()}' failed on {self._failures} samples of this rank, one "
                f"at a time, and has not worked on any; first error: {self._first_failure}"
            )

    def _backend_name(self) -> str:
        return str(getattr(self.backend, "backend", None) or type(self.backend).__name__)


def backend_lock(backend: object | None) -> threading.Lock | contextlib.nullcontext:
    """One lock per backend object in this process. Stages run in threads of their own
    (`pipeline/overlap.py`) and two may share a backend (grounding and the removal check share the
    grounder): its model, processor and tokenizer are then called by one of them at a time. A backend
    that one stage owns never waits on it."""
    return contextlib.nullcontext() if backend is None else lock_for(("backend", id(backend)))


class SampleError(ValueError):
    """A per-sample problem (bad mask, box outside the image...): the sample is dropped with this reason."""


class BackendFailure(MfpoError):
    """A stage whose backend failed on every sample it was given, alone: a broken setup, not bad samples."""
