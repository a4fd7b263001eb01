"""Where the loop thread's time went: CPU time and run-queue wait, and which overruns the wait explains."""

import os
import subprocess
import sys
import time

import pytest

from trot.deploy.sched import ThreadClock, descheduled, run_queue_wait_s, thread_cpu_s


def test_an_overrun_is_put_down_to_the_machine_only_when_the_wait_explains_it():
    # overrun bound 0.5: a tick 0.75 late after 0.25 of waiting would have started 0.5 late: within the bound
    assert descheduled(0.75, 0.25, 0.5)
    assert not descheduled(0.75, 0.125, 0.5)  # 0.625 late without the wait: still an overrun, the loop's own
    assert not descheduled(0.5, 0.5, 0.5)  # not an overrun at all
    assert not descheduled(0.75, None, 0.5)  # no figure from the kernel: the loop's own
    assert descheduled(2.0, 3.0, 0.5)


def test_thread_clock_counts_this_threads_cpu_not_its_sleep():
    clock = ThreadClock()
    time.sleep(0.05)
    cpu, _ = clock.lap()
    assert cpu < 0.02
    end = thread_cpu_s() + 0.05
    while thread_cpu_s() < end:
        pass
    cpu, wait = clock.lap()
    assert cpu >= 0.05
    assert wait is None or wait >= 0.0


@pytest.mark.skipif(not os.path.exists("/proc/thread-self/schedstat"), reason="no per-thread schedstat (not Linux)")
def test_run_queue_wait_grows_while_busy_processes_share_this_threads_cpu():
    busy = "import os, time\nos.sched_setaffinity(0, {0})\nend = time.monotonic() + 3\nwhile time.monotonic() < end: 0"
    before_affinity = os.sched_getaffinity(0)
    hogs = [subprocess.Popen([sys.executable, "-c", busy]) for _ in range(2)]
    try:
        time.sleep(0.3)  # the hogs are running on CPU 0
        os.sched_setaffinity(0, {0})  # this thread only
        wait0, end = run_queue_wait_s(), thread_cpu_s() + 0.1
        while thread_cpu_s() < end:
            pass
        waited = run_queue_wait_s() - wait0
    finally:
        os.sched_setaffinity(0, before_affinity)
        for hog in hogs:
            hog.kill()
            hog.wait()
    assert waited >= 0.05, f"{1e3 * waited:.0f} ms waiting for CPU 0 behind two busy processes"
