"""Fault injection for crash-resume tests: `MFPO_FAULT_INJECT` SIGKILLs the process at a chosen point.
Imported only when that variable is set (`stages/s7_writer.fault_point`).

    RANK:N         after rank RANK wrote N rows (its shard is still a temp file)
    RANK:sN        after N samples, kept or dropped, reached rank RANK's writer
    RANK:aN        after rank RANK appended N answers to its answers file (`sources/on_policy.py`)
    RANK:commit    after RANK's shard, rejects and stats were renamed into place, before datatrove
                   writes the rank's completion marker
    finalize:N     after finalize wrote N final shards (N=0: before the first)

`MFPO_FAULT_MARK=PATH`, when set, is created just before the kill, so a test knows a worker died
(a SIGKILLed pool worker leaves datatrove's local executor waiting; the test then kills the build).
Unset, none of this does anything.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path


MARK_ENV = "MFPO_FAULT_MARK"  # (`MFPO_FAULT_INJECT` is read by the writer and handed over as `spec`)


class FaultPoint:
    """The fault armed for one rank (or for "finalize") by `spec`, the value of `MFPO_FAULT_INJECT`."""

    def __init__(self, rank: int | str, spec: str):
        self.event, self.count = None, 0
        where, _, point = spec.partition(":")
        if not point or where != str(rank):
            return
        if point == "commit":
            self.event = "commit"
        elif point.startswith("s"):
            self.event, self.count = "samples", int(point[1:])
        elif point.startswith("a"):
            self.event, self.count = "answers", int(point[1:])
        else:
            self.event, self.count = ("finalize" if rank == "finalize" else "rows"), int(point)

    def reached(self, event: str, count: int = 0) -> None:
        if self.event == event and count >= self.count:
            mark = os.environ.get(MARK_ENV)
            if mark:
                Path(mark).touch()
            os.kill(os.getpid(), signal.SIGKILL)
