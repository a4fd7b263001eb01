"""Running the matrix: engines × commands × perturbations, one cell per task in a pool of worker processes.

`run_gate(..., quick=True)` runs `QUICK_CELLS` in PyBullet only: the subset to gate a policy with while it
trains, one cell per way the full matrix was seen to fail (nominal stand; forward, backward and sideways at
the top speed; turn at the top rate; forward under payload on a slippery floor and at the robot's declared
latency), judged as the full matrix is.

A stress column (`perturbations.STRESS`) is run and reported, not judged: `GateRun.passed` and the engines'
agreement count the judged cells only. A run is `full` when it covers the whole matrix (every command and every
perturbation, not quick) with cells of at least `FULL_SECONDS` and the default `GateThresholds`: only a full
run's verdict goes into the gate record that `trot flash` asks for.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context

from trot.deploy.bundle import Bundle, check_contract
from trot.gate_record import file_sha256
from trot.hil.gate.cell import ENGINES, CellSpec, run_cell, unsupported
from trot.hil.gate.commands import Segments, gate_commands
from trot.hil.gate.judge import RATIO_METRICS, CellResult, GateThresholds, engine_ratio, ratio_failures, stride_steps
from trot.hil.gate.perturbations import PERTURBATIONS, STRESS, Perturbation, policy_noise_stds, resolve
from trot.robots import Robot, load_robot

QUICK_CELLS = (
    ("stand", "nominal"),
    ("forward_max", "nominal"),
    ("backward_max", "nominal"),
    ("left_max", "nominal"),
    ("turn_left_max", "nominal"),
    ("forward_max", "payload_+20%_friction_0.5"),
    ("forward_max", "latency_declared"),
)
FULL_SECONDS = 10.0  # s: the default cell length, and the least a full run's cells may have


@dataclass
class GateRun:
    """Every cell's result, with what the matrix was run on and how."""

    bundle: Bundle
    robot: Robot
    cells: list[CellResult]
    engines: tuple[str, ...]
    commands: dict[str, Segments]  # name -> segments, in matrix order
    perturbations: dict[str, Perturbation]  # name -> pinned terms, in matrix order
    seconds: float
    seed: int
    jobs: int
    thresholds: GateThresholds
    wall_s: float
    quick: bool = False
    skipped: dict[tuple[str, str, str], str] = field(default_factory=dict)  # (engine, command, pert.) -> why
    full: bool = False  # the whole matrix, cells of at least FULL_SECONDS: a verdict for the gate record
    bundle_sha256: str = ""  # of the bundle file's bytes when the run started

    @property
    def passed(self) -> bool:
        """Every judged cell passes and, with both engines, they agree (stress cells do not count)."""
        return all(c.passed for c in self.cells if c.judged) and not self.ratio_failures()

    @property
    def stress(self) -> list[str]:
        """The run's stress perturbations, in matrix order."""
        return [p for p in self.perturbations if p in STRESS]

    @property
    def cpu_s(self) -> float:
        """CPU seconds of every cell together (the workers', excluding their start-up)."""
        return sum(c.cpu_s for c in self.cells)

    def failed(self, engine: str, judged: bool = True) -> int:
        """Failing cells of `engine`: the judged ones (judged=False: the stress ones)."""
        return sum(not c.passed for c in self.cells if c.engine == engine and c.judged == judged)

    def run_count(self, engine: str, judged: bool = True) -> int:
        """Cells of `engine` run: the judged ones (judged=False: the stress ones)."""
        return sum(c.engine == engine and c.judged == judged for c in self.cells)

    def cell(self, engine: str, command: str, perturbation: str) -> CellResult | None:
        """The cell's result, or None where it was not run (skipped, or outside the quick subset)."""
        return {(c.engine, c.command, c.perturbation): c for c in self.cells}.get((engine, command, perturbation))

    def ratios(self, metric: str, judged: bool | None = True) -> dict[tuple[str, str], float]:
        """PyBullet / MuJoCo `metric` ('lin_err' or 'yaw_err') per (command, perturbation) run in both
        (`judge.engine_ratio`): over the judged cells, the stress ones (judged=False), or all (None)."""
        if set(ENGINES) - set(self.engines):
            return {}
        out = {}
        for c in self.commands:
            for p in self.perturbations:
                if judged is not None and (p not in STRESS) != judged:
                    continue
                pb, mj = (self.cell(e, c, p) for e in ENGINES)
                ratio = None if pb is None or mj is None else engine_ratio(pb, mj, metric)
                if ratio is not None:
                    out[(c, p)] = ratio
        return out

    def ratio_failures(self) -> list[str]:
        """Where the engines disagree beyond `GateThresholds.max_ratio_median` / `max_ratio_cell` (judged cells)."""
        return ratio_failures(self.thresholds, {m: self.ratios(m) for m in RATIO_METRICS})


def check_matrix(commands: list[str], known_commands: dict[str, Segments]) -> None:
    """Refuse unknown command names, listing the known ones."""
    unknown = [n for n in commands if n not in known_commands]
    if unknown:
        raise ValueError(f"unknown command(s) {unknown}; known: {list(known_commands)}")


def run_gate(
    bundle: Bundle,
    robot: str | None = None,
    engines=("pybullet",),
    commands=None,
    perturbations=None,
    seconds: float = FULL_SECONDS,
    seed: int = 0,
    jobs: int | None = None,
    thresholds: GateThresholds | None = None,
    quick: bool = False,
    pins=(),
) -> GateRun:
    """Run the matrix (engines × commands × perturbations), cells in parallel worker processes.

    thresholds: what every cell is held to (default `GateThresholds()`). quick: `QUICK_CELLS` in PyBullet only
    (engines, commands and perturbations are then ignored). pins: extra perturbations, 'term=value,...'.
    A perturbation an engine cannot simulate (`UNSUPPORTED_PARAMS`) is not run in it: `GateRun.skipped` says why.
    """
    thresholds = thresholds or GateThresholds()
    digest = file_sha256(bundle.path)
    rob = load_robot(robot or bundle.contract.name)
    check_contract(bundle, rob)
    known = gate_commands(rob)
    if quick:
        engines, pairs = ("pybullet",), list(QUICK_CELLS)
        commands, perturbations = list(dict.fromkeys(c for c, _ in pairs)), list(dict.fromkeys(p for _, p in pairs))
        pins = ()
    else:
        commands = list(commands or known)
        perturbations = list(PERTURBATIONS if perturbations is None else perturbations)
        pairs = [(c, p) for c in commands for p in [*perturbations, *pins]]
    check_matrix(commands, known)
    # A verdict for the record: the whole matrix, long enough cells, the gate's own thresholds.
    full = (not quick and set(known) <= set(commands) and set(PERTURBATIONS) <= set(perturbations)
            and seconds >= FULL_SECONDS and thresholds == GateThresholds())  # fmt: skip
    pinned = resolve(perturbations, list(pins), rob)
    steps = stride_steps(bundle.meta.observation.gait_frequency_hz, rob.control_dt, thresholds)
    noise = policy_noise_stds(rob) if any(p.sensor_noise for p in pinned.values()) else None
    why = {(e, p): unsupported(e, pinned[p], rob) for e in engines for p in pinned}
    specs, skipped = [], {}
    for e in engines:
        for c, p in pairs:
            if why[(e, p)]:
                skipped[(e, c, p)] = why[(e, p)]
            else:
                specs.append(CellSpec(e, c, known[c], p, pinned[p], bundle, str(rob.folder), seconds, seed,
                                      thresholds, noise, steps, p not in STRESS))  # fmt: skip
    jobs = max(1, min(jobs or os.cpu_count() or 1, len(specs)))
    started = time.perf_counter()
    if jobs == 1:
        cells = [run_cell(s) for s in specs]
    else:
        # spawn: fresh workers, no inherited onnxruntime threads; each builds its own simulator.
        with ProcessPoolExecutor(jobs, mp_context=get_context("spawn")) as pool:
            cells = list(pool.map(run_cell, specs))
    wall_s = time.perf_counter() - started
    return GateRun(bundle, rob, cells, tuple(engines), {c: known[c] for c in commands}, pinned, seconds, seed, jobs,
                   thresholds, wall_s, quick, skipped, full, digest)  # fmt: skip
