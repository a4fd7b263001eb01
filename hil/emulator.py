"""Robot emulator: the robot in PyBullet, in real time, behind a pty that speaks the serial protocol.

It plays the motor/IMU microcontroller of `deploy/PROTOCOL.md`: it answers Hello, applies Commands, answers
Heartbeats, latches e-stops, runs its own command watchdog and streams State frames, so that the deploy loop
can be run and tested against it unchanged (`trot deploy --transport serial --port /dev/pts/N`).

Faults are injected on demand (dropped, delayed or corrupted frames, a frozen IMU, a NaN, a disconnect, a
push, a tip-over, the e-stop button), all drawn from one seeded generator. Times of the `*_at` faults are
seconds on the fault clock: since `start()` by default, or since the first session opened (`fault_clock`).

The `joint_current` field of State is the applied motor torque divided by `torque_constant` (joint-side
N·m per A). The default 1.0 makes it the joint torque in N·m; set the motor's Kt times its gear ratio to
get amperes.
"""

from __future__ import annotations

import argparse
import array
import fcntl
import logging
import math
import os
import signal
import sys
import termios
import threading
import time
import tty
from collections import deque
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

from trot.deploy.protocol import (
    PROTOCOL_VERSION,
    Command,
    ControlMode,
    Decoder,
    EStop,
    EStopReason,
    Heartbeat,
    Hello,
    HelloAck,
    MessageType,
    State,
    StatusFlags,
    encode,
    seq_delta,
)
from trot.robots import Robot, load_robot

log = logging.getLogger("trot.hil.emulator")

GRAVITY = np.array([0.0, 0.0, -9.81])
# A host that keeps up never has this much unread; more means nobody reads, and a real UART's bytes are gone.
STALE_INPUT_BYTES = 4000
# Further behind real time than this, the loop stops catching up and restarts its clock.
MAX_CATCHUP_TICKS = 10
ESTOP_REPEAT_S = 0.1  # the MCU repeats its own EStop at 10 Hz while the host still sends POSITION


@dataclass(frozen=True)
class EmulatorOptions:
    """Every knob of the emulator with its default; CLI flags override fields by name."""

    state_rate_hz: float | None = None  # None: one State per physics step
    watchdog_ms: float = 100.0  # no valid Command this long -> damping + WATCHDOG_DAMPING
    estop_damping_s: float = 1.0  # after an e-stop: damping this long, then motors off
    torque_constant: float = 1.0  # joint-side N·m per A for joint_current (1.0: current field = N·m)
    check_robot_id: bool = True  # refuse a Hello whose robot_id is not this contract's SHA-256
    firmware: str = "trot-emulator"  # HelloAck firmware name, at most 16 ASCII bytes
    link: str | None = None  # symlink to the pty slave, a stable name for another process
    seed: int = 0
    fault_clock: str = "start"  # "start": *_at times from start(); "session": from the first session
    drop: float = 0.0  # probability of dropping each outgoing State (its seq is still used)
    delay_ms: float = 0.0  # every outgoing frame leaves this much later
    corrupt: float = 0.0  # probability of changing one byte of each outgoing frame
    freeze_imu_at: float | None = None  # IMU readings stop updating
    freeze_imu_silent: bool = False  # freeze without raising IMU_STALE (a sensor stuck, undetected)
    nan_at: float | None = None  # one joint position reads NaN from then on
    disconnect_at: float | None = None  # the pty closes and the emulator stops
    push_at: float | None = None  # lateral kick of push_velocity to the base
    push_velocity: float = 0.5  # m/s along the base's y axis
    tip_at: float | None = None  # the base is rolled onto its side
    estop_at: float | None = None  # the e-stop button is pressed: latch and send EStop(BUTTON)
    # Physics waits for the first session: the robot stands where it was placed, as if held up at power-on,
    # instead of collapsing limp before any host connects (the soft start can't stand it up from the floor).
    wait_for_host: bool = True

    def __post_init__(self) -> None:
        for name in ("drop", "corrupt"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(
                    f"EmulatorOptions.{name}={getattr(self, name)}, expected a probability in [0, 1]"
                )
        for name in ("watchdog_ms", "torque_constant"):
            if not getattr(self, name) > 0:
                raise ValueError(f"EmulatorOptions.{name}={getattr(self, name)}, expected > 0")
        for name in ("delay_ms", "estop_damping_s"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"EmulatorOptions.{name}={getattr(self, name)}, expected >= 0")
        if self.state_rate_hz is not None and not self.state_rate_hz > 0:
            raise ValueError(f"EmulatorOptions.state_rate_hz={self.state_rate_hz}, expected > 0 or None")
        if self.fault_clock not in ("start", "session"):
            raise ValueError(
                f"EmulatorOptions.fault_clock={self.fault_clock!r}, expected 'start' or 'session'"
            )
        if len(self.firmware.encode("ascii")) > 16:
            raise ValueError(f"EmulatorOptions.firmware={self.firmware!r}, expected at most 16 ASCII bytes")


@dataclass
class EmulatorStats:
    """Counters of one emulator; `summary()` prints the real-time figures."""

    ticks: int = 0  # physics steps
    overruns: int = 0  # ticks that started more than one physics_dt after their deadline
    resyncs: int = 0  # times the loop fell MAX_CATCHUP_TICKS behind and restarted its clock
    max_late_ms: float = 0.0  # worst start of a tick after its deadline
    wall_s: float = 0.0
    cpu_s: float = 0.0  # CPU time of the thread that ran the loop
    states_sent: int = 0
    states_dropped: int = 0  # by the drop fault
    frames_corrupted: int = 0
    stale_flushes: int = 0  # unread output thrown away because nobody read it
    hellos: int = 0
    commands: int = 0  # applied
    commands_ignored: int = 0  # no session or e-stop latched
    commands_rejected: int = 0  # non-finite values
    commands_lost: int = 0  # gaps in the Command seq
    rx_errors: int = 0  # incoming frames the decoder refused (framing, CRC, payload)

    def summary(self, physics_dt: float) -> str:
        wall = max(self.wall_s, 1e-9)
        return (
            f"emulator: {self.wall_s:.1f} s, physics {self.ticks / wall:.1f} Hz "
            f"(target {1 / physics_dt:.0f}), state {self.states_sent / wall:.1f} Hz, "
            f"overruns {self.overruns}, resyncs {self.resyncs}, max late {self.max_late_ms:.1f} ms, "
            f"cpu {100 * self.cpu_s / wall:.0f} %, commands {self.commands} "
            f"(ignored {self.commands_ignored}, rejected {self.commands_rejected}, "
            f"lost {self.commands_lost}), rx errors {self.rx_errors}"
        )


def _rotation(quat_wxyz: np.ndarray) -> np.ndarray:
    """Rotation matrix body -> world of a unit quaternion (w, x, y, z)."""
    w, x, y, z = quat_wxyz
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
            [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
            [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
        ]
    )


class Emulator:
    """The motor/IMU microcontroller of one robot, emulated in PyBullet behind a pseudo-terminal."""

    def __init__(self, robot: Robot, options: EmulatorOptions | None = None):
        self.robot = robot
        # Imported here so that `add_args` (the CLI's parser) does not load PyBullet.
        from trot.hil.pybullet_model import PyBulletRobot

        self.options = options or EmulatorOptions()
        self.sim = PyBulletRobot(robot)  # standing at the default pose
        self.stats = EmulatorStats()
        self.port: str | None = None
        n = robot.num_joints
        hw = robot.hardware
        self._kp_max, self._kd_max, self._damping_kd = hw["kp_max"], hw["kd_max"], hw["damping_kd"]
        self._target_lo = np.array(robot.soft_joint_limits.lower)
        self._target_hi = np.array(robot.soft_joint_limits.upper)
        self._robot_id = bytes.fromhex(robot.contract_sha256())
        self._imu_pos = np.array(robot.imu_pos)
        self._rng = np.random.default_rng(self.options.seed)
        self._decoder = Decoder(n)
        self._state_every = self._state_phase_step()
        self._master: int | None = None
        self._slave: int | None = None
        self._stop = threading.Event()
        self._idle = threading.Event()
        self._idle.set()
        self._lock = threading.Lock()  # held while a tick runs; ground_truth() takes it
        self._t0 = 0.0
        self._seq = dict.fromkeys(MessageType, 0)
        self._tx = bytearray()  # framed bytes waiting for room in the pty
        self._delayed: deque[tuple[float, bytes]] = deque()
        # Session and actuation state.
        self._session_t: float | None = None  # when the current session opened
        self._first_session_t: float | None = None
        self._command: tuple | None = None  # (mode, target, kp, kd, tau_ff) of the last valid Command
        self._command_t: float | None = None
        self._command_seq: int | None = None
        self._estop_t: float | None = None
        self._estop_sent_t = -math.inf  # last EStop the MCU sent itself (button)
        self._estop_repeat = False
        self._position_rx_t = -math.inf  # last POSITION Command seen while e-stopped
        self._watchdog_on = False
        self._rejecting = False
        self._fired: set[str] = set()
        self._nan_joint = int(self._rng.integers(n))
        self._frozen_imu: tuple | None = None
        self._imu_vel = self._imu_kinematics()[3]
        self._state_phase = 0.0
        self.disconnected = False

    def _state_phase_step(self) -> float:
        rate = self.options.state_rate_hz
        if rate is None:
            return 1.0
        if rate * self.robot.physics_dt > 1.0 + 1e-9:
            raise ValueError(
                f"EmulatorOptions.state_rate_hz={rate}, expected at most the physics rate "
                f"{1 / self.robot.physics_dt:.0f} Hz of {self.robot.name}"
            )
        return rate * self.robot.physics_dt

    # ---- lifetime -------------------------------------------------------------------------------

    def start(self) -> str:
        """Open the pseudo-terminal and start the clock; return the slave path (the 'serial port')."""
        if self._master is not None:
            return self.port
        self._master, self._slave = os.openpty()
        tty.setraw(self._slave)
        os.set_blocking(self._master, False)
        self.port = os.ttyname(self._slave)
        if self.options.link:
            link = Path(self.options.link)
            if link.is_symlink():
                link.unlink()  # left by an earlier run
            elif link.exists():
                raise FileExistsError(f"link {link}: exists and is not a symlink; expected a free path")
            link.symlink_to(self.port)
            log.info("link %s -> %s", link, self.port)
        self._t0 = time.monotonic()
        return self.port

    def run(self, duration_s: float | None = None) -> EmulatorStats:
        """Step physics in real time at physics_dt until duration_s, stop(), or a disconnect.

        Deadline-based: each tick starts at start + k physics_dt; a late loop catches up tick by tick, and one
        more than MAX_CATCHUP_TICKS behind restarts its clock (counted in stats.resyncs). stop() is final.
        """
        if self._master is None:
            self.start()
        dt = self.robot.physics_dt
        self._idle.clear()
        begin, cpu_begin = time.monotonic(), time.thread_time()
        deadline = begin
        try:
            while not self._stop.is_set() and not self.disconnected:
                now = time.monotonic()
                if duration_s is not None and now - begin >= duration_s:
                    break
                if now < deadline:
                    time.sleep(deadline - now)
                    now = time.monotonic()
                late = now - deadline
                self.stats.max_late_ms = max(self.stats.max_late_ms, 1e3 * late)
                if late > dt:
                    self.stats.overruns += 1
                if late > MAX_CATCHUP_TICKS * dt:  # stalled: give up on the missed ticks
                    self.stats.resyncs += 1
                    deadline = now
                with self._lock:
                    self._tick(now)
                deadline += dt
        finally:
            self.stats.wall_s += time.monotonic() - begin
            self.stats.cpu_s += time.thread_time() - cpu_begin
            self._idle.set()
        return self.stats

    def stop(self) -> None:
        """Ask run() to return after the current tick; safe from any thread or a signal handler."""
        self._stop.set()

    def close(self) -> None:
        """Stop, wait for run() to return, and release the pty, the link and PyBullet."""
        self.stop()
        if not self._idle.wait(timeout=5.0):
            raise RuntimeError("emulator: run() did not return within 5 s of stop()")
        self._close_pty()
        link = self.options.link
        if link and self.port and Path(link).is_symlink() and os.readlink(link) == self.port:
            Path(link).unlink()
        self.sim.close()

    def __enter__(self) -> Emulator:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _close_pty(self) -> None:
        for fd in (self._master, self._slave):
            if fd is not None:
                os.close(fd)
        self._master = self._slave = None

    def ground_truth(self) -> dict[str, np.ndarray]:
        """Simulator state, for tests and tools in the same process (waits for the current tick)."""
        with self._lock:
            pos, quat = self.sim.base_pose()
            lin, ang = self.sim.base_velocity()
            q, _ = self.sim.joint_state()
        return {"base_pos": pos, "base_quat": quat, "base_lin_vel": lin, "base_ang_vel": ang, "joint_pos": q}

    # ---- one physics tick -----------------------------------------------------------------------

    def _tick(self, now: float) -> None:
        t = now - self._t0
        self._receive(t)
        self._inject_faults(t)
        if self.disconnected:
            return
        target, kp, kd, tau_ff, status = self._actuation(t)
        if self._first_session_t is not None or not self.options.wait_for_host:
            self.sim.step(target, kp, kd, tau_ff)
        self.stats.ticks += 1
        imu = self._read_imu()
        self._state_phase += self._state_every
        if self._state_phase >= 1.0 - 1e-9:
            self._state_phase -= 1.0
            self._send_state(t, status, imu)
        self._repeat_estop(t)
        self._flush(time.monotonic())

    def _clock_us(self) -> int:
        return int(1e6 * (time.monotonic() - self._t0))

    def _fault_time(self, t: float) -> float | None:
        if self.options.fault_clock == "start":
            return t
        return None if self._first_session_t is None else t - self._first_session_t

    def _due(self, name: str, at: float | None, ft: float | None) -> bool:
        """True once, at the first tick at or after time `at` on the fault clock."""
        if at is None or ft is None or ft < at or name in self._fired:
            return False
        self._fired.add(name)
        return True

    def _inject_faults(self, t: float) -> None:
        o, ft = self.options, self._fault_time(t)
        if self._due("push", o.push_at, ft):
            lin, ang = self.sim.base_velocity()
            _, quat = self.sim.base_pose()
            kick = _rotation(quat) @ np.array([0.0, o.push_velocity, 0.0])
            self.sim.client.resetBaseVelocity(self.sim.body, (lin + kick).tolist(), ang.tolist())
            log.warning("fault: push %.2f m/s along the base y axis at t=%.2f s", o.push_velocity, t)
        if self._due("tip", o.tip_at, ft):
            self._tip_over()
            log.warning("fault: tipped over at t=%.2f s", t)
        if self._due("estop", o.estop_at, ft):
            self._latch_estop(t, EStopReason.BUTTON, "the e-stop button")
        if self._due("disconnect", o.disconnect_at, ft):
            log.warning("fault: disconnect at t=%.2f s: closing %s", t, self.port)
            self.disconnected = True  # before the close, so that whoever sees the port close sees this
            self._close_pty()

    def _tip_over(self) -> None:
        """Roll the base onto its side (90°), lifted so that nothing starts inside the floor."""
        pos, quat = self.sim.base_pose()
        w, x, y, z = quat
        r = math.sqrt(0.5)  # 90° about the body x axis: q * (cos 45°, sin 45°, 0, 0)
        rolled = np.array([r * (w - x), r * (x + w), r * (y + z), r * (z - y)])
        lift = max(pos[2], 0.2)
        self.sim.client.resetBasePositionAndOrientation(
            self.sim.body, [pos[0], pos[1], lift], [rolled[1], rolled[2], rolled[3], rolled[0]]
        )
        self.sim.client.resetBaseVelocity(self.sim.body, [0.0, 0.0, 0.0], [0.0, 0.0, 0.0])

    def _actuation(self, t: float) -> tuple:
        """(target, kp, kd, tau_ff, status) to apply this tick, from the session, e-stop and watchdog."""
        q, _ = self.sim.joint_state()
        zeros = np.zeros_like(q)
        damping = (q, zeros, zeros + self._damping_kd, zeros)
        off = (q, zeros, zeros, zeros)
        if self._session_t is None:
            return (*damping, StatusFlags.MOTORS_OFF)
        if self._estop_t is not None:
            if t - self._estop_t < self.options.estop_damping_s:
                return (*damping, StatusFlags.ESTOP)
            return (*off, StatusFlags.ESTOP | StatusFlags.MOTORS_OFF)
        since = t - (self._command_t if self._command_t is not None else self._session_t)
        watchdog = since > 1e-3 * self.options.watchdog_ms
        if watchdog != self._watchdog_on:
            self._watchdog_on = watchdog
            if watchdog:
                log.warning("watchdog: no Command for %.0f ms: damping", 1e3 * since)
            else:
                log.info("watchdog: Commands resumed")
        if watchdog:
            return (*damping, StatusFlags.WATCHDOG_DAMPING)
        if self._command is None:  # session open, no Command yet: limp until the first one
            return (*damping, StatusFlags(0))
        mode, target, kp, kd, tau_ff = self._command
        if mode == ControlMode.POSITION:
            return (target, kp, kd, tau_ff, StatusFlags(0))
        if mode == ControlMode.DAMPING:
            return (q, zeros, kd, zeros, StatusFlags(0))
        return (*off, StatusFlags.MOTORS_OFF)

    def _read_imu(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Quaternion (w x y z), body-frame gyro, body-frame specific force at the IMU; call once a tick."""
        quat, rot, ang, vel = self._imu_kinematics()
        accel = (vel - self._imu_vel) / self.robot.physics_dt
        self._imu_vel = vel
        return quat, rot.T @ ang, rot.T @ (accel - GRAVITY)

    def _imu_kinematics(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Base quaternion, rotation, world angular velocity, and world velocity of the IMU point.

        The URDF puts the base's centre of mass at its origin, which is where PyBullet reports the base.
        """
        _, quat = self.sim.base_pose()
        lin, ang = self.sim.base_velocity()
        rot = _rotation(quat)
        r = rot @ self._imu_pos
        omega_cross_r = np.array(
            [ang[1] * r[2] - ang[2] * r[1], ang[2] * r[0] - ang[0] * r[2], ang[0] * r[1] - ang[1] * r[0]]
        )
        return quat, rot, ang, lin + omega_cross_r

    # ---- receiving ------------------------------------------------------------------------------

    def _receive(self, t: float) -> None:
        while True:
            try:
                chunk = os.read(self._master, 4096)
            except BlockingIOError:
                return
            if not chunk:
                return
            for msg in self._decoder.feed(chunk):
                self._handle(msg, t)
            d = self._decoder
            self.stats.rx_errors = d.framing_errors + d.crc_errors + d.payload_errors

    def _handle(self, msg, t: float) -> None:
        if isinstance(msg, Hello):
            self._on_hello(msg, t)
        elif isinstance(msg, Command):
            self._on_command(msg, t)
        elif isinstance(msg, Heartbeat):
            self._send(Heartbeat(self._next_seq(MessageType.HEARTBEAT), self._clock_us()))
        elif isinstance(msg, EStop):
            self._latch_estop(t, msg.reason, "the host")

    def _on_hello(self, hello: Hello, t: float) -> None:
        self.stats.hellos += 1
        n = self.robot.num_joints
        self._send(HelloAck(n, self.options.firmware.encode("ascii")))
        problems = []
        if hello.version != PROTOCOL_VERSION:
            problems.append(f"host speaks protocol version {hello.version}, emulator {PROTOCOL_VERSION}")
        if hello.num_joints != n:
            problems.append(f"host expects {hello.num_joints} joints, {self.robot.name} has {n}")
        if self.options.check_robot_id and hello.robot_id != self._robot_id:
            problems.append(
                f"host robot_id {hello.robot_id.hex()} is not {self.robot.name}'s contract_sha256 "
                f"{self._robot_id.hex()}"
            )
        # A new Hello always ends the current session and releases the e-stop (button released).
        self._session_t = None
        self._estop_t = None
        self._estop_repeat = False
        self._command = self._command_t = self._command_seq = None
        self._watchdog_on = False
        if problems:
            log.warning("Hello refused, no session (MOTORS_OFF): %s", "; ".join(problems))
            return
        self._session_t = t
        if self._first_session_t is None:
            self._first_session_t = t
        log.info("session opened at t=%.2f s", t)

    def _on_command(self, cmd: Command, t: float) -> None:
        if self._session_t is None:
            self.stats.commands_ignored += 1
            return
        if self._command_seq is not None:
            self.stats.commands_lost += max(seq_delta(self._command_seq, cmd.seq) - 1, 0)
        self._command_seq = cmd.seq
        if self._estop_t is not None:
            self.stats.commands_ignored += 1
            if cmd.mode == ControlMode.POSITION:
                self._position_rx_t = t
            return
        fields_ = (cmd.joint_target, cmd.kp, cmd.kd, cmd.tau_ff)
        if not all(np.isfinite(f).all() for f in fields_):
            self.stats.commands_rejected += 1  # no Command: the watchdog keeps counting
            if not self._rejecting:
                log.warning("Command seq %d rejected: non-finite values", cmd.seq)
            self._rejecting = True
            return
        self._rejecting = False
        lim = self.robot.torque_limit
        self._command = (
            ControlMode(cmd.mode),
            np.clip(cmd.joint_target.astype(float), self._target_lo, self._target_hi),
            np.clip(cmd.kp.astype(float), 0.0, self._kp_max),
            np.clip(np.where(cmd.kd == 0, self._damping_kd, cmd.kd), 0.0, self._kd_max)
            if cmd.mode == ControlMode.DAMPING
            else np.clip(cmd.kd.astype(float), 0.0, self._kd_max),
            np.clip(cmd.tau_ff.astype(float), -lim, lim),
        )
        self._command_t = t
        self.stats.commands += 1

    def _latch_estop(self, t: float, reason: int, source: str) -> None:
        if self._estop_t is not None:
            return
        self._estop_t = t
        log.warning(
            "e-stop latched by %s (reason %d) at t=%.2f s: damping, then motors off", source, reason, t
        )
        if reason == EStopReason.BUTTON:
            self._estop_repeat = True
            self._send_estop(t)

    def _send_estop(self, t: float) -> None:
        self._estop_sent_t = t
        self._send(EStop(self._next_seq(MessageType.ESTOP), EStopReason.BUTTON))

    def _repeat_estop(self, t: float) -> None:
        """Repeat the button's EStop at 10 Hz while the host still sends POSITION (it has not seen it)."""
        if self._estop_repeat and self._estop_t is not None and t - self._estop_sent_t >= ESTOP_REPEAT_S:
            if self._position_rx_t > self._estop_sent_t:
                self._send_estop(t)

    # ---- sending --------------------------------------------------------------------------------

    def _next_seq(self, msg_type: MessageType) -> int:
        seq = self._seq[msg_type]
        self._seq[msg_type] = (seq + 1) % (1 << 32)
        return seq

    def _send_state(self, t: float, status: StatusFlags, imu: tuple) -> None:
        o, ft = self.options, self._fault_time(t)
        q, qd = self.sim.joint_state()
        if o.nan_at is not None and ft is not None and ft >= o.nan_at:
            q[self._nan_joint] = np.nan
        if o.freeze_imu_at is not None and ft is not None and ft >= o.freeze_imu_at:
            if self._frozen_imu is None:
                self._frozen_imu = imu
                log.warning("fault: IMU frozen at t=%.2f s", t)
            imu = self._frozen_imu
            if not o.freeze_imu_silent:
                status |= StatusFlags.IMU_STALE
        state = State(
            self._next_seq(MessageType.STATE),
            self._clock_us(),
            q,
            qd,
            self.sim.last_torque / o.torque_constant,
            *imu,
            status,
        )
        if o.drop > 0 and self._rng.random() < o.drop:
            self.stats.states_dropped += 1
            return
        self.stats.states_sent += 1
        self._send(state)

    def _send(self, msg) -> None:
        """Frame a message and queue it, through the corrupt and delay faults."""
        frame = encode(msg)
        if self.options.corrupt > 0 and self._rng.random() < self.options.corrupt:
            frame = self._corrupt(frame)
        self._delayed.append((time.monotonic() + 1e-3 * self.options.delay_ms, frame))

    def _corrupt(self, frame: bytes) -> bytes:
        """Change one byte inside the frame to another non-zero value (a CRC error, not a new delimiter)."""
        self.stats.frames_corrupted += 1
        out = bytearray(frame)
        i = int(self._rng.integers(1, len(out) - 1))
        out[i] = (out[i] + int(self._rng.integers(1, 255))) % 256 or 1
        return bytes(out)

    def _flush(self, now: float) -> None:
        if self._master is None:
            return
        while self._delayed and self._delayed[0][0] <= now:
            self._tx += self._delayed.popleft()[1]
        unread = array.array("i", [0])
        fcntl.ioctl(self._slave, termios.FIONREAD, unread)
        if unread[0] >= STALE_INPUT_BYTES:  # nobody is reading: drop what a UART would have lost
            termios.tcflush(self._slave, termios.TCIFLUSH)
            self.stats.stale_flushes += 1
        if self._tx:
            try:
                written = os.write(self._master, self._tx)
            except BlockingIOError:
                written = 0
            del self._tx[:written]
            if len(self._tx) > 1 << 16:  # the pty stays full: keep memory bounded
                self._tx.clear()


# ---- command line -------------------------------------------------------------------------------

_DEFAULTS = EmulatorOptions()


def add_args(parser: argparse.ArgumentParser) -> None:
    """Flags of `trot emulate`; names match EmulatorOptions fields."""
    p, d = parser, _DEFAULTS
    p.add_argument("--robot", default="pupper_v3", help="robot name or folder (default: pupper_v3)")
    from trot.deploy.link import TRANSPORTS  # the names `trot deploy` and `trot flash` take

    p.add_argument(
        "--transport",
        choices=list(TRANSPORTS),
        default="serial",
        help="serial: the protocol behind a pty (default); ros2: Imu and JointState topics over DDS on loopback",
    )
    p.add_argument("--duration", type=float, default=None, help="seconds to run (default: until Ctrl-C)")
    p.add_argument("--link", default=None, help="create a symlink at this path to the pty slave")
    p.add_argument(
        "--state_rate_hz",
        type=float,
        default=d.state_rate_hz,
        help="State frames per second (default: physics rate)",
    )
    p.add_argument("--watchdog_ms", type=float, default=d.watchdog_ms, help="no Command this long -> damping")
    p.add_argument("--estop_damping_s", type=float, default=d.estop_damping_s, help="damping after an e-stop")
    p.add_argument(
        "--torque_constant",
        type=float,
        default=d.torque_constant,
        help="N·m per A for joint_current (1: N·m)",
    )
    p.add_argument(
        "--ignore_robot_id", dest="check_robot_id", action="store_false", help="accept any Hello.robot_id"
    )
    p.add_argument("--firmware", default=d.firmware, help="firmware name in HelloAck")
    p.add_argument(
        "--start_limp", dest="wait_for_host", action="store_false",
        help="run physics from start-up (the limp robot collapses) instead of waiting for the first session",
    )  # fmt: skip
    p.add_argument("--seed", type=int, default=d.seed, help="seed of the fault generator")
    f = p.add_argument_group("fault injection (times in s on the fault clock)")
    f.add_argument(
        "--fault_clock",
        choices=["start", "session"],
        default=d.fault_clock,
        help="time zero of the *_at flags",
    )
    f.add_argument("--drop", type=float, default=d.drop, help="drop each State with this probability")
    f.add_argument("--delay_ms", type=float, default=d.delay_ms, help="delay every outgoing frame")
    f.add_argument(
        "--corrupt", type=float, default=d.corrupt, help="corrupt one byte of a frame with this probability"
    )
    f.add_argument(
        "--freeze_imu_at", type=float, default=None, help="IMU readings stop updating (IMU_STALE set)"
    )
    f.add_argument(
        "--freeze_imu_silent", action="store_true", help="freeze the IMU without setting IMU_STALE"
    )
    f.add_argument("--nan_at", type=float, default=None, help="one joint position reads NaN from then on")
    f.add_argument("--disconnect_at", type=float, default=None, help="close the pty and stop")
    f.add_argument("--push_at", type=float, default=None, help="kick the base sideways")
    f.add_argument(
        "--push_velocity", type=float, default=d.push_velocity, help="m/s of the push, base y axis"
    )
    f.add_argument("--tip_at", type=float, default=None, help="roll the robot onto its side")
    f.add_argument("--estop_at", type=float, default=None, help="press the e-stop button (EStop frame sent)")
    from trot.hil import emulator_ros2  # argparse only until it runs

    emulator_ros2.add_args(p.add_argument_group("ROS 2 (--transport ros2; see docs/emulator.md)"))


def options_from_args(args: argparse.Namespace) -> EmulatorOptions:
    """EmulatorOptions with every field that args carries."""
    return EmulatorOptions(
        **{f.name: getattr(args, f.name) for f in fields(EmulatorOptions) if hasattr(args, f.name)}
    )


def run_cli(args: argparse.Namespace) -> int:
    """`trot emulate`: print the serial port, run until --duration or Ctrl-C, print the figures."""
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="emulator: %(message)s", stream=sys.stderr)
    robot = load_robot(args.robot)
    if getattr(args, "transport", "serial") == "ros2":
        from trot.hil.emulator_ros2 import emulator_from_args

        emulator, label = emulator_from_args(robot, args), ""
    else:
        emulator, label = Emulator(robot, options_from_args(args)), "serial port "
    with emulator:
        port = emulator.start()
        print(f"emulator: {label}{port}", flush=True)
        previous = None
        if threading.current_thread() is threading.main_thread():
            previous = signal.signal(signal.SIGTERM, lambda *_: emulator.stop())
        try:
            emulator.run(args.duration)
        except KeyboardInterrupt:
            pass
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)
        print(emulator.stats.summary(robot.physics_dt), flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m trot.hil.emulator", description="Emulate the robot's microcontroller behind a pty."
    )
    add_args(parser)
    return run_cli(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
