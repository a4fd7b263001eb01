"""`trot gate BUNDLE`: the policy bundle, through the deploy runtime, on a second simulator.

Each cell of a commands × perturbations matrix runs the bundle with `trot.deploy.runtime.PolicyRuntime`
(the code that runs on the robot) against PyBullet: the same URDF, the contract's motor model, physics
at the bundle's `physics_dt`, the policy at its `control_dt`. A cell records whether the robot fell,
velocity tracking error, torque saturation, foot slip and joint-limit margin, and passes when every
figure is within `GateThresholds`. `--mujoco` runs the same matrix in MuJoCo too, side by side.
Writes `gate.json`, `gate.md` and PNG plots; exits 1 when a cell fails, 2 on a bad bundle.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import sys
import time
import zlib
from collections import deque
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from multiprocessing import get_context
from pathlib import Path

import numpy as np

from trot.deploy.bundle import Bundle, check_contract, load_bundle
from trot.robots import Robot, load_robot


@dataclass(frozen=True)
class GateThresholds:
    """What a cell must meet to pass; every cell, perturbed or not, is held to the same numbers."""

    max_tilt_deg: float = 60.0  # fall: base tilted further than this (the training termination)
    min_height_ratio: float = 0.5  # fall: base below this fraction of its standing height
    settle_s: float = 2.0  # tracking, slip and saturation are measured after this long
    switch_settle_s: float = 0.5  # ... and this long after each change of a command sequence
    max_lin_err: float = 0.15  # m/s, mean |v_xy - command_xy|, body frame
    max_yaw_err: float = 0.4  # rad/s, mean |yaw rate - command|
    max_err_fraction: float = 0.5  # ... and at most this fraction of a non-zero commanded speed or yaw rate
    max_torque_saturation: float = 0.10  # worst joint's fraction of physics steps at its torque limit
    # rad, closest any joint may come to its URDF limit (the hard stop). Targets are clamped at the soft
    # limits (soft_limit_margin inside) in training, here and on the robot alike; this catches overshoot.
    min_joint_margin: float = 0.05
    max_foot_slip: float = 0.15  # m/s, mean horizontal speed of feet in contact with the floor


SATURATED = 0.99  # |torque| at or above this fraction of the limit counts as saturated
CONTACT_FORCE_N = 1.0  # a foot pressing harder than this is in contact
# Tracking errors below these count as these in the PyBullet/MuJoCo ratio (both engines are at rest).
RATIO_FLOOR = {"lin_err": 0.01, "yaw_err": 0.02}  # m/s, rad/s

# name -> segments ((start as a fraction of the cell's length, (vx m/s, vy m/s, yaw rate rad/s)), ...)
COMMANDS: dict[str, tuple] = {
    "stand": ((0.0, (0.0, 0.0, 0.0)),),
    "forward_0.2": ((0.0, (0.2, 0.0, 0.0)),),
    "forward_0.4": ((0.0, (0.4, 0.0, 0.0)),),
    "backward_0.2": ((0.0, (-0.2, 0.0, 0.0)),),
    "sideways_0.2": ((0.0, (0.0, 0.2, 0.0)),),
    "turn_left_1.0": ((0.0, (0.0, 0.0, 1.0)),),
    "turn_right_1.0": ((0.0, (0.0, 0.0, -1.0)),),
    "sequence": (
        (0.0, (0.3, 0.0, 0.0)),
        (0.2, (0.2, 0.0, 0.6)),
        (0.4, (0.0, -0.2, 0.0)),
        (0.6, (-0.2, 0.0, 0.0)),
        (0.8, (0.0, 0.0, 0.0)),
    ),
}


@dataclass(frozen=True)
class Perturbation:
    """A change to the nominal robot, its actuation or its sensing; defaults are the robot as described."""

    payload_fraction: float = 0.0  # of the robot's total mass, added to the base at its centre of mass
    friction: float = 1.0  # floor-foot sliding friction coefficient
    motor_strength: float = 1.0  # scales kp, kd and the torque limit
    latency_steps: int = 0  # control steps: the target computed at step t is applied during step t + k
    push_mps: float = 0.0  # lateral (body y) base velocity kick
    push_at_s: float = 3.0  # ... at this time, or at half the cell if that is earlier
    sensor_noise: bool = False  # Gaussian noise with the training task's stds on every sensor reading


PERTURBATIONS: dict[str, Perturbation] = {
    "nominal": Perturbation(),
    "payload_+20%": Perturbation(payload_fraction=0.2),
    "friction_0.5": Perturbation(friction=0.5),
    "friction_1.2": Perturbation(friction=1.2),
    "motor_-20%": Perturbation(motor_strength=0.8),
    "latency_1_step": Perturbation(latency_steps=1),
    "push_0.3": Perturbation(push_mps=0.3),
    "sensor_noise": Perturbation(sensor_noise=True),
}

ENGINES = ("pybullet", "mujoco")


def policy_noise_stds() -> dict[str, float]:
    """The training task's observation noise stds by term (imported lazily: trot.sim.config needs torch)."""
    from trot.sim.config import POLICY_TERMS

    return {t.name: t.noise for t in POLICY_TERMS if t.noise > 0}


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


def command_at(segments: tuple, t: float, seconds: float) -> tuple[np.ndarray, float]:
    """The command at time t, and when it started."""
    current, start = segments[0][1], 0.0
    for frac, cmd in segments:
        if t >= frac * seconds - 1e-9:
            current, start = cmd, frac * seconds
    return np.asarray(current, dtype=float), start


def apply_physics(engine, robot: Robot, p: Perturbation) -> None:
    """Payload, friction and motor strength, written into the engine (the base's inertia scales with its mass)."""
    if p.payload_fraction:  # the nominal engine is left exactly as built
        engine.set_base_mass(robot.link_masses[robot.base_link] + p.payload_fraction * robot.total_mass)
    engine.set_floor_friction(p.friction)
    engine.torque_scale = p.motor_strength


def _rotation(quat_wxyz: np.ndarray) -> np.ndarray:
    w, x, y, z = quat_wxyz
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
            [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
            [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
        ]
    )


def _quat_mul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    aw, ax, ay, az = a
    bw, bx, by, bz = b
    return np.array(
        [
            aw * bw - ax * bx - ay * by - az * bz,
            aw * bx + ax * bw + ay * bz - az * by,
            aw * by - ax * bz + ay * bw + az * bx,
            aw * bz + ax * by - ay * bx + az * bw,
        ]
    )


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
        gyro = _rotation(quat).T @ ang_world
        q, qd = self.engine.joint_state()
        if self.noise is None:
            return quat, gyro, q, qd
        n, r = self.noise, self.rng
        tilt = r.normal(0.0, n.get("projected_gravity", 0.0), 3)  # body-frame rotation vector
        quat = _quat_mul(quat, np.concatenate([[1.0], 0.5 * tilt]))
        quat /= np.linalg.norm(quat)
        gyro = gyro + r.normal(0.0, n.get("base_ang_vel", 0.0), 3)
        q = q + r.normal(0.0, n.get("joint_pos_rel", 0.0), q.shape)
        qd = qd + r.normal(0.0, n.get("joint_vel", 0.0), qd.shape)
        return quat, gyro, q, qd

    def kick(self) -> None:
        """The push: a lateral velocity along the base's y axis, projected onto the floor."""
        y = _rotation(self.engine.base_pose()[1])[:, 1]
        y[2] = 0.0
        self.engine.add_base_velocity(self.p.push_mps * y / max(np.linalg.norm(y), 1e-9))

    def act(self, target) -> dict:
        """Apply a joint target (through the latency) for one control period; return per-period samples."""
        if self.steps == self.push_step:
            self.kick()
        target = np.clip(np.asarray(target, dtype=float), self.lower, self.upper)
        self.pending.append(target)
        applied = self.pending.popleft()
        e, limit = self.engine, self.robot.torque_limit * self.p.motor_strength
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
    engine: str
    command: str
    perturbation: str
    bundle: Bundle
    robot: str  # name or folder
    seconds: float
    seed: int
    thresholds: GateThresholds
    noise_stds: dict | None = None


@dataclass
class CellResult:
    engine: str
    command: str
    perturbation: str
    fell: bool
    fall_time_s: float | None
    lin_err: float | None  # m/s
    yaw_err: float | None  # rad/s
    peak_torque: float  # N·m
    torque_limit: float  # N·m, after motor strength
    torque_saturation: float  # worst joint's fraction of physics steps at the limit
    joint_margin: float  # rad
    foot_slip: float | None  # m/s
    failures: list[str]
    wall_s: float
    trace: dict = field(default_factory=dict, repr=False)  # per control step arrays, for plots

    @property
    def passed(self) -> bool:
        return not self.failures

    def metrics(self) -> dict:
        d = {k: v for k, v in asdict(self).items() if k != "trace"}
        d["passed"] = self.passed
        return d


def cell_seed(seed: int, command: str, perturbation: str) -> list[int]:
    """Per-cell noise seed: the same cell draws the same noise whatever else runs, in either engine."""
    return [seed, zlib.crc32(f"{command}/{perturbation}".encode())]


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
        trace = {k: [] for k in ("t", "command", "command_start", "lin_vel", "yaw_rate", "height", "tilt_deg")}
        samples, fall_time = [], None
        margin = math.inf
        for k in range(round(spec.seconds / dt)):
            t = k * dt
            cmd, start = command_at(segments, t, spec.seconds)
            out = runtime.step(*sim.sensors(), cmd)
            s = sim.act(out.target)
            pos, quat = engine.base_pose()
            lin_world, ang_world = engine.base_velocity()
            rot = _rotation(quat)
            q, _ = engine.joint_state()
            margin = min(margin, float(np.min(np.minimum(q - sim.hard_lower, sim.hard_upper - q))))
            tilt = math.degrees(math.acos(np.clip(rot[2, 2], -1.0, 1.0)))
            for key, value in (
                ("t", t + dt),
                ("command", cmd),
                ("command_start", start),
                ("lin_vel", (rot.T @ lin_world)[:2]),
                ("yaw_rate", (rot.T @ ang_world)[2]),
                ("height", pos[2]),
                ("tilt_deg", tilt),
            ):
                trace[key].append(value)
            samples.append(s)
            if tilt > th.max_tilt_deg or s["base_contact"] or pos[2] < th.min_height_ratio * sim.standing_height:
                fall_time = t + dt
                break
    finally:
        engine.close()
    trace = {k: np.asarray(v) for k, v in trace.items()}
    return _judge(spec, trace, samples, fall_time, margin, robot, time.perf_counter() - started)


def settle_times(th: GateThresholds, segments: tuple, seconds: float) -> tuple[float, float]:
    """Settle times for a cell: at most half the cell, and half the shortest segment of a sequence."""
    starts = [f * seconds for f, _ in segments] + [seconds]
    shortest = min(b - a for a, b in zip(starts, starts[1:]))
    return min(th.settle_s, 0.5 * seconds), min(th.switch_settle_s, 0.5 * shortest)


def error_bounds(th: GateThresholds, command) -> tuple[float, float]:
    """Allowed mean linear and yaw tracking errors for a command: absolute, tighter for slow commands."""
    speed, yaw = float(np.linalg.norm(command[:2])), abs(float(command[2]))
    lin = min(th.max_lin_err, th.max_err_fraction * speed) if speed > 0 else th.max_lin_err
    return lin, min(th.max_yaw_err, th.max_err_fraction * yaw) if yaw > 0 else th.max_yaw_err


def tracking_failures(th: GateThresholds, trace: dict, measured: np.ndarray) -> list[str]:
    """Each command segment's mean errors (over its measured samples) against that command's bounds."""
    out = []
    for start in np.unique(trace["command_start"][measured]):
        seg = measured & (trace["command_start"] == start)
        cmd = trace["command"][seg][0]
        lin = float(np.linalg.norm(trace["lin_vel"][seg] - cmd[:2], axis=1).mean())
        yaw = float(np.abs(trace["yaw_rate"][seg] - cmd[2]).mean())
        lin_max, yaw_max = error_bounds(th, cmd)
        where = f" (command {tuple(float(c) for c in cmd)} from {start:g} s)" if start > 0 else ""
        if lin > lin_max:
            out.append(f"lin err {lin:.3f} > {lin_max:.3g} m/s{where}")
        if yaw > yaw_max:
            out.append(f"yaw err {yaw:.3f} > {yaw_max:.3g} rad/s{where}")
    return out


def _judge(spec, trace, samples, fall_time, margin, robot, wall_s) -> CellResult:
    th = spec.thresholds
    p = PERTURBATIONS[spec.perturbation]
    settle, switch_settle = settle_times(th, COMMANDS[spec.command], spec.seconds)
    t = trace["t"]
    # After the settle time, and away from the switches of a sequence.
    since_switch = t - trace["command_start"]
    measured = (t > settle) & ((trace["command_start"] == 0) | (since_switch > switch_settle))
    lin_err = yaw_err = slip = None
    saturation = 0.0
    if measured.any():
        cmd = trace["command"][measured]
        lin_err = float(np.linalg.norm(trace["lin_vel"][measured] - cmd[:, :2], axis=1).mean())
        yaw_err = float(np.abs(trace["yaw_rate"][measured] - cmd[:, 2]).mean())
        late = [s for s, m in zip(samples, measured) if m]
        speeds = np.concatenate([s["slip"] for s in late])
        slip = float(speeds.mean()) if len(speeds) else 0.0
        sat = np.sum([s["saturated_steps"] for s in late], axis=0) / (len(late) * robot.decimation)
        saturation = float(sat.max())
    peak = float(np.max([s["peak_torque"] for s in samples])) if samples else 0.0
    fell = fall_time is not None
    failures = []
    if fell:
        failures.append(f"fell at {fall_time:.2f} s")
    if lin_err is None:
        failures.append("no tracking samples after the settle time")
    else:
        failures += tracking_failures(th, trace, measured)
        if slip > th.max_foot_slip:
            failures.append(f"foot slip {slip:.3f} > {th.max_foot_slip} m/s")
    if saturation > th.max_torque_saturation:
        failures.append(f"torque saturation {saturation:.2f} > {th.max_torque_saturation}")
    if margin < th.min_joint_margin:
        failures.append(f"joint margin {margin:.3f} < {th.min_joint_margin} rad")
    return CellResult(
        engine=spec.engine,
        command=spec.command,
        perturbation=spec.perturbation,
        fell=fell,
        fall_time_s=fall_time,
        lin_err=lin_err,
        yaw_err=yaw_err,
        peak_torque=peak,
        torque_limit=robot.torque_limit * p.motor_strength,
        torque_saturation=saturation,
        joint_margin=margin,
        foot_slip=slip,
        failures=failures,
        wall_s=wall_s,
        trace=trace,
    )


# -- the matrix ----------------------------------------------------------------------------------


@dataclass
class GateRun:
    bundle: Bundle
    robot: Robot
    cells: list[CellResult]
    engines: tuple[str, ...]
    commands: list[str]
    perturbations: list[str]
    seconds: float
    seed: int
    jobs: int
    thresholds: GateThresholds
    wall_s: float

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.cells)

    def failed(self, engine: str) -> int:
        return sum(not c.passed for c in self.cells if c.engine == engine)

    def cell(self, engine: str, command: str, perturbation: str) -> CellResult:
        return self._index[(engine, command, perturbation)]

    @property
    def _index(self) -> dict:
        return {(c.engine, c.command, c.perturbation): c for c in self.cells}

    def ratios(self, metric: str) -> dict[tuple[str, str], float]:
        """PyBullet / MuJoCo `metric` ('lin_err' or 'yaw_err') per (command, perturbation), floored."""
        if set(ENGINES) - set(self.engines):
            return {}
        floor, out = RATIO_FLOOR[metric], {}
        for c in self.commands:
            for p in self.perturbations:
                pb, mj = (getattr(self.cell(e, c, p), metric) for e in ENGINES)
                if pb is not None and mj is not None:
                    out[(c, p)] = max(pb, floor) / max(mj, floor)
        return out


def check_matrix(commands: list[str], perturbations: list[str]) -> None:
    """Refuse unknown command or perturbation names, listing the known ones."""
    for kind, names, known in (("command", commands, COMMANDS), ("perturbation", perturbations, PERTURBATIONS)):
        unknown = [n for n in names if n not in known]
        if unknown:
            raise ValueError(f"unknown {kind}(s) {unknown}; known: {list(known)}")


def run_gate(
    bundle: Bundle,
    robot: str | None = None,
    engines=("pybullet",),
    commands=None,
    perturbations=None,
    seconds: float = 10.0,
    seed: int = 0,
    jobs: int | None = None,
    thresholds: GateThresholds = GateThresholds(),
) -> GateRun:
    """Run the matrix (engines × commands × perturbations), cells in parallel worker processes."""
    rob = load_robot(robot or bundle.contract.name)
    check_contract(bundle, rob)
    commands = list(commands or COMMANDS)
    perturbations = list(perturbations or PERTURBATIONS)
    check_matrix(commands, perturbations)
    noise = policy_noise_stds() if any(PERTURBATIONS[p].sensor_noise for p in perturbations) else None
    specs = [
        CellSpec(e, c, p, bundle, str(rob.folder), seconds, seed, thresholds, noise)
        for e in engines
        for c in commands
        for p in perturbations
    ]
    jobs = max(1, min(jobs or os.cpu_count() or 1, len(specs)))
    started = time.perf_counter()
    if jobs == 1:
        cells = [run_cell(s) for s in specs]
    else:
        # spawn: fresh workers, no inherited onnxruntime threads; each builds its own simulator.
        with ProcessPoolExecutor(jobs, mp_context=get_context("spawn")) as pool:
            cells = list(pool.map(run_cell, specs))
    wall_s = time.perf_counter() - started
    return GateRun(bundle, rob, cells, tuple(engines), commands, perturbations, seconds, seed, jobs, thresholds, wall_s)


# -- reporting -----------------------------------------------------------------------------------


def _fmt(x, digits: int = 2) -> str:
    return "—" if x is None else f"{x:.{digits}f}"


def _cell_text(cell: CellResult) -> str:
    return f"{_fmt(cell.lin_err)}/{_fmt(cell.yaw_err)}"


def _median(ratios: dict) -> float | None:
    return float(np.median(list(ratios.values()))) if ratios else None


def summary_table(run: GateRun) -> str:
    """Per engine, commands × perturbations: lin/yaw tracking error, FAIL on a failing cell."""
    lines = []
    width = max(15, *(len(p) + 1 for p in run.perturbations))
    n = len(run.commands) * len(run.perturbations)
    for engine in run.engines:
        lines.append(f"{engine}: lin err m/s / yaw err rad/s per cell; FAIL marks a failing cell")
        lines.append(f"{'':<16}" + "".join(f"{p:>{width}}" for p in run.perturbations))
        for c in run.commands:
            cells = (run.cell(engine, c, p) for p in run.perturbations)
            lines.append(
                f"{c:<16}" + "".join(f"{('' if x.passed else 'FAIL ') + _cell_text(x):>{width}}" for x in cells)
            )
        lines += [f"{engine}: {run.failed(engine)} of {n} cells fail", ""]
    for metric in ("lin_err", "yaw_err"):
        ratios = run.ratios(metric)
        if ratios:
            lines.append(f"PyBullet/MuJoCo {metric} ratio: median {_median(ratios):.2f} "
                         f"(min {min(ratios.values()):.2f}, max {max(ratios.values()):.2f})")  # fmt: skip
    lines.append(
        f"gate: {'PASS' if run.passed else 'FAIL'} ({len(run.cells)} cells, {run.wall_s:.0f} s, {run.jobs} jobs)"
    )
    return "\n".join(lines)


def bundle_summary(bundle: Bundle) -> dict:
    c = bundle.contract
    return {
        "path": str(bundle.path),
        "robot": c.name,
        "contract_sha256": c.sha256(),
        "obs_size": bundle.obs_size,
        "num_joints": bundle.num_joints,
        **{k: getattr(c, k) for k in ("control_dt", "physics_dt", "kp", "kd", "torque_limit", "action_scale")},
        "commands": {k: list(v) for k, v in asdict(bundle.meta.commands).items()},
        "training": asdict(bundle.meta.training),
    }


def outside_training_range(run: GateRun) -> list[str]:
    """Commands of the matrix that leave the bundle's trained command ranges."""
    ranges, out = asdict(run.bundle.meta.commands), []
    for name in run.commands:
        for _, cmd in COMMANDS[name]:
            for value, key in zip(cmd, ("vx", "vy", "yaw_rate")):
                if not ranges[key][0] <= value <= ranges[key][1]:
                    out.append(f"command {name}: {key} {value} is outside the trained range {list(ranges[key])}")
    return out


def gate_json(run: GateRun) -> dict:
    ratios = {m: run.ratios(m) for m in RATIO_FLOOR}
    return {
        "passed": run.passed,
        "bundle": bundle_summary(run.bundle),
        "settings": {"engines": list(run.engines), "seconds": run.seconds, "seed": run.seed, "jobs": run.jobs},
        "wall_s": run.wall_s,
        "thresholds": asdict(run.thresholds),
        "commands": {c: [[f, list(v)] for f, v in COMMANDS[c]] for c in run.commands},
        "perturbations": {p: asdict(PERTURBATIONS[p]) for p in run.perturbations},
        "engines": {e: {"passed": not run.failed(e), "failed_cells": run.failed(e)} for e in run.engines},
        "cells": [c.metrics() for c in run.cells],
        "pybullet_mujoco_ratio": {
            m: {
                "floor": RATIO_FLOOR[m],
                "median": _median(r),
                "cells": [{"command": c, "perturbation": p, "ratio": v} for (c, p), v in r.items()],
            }
            for m, r in ratios.items()
            if r
        },
        "warnings": outside_training_range(run),
    }


THRESHOLD_DOCS = {
    "max_tilt_deg": "fall: base tilt beyond this, degrees (also a fall: the base touching the floor)",
    "min_height_ratio": "fall: base height below this fraction of its standing height",
    "settle_s": "s; tracking, slip and saturation are averaged after this (at most half the cell)",
    "switch_settle_s": "s; the sequence also skips this long after each change (at most half a segment)",
    "max_lin_err": "m/s, mean |v_xy − command_xy|, body frame",
    "max_yaw_err": "rad/s, mean |yaw rate − command|",
    "max_err_fraction": "both errors also ≤ this × a non-zero commanded speed / yaw rate; a sequence is "
    "judged segment by segment",
    "max_torque_saturation": f"worst joint's fraction of physics steps at ≥ {SATURATED:.0%} of its torque limit",
    "min_joint_margin": "rad, closest approach of any joint to its URDF limit over the whole cell",
    "max_foot_slip": f"m/s, mean horizontal speed of the feet in contact (> {CONTACT_FORCE_N:g} N)",
}


def _md_matrix(run: GateRun, text: dict) -> list[str]:
    """A Markdown table commands × perturbations holding text[(command, perturbation)]."""
    lines = ["| command | " + " | ".join(run.perturbations) + " |", "|---|" + "---|" * len(run.perturbations)]
    for c in run.commands:
        lines.append(f"| {c} | " + " | ".join(text.get((c, p), "—") for p in run.perturbations) + " |")
    return lines


def gate_markdown(run: GateRun, plots: list[str]) -> str:
    b = bundle_summary(run.bundle)
    tr, n = b["training"], len(run.commands) * len(run.perturbations)
    lines = [
        f"# Gate: `{run.bundle.path.name}`",
        "",
        f"**{'PASS' if run.passed else 'FAIL'}**: "
        + ", ".join(f"{e} {n - run.failed(e)} of {n} cells pass" for e in run.engines),
        "",
        f"- bundle `{b['path']}`: robot `{b['robot']}` (contract `{b['contract_sha256'][:12]}`), "
        f"run `{tr.get('run', '')}`, {tr.get('iterations', '?')} iterations, {tr.get('env_steps', '?')} env steps",
        f"- policy through `trot.deploy.runtime.PolicyRuntime`; control {b['control_dt'] * 1e3:g} ms, "
        f"physics {b['physics_dt'] * 1e3:g} ms, kp {b['kp']}, kd {b['kd']}, torque limit {b['torque_limit']} N·m",
        f"- {run.seconds:g} s per cell, seed {run.seed}; {len(run.cells)} cells in {run.wall_s:.0f} s "
        f"on {run.jobs} worker processes",
        *(f"- warning: {w}" for w in outside_training_range(run)),
        "",
        "## Thresholds",
        "",
        "Every cell, nominal or perturbed, is held to the same thresholds (`GateThresholds` in `hil/gate.py`, "
        "reasoning in `docs/gate.md`).",
        "",
        "| threshold | value | meaning |",
        "|---|---|---|",
        *(f"| `{k}` | {v} | {THRESHOLD_DOCS[k]} |" for k, v in asdict(run.thresholds).items()),
    ]
    for engine in run.engines:
        lines += ["", f"## Pass/fail: {engine}", "", "Linear (m/s) / yaw-rate (rad/s) tracking error; ❌ fails.", ""]
        marks = {(x.command, x.perturbation): ("✅ " if x.passed else "❌ ") + _cell_text(x) for x in run.cells
                 if x.engine == engine}  # fmt: skip
        lines += _md_matrix(run, marks)
    for metric, unit in (("lin_err", "m/s"), ("yaw_err", "rad/s")):
        ratios = run.ratios(metric)
        if ratios:
            lines += [
                "",
                f"## PyBullet / MuJoCo ratio: {metric}",
                "",
                f"Each error floored at {RATIO_FLOOR[metric]} {unit}; median **{_median(ratios):.2f}**.",
                "",
            ]
            lines += _md_matrix(run, {k: _fmt(v) for k, v in ratios.items()})
    for engine in run.engines:
        lines += [
            "",
            f"## Metrics: {engine}",
            "",
            "| command | perturbation | fell | lin err m/s | yaw err rad/s | peak τ / limit N·m | saturation "
            "| joint margin rad | foot slip m/s | failures |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for x in (c for c in run.cells if c.engine == engine):
            lines.append(
                f"| {x.command} | {x.perturbation} | {'yes' if x.fell else 'no'} | {_fmt(x.lin_err, 3)} "
                f"| {_fmt(x.yaw_err, 3)} | {x.peak_torque:.2f} / {x.torque_limit:.2f} | {x.torque_saturation:.3f} "
                f"| {x.joint_margin:.3f} | {_fmt(x.foot_slip, 3)} | {'; '.join(x.failures)} |"
            )
    if plots:
        lines += ["", "## Plots", "", *(f"![{Path(p).stem}]({Path(p).name})" for p in plots)]
    return "\n".join(lines) + "\n"


TRACE_CELLS = (
    ("forward_0.4", "nominal"),
    ("turn_left_1.0", "nominal"),
    ("sequence", "nominal"),
    ("forward_0.2", "push_0.3"),
)


def save_plots(run: GateRun, out: Path) -> list[str]:
    """Heat maps of tracking error per engine (and the engines' ratio); velocity traces of a few cells."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = [str(out / "tracking_error.png")]
    metrics = (("lin_err", "lin err m/s", run.thresholds.max_lin_err), ("yaw_err", "yaw err rad/s",
               run.thresholds.max_yaw_err))  # fmt: skip
    cols = len(run.engines) + (1 if run.ratios("lin_err") else 0)
    size = (1.5 + 0.6 * len(run.perturbations), 1.5 + 0.4 * len(run.commands))
    fig, axes = plt.subplots(2, cols, figsize=(size[0] * cols, 2 * size[1]), squeeze=False)
    for row, (metric, label, limit) in enumerate(metrics):
        panels = [(e, [[getattr(run.cell(e, c, p), metric) for p in run.perturbations] for c in run.commands])
                  for e in run.engines]  # fmt: skip
        if cols > len(run.engines):
            r = run.ratios(metric)
            panels.append(("ratio", [[r.get((c, p)) for p in run.perturbations] for c in run.commands]))
        for ax, (name, values) in zip(axes[row], panels):
            ratio = name == "ratio"
            v = np.array([[np.nan if x is None else x for x in line] for line in values])
            im = ax.imshow(
                v, cmap="RdBu_r" if ratio else "viridis", vmin=0, vmax=2.0 if ratio else 2 * limit, aspect="auto"
            )
            ax.set_xticks(range(len(run.perturbations)), run.perturbations, rotation=45, ha="right", fontsize=8)
            ax.set_yticks(range(len(run.commands)), run.commands, fontsize=8)
            ax.set_title(f"PyBullet / MuJoCo {label.split(' ')[0]} err" if ratio else f"{name}: {label}", fontsize=9)
            for i, c in enumerate(run.commands):
                for j, p in enumerate(run.perturbations):
                    failed = not ratio and not run.cell(name, c, p).passed
                    text = "—" if np.isnan(v[i, j]) else f"{v[i, j]:.2f}"
                    ax.text(j, i, text + ("\n✗" if failed else ""), ha="center", va="center", fontsize=7,
                            color="red" if failed else ("black" if ratio else "white"))  # fmt: skip
            fig.colorbar(im, ax=ax, shrink=0.7)
    fig.suptitle("tracking error per cell (✗: the cell fails)", fontsize=10)
    fig.tight_layout()
    fig.savefig(written[0], dpi=100)
    plt.close(fig)

    cells = [(c, p) for c, p in TRACE_CELLS if c in run.commands and p in run.perturbations]
    if cells:
        fig, axes = plt.subplots(len(cells), 3, figsize=(13, 2.4 * len(cells)), squeeze=False, sharex=True)
        for row, (c, p) in enumerate(cells):
            for engine, style in zip(run.engines, ("-", "--")):
                tr = run.cell(engine, c, p).trace
                series = (tr["lin_vel"][:, 0], tr["lin_vel"][:, 1], tr["yaw_rate"]) if len(tr["t"]) else ()
                for k, (label, y) in enumerate(zip(("vx m/s", "vy m/s", "yaw rate rad/s"), series)):
                    ax = axes[row, k]
                    ax.plot(tr["t"], y, style, lw=1, label=engine)
                    if engine == run.engines[0]:
                        ax.plot(tr["t"], tr["command"][:, k], "k:", lw=1, label="command")
                    ax.set_ylabel(label, fontsize=8)
                    ax.set_title(f"{c} / {p}", fontsize=9)
        axes[0, 0].legend(fontsize=7)
        for ax in axes[-1]:
            ax.set_xlabel("time (s)")
        fig.tight_layout()
        written.append(str(out / "velocity_traces.png"))
        fig.savefig(written[-1], dpi=100)
        plt.close(fig)
    return written


def write_report(run: GateRun, out: Path, plots: bool = True) -> list[Path]:
    """gate.json, gate.md and the plots in `out`."""
    out.mkdir(parents=True, exist_ok=True)
    written_plots = save_plots(run, out) if plots else []
    (out / "gate.json").write_text(json.dumps(gate_json(run), indent=1))
    (out / "gate.md").write_text(gate_markdown(run, written_plots))
    return [out / "gate.json", out / "gate.md", *map(Path, written_plots)]


def default_output(bundle_path: Path) -> Path:
    """`walk.onnx` -> `walk_gate/` beside it."""
    return bundle_path.with_name(bundle_path.stem + "_gate")


# -- CLI -----------------------------------------------------------------------------------------


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("bundle", help="policy bundle (.onnx)")
    p.add_argument("-o", "--output", default=None, help="report folder (default: <bundle name>_gate/ beside it)")
    p.add_argument("--seconds", type=float, default=10.0, help="length of each cell")
    p.add_argument("--jobs", type=int, default=None, help="worker processes (default: all cores)")
    p.add_argument("--seed", type=int, default=0, help="seed of the sensor noise")
    p.add_argument("--mujoco", action="store_true", help="also run the matrix in MuJoCo, side by side")
    p.add_argument("--commands", default=None, help=f"comma-separated subset of: {', '.join(COMMANDS)}")
    names = ", ".join(PERTURBATIONS).replace("%", "%%")  # argparse %-formats help strings
    p.add_argument("--perturbations", default=None, help=f"comma-separated subset of: {names}")
    p.add_argument("--robot", default=None, help="robot name or folder (default: the bundle's robot)")
    p.add_argument("--no-plots", dest="plots", action="store_false", help="skip the PNG plots")


def run_cli(args: argparse.Namespace) -> int:
    """`trot gate`: 0 when every cell passes, 1 when one fails, 2 on a bad bundle or matrix."""
    path = Path(args.bundle)
    commands = args.commands.split(",") if args.commands else list(COMMANDS)
    perturbations = args.perturbations.split(",") if args.perturbations else list(PERTURBATIONS)
    try:
        check_matrix(commands, perturbations)
        bundle = load_bundle(path)
        check_contract(bundle, load_robot(args.robot or bundle.contract.name))
    except (ValueError, FileNotFoundError) as e:  # BundleError and ContractError are ValueErrors
        print(f"trot gate: {e}", file=sys.stderr)
        return 2
    engines = ENGINES if args.mujoco else ("pybullet",)
    run = run_gate(bundle, args.robot, engines, commands, perturbations, args.seconds, args.seed, args.jobs)
    written = write_report(run, Path(args.output) if args.output else default_output(path), plots=args.plots)
    print(f"trot gate: {path}")
    print(summary_table(run))
    for w in outside_training_range(run):
        print(f"warning: {w}")
    for f in written:
        print(f"wrote {f}")
    return 0 if run.passed else 1


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trot.hil.gate", description=__doc__.splitlines()[0])
    add_args(parser)
    return run_cli(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
