"""`trot train --until_gate`: train until the policy passes the sim2sim gate, or until a wall-time cap.

Every `every` iterations the runner saves a checkpoint (atomically), exports it to a bundle and starts the
quick gate (`trot gate --quick`: seven PyBullet cells) on it in a side process, so training goes on while
the gate runs; the progress line shows the last result. At the first quick pass training stops and the
full gate (PyBullet, every cell) runs on that bundle with all cores and writes its gate record beside it
(`model_<it>.onnx.gate.json`). When it passes, the bundle is the run's `gate_passed.onnx`, its record copied along
(`gate_passed.onnx.gate.json`: the same bytes, so the same hash, which `trot flash` asks for); when it fails,
training resumes and the quick gate goes on. `max_minutes` ends
the run either way. `until_gate.json` in the run folder records what happened and when (the figures
`trot bench train` reads).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from trot.train.bench import SUMMARY
from trot.train.checkpoint import atomic_write_text
from trot.train.export import export_bundle

QUICK_JOBS = 1  # the side process gets one worker: the other core keeps training
GATE_DIR = "gate"  # in the run folder: each gated bundle and its reports
PASSED_BUNDLE = "gate_passed.onnx"


@dataclass(frozen=True)
class UntilGateCfg:
    """When to gate and when to give up."""

    every: int = 25  # iterations between quick gates (a gate still running when one is due delays it)
    max_minutes: float = 30.0  # wall-time cap of the whole run, full gates included


@dataclass
class GateResult:
    """One gate run on one checkpoint's bundle."""

    iteration: int
    bundle: str
    quick: bool
    passed: bool
    cells_passed: int
    cells: int
    env_steps: int  # env steps trained when the checkpoint was saved
    known_at_s: float  # seconds into the run when the result was known
    report: str

    def text(self) -> str:
        kind = "quick gate" if self.quick else "full gate"
        return f"{kind} @{self.iteration + 1}: {self.cells_passed}/{self.cells}"


@dataclass
class Outcome:
    """How an `--until_gate` run ended: 'passed' (full gate), 'cap' (max_minutes) or 'iterations'."""

    reason: str = "iterations"
    wall_s: float = 0.0
    env_steps: int = 0
    passed: GateResult | None = None  # the full gate that passed
    first_quick_pass: GateResult | None = None
    gates: list[GateResult] = field(default_factory=list)

    def message(self, run_dir: Path, cfg: UntilGateCfg) -> str:
        """What happened, in plain words."""
        if self.reason == "passed":
            p = self.passed
            return (
                f"trot train: the policy passed the full gate ({p.cells_passed}/{p.cells} cells) at iteration "
                f"{p.iteration + 1}, {p.env_steps:,} env steps, after {self.wall_s / 60:.1f} min; bundle "
                f"{run_dir / PASSED_BUNDLE}"
            )
        why = f"the {cfg.max_minutes:g} min cap was hit" if self.reason == "cap" else "the iterations ran out"
        last = f"; last: {self.gates[-1].text()}" if self.gates else "; no gate result yet"
        return f"trot train: NO policy passed the full gate: {why} after {self.wall_s / 60:.1f} min{last}"


class Stop(Exception):  # noqa: N818  (control flow: leaves rsl-rl's learn loop between iterations)
    """Raised from the iteration hook to leave `learn`; `reason` is 'quick_pass' or 'cap'."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class SideGate:
    """The quick gate on one bundle at a time, in a side process (`python -m trot.hil.gate --quick`)."""

    def __init__(self, robot_folder: Path):
        self.robot_folder = robot_folder
        self.proc: subprocess.Popen | None = None
        self.pending: GateResult | None = None

    @property
    def busy(self) -> bool:
        return self.proc is not None

    def start(self, iteration: int, bundle: Path, env_steps: int) -> None:
        report = bundle.with_name(bundle.stem + "_quick")
        cmd = [sys.executable, "-m", "trot.hil.gate", str(bundle), "--quick", "--jobs", str(QUICK_JOBS),
               "--no-plots", "--robot", str(self.robot_folder), "-o", str(report)]  # fmt: skip
        log = open(bundle.with_suffix(".quick.log"), "w")  # noqa: SIM115  (closed with the process)
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        log.close()  # the child holds its own descriptor
        self.pending = GateResult(iteration, str(bundle), True, False, 0, 0, env_steps, 0.0, str(report))

    def poll(self, now_s: float) -> GateResult | None:
        """The finished gate's result (once), or None while it runs or when none was started."""
        if self.proc is None or self.proc.poll() is None:
            return None
        code, result = self.proc.returncode, self.pending
        self.proc, self.pending = None, None
        result.known_at_s = now_s
        return read_report(result, Path(result.report) / "gate.json", code)

    def stop(self) -> None:
        """End a gate still running (training is over)."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None


def read_report(result: GateResult, gate_json: Path, code: int) -> GateResult:
    """Fill `result` from a gate's exit status and report (docs/until_gate.md): passed only when the gate exited 0
    and its report lists at least one cell, every one passed; a gate that crashed or wrote no readable report counts
    as failed, with the cells its report lists (0 of 0 without one)."""
    try:
        cells = [bool(c["passed"]) for c in json.loads(gate_json.read_text())["cells"]]
    except (OSError, ValueError, KeyError, TypeError):  # no report, a truncated one, or not the gate's format
        cells = []
    result.cells, result.cells_passed = len(cells), sum(cells)
    result.passed = code == 0 and 0 < result.cells_passed == result.cells
    return result


class UntilGate:
    """The iteration hook of an `--until_gate` run: export and gate every `every` iterations, stop on a pass."""

    def __init__(self, cfg: UntilGateCfg, run_dir: Path, robot_folder: Path, start_it: int, progress, out=None):
        self.cfg, self.run_dir, self.start_it, self.progress = cfg, run_dir, start_it, progress
        self.out = out or sys.stdout  # the terminal (training's own output goes to train.log)
        self.started = time.monotonic()
        self.side = SideGate(robot_folder)
        self.robot_folder = robot_folder
        self.outcome = Outcome()
        self.quick_passed: GateResult | None = None
        (run_dir / GATE_DIR).mkdir(exist_ok=True)

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def after_iteration(self, runner, it: int) -> None:
        """Read a finished gate, stop on a quick pass or at the cap, start the next gate when one is due."""
        result = self.side.poll(self.elapsed())
        if result is not None:
            self.outcome.gates.append(result)
            self.progress.note = result.text()
            if result.passed:
                self.quick_passed = result
                self.outcome.first_quick_pass = self.outcome.first_quick_pass or result
                raise Stop("quick_pass")
        if self.elapsed() >= 60 * self.cfg.max_minutes:
            raise Stop("cap")
        if not self.side.busy and (it + 1 - self.start_it) >= self.cfg.every and (it + 1) % self.cfg.every == 0:
            ckpt = self.run_dir / f"model_{it}.pt"
            runner.save(str(ckpt))
            bundle = self.run_dir / GATE_DIR / f"model_{it}.onnx"
            export_bundle(ckpt, bundle)
            self.side.start(it, bundle, int(runner.logger.tot_timesteps))
            self.progress.note = f"quick gate @{it + 1}: running"

    def full_gate(self) -> GateResult:
        """The full gate (PyBullet, every cell, all cores) on the bundle that passed the quick gate."""
        from trot.deploy.bundle import load_bundle
        from trot.gate_record import record_path
        from trot.hil.gate.record import write_records
        from trot.hil.gate.report import summary_table, write_report
        from trot.hil.gate.run import run_gate

        q = self.quick_passed
        bundle = Path(q.bundle)
        report = bundle.with_name(bundle.stem + "_full")
        print(f"trot train: the quick gate passed at iteration {q.iteration + 1}; running the full gate",
              file=self.out, flush=True)  # fmt: skip
        run = run_gate(load_bundle(bundle), str(self.robot_folder))
        write_report(run, report, plots=False)
        records = write_records(run, report)
        print(summary_table(run), file=self.out, flush=True)
        result = GateResult(q.iteration, str(bundle), False, run.passed, sum(c.passed for c in run.cells),
                            len(run.cells), q.env_steps, self.elapsed(), str(report))  # fmt: skip
        self.outcome.gates.append(result)
        self.progress.note = result.text()
        if run.passed:  # the very bundle that passed, byte for byte, and the record of its bytes
            passed = self.run_dir / PASSED_BUNDLE
            shutil.copyfile(bundle, passed)
            if records:
                shutil.copyfile(records[0], record_path(passed))
        return result

    def finish(self, reason: str, env_steps: int) -> Outcome:
        """Stop the side gate, record the outcome in `until_gate.json`, print what happened."""
        self.side.stop()
        o = self.outcome
        o.reason, o.wall_s, o.env_steps = reason, self.elapsed(), env_steps
        o.passed = o.gates[-1] if reason == "passed" else None
        data = {"cfg": asdict(self.cfg), **asdict(o)}
        atomic_write_text(self.run_dir / SUMMARY, json.dumps(data, indent=1) + "\n")
        print(o.message(self.run_dir, self.cfg), file=self.out, flush=True)
        return o
