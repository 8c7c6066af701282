"""Overlap inside a rank: every stage runs in a thread of its own and hands its samples on through a
bounded queue, so a rank takes about max(CPU work, model work) instead of their sum.

A rank's pipeline is a chain of generators: datatrove calls each step with the previous step's iterator,
and one thread pulls every sample through all of them, so the GPU waits while the CPU decodes, composites
and PNG-encodes, and the CPU waits while a model runs. With `executor.overlap` on, `build_pipeline` puts
a `Prefetch` step between each two stages. A `Prefetch` iterates everything upstream of it in a thread
of its own and hands the samples to the next stage through a FIFO queue of `depth` samples, so the
source decodes ahead, the model stages get their next batch while the current one runs, and encoding
and writing run behind. A model call (torch), image decoding (Pillow), OpenCV and zlib release the GIL,
so the threads really run at once.

Nothing else changes: each stage still sees its samples one after the other in the source's order, and
each batch is filled exactly as without the overlap (unless a stage's `batch_timeout_s` is set), so the
rows are the same bytes. An exception in a stage reaches the thread that consumes its samples, with its
own type and traceback, and so the rank fails as it would without the overlap; a consumer that stops
early (an error downstream, Ctrl-C) stops the threads behind it, which close their stages' generators.
"""

from __future__ import annotations

import queue
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from datatrove.pipeline.base import PipelineStep


_END = object()  # the producer finished its upstream
_POLL_S = 0.1  # how often a blocked thread checks whether it should stop


class _Failure:
    """An exception raised upstream, carried to the consumer to be raised there."""

    def __init__(self, error: BaseException):
        self.error = error


def _produce(upstream: Iterable, items: queue.Queue, stop: threading.Event, report: Callable[[float], None]) -> None:
    """The producer thread: pull `upstream` into `items` until it ends, fails, or `stop` is set; then
    `report` the seconds it waited for room in the queue (the stage after it was the slower one)."""
    iterator = iter(upstream)
    blocked = [0.0]
    try:
        for item in iterator:
            if not _put(items, item, stop, blocked):
                return
        report(blocked[0])
        _put(items, _END, stop, blocked)
    except BaseException as e:  # noqa: BLE001 - every failure is the consumer's to raise
        _put(items, _Failure(e), stop, blocked)
    finally:
        close = getattr(iterator, "close", None)
        if stop.is_set() and close is not None:
            close()  # an abandoned generator runs its `finally` blocks (closes files, its own channels)


def _put(items: queue.Queue, item: Any, stop: threading.Event, blocked: list[float]) -> bool:
    try:
        items.put_nowait(item)
        return True
    except queue.Full:
        pass
    start = time.perf_counter()
    try:
        while not stop.is_set():
            try:
                items.put(item, timeout=_POLL_S)
                return True
            except queue.Full:
                continue
        return False
    finally:
        blocked[0] += time.perf_counter() - start


class Channel(Iterator):
    """The samples of `upstream`, produced on a thread of their own, `depth` of them at most in flight.

    The thread starts at the first `next()` (as a generator would), so assembling a pipeline runs
    nothing. `poll(timeout)` is `next()` that gives up after `timeout` seconds and returns None: a
    stage filling a batch with a time-out uses it. The thread stops when the channel is closed or
    garbage-collected (its consumer went away).
    """

    def __init__(self, upstream: Iterable, depth: int, name: str = "prefetch",
                 report: Callable[[str, float], None] | None = None):  # fmt: skip
        self._upstream, self._name = upstream, name
        self._report = report or (lambda what, seconds: None)
        self._starved = 0.0  # seconds the consumer waited for the next item (the stages before were slower)
        self._items: queue.Queue = queue.Queue(maxsize=max(1, depth))
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._done = False
        weakref.finalize(self, self._stop.set)  # the thread holds no reference to the channel

    def __next__(self) -> Any:
        return self._get(None)

    def poll(self, timeout: float) -> Any | None:
        """The next item, or None when none came within `timeout` seconds; StopIteration at the end."""
        return self._get(timeout)

    def _get(self, timeout: float | None) -> Any | None:
        if self._done:
            raise StopIteration
        if self._thread is None:
            report = self._report  # not a method of the channel: the thread must not keep the channel alive

            def blocked(seconds: float) -> None:
                report("blocked_s", seconds)

            self._thread = threading.Thread(target=_produce, args=(self._upstream, self._items, self._stop, blocked),
                                            name=f"mfpo-{self._name}", daemon=True)  # fmt: skip
            self._upstream = None  # the thread owns it now
            self._thread.start()
        try:
            item = self._items.get_nowait()
        except queue.Empty:
            item = self._wait(timeout)
            if item is None:
                return None
        if item is _END:
            self._done = True
            self._report("starved_s", self._starved)
            raise StopIteration
        if isinstance(item, _Failure):
            self._done = True
            raise item.error
        return item

    def _wait(self, timeout: float | None) -> Any | None:
        start = time.perf_counter()
        try:
            while True:
                waited = time.perf_counter() - start
                if timeout is not None and waited >= timeout:
                    return None
                try:
                    return self._items.get(timeout=_POLL_S if timeout is None else min(_POLL_S, timeout - waited))
                except queue.Empty:
                    if not self._thread.is_alive() and self._items.empty():
                        raise RuntimeError(f"the {self._name} thread ended without a result") from None
        finally:
            self._starved += time.perf_counter() - start

    def close(self) -> None:
        """Stop the producer thread; it closes the generators behind it."""
        self._done = True
        self._stop.set()


class Prefetch(PipelineStep):
    """A pipeline step that runs everything before it in a thread of its own (see the module docstring).
    `after` names the stage it follows. Its stats say where the time went: `starved_s`, the seconds the
    stage after it waited for a sample (the stages before were slower), and `blocked_s`, the seconds the
    stages before waited for room in the queue (the stages after were slower)."""

    type = "mfpo"

    def __init__(self, depth: int, after: str = ""):
        self.name = f"prefetch after {after}" if after else "prefetch"
        super().__init__()
        self.depth, self.after = depth, after

    def run(self, data: Iterable | None = None, rank: int = 0, world_size: int = 1) -> Iterator:
        if data is None:
            return iter(())
        return Channel(data, self.depth, name=f"{self.after or 'prefetch'}-{rank}", report=self._report)

    def _report(self, what: str, seconds: float) -> None:
        self.stats[what].update(round(seconds, 3), "rank")


def with_prefetch(steps: list, depths: list[int]) -> list:
    """`steps` with a `Prefetch` of `depths[i]` after step i (for each but the last): every step then
    runs in its own thread. `depths[i]` is sized for the step that follows."""
    out = []
    for step, depth in zip(steps[:-1], depths, strict=True):
        out += [step, Prefetch(depth, after=getattr(step, "name", type(step).__name__))]
    return [*out, steps[-1]]
