"""One gate cell: an engine with a perturbation applied (`CellSim`), driven by the deploy runtime (`run_cell`).

`run_cell` is the worker-process entry point: it builds its own engine and runtime, runs the cell's
commands through `trot.deploy.runtime.PolicyRuntime` one control period at a time, stops on a fall, and
hands the trace to `judge`.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
import time
import zlib
from collections import deque
from dataclasses import dataclass

import numpy as np

from trot.deploy.bundle import Bundle
from trot.hil.gate.commands import COMMANDS, command_at
from trot.hil.gate.judge import SATURATED, CellResult, GateThresholds, judge
from trot.hil.gate.perturbations import PERTURBATIONS, Perturbation, apply_physics
from trot.hil.kinematics import quat_mul, rotation
from trot.robots import Robot, load_robot
from trot.sim.backend import CONTACT_FORCE_N

ENGINES = ("pybullet", "mujoco")


def make_engine(name: str, robot: Robot):
    """A single-robot simulator with PyBulletRobot's interface."""
    with _quiet_stdout():  # PyBullet prints its argv on connect
        if name == "pybullet":
            from trot.hil.pybullet_model import PyBulletRobot

            return PyBulletRobot(robot)
        if name == "mujoco":
            from trot.hil.mujoco_robot import MujocoRobot

            return MujocoRobot(robot)
    raise ValueError(f"engine '{name}': expected one of {ENGINES}")


@contextlib.contextmanager
def _quiet_stdout():
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 1)
            yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)


class CellSim:
    """One cell's physics: an engine with a perturbation applied, advanced one control period per `act`.

    Give it a freshly built engine: the nominal cell leaves the base mass as built rather than resetting it.
    """

    def __init__(
        self,
        engine,
        robot: Robot,
        p: Perturbation,
        seconds: float,
        rng: np.random.Generator,
        noise_stds: dict[str, float] | None = None,
        kp: float | None = None,
        kd: float | None = None,
    ):
        self.engine, self.robot, self.p, self.rng = engine, robot, p, rng
        self.kp = robot.kp if kp is None else kp
        self.kd = robot.kd if kd is None else kd
        if p.sensor_noise and not noise_stds:
            raise ValueError("CellSim: a sensor_noise perturbation needs noise_stds")
        self.noise = noise_stds if p.sensor_noise else None
        engine.reset()
        apply_physics(engine, robot, p)
        self.default = np.asarray(robot.default_joint_pos, dtype=float)
        self.lower = np.asarray(robot.soft_joint_limits.lower)  # targets: where training and the robot clamp
        self.upper = np.asarray(robot.soft_joint_limits.upper)
        self.hard_lower = np.asarray(robot.joint_limits.lower)  # joints: the URDF stops, for the margin
        self.hard_upper = np.asarray(robot.joint_limits.upper)
        self.pending = deque([self.default] * p.latency_steps)
        push_at = min(p.push_at_s, 0.5 * seconds)
        self.push_step = round(push_at / robot.control_dt) if p.push_mps else None
        self.standing_height = float(engine.base_pose()[0][2])
        self.steps = 0
        self._feet = engine.foot_positions()

    def sensors(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """What the robot's IMU and encoders read: quaternion w x y z, body gyro, joint pos and vel."""
        _, quat = self.engine.base_pose()
        _, ang_world = self.engine.base_velocity()
        gyro = rotation(quat).T @ ang_world
        q, qd = self.engine.joint_state()
        if self.noise is None:
            return quat, gyro, q, qd
        n, r = self.noise, self.rng
        tilt = r.normal(0.0, n.get("projected_gravity", 0.0), 3)  # body-frame rotation vector
        quat = quat_mul(quat, np.concatenate([[1.0], 0.5 * tilt]))
        quat /= np.linalg.norm(quat)
        gyro = gyro + r.normal(0.0, n.get("base_ang_vel", 0.0), 3)
        q = q + r.normal(0.0, n.get("joint_pos_rel", 0.0), q.shape)
        qd = qd + r.normal(0.0, n.get("joint_vel", 0.0), qd.shape)
        return quat, gyro, q, qd

    def kick(self) -> None:
        """The push: a lateral velocity along the base's y axis, projected onto the floor."""
        y = rotation(self.engine.base_pose()[1])[:, 1]
        y[2] = 0.0
        self.engine.add_base_velocity(self.p.push_mps * y / max(np.linalg.norm(y), 1e-9))

    def act(self, target) -> dict:
        """Apply a joint target (through the latency) for one control period; return per-period samples."""
        if self.steps == self.push_step:
            self.kick()
        target = np.clip(np.asarray(target, dtype=float), self.lower, self.upper)
        self.pending.append(target)
        applied = self.pending.popleft()
        e, limit = self.engine, np.asarray(self.robot.torque_limit) * self.p.motor_strength
        saturated = np.zeros(self.robot.num_joints)
        peak = np.zeros(self.robot.num_joints)
        slip, base_contact = [], False
        for _ in range(self.robot.decimation):
            e.step(applied, self.kp, self.kd)
            tau = np.abs(e.last_torque)
            peak = np.maximum(peak, tau)
            saturated += tau >= SATURATED * limit
            feet = e.foot_positions()
            speed = np.linalg.norm((feet - self._feet)[:, :2], axis=1) / self.robot.physics_dt
            slip.extend(speed[e.foot_contacts() > CONTACT_FORCE_N])
            self._feet = feet
            base_contact |= e.base_contact()
        self.steps += 1
        return {
            "peak_torque": peak,  # (J,) N·m
            "saturated_steps": saturated,  # (J,) physics steps at the limit
            "slip": slip,  # speeds of the feet in contact, m/s
            "base_contact": base_contact,
        }


@dataclass(frozen=True)
class CellSpec:
    """One cell of the matrix, as handed to a worker process."""

    engine: str
    command: str
    perturbation: str
    bundle: Bundle
    robot: str  # name or folder
    seconds: float
    seed: int
    thresholds: GateThresholds
    noise_stds: dict | None = None


def cell_seed(seed: int, command: str, perturbation: str) -> list[int]:
    """Per-cell noise seed: the same cell draws the same noise whatever else runs, in either engine."""
    return [seed, zlib.crc32(f"{command}/{perturbation}".encode())]


TRACE_KEYS = ("t", "command", "command_start", "lin_vel", "yaw_rate", "height", "tilt_deg")


def run_cell(spec: CellSpec) -> CellResult:
    """Run one cell through the deploy runtime and judge it (worker-process entry point)."""
    from trot.deploy.runtime import PolicyRuntime

    started = time.perf_counter()
    robot = load_robot(spec.robot)
    runtime = PolicyRuntime(spec.bundle, robot)
    contract, th = spec.bundle.contract, spec.thresholds
    engine = make_engine(spec.engine, robot)
    try:
        p = PERTURBATIONS[spec.perturbation]
        rng = np.random.default_rng(cell_seed(spec.seed, spec.command, spec.perturbation))
        sim = CellSim(engine, robot, p, spec.seconds, rng, spec.noise_stds, contract.kp, contract.kd)
        segments = COMMANDS[spec.command]
        dt = robot.control_dt
        trace = {k: [] for k in TRACE_KEYS}
        samples, fall_time = [], None
        margin = math.inf
        for k in range(round(spec.seconds / dt)):
            t = k * dt
            cmd, start = command_at(segments, t, spec.seconds)
            out = runtime.step(*sim.sensors(), cmd)
            s = sim.act(out.target)
            pos, quat = engine.base_pose()
            lin_world, ang_world = engine.base_velocity()
            rot = rotation(quat)
            q, _ = engine.joint_state()
            margin = min(margin, float(np.min(np.minimum(q - sim.hard_lower, sim.hard_upper - q))))
            tilt = math.degrees(math.acos(np.clip(rot[2, 2], -1.0, 1.0)))
            for key, value in zip(
                TRACE_KEYS, (t + dt, cmd, start, (rot.T @ lin_world)[:2], (rot.T @ ang_world)[2], pos[2], tilt)
            ):
                trace[key].append(value)
            samples.append(s)
            if tilt > th.max_tilt_deg or s["base_contact"] or pos[2] < th.min_height_ratio * sim.standing_height:
                fall_time = t + dt
                break
    finally:
        engine.close()
    trace = {k: np.asarray(v) for k, v in trace.items()}
    return judge(spec, trace, samples, fall_time, margin, robot, time.perf_counter() - started)
