"""The deploy loop's safety layer: its state machine, the checks that trip it, and the target clamps.

Plain logic with no I/O and no clock of its own: the loop hands it the time and what it measured each
tick; it answers with the state to be in, and records every transition with a one-line reason.
`deploy/SAFETY.md` lists every state, transition, trigger, bound and log line.
"""

from __future__ import annotations

import enum
import math
from collections import deque
from dataclasses import dataclass

import numpy as np

from trot.deploy.link import ControlMode, StatusFlags


@dataclass(frozen=True)
class SafetyLimits:
    """Every threshold of the safety layer, in one place; SAFETY.md explains each."""

    soft_start_s: float = 1.5  # measured pose -> default pose, POSITION commands
    fade_in_s: float = 2.0  # default pose -> policy target, linear blend
    first_state_s: float = 1.0  # after the handshake, the first State must arrive within this
    stale_periods: float = 3.0  # no new State for this many control periods -> damping
    max_seq_gap: int = 10  # more State frames than this lost in one gap -> damping
    link_errors_max: int = 5  # more framing + CRC errors than this ...
    link_error_window_s: float = 1.0  # ... within this window -> damping
    max_tilt_deg: float = 50.0  # base tilt from upright beyond this -> damping (fall)
    min_quat_norm: float = 0.5  # an IMU quaternion shorter than this is no orientation
    imu_stale_periods: float = 2.0  # IMU_STALE set this long -> damping
    imu_frozen_s: float = 0.25  # IMU readings bit-identical this long -> damping (a stuck, unflagged IMU)
    max_inference_fraction: float = 1.0  # observation + inference slower than this × control_dt ...
    slow_inference_ticks: int = 2  # ... in this many ticks in a row (or once beyond twice it) -> damping
    estop_damping_s: float = 1.0  # after an e-stop: DAMPING this long, then OFF
    shutdown_damping_s: float = 0.5  # after Ctrl-C, SIGTERM or the end of --duration: DAMPING, then exit

    def __post_init__(self) -> None:
        for name in ("soft_start_s", "fade_in_s", "estop_damping_s", "shutdown_damping_s", "imu_frozen_s"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"SafetyLimits.{name}={getattr(self, name)}, expected >= 0")
        for name in ("first_state_s", "stale_periods", "link_error_window_s", "imu_stale_periods"):
            if not getattr(self, name) > 0:
                raise ValueError(f"SafetyLimits.{name}={getattr(self, name)}, expected > 0")
        if not 0 < self.max_tilt_deg < 180:
            raise ValueError(f"SafetyLimits.max_tilt_deg={self.max_tilt_deg}, expected in (0, 180)")
        if not self.max_inference_fraction > 0:
            raise ValueError(f"SafetyLimits.max_inference_fraction={self.max_inference_fraction}, expected > 0")
        if self.max_seq_gap < 0 or self.link_errors_max < 0:
            raise ValueError("SafetyLimits.max_seq_gap and link_errors_max must be >= 0")


class Mode(str, enum.Enum):
    """States of the deploy loop; the value is what logs and telemetry show."""

    INIT = "INIT"
    HANDSHAKE = "HANDSHAKE"  # link open, waiting for the first State; DAMPING commands
    SOFT_START = "SOFT_START"  # measured pose -> default pose
    FADE_IN = "FADE_IN"  # default pose -> policy target
    RUNNING = "RUNNING"  # policy target
    DAMPING = "DAMPING"  # after a fault; latched until the process exits
    ESTOP_DAMPING = "ESTOP_DAMPING"  # after an e-stop, estop_damping_s
    OFF = "OFF"  # after ESTOP_DAMPING; latched
    SHUTDOWN = "SHUTDOWN"  # stop requested: damping for shutdown_damping_s
    DONE = "DONE"  # the loop exits


# What each state sends; every state sends a Command every tick so that the MCU's watchdog stays fed.
COMMAND_MODE = {
    Mode.INIT: ControlMode.DAMPING,
    Mode.HANDSHAKE: ControlMode.DAMPING,
    Mode.SOFT_START: ControlMode.POSITION,
    Mode.FADE_IN: ControlMode.POSITION,
    Mode.RUNNING: ControlMode.POSITION,
    Mode.DAMPING: ControlMode.DAMPING,
    Mode.ESTOP_DAMPING: ControlMode.DAMPING,
    Mode.OFF: ControlMode.OFF,
    Mode.SHUTDOWN: ControlMode.DAMPING,
    Mode.DONE: ControlMode.DAMPING,  # the loop repeats the previous state's mode in its last tick
}
POLICY_MODES = frozenset({Mode.FADE_IN, Mode.RUNNING})  # the policy runs in these
ACTIVE_MODES = frozenset({Mode.SOFT_START, Mode.FADE_IN, Mode.RUNNING})  # motors driven to targets
CHECKED_MODES = ACTIVE_MODES | {Mode.HANDSHAKE}  # sensor and link checks trip a fault in these
# Flags of the MCU that are a fault in an active state (ESTOP has its own transition; IMU_STALE a delay).
FAULT_FLAGS = StatusFlags.WATCHDOG_DAMPING | StatusFlags.MOTORS_OFF | StatusFlags.LOW_VOLTAGE | StatusFlags.MOTOR_FAULT


@dataclass(frozen=True)
class Transition:
    t: float  # loop clock, s
    src: Mode
    dst: Mode
    cause: str  # short machine-readable code: "stale", "fall", "estop_host", ...
    reason: str  # one line for people

    @property
    def line(self) -> str:
        return f"{self.src.value} -> {self.dst.value}: {self.reason}"


def tilt_deg(quat_wxyz: np.ndarray) -> float:
    """Angle between the body z axis and the world's up axis, degrees (0 upright, 180 upside down)."""
    w, x, y, z = np.asarray(quat_wxyz, dtype=np.float64) / np.linalg.norm(quat_wxyz)
    return math.degrees(math.acos(min(1.0, max(-1.0, 1.0 - 2.0 * (x * x + y * y)))))


def _nonfinite(**arrays) -> str | None:
    """Name and joint/index of the first non-finite value among the arrays, or None."""
    for name, values in arrays.items():
        bad = np.flatnonzero(~np.isfinite(np.asarray(values, dtype=np.float64)))
        if bad.size:
            return f"{name}[{bad[0]}] = {np.asarray(values).ravel()[bad[0]]}"
    return None


class SafetyMachine:
    """The deploy loop's state machine; each method is one kind of event and may cause one transition."""

    def __init__(self, limits: SafetyLimits, control_dt: float):
        self.limits = limits
        self.control_dt = control_dt
        self.state = Mode.INIT
        self.entered = 0.0  # loop time the current state began
        self.transitions: list[Transition] = []
        self.faulted = False  # a fault or an e-stop happened: the run does not end cleanly
        self.stop_reason: str | None = None
        self._connected_t: float | None = None
        self._last_rx: float | None = None
        self._errors: deque[tuple[float, int]] = deque()  # (t, cumulative link errors)
        self._imu_stale_since: float | None = None
        self._imu_last: bytes | None = None
        self._slow_ticks = 0  # consecutive ticks whose inference missed the period
        self._imu_same_since: float | None = None

    # ---- transitions ----------------------------------------------------------------------------

    def _go(self, now: float, dst: Mode, cause: str, reason: str) -> Transition:
        transition = Transition(now, self.state, dst, cause, reason)
        self.transitions.append(transition)
        self.state, self.entered = dst, now
        return transition

    def progress(self, now: float) -> float:
        """Fraction in [0, 1] of SOFT_START or FADE_IN done."""
        length = {Mode.SOFT_START: self.limits.soft_start_s, Mode.FADE_IN: self.limits.fade_in_s}.get(self.state)
        if not length:
            return 1.0
        return min(1.0, max(0.0, (now - self.entered) / length))

    def begin(self, now: float, what: str) -> Transition:
        """INIT -> HANDSHAKE: the transport is being opened."""
        return self._go(now, Mode.HANDSHAKE, "begin", f"opening {what}")

    def refuse(self, now: float, reason: str) -> Transition:
        """HANDSHAKE -> DONE: the link could not be opened or the peer does not match; nothing was driven."""
        return self._go(now, Mode.DONE, "refused", f"refused: {reason}")

    def connected(self, now: float) -> None:
        """The handshake succeeded: the first State is due within first_state_s."""
        self._connected_t = now

    def request_stop(self, now: float, reason: str) -> Transition | None:
        """Ctrl-C, SIGTERM, the end of --duration or the operator: damp, then exit."""
        if self.stop_reason is None:
            self.stop_reason = reason
        if self.state in (Mode.SHUTDOWN, Mode.DONE):
            return None
        if self.state in (Mode.OFF, Mode.INIT):
            return self._go(now, Mode.DONE, "stop", f"{reason}: exiting")
        if self.state == Mode.ESTOP_DAMPING:
            return None  # finish the e-stop's damping; OFF then exits at once
        return self._go(
            now, Mode.SHUTDOWN, "stop", f"{reason}: damping {self.limits.shutdown_damping_s:.1f} s, then exit"
        )

    def estop(self, now: float, cause: str, reason: str) -> Transition | None:
        """E-stop from the host (keyboard, signal, gamepad) or the MCU: damping, then motors off, latched."""
        if self.state in (Mode.ESTOP_DAMPING, Mode.OFF, Mode.DONE):
            return None
        self.faulted = True
        return self._go(
            now, Mode.ESTOP_DAMPING, cause, f"{reason}: damping {self.limits.estop_damping_s:.1f} s, then motors off"
        )

    def fault(self, now: float, cause: str, reason: str) -> Transition | None:
        """Any watchdog, sensor or policy fault: damping, latched until the process exits."""
        if self.state not in CHECKED_MODES:
            return None  # already safe (or stopping): the first fault is the one reported
        self.faulted = True
        return self._go(now, Mode.DAMPING, cause, f"{reason}: damping")

    def advance(self, now: float) -> Transition | None:
        """Time-driven transitions: end of soft start, fade-in, e-stop damping and shutdown."""
        elapsed = now - self.entered
        lim = self.limits
        if self.state == Mode.SOFT_START and elapsed >= lim.soft_start_s:
            return self._go(
                now,
                Mode.FADE_IN,
                "soft_start_done",
                f"at the default pose; fading the policy in over {lim.fade_in_s:.1f} s",
            )
        if self.state == Mode.FADE_IN and elapsed >= lim.fade_in_s:
            return self._go(now, Mode.RUNNING, "fade_in_done", "policy fully in control")
        if self.state == Mode.ESTOP_DAMPING and elapsed >= lim.estop_damping_s:
            return self._go(
                now, Mode.OFF, "estop_off", f"e-stop: damped {lim.estop_damping_s:.1f} s, motors off (latched)"
            )
        if self.state == Mode.OFF and self.stop_reason is not None:
            return self._go(now, Mode.DONE, "stop", f"{self.stop_reason}: exiting")
        if self.state == Mode.SHUTDOWN and elapsed >= lim.shutdown_damping_s:
            return self._go(now, Mode.DONE, "stop_done", f"damped {lim.shutdown_damping_s:.1f} s: exiting")
        if self.state == Mode.HANDSHAKE and self._connected_t is not None and self._last_rx is None:
            if now - self._connected_t > lim.first_state_s:
                return self.fault(now, "no_state", f"no State within {lim.first_state_s:.1f} s of the handshake")
        return None

    # ---- checks ---------------------------------------------------------------------------------

    def check_link(self, now: float, lost: str | None, link_errors: int, payload_errors: int) -> Transition | None:
        """Link lost, any payload error (the peer disagrees), or a burst of framing/CRC errors."""
        if lost:
            return self.fault(now, "link_lost", f"link lost ({lost})")
        if payload_errors:
            return self.fault(
                now,
                "payload",
                f"{payload_errors} frames with a valid CRC but a wrong type or size: the "
                "microcontroller speaks another protocol or joint count",
            )
        window = self.limits.link_error_window_s
        self._errors.append((now, link_errors))
        while len(self._errors) > 1 and self._errors[1][0] <= now - window:
            self._errors.popleft()
        recent = link_errors - self._errors[0][1]
        if recent > self.limits.link_errors_max:
            return self.fault(
                now, "crc", f"{recent} framing/CRC errors in {window:.1f} s > {self.limits.link_errors_max}"
            )
        return None

    def check_state(self, now: float, arrived: list, seq_gap: int | None) -> Transition | None:
        """Checks on the States that arrived this tick (`arrived`: `link.Sample`s, oldest first, each stamped with
        its arrival time; empty when none came). `seq_gap` is the largest sequence step among them (1: none lost).

        Staleness is timed from the newest State's arrival, and the IMU rules from the arrival of the first State
        that showed the condition, so a State that waited for the loop's next tick is not younger than it is.
        The first State after the handshake that passes every check moves HANDSHAKE to SOFT_START.
        """
        lim, dt = self.limits, self.control_dt
        first = self._last_rx is None
        if arrived:
            self._last_rx = arrived[-1].rx_time
        if self.state not in CHECKED_MODES or self._last_rx is None:
            return None
        age, stale = now - self._last_rx, lim.stale_periods * dt
        if self.state in ACTIVE_MODES and age > stale:
            return self.fault(now, "stale", f"state stale {1e3 * age:.0f} ms > {1e3 * stale:.0f} ms")
        if not arrived:
            return None
        sample = arrived[-1]
        status = StatusFlags(sample.status)
        if StatusFlags.ESTOP in status:
            return self.estop(now, "estop_mcu", "microcontroller reports ESTOP")
        bad = status & FAULT_FLAGS
        if bad:
            names = "|".join(f.name for f in StatusFlags if f in bad)
            hint = ""
            if self.state == Mode.HANDSHAKE and StatusFlags.MOTORS_OFF in bad:
                hint = " after the handshake: no session (robot_id/contract refused, or motors unpowered)"
            return self.fault(now, "mcu_status", f"microcontroller reports {names}{hint}")
        if not first and seq_gap is not None:
            if seq_gap <= 0:
                return self.fault(
                    now,
                    "seq_restart",
                    f"State seq stepped by {seq_gap}, expected 1: the microcontroller restarted or repeated a frame",
                )
            if seq_gap - 1 > lim.max_seq_gap:
                return self.fault(now, "seq_gap", f"{seq_gap - 1} State frames lost > {lim.max_seq_gap}")
        which = _nonfinite(
            joint_pos=sample.joint_pos, joint_vel=sample.joint_vel, imu_quat=sample.imu_quat, gyro=sample.gyro
        )
        if which:
            return self.fault(now, "nonfinite", f"non-finite State: {which}")
        norm = float(np.linalg.norm(sample.imu_quat))
        if norm < lim.min_quat_norm:
            return self.fault(now, "imu_quat", f"IMU quaternion norm {norm:.2f} < {lim.min_quat_norm}")
        tilt = tilt_deg(sample.imu_quat)
        if tilt > lim.max_tilt_deg:
            return self.fault(now, "fall", f"fall: tilt {tilt:.0f} deg > {lim.max_tilt_deg:.0f} deg")
        transition = self._check_imu(now, arrived)
        if transition is None and self.state == Mode.HANDSHAKE:
            return self._go(
                now,
                Mode.SOFT_START,
                "first_state",
                f"first State: moving to the default pose over {lim.soft_start_s:.1f} s",
            )
        return transition

    def _check_imu(self, now: float, arrived: list) -> Transition | None:
        """IMU_STALE set too long, or IMU readings bit-identical too long (a stuck sensor nobody flagged); both
        timed from the arrival of the first State that showed it."""
        lim, dt = self.limits, self.control_dt
        for s in arrived:
            if StatusFlags.IMU_STALE in StatusFlags(s.status):
                self._imu_stale_since = s.rx_time if self._imu_stale_since is None else self._imu_stale_since
            else:
                self._imu_stale_since = None
            imu = np.concatenate([s.imu_quat, s.gyro, s.accel]).astype(np.float32).tobytes()
            if imu != self._imu_last:
                self._imu_last, self._imu_same_since = imu, s.rx_time
        if self._imu_stale_since is not None and now - self._imu_stale_since > lim.imu_stale_periods * dt:
            return self.fault(
                now,
                "imu_stale",
                f"microcontroller reports IMU_STALE for "
                f"{1e3 * (now - self._imu_stale_since):.0f} ms > {1e3 * lim.imu_stale_periods * dt:.0f} ms",
            )
        if lim.imu_frozen_s and now - self._imu_same_since > lim.imu_frozen_s:
            return self.fault(
                now,
                "imu_frozen",
                f"IMU readings unchanged for {1e3 * (now - self._imu_same_since):.0f} ms "
                f"> {1e3 * lim.imu_frozen_s:.0f} ms",
            )
        return None

    def check_policy(self, now: float, obs: np.ndarray, action: np.ndarray, inference_s: float) -> Transition | None:
        """Non-finite observation or action, or observation + inference slower than the period."""
        which = _nonfinite(obs=obs, action=action)
        if which:
            return self.fault(now, "nonfinite", f"non-finite policy input/output: {which}")
        # One late tick is a scheduling hiccup (its late target is never sent); a policy that keeps
        # missing the period, or one stalled for two periods, is a fault.
        budget = self.limits.max_inference_fraction * self.control_dt
        self._slow_ticks = self._slow_ticks + 1 if inference_s > budget else 0
        if self._slow_ticks >= self.limits.slow_inference_ticks or inference_s > 2 * budget:
            return self.fault(
                now, "inference",
                f"inference {1e3 * inference_s:.1f} ms > {1e3 * budget:.1f} ms (the control period), "
                f"{self._slow_ticks} tick(s) in a row",
            )  # fmt: skip
        return None


@dataclass
class ClampCounts:
    """Joints whose target a clamp moved this tick."""

    rate: int = 0
    torque: int = 0
    position: int = 0


class TargetClamp:
    """Joint-target clamps from the verified contract and the robot's hardware caps: rate, predicted PD
    torque, then soft position limits (the contract's joint limits less `soft_limit_margin`)."""

    def __init__(self, contract, hardware: dict):
        margin = hardware["soft_limit_margin"]
        self.lower = np.asarray(contract.joint_lower, dtype=np.float64) + margin
        self.upper = np.asarray(contract.joint_upper, dtype=np.float64) - margin
        self.max_step = np.asarray(contract.velocity_limit) * contract.control_dt  # (J,) rad per tick
        self.torque_limit = np.asarray(contract.torque_limit, dtype=np.float64)  # (J,) N·m
        self.kp = min(contract.kp, hardware["kp_max"])
        self.kd = min(contract.kd, hardware["kd_max"])
        self.damping_kd = min(hardware["damping_kd"], hardware["kd_max"])
        self.default = np.clip(np.asarray(contract.default_joint_pos, dtype=np.float64), self.lower, self.upper)

    def __call__(
        self, target: np.ndarray, joint_pos: np.ndarray, joint_vel: np.ndarray, previous: np.ndarray | None
    ) -> tuple[np.ndarray, ClampCounts]:
        """The target to send, and how many joints each clamp moved."""
        counts = ClampCounts()
        out = np.asarray(target, dtype=np.float64).copy()
        if previous is not None:
            stepped = np.clip(out, previous - self.max_step, previous + self.max_step)
            counts.rate = int(np.count_nonzero(stepped != out))
            out = stepped
        if np.all(np.isfinite(joint_pos)) and np.all(np.isfinite(joint_vel)) and self.kp > 0:
            # Move the target so that kp (target - q) - kd qd stays within the torque limit.
            torque = self.kp * (out - joint_pos) - self.kd * joint_vel
            held = np.clip(torque, -self.torque_limit, self.torque_limit)
            moved = held != torque
            counts.torque = int(np.count_nonzero(moved))
            out = np.where(moved, joint_pos + (held + self.kd * joint_vel) / self.kp, out)
        limited = np.clip(out, self.lower, self.upper)
        counts.position = int(np.count_nonzero(limited != out))
        return limited, counts


def smoothstep(x: float) -> float:
    """0 -> 0, 1 -> 1 with zero slope at both ends (soft start: no jerk at the start or the end)."""
    x = min(1.0, max(0.0, x))
    return x * x * (3.0 - 2.0 * x)
