"""Fault injection: the schedule of one-shot faults on the fault clock, and the random ones, from one seed.

One-shot faults (`*_at` options, seconds on the fault clock) fire once, at the first tick at or after
their time: push, tip-over, the e-stop button and a disconnect are events the runner applies; a NaN joint
and a frozen IMU change the readings from their time on. Random faults (drop, corrupt) draw from the
same generator as the NaN joint, so a seed reproduces a run.
"""

from __future__ import annotations

import logging

import numpy as np

from trot.hil.emulator.options import EmulatorOptions, EmulatorStats

log = logging.getLogger(__name__)

EVENTS = ("push", "tip", "estop", "disconnect")  # in the order they apply within a tick


def after(at: float | None, fault_t: float | None) -> bool:
    """Whether a fault scheduled at `at` is in force at fault time `fault_t` (None: unscheduled / no clock yet)."""
    return at is not None and fault_t is not None and fault_t >= at


class Faults:
    """The faults of one emulator run; `stats` gets the drop and corrupt counters."""

    def __init__(self, options: EmulatorOptions, num_joints: int, stats: EmulatorStats):
        self.options, self.stats = options, stats
        self.rng = np.random.default_rng(options.seed)
        self.nan_joint = int(self.rng.integers(num_joints))
        self._fired: set[str] = set()
        self._frozen_imu: tuple | None = None

    def clock(self, t: float, first_session_t: float | None) -> float | None:
        """The fault clock at emulator time t: since start, or since the first session (None before it)."""
        if self.options.fault_clock == "start":
            return t
        return None if first_session_t is None else t - first_session_t

    def events(self, fault_t: float | None) -> list[str]:
        """The one-shot events (`EVENTS`) due now; each is returned once."""
        o = self.options
        times = {"push": o.push_at, "tip": o.tip_at, "estop": o.estop_at, "disconnect": o.disconnect_at}
        due = [name for name in EVENTS if name not in self._fired and after(times[name], fault_t)]
        self._fired.update(due)
        return due

    def readings(self, fault_t: float | None, t: float, q: np.ndarray, imu: tuple) -> tuple[np.ndarray, tuple, bool]:
        """Joint positions and IMU as reported (a NaN joint, a frozen IMU), and whether the MCU flags IMU_STALE."""
        o = self.options
        if after(o.nan_at, fault_t):
            q[self.nan_joint] = np.nan
        if not after(o.freeze_imu_at, fault_t):
            return q, imu, False
        if self._frozen_imu is None:
            self._frozen_imu = imu
            log.warning("fault: IMU frozen at t=%.2f s", t)
        return q, self._frozen_imu, not o.freeze_imu_silent

    def drop(self) -> bool:
        """Whether to drop this outgoing reading (probability `drop`; counted)."""
        if self.options.drop > 0 and self.rng.random() < self.options.drop:
            self.stats.states_dropped += 1
            return True
        return False

    def corrupts(self) -> bool:
        """Whether to corrupt this outgoing frame or message (probability `corrupt`; counted)."""
        if self.options.corrupt > 0 and self.rng.random() < self.options.corrupt:
            self.stats.frames_corrupted += 1
            return True
        return False

    def corrupt(self, frame: bytes) -> bytes:
        """The frame, with probability `corrupt` one byte inside it changed to another non-zero value.

        Never to 0x00: the host sees a CRC or framing error, not a frame split in two.
        """
        if not self.corrupts():
            return frame
        out = bytearray(frame)
        i = int(self.rng.integers(1, len(out) - 1))
        out[i] = (out[i] + int(self.rng.integers(1, 255))) % 256 or 1
        return bytes(out)

    @property
    def delay_s(self) -> float:
        """How much later every outgoing frame or message leaves."""
        return 1e-3 * self.options.delay_ms
