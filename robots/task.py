"""A robot's task settings (`task.toml` beside its `robot.toml`): what the walking task does differently for it.

The file is a partial training task config: its tables override the shared defaults of
`trot.sim.config` field by field (sim/task.py applies and validates them), except `[gate]`, the
commands the sim2sim gate drives the robot with, read here so that the gate needs no torch.
Gait pairs may name feet by link (from robot.toml's `foot_links`); they are stored as indices.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from trot.robots import ContractError, Robot, tomllib

TASK_FILE = "task.toml"

Command = tuple[float, float, float]  # vx m/s, vy m/s, yaw rate rad/s


@dataclass(frozen=True)
class GateCommands:
    """The gate's commands: each named one held for a whole cell, and one cell that changes command."""

    commands: dict[str, Command]
    sequence: tuple[tuple[float, Command], ...]  # (start as a fraction of the cell, command)

    def segments(self) -> dict[str, tuple[tuple[float, Command], ...]]:
        """name -> ((start fraction, command), ...): the named commands and 'sequence'."""
        return {**{n: ((0.0, c),) for n, c in self.commands.items()}, "sequence": self.sequence}


@dataclass(frozen=True)
class TaskFile:
    """A robot's task.toml: the overrides of the shared task config, and the gate's commands."""

    path: Path
    overrides: dict
    gate: GateCommands | None


def load_task_file(robot: Robot) -> TaskFile:
    """Read and check `robot.folder/task.toml` (an absent file overrides nothing)."""
    path = robot.folder / TASK_FILE
    if not path.is_file():
        return TaskFile(path, {}, None)
    try:
        with open(path, "rb") as f:
            raw = tomllib.load(f)
    except tomllib.TOMLDecodeError as e:
        raise ContractError(path, "<file>", str(e), "valid TOML") from e
    gate = _gate(raw.pop("gate"), path) if "gate" in raw else None
    gait = raw.get("gait")
    if isinstance(gait, dict) and "pairs" in gait:
        gait["pairs"] = foot_pairs(gait["pairs"], robot, path)
    return TaskFile(path, raw, gate)


def foot_pairs(pairs, robot: Robot, file: Path | str) -> list[list[int]]:
    """Two disjoint groups of feet (indices into foot_links, or their link names) covering every foot."""
    feet = list(robot.foot_links)
    expected = f"two lists of feet (indices 0-{len(feet) - 1} or names from {feet}) that together hold each foot once"
    if not isinstance(pairs, list) or len(pairs) != 2 or not all(isinstance(p, list) for p in pairs):
        raise ContractError(file, "gait.pairs", pairs, expected)
    out = []
    for group in pairs:
        indices = []
        for foot in group:
            if isinstance(foot, str) and foot in feet:
                indices.append(feet.index(foot))
            elif isinstance(foot, int) and not isinstance(foot, bool) and 0 <= foot < len(feet):
                indices.append(foot)
            else:
                raise ContractError(file, "gait.pairs", pairs, expected)
        out.append(indices)
    if sorted(out[0] + out[1]) != list(range(len(feet))):
        raise ContractError(file, "gait.pairs", pairs, expected)
    return out


def _command(value, field: str, file: Path) -> Command:
    ok = isinstance(value, list) and len(value) == 3
    if not ok or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value):
        raise ContractError(file, field, value, "[vx m/s, vy m/s, yaw rate rad/s]")
    return (float(value[0]), float(value[1]), float(value[2]))


def _gate(raw, file: Path) -> GateCommands:
    if not isinstance(raw, dict) or not isinstance(raw.get("commands"), dict) or not raw["commands"]:
        raise ContractError(file, "gate.commands", raw, "a [gate.commands] table: name = [vx, vy, yaw_rate]")
    unknown = sorted(set(raw) - {"commands", "sequence"})
    if unknown:
        raise ContractError(file, f"gate.{unknown[0]}", raw[unknown[0]], "only [gate.commands] and [gate.sequence]")
    commands = {name: _command(v, f"gate.commands.{name}", file) for name, v in raw["commands"].items()}
    if "sequence" in commands:
        raise ContractError(file, "gate.commands.sequence", raw["commands"]["sequence"], "a name other than 'sequence'")
    seq = raw.get("sequence")
    if not isinstance(seq, dict) or set(seq) != {"at", "commands"}:
        raise ContractError(file, "gate.sequence", seq, "a table with 'at' (fractions) and 'commands' (a list)")
    at, cmds = seq["at"], seq["commands"]
    fractions_ok = (
        isinstance(at, list) and at and at[0] == 0 and all(isinstance(a, (int, float)) for a in at)
        and all(0 <= a < b < 1 for a, b in zip(at, at[1:]))
    )  # fmt: skip
    if not fractions_ok:
        raise ContractError(file, "gate.sequence.at", at, "increasing fractions of the cell in [0, 1), from 0")
    if not isinstance(cmds, list) or len(cmds) != len(at):
        raise ContractError(file, "gate.sequence.commands", cmds, f"{len(at)} commands, one per 'at'")
    sequence = tuple(
        (float(a), _command(c, f"gate.sequence.commands[{i}]", file)) for i, (a, c) in enumerate(zip(at, cmds))
    )
    return GateCommands(commands, sequence)
