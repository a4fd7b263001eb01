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
