"""The seam between the emulated microcontroller and the wire: what a link is given and what it must do.

A link (the serial pty in `serial_link`, ROS 2 topics in `ros2_link`) turns what arrives into calls on the
firmware, and readings into what the host receives, through the link-level faults (drop, delay, corrupt).
It is built by the runner with the parts it shares (`Board`), from a `LinkFactory`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from trot.deploy.protocol import StatusFlags
from trot.hil.emulator.faults import Faults
from trot.hil.emulator.firmware import Firmware
from trot.hil.emulator.options import EmulatorOptions, EmulatorStats
from trot.robots import Robot


@dataclass
class Board:
    """What the parts of one emulated microcontroller share."""

    firmware: Firmware
    faults: Faults
    stats: EmulatorStats
    t0: float = 0.0  # monotonic time of start(): zero of the emulator's clock

    def clock_us(self) -> int:
        """µs of the monotonic clock since start (State timestamps, Heartbeat replies)."""
        return int(1e6 * (time.monotonic() - self.t0))

    def fault_time(self, t: float) -> float | None:
        """The fault clock at emulator time t."""
        return self.faults.clock(t, self.firmware.first_session_t)


@dataclass(frozen=True)
class Reading:
    """What the MCU reports once (a State over serial; Imu and JointState over ROS 2), faults applied."""

    joint_pos: np.ndarray  # rad
    joint_vel: np.ndarray  # rad/s
    joint_torque: np.ndarray  # N·m, applied by the motors
    imu: tuple[np.ndarray, np.ndarray, np.ndarray]  # quaternion w x y z, body gyro, body specific force
    status: StatusFlags


class Link(Protocol):
    label: str  # printed before `port` on `trot emulate`'s first line
    port: str | None  # what the host connects to (set by open)

    def open(self) -> str:
        """Open the wire; return `port`."""

    def receive(self, t: float) -> None:
        """Take everything that arrived and hand it to the firmware (t: emulator time of this tick)."""

    def publish(self, t: float, reading: Reading) -> None:
        """Queue one reading for the host (through the drop, delay and corrupt faults)."""

    def send_estop(self) -> None:
        """Announce the MCU's own e-stop (the button) to the host."""

    def flush(self, now: float) -> None:
        """Send what is due by monotonic time `now`."""

    def disconnect(self) -> None:
        """Drop the connection (the disconnect fault); the host's next read fails."""

    def close(self) -> None:
        """Release everything the link holds; safe to call twice."""


LinkFactory = Callable[[Robot, EmulatorOptions, Board], Link]
