"""The gate's velocity commands, by name, for a robot: what each cell of the matrix asks the policy to do.

`stand`, then both ends of each trained command range (the robot's task config, `[commands]` in its
task.toml, laid over the shared defaults): `forward_max`, `backward_max`, `left_max`, `right_max`,
`turn_left_max`, `turn_right_max`, then what the task.toml's `[gate]` adds (speeds by name, and the
`sequence` cell that changes command). A command is a tuple of segments
((start as a fraction of the cell, (vx m/s, vy m/s, yaw rate rad/s)), ...).
"""

from __future__ import annotations

import numpy as np

from trot.robots import ContractError, Robot
from trot.robots.task import load_task_file

Segments = tuple[tuple[float, tuple[float, float, float]], ...]

# The range ends, by name: (axis of the command, which end).
RANGE_ENDS = {
    "forward_max": (0, 1),
    "backward_max": (0, 0),
    "left_max": (1, 1),
    "right_max": (1, 0),
    "turn_left_max": (2, 1),
    "turn_right_max": (2, 0),
}


def gate_commands(robot: Robot) -> dict[str, Segments]:
    """Every command of the robot's gate, by name (see the module docstring)."""
    from trot.sim.task import task_cfg  # torch: only when the gate runs

    ranges = task_cfg(robot.folder).commands
    bounds = (ranges.vx, ranges.vy, ranges.yaw_rate)
    out: dict[str, Segments] = {"stand": ((0.0, (0.0, 0.0, 0.0)),)}
    for name, (axis, end) in RANGE_ENDS.items():
        value = float(bounds[axis][end])
        if (value > 0) == (end == 1) and value != 0:
            cmd = [0.0, 0.0, 0.0]
            cmd[axis] = value
            out[name] = ((0.0, tuple(cmd)),)
    task = load_task_file(robot)
    for name, segments in (task.gate.segments() if task.gate else {}).items():
        if name in out and out[name] != segments:
            raise ContractError(
                task.path, f"gate.commands.{name}", list(segments[0][1]),
                f"a name other than the gate's own commands {list(out)} (the range ends come from [commands])",
            )  # fmt: skip
        out[name] = segments
    return out


def command_at(segments: Segments, t: float, seconds: float) -> tuple[np.ndarray, float]:
    """The command at time t, and when it started."""
    current, start = segments[0][1], 0.0
    for frac, cmd in segments:
        if t >= frac * seconds - 1e-9:
            current, start = cmd, frac * seconds
    return np.asarray(current, dtype=float), start


def segment_starts(segments: Segments, seconds: float) -> list[float]:
    """When each segment of a command starts in a cell of `seconds` (s)."""
    return [frac * seconds for frac, _ in segments]


def is_standing(segments: Segments) -> bool:
    """Whether the command is zero for the whole cell (the cells whose drift is judged)."""
    return all(not any(cmd) for _, cmd in segments)
