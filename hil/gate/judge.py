"""Judging the gate: the thresholds every cell is held to, a cell's metrics and why it fails, and the
PyBullet/MuJoCo agreement the whole run is held to."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from trot.hil.gate.commands import is_standing, segment_starts
from trot.robots import Robot
from trot.sim.metrics import settle_times, settled, tracking_errors

SATURATED = 0.99  # |torque| at or above this fraction of the limit counts as saturated
# Tracking errors below these count as these in the PyBullet/MuJoCo ratio (both engines are at rest).
RATIO_FLOOR = {"lin_err": 0.01, "yaw_err": 0.02}  # m/s, rad/s


@dataclass(frozen=True)
class GateThresholds:
    """What a cell must meet to pass, and the engines' agreement; every cell, perturbed or not, is held to the
    same numbers (docs/gate.md explains each)."""

    max_tilt_deg: float = 60.0  # fall: base tilted further than this (the training termination)
    min_height_ratio: float = 0.5  # fall: base below this fraction of its standing height
    settle_s: float = 2.0  # tracking, slip and saturation are measured after this long
    switch_settle_s: float = 0.5  # ... and this long after each change of a command sequence
    lin_err_floor: float = 0.05  # m/s: mean |v_xy - command_xy| may be this, or ...
    yaw_err_floor: float = 0.1  # rad/s: mean |yaw rate - command| may be this, or ...
    err_fraction: float = 0.2  # ... this fraction of the commanded speed (yaw rate), whichever is larger
    max_stand_drift: float = 0.1  # m, horizontal base displacement over a standing cell
    max_torque_saturation: float = 0.10  # worst joint's fraction of physics steps at its torque limit
    # rad, closest any joint may come to its URDF limit (the hard stop). Targets are clamped at the soft
    # limits (soft_limit_margin inside) in training, here and on the robot alike; this catches overshoot.
    min_joint_margin: float = 0.05
    max_foot_slip: float = 0.15  # m/s, mean horizontal speed of feet in contact with the floor
    # With both engines: the PyBullet/MuJoCo ratio of each tracking error (floored, RATIO_FLOOR), over the cells
    max_ratio_median: float = 1.25  # ... its median
    max_ratio_cell: float = 2.0  # ... and every cell's


@dataclass
class CellResult:
    engine: str
    command: str
    perturbation: str
    fell: bool
    fall_time_s: float | None
    lin_err: float | None  # m/s
    yaw_err: float | None  # rad/s
    drift: float | None  # m over the cell; standing cells only
    peak_torque: float  # N·m
    torque_limit: float  # N·m, after motor strength
    torque_saturation: float  # worst joint's fraction of physics steps at the limit
    joint_margin: float  # rad
    foot_slip: float | None  # m/s
    failures: list[str]
    wall_s: float
    cpu_s: float  # CPU seconds of the cell's worker process
    # rad/s: |mean(yaw rate - command)|, the part of yaw_err that turns the robot off its heading; the rest is
    # wobble within the stride. Reported, not judged (docs/gate.md, "Metrics and thresholds").
    yaw_bias: float | None = None
    trace: dict = field(default_factory=dict, repr=False)  # per control step arrays, for plots

    @property
    def passed(self) -> bool:
        return not self.failures

    def metrics(self) -> dict:
        d = {k: v for k, v in asdict(self).items() if k != "trace"}
        d["passed"] = self.passed
        return d


def error_bounds(th: GateThresholds, command) -> tuple[float, float]:
    """Allowed mean linear and yaw tracking errors for a command: a floor, or a fraction of the command."""
    speed, yaw = float(np.linalg.norm(command[:2])), abs(float(command[2]))
    return max(th.lin_err_floor, th.err_fraction * speed), max(th.yaw_err_floor, th.err_fraction * yaw)


def tracking_failures(th: GateThresholds, trace: dict, measured: np.ndarray) -> list[str]:
    """Each command segment's mean errors (over its measured samples) against that command's bounds."""
    out = []
    for start in np.unique(trace["command_start"][measured]):
        seg = measured & (trace["command_start"] == start)
        cmd = trace["command"][seg][0]
        lin, yaw = tracking_errors(trace["lin_vel"][seg], trace["yaw_rate"][seg], cmd)
        lin_max, yaw_max = error_bounds(th, cmd)
        where = f" (command {tuple(float(c) for c in cmd)} from {start:g} s)" if start > 0 else ""
        if lin > lin_max:
            out.append(f"lin err {lin:.3f} > {lin_max:.3g} m/s{where}")
        if yaw > yaw_max:
            out.append(f"yaw err {yaw:.3f} > {yaw_max:.3g} rad/s{where}")
    return out


def judge(spec, trace: dict, samples: list[dict], fall_time, margin: float, robot: Robot, torque_limit: float,
          wall_s: float, cpu_s: float) -> CellResult:  # fmt: skip
    """A cell's metrics and failures from its trace (per control step) and per-period physics samples.

    spec: the cell's `CellSpec` (engine, command and its segments, perturbation, seconds, thresholds).
    """
    th = spec.thresholds
    starts = segment_starts(spec.segments, spec.seconds)
    settle, switch_settle = settle_times(th.settle_s, th.switch_settle_s, starts, spec.seconds)
    # After the settle time, and away from the switches of a sequence.
    measured = settled(trace["t"], settle, trace["command_start"], switch_settle)
    lin_err = yaw_err = yaw_bias = slip = None
    saturation = 0.0
    if measured.any():
        lin_err, yaw_err = tracking_errors(
            trace["lin_vel"][measured], trace["yaw_rate"][measured], trace["command"][measured]
        )
        yaw_bias = abs(float(np.mean(trace["yaw_rate"][measured] - trace["command"][measured][:, 2])))
        late = [s for s, m in zip(samples, measured) if m]
        speeds = np.concatenate([s["slip"] for s in late])
        slip = float(speeds.mean()) if len(speeds) else 0.0
        sat = np.sum([s["saturated_steps"] for s in late], axis=0) / (len(late) * robot.decimation)
        saturation = float(sat.max())
    standing = is_standing(spec.segments) and len(trace["t"])
    drift = float(np.linalg.norm(trace["pos_xy"][-1] - trace["start_xy"])) if standing else None
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
    if drift is not None and drift > th.max_stand_drift:
        failures.append(f"drift {drift:.3f} > {th.max_stand_drift} m standing")
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
        drift=drift,
        peak_torque=peak,
        torque_limit=torque_limit,
        torque_saturation=saturation,
        joint_margin=margin,
        foot_slip=slip,
        failures=failures,
        wall_s=wall_s,
        cpu_s=cpu_s,
        yaw_bias=yaw_bias,
        trace=trace,
    )


def ratio_failures(th: GateThresholds, ratios: dict[str, dict[tuple[str, str], float]]) -> list[str]:
    """The PyBullet/MuJoCo agreement: per metric, the median over the cells and each cell against the limits."""
    out = []
    for metric, r in ratios.items():
        if not r:
            continue
        median = float(np.median(list(r.values())))
        if median > th.max_ratio_median:
            out.append(f"PyBullet/MuJoCo {metric} ratio: median {median:.2f} > {th.max_ratio_median}")
        out += [f"PyBullet/MuJoCo {metric} ratio {v:.2f} > {th.max_ratio_cell} in {c} / {p}"
                for (c, p), v in r.items() if v > th.max_ratio_cell]  # fmt: skip
    return out
