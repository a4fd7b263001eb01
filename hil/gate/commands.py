"""The gate's velocity commands, by name: what each cell of the matrix asks the policy to do.

Kept on their own: a later step reads these speeds from the robot's task config instead.
"""

from __future__ import annotations

import numpy as np

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


def command_at(segments: tuple, t: float, seconds: float) -> tuple[np.ndarray, float]:
    """The command at time t, and when it started."""
    current, start = segments[0][1], 0.0
    for frac, cmd in segments:
        if t >= frac * seconds - 1e-9:
            current, start = cmd, frac * seconds
    return np.asarray(current, dtype=float), start


def segment_starts(segments: tuple, seconds: float) -> list[float]:
    """When each segment of a command starts in a cell of `seconds` (s)."""
    return [frac * seconds for frac, _ in segments]
