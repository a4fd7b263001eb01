"""Where the loop thread's time went: CPU time, and time spent runnable but waiting for a CPU.

On a busy machine a tick can start late because the loop's own work took too long (CPU time) or because the
kernel ran something else while the loop was ready to run (run-queue wait, Linux's per-thread schedstat). The
telemetry records both so that a late tick can be told apart from a slow loop (docs/testing.md).
"""

from __future__ import annotations

import os
import time

_SCHEDSTAT = "/proc/thread-self/schedstat"  # "<ns on a CPU> <ns waiting on a run queue> <timeslices>"


def thread_cpu_s() -> float:
    """CPU time of the calling thread, s."""
    return time.thread_time()


def run_queue_wait_s() -> float | None:
    """Total time the calling thread has spent runnable but waiting for a CPU, s; None where the kernel does not
    say (not Linux, or no schedstat)."""
    try:
        fd = os.open(_SCHEDSTAT, os.O_RDONLY)
    except OSError:
        return None
    try:
        fields = os.read(fd, 128).split()
    finally:
        os.close(fd)
    return int(fields[1]) * 1e-9 if len(fields) >= 2 else None


class ThreadClock:
    """CPU time and run-queue wait of the calling thread since the last `lap()`."""

    def __init__(self) -> None:
        self._cpu, self._wait = thread_cpu_s(), run_queue_wait_s()

    def lap(self) -> tuple[float, float | None]:
        """(CPU s, run-queue wait s or None) since the previous lap (or construction)."""
        cpu, wait = thread_cpu_s(), run_queue_wait_s()
        spent = (cpu - self._cpu, None if wait is None or self._wait is None else wait - self._wait)
        self._cpu, self._wait = cpu, wait
        return spent


def descheduled(late_s: float, wait_s: float | None, overrun_s: float) -> bool:
    """A tick that started `late_s` late was made an overrun by waiting for a CPU: without the `wait_s` it spent
    runnable but not running since the previous tick began, it would have started within `overrun_s`."""
    return wait_s is not None and late_s > overrun_s and late_s - wait_s <= overrun_s
