"""The unitree link: the emulated robot behind Unitree's low-level DDS topics, as a Go2 presents them.

It publishes `LowState_` on `rt/lowstate` at the emulator's state rate and applies the `LowCmd_` that
`trot deploy --transport unitree` writes on `rt/lowcmd` (`deploy/UNITREE.md`), through the same firmware
part as the other links, so its clamps (soft joint limits, kp_max, kd_max, each joint's torque limit) and
its watchdog apply. `trot emulate --transport unitree` keeps DDS on the loopback interface
(`dds.loopback_config_xml()`) unless CYCLONEDDS_URI already is a loopback-only configuration. What the
topics change, against the serial link:

- No Hello: a session opens with the first sound LowCmd (physics waits for it, as for the Hello).
- A LowCmd is refused, counted in `rx_errors` and logged naming the field, when an array has the wrong size,
  its `crc` does not match its contents, or a mapped motor's mode byte is neither 0x01 (servo: the motor
  applies tau + kp (q - q_m) + kd (dq - dq_m)) nor 0x00 (stop: no torque). Each motor gets its own kp, kd and
  tau (with kd dq folded into the feed-forward torque), then the firmware's clamps.
- No status flags and no e-stop message: a frozen IMU repeats its last reading; the e-stop button fault
  latches the firmware (damping, then motors off) and sends nothing.
- The corrupt fault changes one mapped motor's reported angle after the CRC was stamped: the host must
  see the CRC mismatch. The drop and delay faults apply as over the other links.
- `tau_est` is the applied motor torque in N·m; `torque_constant` does not apply. `tick` counts
  milliseconds since the emulator started.
- The robot's motion service (`unitree_motion`): given a mode (a Go2 boots in "normal"), it answers the motion
  switcher's and the sport service's calls on the same participant and writes its own LowCmd until released.
  Each LowCmd taken is told apart by its writer: the motion service's or a host's (`command_sources`).
"""

from __future__ import annotations

import argparse
import functools
import logging
import time
from collections import deque

import numpy as np

from trot.deploy.protocol import Command, ControlMode
from trot.deploy.unitree import convert, crc
from trot.deploy.unitree.msgs import LOWCMD_TOPIC, LOWSTATE_TOPIC, MODE_SERVO, LowCmd_
from trot.hil.emulator.link import Board, LinkFactory, Reading
from trot.hil.emulator.options import EmulatorOptions
from trot.hil.emulator.unitree_motion import MotionService, check_mode_name
from trot.robots import Robot

log = logging.getLogger(__name__)

MODE_STOP = 0x00  # a motor in stop (standby) mode applies no torque
CORRUPT_RAD = 0.25  # how far the corrupt fault moves the reported angle


def unitree_link(domain_id: int = 0, motion_mode: str | None = None) -> LinkFactory:
    """The link factory for `Emulator(robot, options, link=...)`: this robot on Unitree's topics, its motion service
    running `motion_mode` ("normal", as a Go2 boots) or no mode (None)."""
    return functools.partial(UnitreeLink, domain_id=domain_id, motion_mode=motion_mode)


def check_low_cmd(cmd: LowCmd_, motors: convert.MotorMap) -> str | None:
    """Why a received LowCmd is refused (naming the field), or None."""
    try:
        expected = crc.message_crc(cmd)  # walks every field: refuses an array of the wrong size
    except (ValueError, TypeError) as e:
        return f"LowCmd refused: {e}"
    if cmd.crc != expected:
        return f"LowCmd refused: field 'crc' = {cmd.crc:#010x}; expected {expected:#010x} (its contents')"
    for slot in motors.index:
        mode = cmd.motor_cmd[slot].mode
        if mode not in (MODE_SERVO, MODE_STOP):
            return f"LowCmd refused: field 'motor_cmd[{slot}].mode' = {mode:#04x}; expected 0x01 (servo) or 0x00 (stop)"
    return None


def low_cmd_to_command(cmd: LowCmd_, motors: convert.MotorMap, seq: int) -> Command:
    """The firmware's Command for a sound LowCmd: each motor's PD gains and torque; a stopped motor gets none."""
    targets = convert.low_cmd_to_targets(cmd, motors)
    servo = np.array([cmd.motor_cmd[slot].mode == MODE_SERVO for slot in motors.index])
    kp, kd = np.where(servo, targets.kp, 0.0), np.where(servo, targets.kd, 0.0)
    tau_ff = np.where(servo, targets.tau + targets.kd * targets.dq, 0.0)  # kd (dq* - dq) = kd dq* - kd dq
    mode = ControlMode.POSITION if servo.any() else ControlMode.OFF
    return Command(seq % (1 << 32), mode, targets.q, kp, kd, tau_ff)


def command_mode(command: Command) -> str:
    """What a Command asks of the motors, for people and tests: POSITION, DAMPING (kp 0, kd > 0) or OFF."""
    if command.mode == ControlMode.OFF or not (command.kp.any() or command.kd.any() or command.tau_ff.any()):
        return "OFF"
    return "POSITION" if command.kp.any() else "DAMPING"


class UnitreeLink:
    """LowState out, LowCmd in, over one DDS participant."""

    label = ""

    def __init__(self, robot: Robot, options: EmulatorOptions, board: Board, domain_id: int = 0,
                 motion_mode: str | None = None):  # fmt: skip
        if options.link is not None:
            raise ValueError("EmulatorOptions link: serial link only, no meaning over Unitree's DDS topics")
        self.robot, self.options, self.board, self.domain_id = robot, options, board, domain_id
        check_mode_name(motion_mode)
        self.motion_mode, self.motion = motion_mode, None
        self.motors = convert.MotorMap.from_robot(robot)
        self.port: str | None = None
        self._node = None
        self._queue: deque[tuple[float, object]] = deque()  # (due, LowState), for delay_ms
        self._received = 0
        self._refusing: str | None = None
        self.command_modes: list[tuple[float, str]] = []  # (t, mode) each time the commanded mode changes
        self.command_sources: list[tuple[float, str]] = []  # (t, "motion service" or "host") each time it changes

    def open(self) -> str:
        """Join the DDS domain; return what it publishes and takes, for people."""
        from trot.deploy.unitree.channels import UnitreeNode

        self._node = UnitreeNode(self.domain_id)
        self._reader = self._node.reader(LOWCMD_TOPIC)
        self._writer = self._node.writer(LOWSTATE_TOPIC)
        self.motion = MotionService(self._node, self.robot, self.motors, self.motion_mode)
        rate = 1.0 / self.robot.physics_dt if self.options.state_rate_hz is None else self.options.state_rate_hz
        self.port = (
            f"unitree DDS domain {self.domain_id}: publishing {LOWSTATE_TOPIC} at {rate:g} Hz, taking {LOWCMD_TOPIC} "
            f"(motor slots {self.motors.index.tolist()}); {self.motion.describe()}"
        )
        return self.port

    # ---- receiving ------------------------------------------------------------------------------

    def receive(self, t: float) -> None:
        """The motion service's turn, then the newest sound LowCmd to the firmware; refused ones are counted and
        logged."""
        if self._node is None:
            return
        self.motion.serve(t)
        self.motion.command(t)
        sound = None
        for cmd in (s for s in self._reader.take(N=64) if s.sample_info.valid_data):
            problem = check_low_cmd(cmd, self.motors)
            if problem is None:
                sound, self._refusing = cmd, None
                source = "motion service" if cmd.sample_info.publication_handle == self.motion.lowcmd_handle else "host"
                if not self.command_sources or self.command_sources[-1][1] != source:
                    self.command_sources.append((t, source))
                continue
            self.board.stats.rx_errors += 1
            if problem != self._refusing:
                log.warning("%s", problem)
            self._refusing = problem
        if sound is None:
            return
        firmware = self.board.firmware
        if firmware.session_t is None:
            firmware.open_session(t, f": first LowCmd on {LOWCMD_TOPIC}")
        self._received += 1
        command = low_cmd_to_command(sound, self.motors, self._received)
        firmware.on_command(command, t)
        mode = command_mode(command)
        if not self.command_modes or self.command_modes[-1][1] != mode:
            self.command_modes.append((t, mode))

    # ---- sending --------------------------------------------------------------------------------

    def publish(self, t: float, reading: Reading) -> None:
        """One LowState, through the drop and corrupt faults, queued for the delay fault."""
        q = reading.joint_pos
        bad = ~np.isfinite(q)  # the NaN fault: conversion takes finite values, so set it after
        tick = int(1e3 * t) % (1 << 32)
        state = convert.arrays_to_low_state(self.motors, np.where(bad, 0.0, q), reading.joint_vel,
                                            reading.joint_torque, *reading.imu, tick=tick)  # fmt: skip
        if bad.any():
            for j in np.flatnonzero(bad):
                state.motor_state[self.motors.index[j]].q = float("nan")
            crc.stamp_crc(state)
        faults = self.board.faults
        if faults.drop():
            return
        if faults.corrupts():
            state.motor_state[self.motors.index[0]].q += CORRUPT_RAD  # after the CRC: the host must notice
        self._queue.append((time.monotonic() + faults.delay_s, state))

    def send_estop(self) -> None:
        """Unitree's low-level topics carry no e-stop: the latched firmware damps, and nothing is sent."""

    def flush(self, now: float) -> None:
        """Publish the LowStates due by `now`."""
        if self._node is None:
            return
        while self._queue and self._queue[0][0] <= now:
            self._writer.write(self._queue.popleft()[1])
            self.board.stats.states_sent += 1

    def disconnect(self) -> None:
        """Leave the DDS domain: the participant goes."""
        if self._node is not None:
            self._node.close()
            self._node = None

    close = disconnect


# ---- command line -------------------------------------------------------------------------------


def link_from_args(args: argparse.Namespace) -> LinkFactory:
    """The unitree link from `trot emulate` flags (`--domain_id`, default 0; `--motion_mode`), with DDS kept on
    loopback."""
    from trot.deploy.ros2 import dds
    from trot.deploy.unitree.args import UNITREE_DOMAIN_ID

    if dds.loopback_config_problems():
        dds.use_config(dds.loopback_config_xml())
        log.info("CYCLONEDDS_URI set to the loopback-only configuration (give `trot deploy` --dds_loopback)")
    domain = UNITREE_DOMAIN_ID if getattr(args, "domain_id", None) is None else args.domain_id
    mode = getattr(args, "motion_mode", "normal")
    return unitree_link(domain, None if mode == "none" else mode)
