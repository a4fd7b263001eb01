"""One gate cell: an engine with a perturbation applied (`CellSim`), driven by the deploy runtime (`run_cell`).

The perturbation goes through training's randomization loop: its pinned config is composed by a
`Randomizer` into one env's `EnvParams`, which the engine takes with `write_params` (masses, friction,
contact, gains, joints) and the cell applies itself where training's task does (actuation latency in
physics steps, observation latency in control steps, encoder zero offsets). An event term (a push) fires
once, `EVENT_AT_S` into the cell.

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
import torch

from trot.deploy.bundle import Bundle
from trot.hil.gate.commands import Segments, command_at
from trot.hil.gate.judge import SATURATED, CellResult, GateThresholds, fall_reason, judge, roll_pitch_deg, tilt_deg
from trot.hil.gate.perturbations import Perturbation
from trot.hil.kinematics import quat_mul, rotation
from trot.randomization import TERMS, EnvParams, Randomizer, sample_term
from trot.robots import Robot, load_robot
from trot.sim.backend import CONTACT_FORCE_N

ENGINES = ("pybullet", "mujoco")
EVENT_AT_S = 3.0  # an event term (a push) fires this far into the cell, or at half the cell if that is earlier


def make_engine(name: str, robot: Robot):
    """A single-robot simulator with PyBulletRobot's interface."""
    with _quiet_stdout():  # PyBullet prints its argv on connect
        if name == "pybullet":
            from trot.hil.pybullet_model import GATE_SUBSTEP_S, PyBulletRobot

            return PyBulletRobot(robot, substep_s=GATE_SUBSTEP_S)
        if name == "mujoco":
            from trot.hil.mujoco_robot import MujocoRobot

            return MujocoRobot(robot)
    raise ValueError(f"engine '{name}': expected one of {ENGINES}")


def engine_class(name: str):
    """The engine's class, for what it cannot simulate (`UNSUPPORTED_PARAMS`), without building one."""
    if name == "pybullet":
        from trot.hil.pybullet_model import PyBulletRobot

        return PyBulletRobot
    from trot.hil.mujoco_robot import MujocoRobot

    return MujocoRobot


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


def pinned_params(p: Perturbation, robot: Robot) -> tuple[EnvParams, tuple[str, ...]]:
    """One env's parameters for the perturbation, through training's randomization loop; and the event terms
    (pushes) it pins."""
    cfg = p.randomization()
    randomizer = Randomizer(cfg, robot, 1, torch.Generator().manual_seed(0))
    for schedule in ("startup", "reset"):
        randomizer.sample(schedule, torch.arange(1))
    events = tuple(name for name, _ in p.terms if TERMS[name].kind == "event" and cfg.varies(name))
    return randomizer.params, events


def unsupported(engine: str, p: Perturbation, robot: Robot) -> str | None:
    """Why `engine` cannot run the perturbation (a pinned field it cannot simulate), or None."""
    params, _ = pinned_params(p, robot)
    nominal, _ = pinned_params(Perturbation(), robot)
    for field, why in engine_class(engine).UNSUPPORTED_PARAMS.items():
        if params.differ(torch.arange(1), nominal, (field,)):
            return why
    return None


class _OneEnv:
    """The batched `add_base_velocity(env_ids, delta)` an event's apply step calls, on a single-robot engine."""

    def __init__(self, engine):
        self.engine = engine

    def add_base_velocity(self, env_ids: torch.Tensor, delta: torch.Tensor) -> None:
        self.engine.add_base_velocity(delta[0].numpy())


class CellSim:
    """One cell's physics: an engine with a perturbation applied, advanced one control period per `act`.

    Give it a freshly built engine; it is reset and given the perturbation's parameters here.
    """

    def __init__(
        self,
        engine,
        robot: Robot,
        p: Perturbation,
        seconds: float,
        rng: np.random.Generator,
        noise_stds: dict[str, float] | None = None,
    ):
        self.engine, self.robot, self.p, self.rng = engine, robot, p, rng
        if p.sensor_noise and not noise_stds:
            raise ValueError("CellSim: a sensor_noise perturbation needs noise_stds")
        self.noise = noise_stds if p.sensor_noise else None
        params, self.events = pinned_params(p, robot)
        engine.reset()
        engine.write_params(params)
        self.torque_limit = params.torque_limit[0].numpy()  # (J,) N·m, after motor strength
        self.latency = round(float(params.actuation_latency_s[0]) / robot.physics_dt)  # physics steps
        self.obs_latency = round(float(params.observation_latency_s[0]) / robot.control_dt)  # control steps
        self.zero_offset = params.joint_zero_offset[0].numpy()  # measured = true + offset
        self.default = np.asarray(robot.default_joint_pos, dtype=float)
        self.lower = np.asarray(robot.soft_joint_limits.lower)  # targets: where training and the robot clamp
        self.upper = np.asarray(robot.soft_joint_limits.upper)
        self.hard_lower = np.asarray(robot.joint_limits.lower)  # joints: the URDF stops, for the margin
        self.hard_upper = np.asarray(robot.joint_limits.upper)
        # Targets of past control steps, newest first: as many as the actuation latency reaches back.
        self.past_targets = deque([self.default] * max(1, -(-self.latency // robot.decimation)))
        self.imu = deque([self._imu_now()] * (self.obs_latency + 1), maxlen=self.obs_latency + 1)  # newest first
        at = min(EVENT_AT_S, 0.5 * seconds)
        self.event_step = round(at / robot.control_dt) if self.events else None
        self.event_gen = torch.Generator().manual_seed(int(rng.integers(2**31)))
        pos = engine.base_pose()[0]
        self.standing_height, self.start_xy = float(pos[2]), pos[:2].copy()
        self.steps = 0
        self._feet = engine.foot_positions()

    def _imu_now(self) -> tuple[np.ndarray, np.ndarray]:
        _, quat = self.engine.base_pose()
        _, ang_world = self.engine.base_velocity()
        return quat, rotation(quat).T @ ang_world

    def sensors(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """What the robot's IMU and encoders read: quaternion w x y z, body gyro, joint pos and vel."""
        quat, gyro = self.imu[-1]  # observation latency: the IMU reading of that many control steps ago
        q, qd = self.engine.joint_state()
        q = q + self.zero_offset
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

    def fire_events(self) -> None:
        """Each pinned event term's apply step (a push: a horizontal kick in a direction from the cell's seed)."""
        terms = self.p.randomization().terms
        for name in self.events:
            value = sample_term(name, terms[name], 1, self.robot, self.event_gen)
            TERMS[name].apply(_OneEnv(self.engine), torch.arange(1), value, self.event_gen)

    def act(self, target) -> dict:
        """Apply a joint target (through the actuation latency) for one control period; return per-period samples."""
        if self.steps == self.event_step:
            self.fire_events()
        # The motor controller works in encoder coordinates, which are off by the zero error.
        target = np.clip(np.asarray(target, dtype=float), self.lower, self.upper) - self.zero_offset
        e, dec = self.engine, self.robot.decimation
        saturated = np.zeros(self.robot.num_joints)
        peak = np.zeros(self.robot.num_joints)
        slip, base_contact = [], False
        for s in range(dec):
            # At substep s the motors hold the newest target issued at least `latency` physics steps ago.
            back = 0 if s >= self.latency else (self.latency - s - 1) // dec + 1
            e.step(target if back == 0 else self.past_targets[back - 1])
            tau = np.abs(e.last_torque)
            peak = np.maximum(peak, tau)
            saturated += tau >= SATURATED * self.torque_limit
            feet = e.foot_positions()
            speed = np.linalg.norm((feet - self._feet)[:, :2], axis=1) / self.robot.physics_dt
            slip.extend(speed[e.foot_contacts() > CONTACT_FORCE_N])
            self._feet = feet
            base_contact |= e.base_contact()
        self.past_targets.appendleft(target)
        self.past_targets.pop()
        self.imu.appendleft(self._imu_now())
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
    segments: Segments
    perturbation: str
    pinned: Perturbation
    bundle: Bundle
    robot: str  # name or folder
    seconds: float
    seed: int
    thresholds: GateThresholds
    noise_stds: dict | None = None
    stride_steps: int = 20  # control steps per stride (`judge.stride_steps`: the bundle's gait clock period)
    judged: bool = True  # False: a stress cell, reported and not part of the verdict


def cell_seed(seed: int, command: str, perturbation: str) -> list[int]:
    """Per-cell noise seed: the same cell draws the same noise whatever else runs, in either engine."""
    return [seed, zlib.crc32(f"{command}/{perturbation}".encode())]


TRACE_KEYS = ("t", "command", "command_start", "lin_vel", "yaw_rate", "height", "tilt_deg", "roll_deg", "pitch_deg",
              "pos_xy")  # fmt: skip


def run_cell(spec: CellSpec) -> CellResult:
    """Run one cell through the deploy runtime and judge it (worker-process entry point)."""
    from trot.deploy.runtime import PolicyRuntime

    started, cpu_started = time.perf_counter(), time.process_time()
    robot = load_robot(spec.robot)
    runtime = PolicyRuntime(spec.bundle, robot)
    th = spec.thresholds
    engine = make_engine(spec.engine, robot)
    try:
        rng = np.random.default_rng(cell_seed(spec.seed, spec.command, spec.perturbation))
        sim = CellSim(engine, robot, spec.pinned, spec.seconds, rng, spec.noise_stds)
        dt = robot.control_dt
        trace = {k: [] for k in TRACE_KEYS}
        samples, fall_time = [], None
        margin = math.inf
        for k in range(round(spec.seconds / dt)):
            t = k * dt
            cmd, start = command_at(spec.segments, t, spec.seconds)
            out = runtime.step(*sim.sensors(), cmd)
            s = sim.act(out.target)
            pos, quat = engine.base_pose()
            lin_world, ang_world = engine.base_velocity()
            rot = rotation(quat)
            q, _ = engine.joint_state()
            margin = min(margin, float(np.min(np.minimum(q - sim.hard_lower, sim.hard_upper - q))))
            values = (t + dt, cmd, start, (rot.T @ lin_world)[:2], (rot.T @ ang_world)[2], pos[2], tilt_deg(rot),
                      *roll_pitch_deg(rot), pos[:2])  # fmt: skip
            for key, value in zip(TRACE_KEYS, values):
                trace[key].append(value)
            samples.append(s)
            if fall_reason(th, rot, pos[2], sim.standing_height, s["base_contact"]):
                fall_time = t + dt
                break
    finally:
        engine.close()
    trace = {k: np.asarray(v) for k, v in trace.items()}
    trace["start_xy"] = sim.start_xy
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    return judge(spec, trace, samples, fall_time, margin, robot, float(sim.torque_limit.max()), wall, cpu)
