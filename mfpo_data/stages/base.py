"""The stage protocol, on datatrove's `PipelineStep` contract: `run(data, rank, world_size) -> Iterator`.

Annotating stages (`MapStage`) add fields to each `Sample`; samples that an earlier stage dropped pass
through untouched so the writer can record them. A backend call that fails for one sample drops
that sample with the error as reason and the rest of the batch goes on.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator

from datatrove.pipeline.base import PipelineStep

from mfpo_data.schema import Sample


logger = logging.getLogger(__name__)


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

    def __init__(self, backend: object | None = None, batch_size: int = 1):
        super().__init__()
        self.backend, self.batch_size = backend, batch_size

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
            try:
                self.process_batch(batch)
            except SampleError as e:
                # A batch-level failure that names its sample: drop that one, retry the rest one by one.
                if len(batch) == 1:
                    batch[0].drop(self.name, str(e))
                else:
                    for sample in batch:
                        yield from self._flush([sample])
                    return
        for sample in batch:
            self.stat_update("dropped" if sample.dropped else "out")
            yield sample


class SampleError(ValueError):
    """A per-sample problem (bad mask, box outside the image...): the sample is dropped with this reason."""
