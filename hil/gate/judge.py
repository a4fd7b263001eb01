"""Judging the gate: the thresholds every cell is held to, a cell's metrics and why it fails, and the
PyBullet/MuJoCo agreement the whole run is held to.

Tracking is judged over whole strides: the velocity is averaged over each gait cycle (the bundle's gait clock
period) before it is compared with the command, so the trot's own sway within a stride is not counted as error.
That sway is measured on its own (heading, roll and pitch swing per stride, in degrees) and held to bounds of
its own. docs/gate.md, "Metrics and thresholds", gives each number and why.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np

from trot.hil.gate.commands import is_standing, segment_starts
from trot.robots import Robot
from trot.sim.metrics import (
    heading_swings,
    peak_to_peak,
    settle_times,
    settled,
    stride_tracking_errors,
    stride_windows,
    tracking_errors,
)

SATURATED = 0.99  # |torque| at or above this fraction of the limit counts as saturated


@dataclass(frozen=True)
class GateThresholds:
    """What a cell must meet to pass, and the engines' agreement; every judged cell, perturbed or not, is held to
    the same numbers (docs/gate.md explains each)."""

    max_tilt_deg: float = 60.0  # fall: base tilted further than this (the training termination)
    min_height_ratio: float = 0.5  # fall: base below this fraction of its standing height
    settle_s: float = 2.0  # tracking, swing, slip and saturation are measured after this long
    switch_settle_s: float = 0.5  # ... and this long after each change of a command sequence
    # s: the stride a policy without a gait clock is judged over (one with a clock: its period)
    no_clock_stride_s: float = 0.5
    lin_err_floor: float = 0.05  # m/s: |stride mean v_xy - command_xy|, averaged over strides, may be this, or ...
    yaw_err_floor: float = 0.1  # rad/s: |stride mean yaw rate - command|, averaged over strides, may be this, or ...
    err_fraction: float = 0.2  # ... this fraction of the commanded speed (yaw rate), whichever is larger
    max_heading_swing_deg: float = 10.0  # peak-to-peak heading swing within a stride, about its steady turn
    max_roll_swing_deg: float = 15.0  # peak-to-peak body roll within a stride
    max_pitch_swing_deg: float = 15.0  # peak-to-peak body pitch within a stride
    max_stand_drift: float = 0.1  # m, horizontal base displacement over a standing cell
    max_torque_saturation: float = 0.10  # worst joint's fraction of physics steps at its torque limit
    # rad, closest any joint may come to its URDF limit (the hard stop). Targets are clamped at the soft limits
    # (soft_limit_margin inside) in training, here and on the robot alike; this catches overshoot.
    min_joint_margin: float = 0.05
    max_foot_slip: float = 0.15  # m/s, mean horizontal speed of feet in contact with the floor
    # With both engines: the PyBullet/MuJoCo ratio of each tracking error, an error below half its cell's bound
    # counting as half the bound, over the judged cells:
    max_ratio_median: float = 1.25  # ... its median
    max_ratio_cell: float = 2.0  # ... and every cell's


@dataclass
class CellResult:
    engine: str
    command: str
    perturbation: str
    fell: bool
    fall_time_s: float | None
    lin_err: float | None  # m/s: |stride mean v_xy - command_xy|, mean over the strides measured (judged)
    yaw_err: float | None  # rad/s: |stride mean yaw rate - command|, mean over the strides measured (judged)
    drift: float | None  # m over the cell; standing cells only
    peak_torque: float  # N·m
    torque_limit: float  # N·m, after motor strength
    torque_saturation: float  # worst joint's fraction of physics steps at the limit
    joint_margin: float  # rad
    foot_slip: float | None  # m/s
    failures: list[str]
    wall_s: float
    cpu_s: float  # CPU seconds of the cell's worker process
    judged: bool = True  # False: a stress cell, reported and plotted, not part of the verdict
    lin_bound: float | None = None  # m/s: the linear error allowed (a sequence: its tightest segment's)
    yaw_bound: float | None = None  # rad/s: the yaw error allowed (a sequence: its tightest segment's)
    strides: int = 0  # strides measured
    heading_swing_deg: float | None = None  # peak-to-peak within a stride about its steady turn, mean over strides
    roll_swing_deg: float | None = None  # peak-to-peak body roll within a stride, mean over strides
    pitch_swing_deg: float | None = None  # peak-to-peak body pitch within a stride, mean over strides
    # Reported, not judged: the per-control-step errors the gate judged until 2026-12 (mean |v - command| over the
    # samples), which count the stride's sway as error (docs/gate.md, "Stride judgement").
    lin_err_per_step: float | None = None
    yaw_err_per_step: float | None = None
    trace: dict = field(default_factory=dict, repr=False)  # per control step arrays, for plots

    @property
    def passed(self) -> bool:
        return not self.failures

    def metrics(self) -> dict:
        d = {k: v for k, v in asdict(self).items() if k != "trace"}
        d["passed"] = self.passed
        return d


def error_bounds(th: GateThresholds, command) -> tuple[float, float]:
    """Allowed linear and yaw tracking errors for a command: a floor, or a fraction of the command."""
    speed, yaw = float(np.linalg.norm(command[:2])), abs(float(command[2]))
    return max(th.lin_err_floor, th.err_fraction * speed), max(th.yaw_err_floor, th.err_fraction * yaw)


def stride_steps(gait_frequency_hz: float, control_dt: float, th: GateThresholds) -> int:
    """Control steps in one stride: the gait clock's period, or `no_clock_stride_s` for a policy without one."""
    stride_s = 1.0 / gait_frequency_hz if gait_frequency_hz > 0 else th.no_clock_stride_s
    return max(1, round(stride_s / control_dt))


def tilt_deg(rot: np.ndarray) -> float:
    """The base's tilt, degrees: the angle between its z axis and the world's vertical (rot: body to world)."""
    return math.degrees(math.acos(float(np.clip(rot[2, 2], -1.0, 1.0))))


def roll_pitch_deg(rot: np.ndarray) -> tuple[float, float]:
    """Body roll and pitch, degrees (z-y-x Euler angles of rot, body to world)."""
    pitch = math.asin(float(np.clip(-rot[2, 0], -1.0, 1.0)))
    return math.degrees(math.atan2(rot[2, 1], rot[2, 2])), math.degrees(pitch)


def fall_reason(th: GateThresholds, rot: np.ndarray, height: float, standing_height: float,
                base_contact: bool) -> str | None:  # fmt: skip
    """Why the robot has fallen (the training task's terminations), or None: tilted past `max_tilt_deg`, the base
    touching the floor, or the base below `min_height_ratio` of its standing height."""
    tilt = tilt_deg(rot)
    if tilt > th.max_tilt_deg:
        return f"tilt {tilt:.0f}° > {th.max_tilt_deg:g}°"
    if base_contact:
        return "base touched the floor"
    if height < th.min_height_ratio * standing_height:
        return f"base at {height:.3f} m < {th.min_height_ratio:g} × {standing_height:.3f} m"
    return None


def _segments(trace: dict, measured: np.ndarray):
    """(start s, command (3,), mask (T,)) of each command segment's measured samples."""
    for start in np.unique(trace["command_start"][measured]):
        seg = measured & (trace["command_start"] == start)
        yield float(start), trace["command"][seg][0], seg


def tracking_failures(th: GateThresholds, trace: dict, measured: np.ndarray, steps: int) -> list[str]:
    """Each command segment's stride-averaged errors (over its measured strides) against that command's bounds.

    steps: control steps per stride (`stride_steps`)."""
    out = []
    for start, cmd, seg in _segments(trace, measured):
        windows = stride_windows(seg, steps)
        lin, yaw = (float(e.mean()) for e in stride_tracking_errors(trace["lin_vel"], trace["yaw_rate"],
                                                                     trace["command"], windows))  # fmt: skip
        lin_max, yaw_max = error_bounds(th, cmd)
        where = f" (command {tuple(float(c) for c in cmd)} from {start:g} s)" if start > 0 else ""
        if lin > lin_max:
            out.append(f"lin err {lin:.3f} > {lin_max:.3g} m/s{where}")
        if yaw > yaw_max:
            out.append(f"yaw err {yaw:.3f} > {yaw_max:.3g} rad/s{where}")
    return out


def swing_failures(th: GateThresholds, heading: float, roll: float, pitch: float) -> list[str]:
    """Within-stride swing (degrees, peak to peak, mean over the strides) against its bounds."""
    out = []
    bounds = (th.max_heading_swing_deg, th.max_roll_swing_deg, th.max_pitch_swing_deg)
    for name, value, bound in zip(("heading", "roll", "pitch"), (heading, roll, pitch), bounds):
        if value > bound:
            out.append(f"{name} swing {value:.1f}° > {bound:g}° per stride")
    return out


def judge(spec, trace: dict, samples: list[dict], fall_time, margin: float, robot: Robot, torque_limit: float,
          wall_s: float, cpu_s: float) -> CellResult:  # fmt: skip
    """A cell's metrics and failures from its trace (per control step) and per-period physics samples.

    spec: the cell's `CellSpec` (engine, command and its segments, perturbation, seconds, thresholds, stride_steps,
    judged).
    """
    th = spec.thresholds
    steps = spec.stride_steps
    starts = segment_starts(spec.segments, spec.seconds)
    settle, switch_settle = settle_times(th.settle_s, th.switch_settle_s, starts, spec.seconds)
    # After the settle time, and away from the switches of a sequence.
    measured = settled(trace["t"], settle, trace["command_start"], switch_settle)
    bounds = [error_bounds(th, cmd) for _, cmd in spec.segments]
    lin_bound, yaw_bound = min(b[0] for b in bounds), min(b[1] for b in bounds)
    lin_err = yaw_err = slip = heading = roll = pitch = step_lin = step_yaw = None
    strides, saturation = 0, 0.0
    if measured.any():
        windows = [w for _, _, seg in _segments(trace, measured) for w in stride_windows(seg, steps)]
        strides = len(windows)
        lin, yaw = stride_tracking_errors(trace["lin_vel"], trace["yaw_rate"], trace["command"], windows)
        lin_err, yaw_err = float(lin.mean()), float(yaw.mean())
        heading = math.degrees(float(heading_swings(trace["yaw_rate"], robot.control_dt, windows).mean()))
        roll = float(peak_to_peak(trace["roll_deg"], windows).mean())
        pitch = float(peak_to_peak(trace["pitch_deg"], windows).mean())
        step_lin, step_yaw = tracking_errors(
            trace["lin_vel"][measured], trace["yaw_rate"][measured], trace["command"][measured]
        )
        late = [s for s, m in zip(samples, measured) if m]
        speeds = np.concatenate([s["slip"] for s in late])
        slip = float(speeds.mean()) if len(speeds) else 0.0
        # Per joint, the fraction of physics steps at the limit; the worst joint is what is judged (a motor pinned
        # at its limit is one motor with no authority left, however idle the other eleven are).
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
        failures += tracking_failures(th, trace, measured, steps)
        failures += swing_failures(th, heading, roll, pitch)
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
        judged=spec.judged,
        lin_bound=lin_bound,
        yaw_bound=yaw_bound,
        strides=strides,
        heading_swing_deg=heading,
        roll_swing_deg=roll,
        pitch_swing_deg=pitch,
        lin_err_per_step=step_lin,
        yaw_err_per_step=step_yaw,
        trace=trace,
    )


RATIO_METRICS = {"lin_err": "lin_bound", "yaw_err": "yaw_bound"}  # tracking error -> the bound it is judged against


def engine_ratio(pybullet: CellResult, mujoco: CellResult, metric: str) -> float | None:
    """PyBullet / MuJoCo `metric` for one cell, each error below half the cell's bound counting as half the bound
    (two errors well inside the bound say nothing about the engines' agreement); None where one is missing."""
    a, b = getattr(pybullet, metric), getattr(mujoco, metric)
    if a is None or b is None:
        return None
    floor = 0.5 * getattr(mujoco, RATIO_METRICS[metric])
    return max(a, floor) / max(b, floor)


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
