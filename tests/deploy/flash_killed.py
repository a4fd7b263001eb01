"""Run `trot flash` (or `--rollback`) and SIGKILL it just before its N-th step; without N, count the steps.

    python tests/deploy/flash_killed.py N|count -- <trot flash arguments>

A step is every call that changes the target: for a folder target each copy, fsync, rename and unlink;
for an ssh target each `ssh` or `scp` run. Killing just before step N, for every N up to the count and once
more after the last, is every point at which a flash can be interrupted, in order (tests/deploy/test_flash.py).
"""

import os
import shutil
import signal
import subprocess
import sys

from trot.cli import main

STEPS = 0
KILL_AT = None if sys.argv[1] == "count" else int(sys.argv[1])


def counted(real):
    def step(*args, **kwargs):
        global STEPS
        if STEPS == KILL_AT:
            os.kill(os.getpid(), signal.SIGKILL)
        STEPS += 1
        return real(*args, **kwargs)

    return step


def changes_target(real):
    """subprocess.run, counted when it runs ssh or scp (the other subprocesses of a flash change nothing)."""
    step = counted(real)

    def run(cmd, *args, **kwargs):
        return (step if cmd and cmd[0] in ("ssh", "scp") else real)(cmd, *args, **kwargs)

    return run


for module, name in ((os, "fsync"), (os, "replace"), (os, "unlink"), (shutil, "copyfile")):
    setattr(module, name, counted(getattr(module, name)))
subprocess.run = changes_target(subprocess.run)

code = main(sys.argv[3:])
if KILL_AT is None:
    print(f"steps {STEPS}")
elif STEPS == KILL_AT:  # the kill point after the last step
    os.kill(os.getpid(), signal.SIGKILL)
sys.exit(code)
