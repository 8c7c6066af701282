"""Stop a local build whose worker process died mid-rank, instead of waiting for it forever.

datatrove's local executor runs ranks on a `multiprocess.Pool`. When the OOM killer (or a SIGKILL, or
a crash in a native library) ends a worker, the pool starts a new worker but the rank that was
running is lost, and the executor waits for its result forever. Each rank's writer records the pid
of the process running it in `staging/{rank}.pid` as the rank starts; this watchdog polls those
files from the launching process, and when a process is gone while its rank has no completion
marker it interrupts the build and raises `WorkerDiedError` naming the rank. Finished ranks are
kept: rerunning the same command resumes.
"""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

from mfpo_data.errors import MfpoError
from mfpo_data.layout import OutputLayout


# Held while a watchdog checks, and by any fork of this process (workers start by fork when that is
# safe): a forked child never inherits a watchdog stopped in the middle of a check, holding a lock.
_CHECKING = threading.Lock()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=_CHECKING.acquire, after_in_parent=_CHECKING.release, after_in_child=_CHECKING.release)


class WorkerDiedError(MfpoError):
    """A worker process ended while running a rank (killed by the OS or a signal, or crashed)."""


def process_alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie, dead but not yet reaped by its parent, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True  # no procfs: signal 0 reached it
    return state not in ("Z", "X")


class WorkerWatchdog:
    """`with WorkerWatchdog(layout): executor.run()`; see the module docstring.

    The watching thread wakes the main thread with SIGUSR1 (SIGINT may be ignored, as in a background
    job of a script), whose handler raises `WorkerDiedError` in the executor's wait; the previous
    handler is restored on exit. Off the main thread no handler can be installed, and it does nothing.
    """

    def __init__(self, layout: OutputLayout, interval: float = 1.0, while_waiting=None):
        """`while_waiting()`, if given, runs once on the watching thread, after the workers started: work
        that the launcher would otherwise do after them (finalize's imports), done while it waits."""
        self.layout, self.interval = layout, interval
        self._while_waiting = while_waiting
        self.dead: tuple[int, int] | None = None  # (rank, pid)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="mfpo-worker-watchdog", daemon=True)
        self._previous_handler = None

    def __enter__(self) -> WorkerWatchdog:
        if threading.current_thread() is not threading.main_thread():
            return self
        for stale in self.layout.staging_dir.glob("*.pid"):  # left by workers of an earlier, killed run
            stale.unlink(missing_ok=True)
        self._previous_handler = signal.signal(signal.SIGUSR1, self._raise)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        if self._previous_handler is not None:
            signal.signal(signal.SIGUSR1, self._previous_handler)

    def _raise(self, signum, frame) -> None:
        rank, pid = self.dead
        raise WorkerDiedError(
            f"the worker process running rank {rank} (pid {pid}) died before the rank finished (killed by the "
            "OS, e.g. out of memory, or by a signal); finished ranks are kept: rerun the same command to resume "
            "(with fewer executor.workers if memory ran out)"
        )

    def _watch(self) -> None:
        while not self._stop.wait(self.interval):
            with _CHECKING:
                if self._while_waiting is not None:
                    self._while_waiting, work = None, self._while_waiting
                    try:
                        work()
                    except Exception:  # an optimisation only: whoever needs its result later meets the error
                        pass
                self.dead = self._find_dead()
            if self.dead is not None:
                signal.pthread_kill(threading.main_thread().ident, signal.SIGUSR1)  # wakes its blocking wait
                return

    def _find_dead(self) -> tuple[int, int] | None:
        for path in self.layout.staging_dir.glob("*.pid"):
            rank = int(path.name.split(".")[0])
            try:
                pid = int(path.read_text())
            except (OSError, ValueError):  # being replaced
                continue
            if not process_alive(pid) and not self.layout.completion_marker(rank).is_file():
                return rank, pid
        return None
