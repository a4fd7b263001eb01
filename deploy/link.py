"""The seam between the deploy loop and the robot, neutral to how the robot is reached.

- What a link carries: `ControlMode` (what a motor command asks for), `StatusFlags` (what the robot side
  reports), `EStopReason`; `Sample` (one sensor reading) and `Poll` (what arrived since the last tick).
- What a link does: the `Transport` protocol the loop drives.
- Which links exist: `TRANSPORTS`, the one name -> transport registry (how to build it from the command
  line, its flags, its description) that `trot deploy`, `trot flash` (the unit's `--transport`) and
  `trot emulate` share. Its builders import their transport only when they run.

Standard library only at import time, so that building the CLI's parser stays light.
"""

from __future__ import annotations

import argparse
import enum
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    import numpy as np

DEFAULT_SERIAL_PORT = "/dev/ttyACM0"  # what a flashed unit uses when --port is not given


class ControlMode(enum.IntEnum):
    """What the robot side does with a motor command."""

    POSITION = 0  # PD to joint_target with kp, kd, plus tau_ff
    DAMPING = 1  # torque = -kd * joint_vel; joint_target, kp and tau_ff ignored
    OFF = 2  # zero torque


class StatusFlags(enum.IntFlag):
    """Robot-side status bits carried with every reading (the serial State's `status`)."""

    WATCHDOG_DAMPING = 1 << 0  # no valid Command in time: damping until Commands resume
    ESTOP = 1 << 1  # e-stop latched: damping, POSITION commands ignored until a new Hello
    MOTORS_OFF = 1 << 2  # motors unpowered or no session yet
    IMU_STALE = 1 << 3  # imu_quat, gyro, accel are older than one IMU period
    LOW_VOLTAGE = 1 << 4  # battery below the firmware's threshold
    MOTOR_FAULT = 1 << 5  # a motor driver reported a fault or stopped answering


class EStopReason(enum.IntEnum):
    """Known e-stop reason codes; unknown codes are delivered too (an e-stop is never dropped)."""

    UNSPECIFIED = 0
    BUTTON = 1  # the robot's e-stop button
    HOST = 2  # operator or host software
    WATCHDOG = 3
    FALL = 4
    LOW_VOLTAGE = 5
    MOTOR_FAULT = 6


class TransportError(Exception):
    """The link cannot be opened or used: no port, no answer, or the peer is not what we expect."""


@dataclass(frozen=True)
class Sample:
    """One sensor reading, in the robot contract's joint order, SI units."""

    rx_time: float  # host monotonic clock when its bytes arrived, s (the loop shifts it to its own clock)
    seq: int | None  # sender's sequence number (None where the transport has none)
    timestamp_us: int | None  # sender's clock when the joints were sampled
    joint_pos: np.ndarray  # (J,) rad
    joint_vel: np.ndarray  # (J,) rad/s
    joint_current: np.ndarray  # (J,) A (the emulator: N·m)
    imu_quat: np.ndarray  # (4,) w x y z, body to world
    gyro: np.ndarray  # (3,) rad/s, body frame
    accel: np.ndarray  # (3,) m/s², body frame
    status: int = 0  # StatusFlags bits


@dataclass
class Poll:
    """What arrived since the last poll."""

    samples: list[Sample] = field(default_factory=list)  # every reading that arrived, oldest first
    received: int = 0  # readings that arrived
    seq_gap: int | None = None  # largest sequence step among them, from the previous one (1: none lost)
    link_errors: int = 0  # cumulative frames refused for framing or CRC (line noise)
    payload_errors: int = 0  # cumulative frames with a valid CRC but a wrong type or size (peer mismatch)
    peer_estop: int | None = None  # EStopReason code of an e-stop raised by the robot side
    peer_estop_from: str | None = None  # an e-stop raised without an EStop frame: by what (ros2: the estop topic)
    lost: str | None = None  # the link is gone, and why
    raw: bytes = b""  # every byte read, for telemetry (empty where the transport has no byte stream)
    frames: dict = field(default_factory=dict)  # message type name -> count, for telemetry

    @property
    def sample(self) -> Sample | None:
        """The newest reading, None if none arrived."""
        return self.samples[-1] if self.samples else None


class Transport(Protocol):
    """What the deploy loop needs from a link to the robot."""

    name: str  # a TRANSPORTS name: "serial", "ros2", "unitree"
    describe: str  # where it connects, for logs: "serial /dev/ttyACM0 at 1000000 baud"

    def open(self, timeout_s: float) -> str:
        """Connect and handshake; return the peer's description. Raise TransportError on failure."""

    def poll(self) -> Poll:
        """Everything that arrived since the last call, each reading stamped when it arrived; never blocks."""

    def send(self, mode: ControlMode, target: np.ndarray, kp: np.ndarray, kd: np.ndarray) -> str | None:
        """Send one motor command; return why it failed (the link is gone) or None."""

    def estop(self, reason: int) -> None:
        """Raise the e-stop on the robot side (repeated by the caller until the robot reports it)."""

    def report(self, record: dict, *, overruns: int, missed_ticks: int, reason: str) -> None:
        """The loop's tick record, for a link with a status channel (ROS 2 diagnostics); others ignore it."""

    def close(self) -> None:
        """Release the link; safe to call twice."""


# ---- the registry ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class TransportEntry:
    """One way to reach the robot, as the command line sees it."""

    name: str
    description: str
    add_args: Callable[[argparse._ActionsContainer], None]  # its flags (argparse only)
    build: Callable[[argparse.Namespace, object], Transport]  # (args, robot) -> transport; ValueError says why not
    unit_args: Callable[[argparse.Namespace], list[str]]  # its flags again, for a systemd unit's command line


def _serial_args(p) -> None:
    p.add_argument("--port", default=None, help=f"serial port, e.g. {DEFAULT_SERIAL_PORT} or the emulator's --link")
    p.add_argument("--baud", type=int, default=1_000_000, help="serial baud rate (default 1000000)")


def _serial_build(args: argparse.Namespace, robot) -> Transport:
    if not args.port:
        raise ValueError(f"--transport serial needs --port (e.g. {DEFAULT_SERIAL_PORT}, or the emulator's --link path)")
    if not Path(args.port).exists():
        raise ValueError(
            f"serial port {args.port} does not exist (is the microcontroller plugged in? for the "
            f"emulator, start `trot emulate --link {args.port}` first)"
        )
    from trot.deploy.transport import SerialTransport

    return SerialTransport(args.port, args.baud, robot.num_joints, bytes.fromhex(robot.contract_sha256()))


def _serial_unit_args(args: argparse.Namespace) -> list[str]:
    return ["--port", args.port or DEFAULT_SERIAL_PORT, "--baud", str(args.baud)]


def _ros2_args(p) -> None:
    from trot.deploy.ros2.args import add_deploy_ros2_args

    add_deploy_ros2_args(p)


def _ros2_build(args: argparse.Namespace, robot) -> Transport:
    from trot.deploy.ros2.args import transport_from_args

    return transport_from_args(args, robot)


def _ros2_unit_args(args: argparse.Namespace) -> list[str]:
    from trot.deploy.ros2.args import unit_args

    return unit_args(args)


def _unitree_args(p) -> None:
    from trot.deploy.unitree.args import add_args

    add_args(p)


def _unitree_build(args: argparse.Namespace, robot) -> Transport:
    from trot.deploy.unitree.args import transport_from_args

    return transport_from_args(args, robot)


def _unitree_unit_args(args: argparse.Namespace) -> list[str]:
    from trot.deploy.unitree.args import unit_args

    return unit_args(args)


TRANSPORTS: dict[str, TransportEntry] = {
    e.name: e
    for e in (
        TransportEntry("serial", "the serial protocol (deploy/PROTOCOL.md) to the motor/IMU microcontroller",
                       _serial_args, _serial_build, _serial_unit_args),  # fmt: skip
        TransportEntry("ros2", "ROS 2 topics (deploy/ROS2.md): rclpy where it imports, else raw Cyclone DDS",
                       _ros2_args, _ros2_build, _ros2_unit_args),  # fmt: skip
        TransportEntry("unitree", "Unitree's low-level DDS topics rt/lowstate, rt/lowcmd (deploy/UNITREE.md)",
                       _unitree_args, _unitree_build, _unitree_unit_args),  # fmt: skip
    )
}


def add_transport_args(p: argparse.ArgumentParser, default: str = "serial") -> None:
    """`--transport NAME` and every registered transport's flags, one argument group each."""
    help_text = "; ".join(f"{e.name}: {e.description}" for e in TRANSPORTS.values())
    p.add_argument("--transport", default=default, choices=list(TRANSPORTS), help=f"link to the robot ({help_text})")
    for entry in TRANSPORTS.values():
        entry.add_args(p.add_argument_group(f"--transport {entry.name}"))


def build_transport(args: argparse.Namespace, robot) -> Transport:
    """The transport `args.transport` names, not opened yet; ValueError saying why it cannot be used."""
    entry = TRANSPORTS.get(args.transport)
    if entry is None:
        raise ValueError(f"unknown transport {args.transport!r}; expected one of: {', '.join(TRANSPORTS)}")
    return entry.build(args, robot)
