"""The microcontroller's firmware logic: sessions, command clamps, the command watchdog, the e-stop latch.

Pure logic, no I/O and no physics: the link hands it what arrived (a Hello, a Command, an e-stop) with the
time it arrived, and each physics tick asks it what the motors do (`actuation`) given the measured joint
positions. Times are seconds since the emulator started.
"""

from __future__ import annotations

import logging
import math
from typing import NamedTuple

import numpy as np

from trot.deploy.protocol import PROTOCOL_VERSION, Command, ControlMode, EStopReason, Hello, StatusFlags, seq_delta
from trot.hil.emulator.options import EmulatorOptions, EmulatorStats
from trot.robots import Robot

log = logging.getLogger(__name__)

ESTOP_REPEAT_S = 0.1  # the MCU repeats its own EStop at 10 Hz while the host still sends POSITION


class Actuation(NamedTuple):
    """What the motors do this tick, per joint, and the status flags the MCU reports."""

    target: np.ndarray  # rad
    kp: np.ndarray
    kd: np.ndarray
    tau_ff: np.ndarray  # N·m
    status: StatusFlags


class Firmware:
    """The MCU's state machine for one robot; `stats` gets its Command counters."""

    def __init__(self, robot: Robot, options: EmulatorOptions, stats: EmulatorStats):
        self.robot, self.options, self.stats = robot, options, stats
        hw = robot.hardware
        self.kp_max, self.kd_max, self.damping_kd = hw["kp_max"], hw["kd_max"], hw["damping_kd"]
        self.target_lo = np.array(robot.soft_joint_limits.lower)
        self.target_hi = np.array(robot.soft_joint_limits.upper)
        self.robot_id = bytes.fromhex(robot.contract_sha256())
        self.session_t: float | None = None  # when the current session opened
        self.first_session_t: float | None = None
        self.command: tuple | None = None  # (mode, target, kp, kd, tau_ff) of the last valid Command
        self.command_t: float | None = None
        self.command_seq: int | None = None
        self.estop_t: float | None = None  # when the e-stop latched; None: not latched
        self.estop_sent_t = -math.inf  # last EStop the MCU sent itself (button)
        self.estop_repeat = False
        self.position_rx_t = -math.inf  # last POSITION Command seen while e-stopped
        self.watchdog_on = False
        self.rejecting = False

    # ---- what arrives -------------------------------------------------------------------------

    def hello(self, hello: Hello, t: float) -> None:
        """End the current session and release the e-stop; open a new session if the Hello matches."""
        self.stats.hellos += 1
        n = self.robot.num_joints
        problems = []
        if hello.version != PROTOCOL_VERSION:
            problems.append(f"host speaks protocol version {hello.version}, emulator {PROTOCOL_VERSION}")
        if hello.num_joints != n:
            problems.append(f"host expects {hello.num_joints} joints, {self.robot.name} has {n}")
        if self.options.check_robot_id and hello.robot_id != self.robot_id:
            problems.append(
                f"host robot_id {hello.robot_id.hex()} is not {self.robot.name}'s contract_sha256 {self.robot_id.hex()}"
            )
        # A new Hello always ends the current session and releases the e-stop (button released).
        self.session_t = None
        self.estop_t = None
        self.estop_repeat = False
        self.command = self.command_t = self.command_seq = None
        self.watchdog_on = False
        if problems:
            log.warning("Hello refused, no session (MOTORS_OFF): %s", "; ".join(problems))
            return
        self.open_session(t)

    def open_session(self, t: float, why: str = "") -> None:
        """Start a session at t (a matching Hello; over ROS 2, the first command)."""
        self.session_t = t
        if self.first_session_t is None:
            self.first_session_t = t
        log.info("session opened at t=%.2f s%s", t, why)

    def on_command(self, cmd: Command, t: float) -> None:
        """Take a Command: ignored outside a session or under the e-stop, refused if not finite, else clamped."""
        if self.session_t is None:
            self.stats.commands_ignored += 1
            return
        if self.command_seq is not None:
            self.stats.commands_lost += max(seq_delta(self.command_seq, cmd.seq) - 1, 0)
        self.command_seq = cmd.seq
        if self.estop_t is not None:
            self.stats.commands_ignored += 1
            if cmd.mode == ControlMode.POSITION:
                self.position_rx_t = t
            return
        fields_ = (cmd.joint_target, cmd.kp, cmd.kd, cmd.tau_ff)
        if not all(np.isfinite(f).all() for f in fields_):
            self.stats.commands_rejected += 1  # no Command: the watchdog keeps counting
            if not self.rejecting:
                log.warning("Command seq %d rejected: non-finite values", cmd.seq)
            self.rejecting = True
            return
        self.rejecting = False
        lim = np.asarray(self.robot.torque_limit)  # (J,) N·m
        self.command = (
            ControlMode(cmd.mode),
            np.clip(cmd.joint_target.astype(float), self.target_lo, self.target_hi),
            np.clip(cmd.kp.astype(float), 0.0, self.kp_max),
            np.clip(np.where(cmd.kd == 0, self.damping_kd, cmd.kd), 0.0, self.kd_max)
            if cmd.mode == ControlMode.DAMPING
            else np.clip(cmd.kd.astype(float), 0.0, self.kd_max),
            np.clip(cmd.tau_ff.astype(float), -lim, lim),
        )
        self.command_t = t
        self.stats.commands += 1

    def latch_estop(self, t: float, reason: int, source: str) -> bool:
        """Latch the e-stop (once); True when the MCU must now send its own EStop (the button's)."""
        if self.estop_t is not None:
            return False
        self.estop_t = t
        log.warning("e-stop latched by %s (reason %d) at t=%.2f s: damping, then motors off", source, reason, t)
        if reason != EStopReason.BUTTON:
            return False
        self.estop_repeat = True
        self.estop_sent_t = t
        return True

    def release_estop(self, t: float, source: str) -> None:
        """Release a latched e-stop (over ROS 2, a false on the estop topic; over serial, only a new Hello)."""
        if self.estop_t is not None:
            self.estop_t, self.estop_repeat = None, False
            log.info("e-stop released by %s at t=%.2f s", source, t)

    def estop_repeat_due(self, t: float) -> bool:
        """True when the button's EStop must be sent again: 10 Hz while the host still sends POSITION."""
        if self.estop_repeat and self.estop_t is not None and t - self.estop_sent_t >= ESTOP_REPEAT_S:
            if self.position_rx_t > self.estop_sent_t:
                self.estop_sent_t = t
                return True
        return False

    # ---- what the motors do -------------------------------------------------------------------

    @property
    def started(self) -> bool:
        """Whether a session ever opened (the emulator's physics waits for that)."""
        return self.first_session_t is not None

    def actuation(self, t: float, q: np.ndarray) -> Actuation:
        """The motors' command this tick, from the session, e-stop and watchdog; q: measured joint positions."""
        zeros = np.zeros_like(q)
        damping = (q, zeros, zeros + self.damping_kd, zeros)
        off = (q, zeros, zeros, zeros)
        if self.session_t is None:
            return Actuation(*damping, StatusFlags.MOTORS_OFF)
        if self.estop_t is not None:
            if t - self.estop_t < self.options.estop_damping_s:
                return Actuation(*damping, StatusFlags.ESTOP)
            return Actuation(*off, StatusFlags.ESTOP | StatusFlags.MOTORS_OFF)
        since = t - (self.command_t if self.command_t is not None else self.session_t)
        watchdog = since > 1e-3 * self.options.watchdog_ms
        if watchdog != self.watchdog_on:
            self.watchdog_on = watchdog
            if watchdog:
                self.stats.watchdog_trips += 1
                log.warning("watchdog: no Command for %.0f ms: damping", 1e3 * since)
            else:
                log.info("watchdog: Commands resumed")
        if watchdog:
            return Actuation(*damping, StatusFlags.WATCHDOG_DAMPING)
        if self.command is None:  # session open, no Command yet: limp until the first one
            return Actuation(*damping, StatusFlags(0))
        mode, target, kp, kd, tau_ff = self.command
        if mode == ControlMode.POSITION:
            return Actuation(target, kp, kd, tau_ff, StatusFlags(0))
        if mode == ControlMode.DAMPING:
            return Actuation(q, zeros, kd, zeros, StatusFlags(0))
        return Actuation(*off, StatusFlags.MOTORS_OFF)
