"""Velocity tracking figures, computed one way for `trot play` (train/evaluate.py) and the gate (hil/gate/).

numpy only: the gate's worker processes and the robot-side tools use it without torch.
"""

from __future__ import annotations

import numpy as np


def settle_times(settle_s: float, switch_settle_s: float, starts: list[float], seconds: float) -> tuple[float, float]:
    """Settle times of a run of `seconds` whose commands start at `starts` (s, the first at 0).

    At most half the run, and the settle after a change at most half the shortest command segment, so that
    every run and every segment keeps samples to measure.
    """
    bounds = [*starts, seconds]
    shortest = min(b - a for a, b in zip(bounds, bounds[1:]))
    return min(settle_s, 0.5 * seconds), min(switch_settle_s, 0.5 * shortest)


def settled(t: np.ndarray, settle_s: float, command_start=None, switch_settle_s: float = 0.0) -> np.ndarray:
    """(T,) bool: the samples to measure, taken at times t (s): after settle_s, and, where commands change
    (command_start (T,): when each sample's command began), also more than switch_settle_s after the change."""
    measured = t > settle_s
    if command_start is not None:
        measured &= (command_start == 0) | (t - command_start > switch_settle_s)
    return measured


def tracking_errors(lin_vel: np.ndarray, yaw_rate: np.ndarray, command: np.ndarray) -> tuple[float, float]:
    """Mean |v_xy - command_xy| (m/s) and mean |yaw rate - command| (rad/s) over the samples given.

    lin_vel (T, 2) and yaw_rate (T,) in the body frame; command (T, 3) or (3,): vx, vy, yaw rate.
    """
    command = np.asarray(command)
    lin = float(np.linalg.norm(lin_vel - command[..., :2], axis=1).mean())
    yaw = float(np.abs(yaw_rate - command[..., 2]).mean())
    return lin, yaw


def stride_windows(measured: np.ndarray, steps: int) -> list[slice]:
    """Consecutive windows of `steps` samples (one stride each) within every run of True in `measured` (T,).

    Each run is cut from its start into whole strides; the remainder shorter than a stride is left out. A run
    shorter than one stride is one window of what there is, so that a short run still has a figure.
    """
    edges = np.flatnonzero(np.diff(np.concatenate([[0], np.asarray(measured, dtype=np.int8), [0]])))
    out = []
    for start, stop in zip(edges[::2], edges[1::2]):
        whole = (stop - start) // steps
        out += [slice(start + k * steps, start + (k + 1) * steps) for k in range(whole)] or [slice(start, stop)]
    return out


def stride_tracking_errors(
    lin_vel: np.ndarray, yaw_rate: np.ndarray, command: np.ndarray, windows: list[slice]
) -> tuple[np.ndarray, np.ndarray]:
    """Per stride: |mean v_xy - command_xy| (m/s) and |mean yaw rate - command| (rad/s), (W,) each.

    The velocity is averaged over each window before it is compared with the command, so the stride's own sway
    (a trot's body swings left and right, its heading to and fro, at the gait frequency) cancels out and what is
    left is the motion a user sees from one stride to the next. lin_vel (T, 2), yaw_rate (T,), command (T, 3).
    """
    error = np.column_stack([lin_vel - command[:, :2], yaw_rate - command[:, 2]])  # (T, 3)
    means = np.array([error[w].mean(axis=0) for w in windows]).reshape(-1, 3)
    return np.linalg.norm(means[:, :2], axis=1), np.abs(means[:, 2])


def heading_swings(yaw_rate: np.ndarray, dt: float, windows: list[slice]) -> np.ndarray:
    """Per stride: peak-to-peak swing of the heading (rad) about the stride's steady turn, (W,).

    The heading is the yaw rate integrated over the stride, less the stride's mean rate: a steady turn swings 0,
    a wobble of amplitude A (rad/s) at the stride's frequency f swings A / (pi f).
    """
    out = []
    for w in windows:
        rate = yaw_rate[w] - yaw_rate[w].mean()
        heading = np.concatenate([[0.0], np.cumsum(rate) * dt])
        out.append(heading.max() - heading.min())
    return np.asarray(out)


def peak_to_peak(values: np.ndarray, windows: list[slice]) -> np.ndarray:
    """Per stride: max - min of `values` (T,) over each window, (W,)."""
    return np.array([np.ptp(values[w]) for w in windows])
