"""Running the matrix: engines × commands × perturbations, one cell per task in a pool of worker processes."""

from __future__ import annotations

import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context

from trot.deploy.bundle import Bundle, check_contract
from trot.hil.gate.cell import ENGINES, CellSpec, run_cell
from trot.hil.gate.commands import COMMANDS
from trot.hil.gate.judge import CellResult, GateThresholds
from trot.hil.gate.perturbations import PERTURBATIONS, policy_noise_stds
from trot.robots import Robot, load_robot

# Tracking errors below these count as these in the PyBullet/MuJoCo ratio (both engines are at rest).
RATIO_FLOOR = {"lin_err": 0.01, "yaw_err": 0.02}  # m/s, rad/s


@dataclass
class GateRun:
    """Every cell's result, with what the matrix was run on and how."""

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
    thresholds: GateThresholds | None = None,
) -> GateRun:
    """Run the matrix (engines × commands × perturbations), cells in parallel worker processes.

    thresholds: what every cell is held to (default `GateThresholds()`).
    """
    thresholds = thresholds or GateThresholds()
    rob = load_robot(robot or bundle.contract.name)
    check_contract(bundle, rob)
    commands = list(commands or COMMANDS)
    perturbations = list(perturbations or PERTURBATIONS)
    check_matrix(commands, perturbations)
    noise = policy_noise_stds(rob) if any(PERTURBATIONS[p].sensor_noise for p in perturbations) else None
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
