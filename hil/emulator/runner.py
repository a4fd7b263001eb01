"""The real-time runner: the emulator's parts (firmware, plant, faults, link) stepped at physics_dt.

One tick: take what arrived on the link, apply the faults due, ask the firmware what the motors do and
step the plant with it, read the IMU, publish a reading when one is due, repeat the button's e-stop
while needed, and flush what the link has queued.
"""

from __future__ import annotations

import logging
import threading
import time

from trot.deploy.protocol import EStopReason, StatusFlags
from trot.hil.emulator.faults import Faults
from trot.hil.emulator.firmware import Actuation, Firmware
from trot.hil.emulator.link import Board, LinkFactory, Reading
from trot.hil.emulator.options import EmulatorOptions, EmulatorStats
from trot.hil.emulator.plant import Plant
from trot.hil.emulator.serial_link import SerialLink
from trot.robots import Robot

log = logging.getLogger(__name__)

# Further behind real time than this, the loop stops catching up and restarts its clock.
MAX_CATCHUP_TICKS = 10


def state_phase_step(options: EmulatorOptions, robot: Robot) -> float:
    """Readings per physics tick (1.0: one every tick), refusing a rate above the physics rate."""
    rate = options.state_rate_hz
    if rate is None:
        return 1.0
    if rate * robot.physics_dt > 1.0 + 1e-9:
        raise ValueError(
            f"EmulatorOptions.state_rate_hz={rate}, expected at most the physics rate "
            f"{1 / robot.physics_dt:.0f} Hz of {robot.name}"
        )
    return rate * robot.physics_dt


class Emulator:
    """The motor/IMU microcontroller of one robot, emulated in PyBullet behind a link (default: a serial pty)."""

    def __init__(self, robot: Robot, options: EmulatorOptions | None = None, link: LinkFactory = SerialLink):
        self.robot = robot
        self.options = options or EmulatorOptions()
        self._state_every = state_phase_step(self.options, robot)
        self.stats = EmulatorStats()
        self.firmware = Firmware(robot, self.options, self.stats)
        self.faults = Faults(self.options, robot.num_joints, self.stats)
        self.board = Board(self.firmware, self.faults, self.stats)
        self.link = link(robot, self.options, self.board)
        self.plant = Plant(robot)  # standing at the default pose
        self._opened = False
        self._stop = threading.Event()
        self._idle = threading.Event()
        self._idle.set()
        self._lock = threading.Lock()  # held while a tick runs; ground_truth() takes it
        self._state_phase = 0.0
        self.disconnected = False

    @property
    def port(self) -> str | None:
        """What the host connects to: the pty slave path, or over ROS 2 a description of the topics."""
        return self.link.port

    # ---- lifetime -------------------------------------------------------------------------------

    def start(self) -> str:
        """Open the link and start the clock; return the port."""
        if not self._opened:
            self.link.open()
            self.board.t0 = time.monotonic()
            self._opened = True
        return self.port

    def run(self, duration_s: float | None = None) -> EmulatorStats:
        """Step physics in real time at physics_dt until duration_s, stop(), or a disconnect.

        Deadline-based: each tick starts at start + k physics_dt; a late loop catches up tick by tick, and one
        more than MAX_CATCHUP_TICKS behind restarts its clock (counted in stats.resyncs). stop() is final.
        """
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
        """Stop, wait for run() to return, and release the link and PyBullet."""
        self.stop()
        if not self._idle.wait(timeout=5.0):
            raise RuntimeError("emulator: run() did not return within 5 s of stop()")
        self.link.close()
        self.plant.close()

    def __enter__(self) -> Emulator:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def ground_truth(self) -> dict:
        """Simulator state, for tests and tools in the same process (waits for the current tick)."""
        with self._lock:
            return self.plant.ground_truth()

    # ---- one physics tick -----------------------------------------------------------------------

    def _tick(self, now: float) -> None:
        t = now - self.board.t0
        self.link.receive(t)
        self._inject_faults(t)
        if self.disconnected:
            return
        act = self.firmware.actuation(t, self.plant.joint_state()[0])
        if self.firmware.started or not self.options.wait_for_host:
            self.plant.step(act)
        self.stats.ticks += 1
        imu = self.plant.read_imu()
        self._state_phase += self._state_every
        if self._state_phase >= 1.0 - 1e-9:
            self._state_phase -= 1.0
            self.link.publish(t, self._reading(t, act, imu))
        if self.firmware.estop_repeat_due(t):
            self.link.send_estop()
        self.link.flush(time.monotonic())

    def _reading(self, t: float, act: Actuation, imu: tuple) -> Reading:
        """What the MCU reports now: joint state, motor torque and IMU, through the NaN and frozen-IMU faults."""
        q, qd = self.plant.joint_state()
        q, imu, stale = self.faults.readings(self.board.fault_time(t), t, q, imu)
        status = act.status | StatusFlags.IMU_STALE if stale else act.status
        return Reading(q, qd, self.plant.joint_torque, imu, status)

    def _inject_faults(self, t: float) -> None:
        o = self.options
        for event in self.faults.events(self.board.fault_time(t)):
            if event == "push":
                self.plant.push(o.push_velocity)
                log.warning("fault: push %.2f m/s along the base y axis at t=%.2f s", o.push_velocity, t)
            elif event == "tip":
                self.plant.tip_over()
                log.warning("fault: tipped over at t=%.2f s", t)
            elif event == "estop":
                if self.firmware.latch_estop(t, EStopReason.BUTTON, "the e-stop button"):
                    self.link.send_estop()
            elif event == "disconnect":
                log.warning("fault: disconnect at t=%.2f s: closing %s", t, self.port)
                self.disconnected = True  # before the close, so that whoever sees the port close sees this
                self.link.disconnect()
