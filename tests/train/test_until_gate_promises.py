"""What `trot train --until_gate` promises (docs/until_gate.md): when a quick gate counts as passed (a crashed, killed
or refusing gate never does), and that only a passing full gate leaves `gate_passed.onnx`, the very bundle it passed."""

import contextlib
import io
import json
import shutil
import sys
from pathlib import Path

import pytest

from trot.robots import load_robot
from trot.train.progress import Progress
from trot.train.until_gate import SUMMARY, GateResult, Stop, UntilGate, UntilGateCfg, read_report

PUPPER_FOLDER = load_robot("pupper_v3").folder


def _watch(run: Path, robot_folder: Path = PUPPER_FOLDER, out=None) -> UntilGate:
    progress = Progress(0, 10, stream=open("/dev/null", "w"), quiet=True)  # noqa: SIM115
    return UntilGate(UntilGateCfg(every=1000, max_minutes=60), run, robot_folder, 0, progress, out)


class Terminal(io.StringIO):
    """The terminal `trot train` hands the hook (its own stdout goes to train.log): what was flushed is what the user
    has seen."""

    def __init__(self):
        super().__init__()
        self.seen = ""

    def flush(self):
        self.seen = self.getvalue()


def _gated_bundle(run: Path, tiny_bundle: Path, it: int) -> Path:
    """The bundle of iteration `it` where the run keeps it (docs/until_gate.md): gate/model_<it>.onnx."""
    bundle = run / "gate" / f"model_{it}.onnx"
    shutil.copyfile(tiny_bundle, bundle)
    return bundle


# ---- the quick gate's verdict: exit status and report together ------------------------------------------------------

SEVEN = [True] * 7


@pytest.mark.parametrize(
    ("code", "report", "expected"),
    [
        (0, SEVEN, (True, 7, 7)),  # every cell passed, and the gate says so
        (0, [True], (True, 1, 1)),  # a matrix of one cell
        (1, [True, False, True, True, False, True, True], (False, 5, 7)),  # a failing gate: its cells still counted
        (0, None, (False, 0, 0)),  # exited 0 but wrote no report
        (1, None, (False, 0, 0)),  # crashed (a Python traceback) before its report
        (-9, None, (False, 0, 0)),  # killed (out of memory, a signal)
        (2, None, (False, 0, 0)),  # refused the bundle
        (0, '{"passed": true, "cells": [{"passed": tr', (False, 0, 0)),  # a report cut short
        (0, '{"passed": true}', (False, 0, 0)),  # not the gate's format
        (0, [], (False, 0, 0)),  # no cells
        (0, [True, False], (False, 1, 2)),  # a failed cell, whatever the exit status says
        (1, SEVEN, (False, 7, 7)),  # every cell passed but the gate failed (the engines' ratios)
        (-9, SEVEN, (False, 7, 7)),  # a report left behind by a gate that was then killed
    ],
)  # fmt: skip
def test_a_gate_counts_as_passed_only_when_it_exited_0_and_its_report_has_cells_all_passed(
    tmp_path, code, report, expected
):
    gate_json = tmp_path / "gate.json"
    if isinstance(report, list):
        report = json.dumps({"passed": all(report), "cells": [{"passed": p} for p in report]})
    if report is not None:
        gate_json.write_text(report)
    result = read_report(GateResult(4, "b.onnx", True, False, 0, 0, 1000, 12.5, str(tmp_path)), gate_json, code)
    assert (result.passed, result.cells_passed, result.cells) == expected, (code, report)
    assert (result.iteration, result.env_steps, result.known_at_s) == (4, 1000, 12.5)  # the rest is kept


def test_a_quick_gate_killed_before_its_report_counts_as_failed_and_training_goes_on(tiny_bundle, tmp_path):
    watch = _watch(tmp_path)
    bundle = _gated_bundle(tmp_path, tiny_bundle, 0)
    watch.side.start(0, bundle, 64)
    watch.side.proc.kill()  # the side process dies (out of memory, a signal) before it writes anything
    watch.side.proc.wait()
    before = watch.elapsed()
    watch.after_iteration(None, 1)  # no Stop: training goes on
    (result,) = watch.outcome.gates
    assert before <= result.known_at_s <= watch.elapsed()  # when the run learnt it
    assert (result.quick, result.passed, result.cells_passed, result.cells) == (True, False, 0, 0)
    assert (result.iteration, result.bundle, result.env_steps) == (0, str(bundle), 64)
    assert watch.quick_passed is None and watch.outcome.first_quick_pass is None
    assert watch.progress.note == "quick gate @1: 0/0"
    assert not watch.side.busy  # ready for the next gate


def test_a_quick_gate_that_exits_0_with_its_report_where_it_was_told_passes_and_stops_training(
    tiny_bundle, tmp_path, monkeypatch
):
    """The side process's verdict read back: a stand-in for `python -m trot.hil.gate` (seven PyBullet cells take
    minutes; the real process is run by the refusal test below and, whole, by test_until_gate.py's slow test) writes
    a report of seven passed cells where its `-o` says and exits 0. The hook finds it at
    gate/model_<it>_quick/gate.json (docs/until_gate.md), counts it passed and stops training."""
    fake = tmp_path / "fake_python"
    fake.write_text(
        f"#!{sys.executable}\n"
        + """import json, pathlib, sys
args = sys.argv[1:]
out = pathlib.Path(args[args.index("-o") + 1])
out.mkdir(parents=True)
(out / "gate.json").write_text(json.dumps({"passed": True, "cells": [{"passed": True}] * 7}))
(out / "argv.json").write_text(json.dumps(args))
"""
    )
    fake.chmod(0o755)
    watch = _watch(tmp_path)
    bundle = _gated_bundle(tmp_path, tiny_bundle, 4)
    monkeypatch.setattr(sys, "executable", str(fake))
    watch.side.start(4, bundle, 640)
    assert watch.side.proc.wait(timeout=60) == 0
    with pytest.raises(Stop, match="quick_pass"):
        watch.after_iteration(None, 5)
    report = tmp_path / "gate" / "model_4_quick"
    assert json.loads((report / "argv.json").read_text())[:4] == ["-m", "trot.hil.gate", str(bundle), "--quick"]
    (result,) = watch.outcome.gates
    assert (result.quick, result.passed, result.cells_passed, result.cells) == (True, True, 7, 7)
    assert (result.iteration, result.bundle, result.env_steps, result.report) == (4, str(bundle), 640, str(report))
    assert watch.quick_passed is result and watch.progress.note == "quick gate @5: 7/7"


def test_a_side_gate_that_refuses_its_bundle_counts_as_failed_and_its_log_says_why(tiny_bundle, tmp_path):
    """The real `python -m trot.hil.gate --quick` on a Pupper bundle, told the robot is a Go2: it refuses (status 2)
    without a report; the refusal is in the bundle's quick log, where docs/until_gate.md says to look."""
    watch = _watch(tmp_path, load_robot("go2").folder)
    bundle = _gated_bundle(tmp_path, tiny_bundle, 24)
    watch.side.start(24, bundle, 4096)
    try:
        code = watch.side.proc.wait(timeout=240)  # a refusal takes seconds; running the cells would take minutes
    except Exception:
        watch.side.stop()
        raise AssertionError("the side gate did not refuse a Pupper bundle gated for a Go2: it ran") from None
    assert code == 2
    watch.after_iteration(None, 25)
    (result,) = watch.outcome.gates
    assert (result.passed, result.cells_passed, result.cells, result.iteration) == (False, 0, 0, 24)
    assert result.report == str(tmp_path / "gate" / "model_24_quick")
    assert not (tmp_path / "gate" / "model_24_quick" / "gate.json").exists()
    log = (tmp_path / "gate" / "model_24.quick.log").read_text()
    assert log.startswith(f"trot gate: {bundle}: made for robot 'pupper_v3'") and "not for 'go2'" in log, log
    assert watch.progress.note == "quick gate @25: 0/0"


def test_training_stops_at_a_quick_pass_or_at_the_cap_saying_which(tmp_path):
    """The hook's Stop carries why (runner.learn_until_gate saves a checkpoint at the cap and runs the full gate after
    a quick pass): 'quick_pass' for a passing quick gate, 'cap' past max_minutes, checked after every iteration."""
    watch = _watch(tmp_path)
    watch.side.poll = lambda now_s: GateResult(3, "b.onnx", True, True, 7, 7, 100, 5.0, "r")
    with pytest.raises(Stop) as stop:
        watch.after_iteration(None, 3)
    assert stop.value.reason == "quick_pass"
    watch.side.poll = lambda now_s: None
    watch.elapsed = lambda: 60 * 60.0  # the 60 min cap, to the tick
    with pytest.raises(Stop) as stop:
        watch.after_iteration(None, 4)
    assert stop.value.reason == "cap"


# ---- when a quick gate runs, and on what ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def runner(tiny_checkpoint, tmp_path_factory):
    """A real runner of the tiny training run (8 envs x 8 steps, one iteration: 64 env steps trained)."""
    from trot.sim.locomotion import LocomotionEnv
    from trot.train.checkpoint import load_checkpoint
    from trot.train.config import TrainCfg, from_dict
    from trot.train.runner import TrotRunner

    cfg = from_dict(TrainCfg, load_checkpoint(tiny_checkpoint)["trot"]["config"])
    runner = TrotRunner(LocomotionEnv(cfg.env), cfg, run_dir=tmp_path_factory.mktemp("runner"))
    runner.load(str(tiny_checkpoint))
    return runner


def _schedule(tmp_path, every: int, start_it: int) -> UntilGate:
    progress = Progress(start_it, start_it + 100, stream=open("/dev/null", "w"), quiet=True)  # noqa: SIM115
    return UntilGate(UntilGateCfg(every=every, max_minutes=60), tmp_path, PUPPER_FOLDER, start_it, progress)


def test_a_quick_gate_runs_every_n_iterations_on_the_checkpoint_of_that_iteration_and_one_at_a_time(runner, tmp_path):
    """Every 5 iterations (after the 5th, 10th, ... as the progress line counts them) the run saves a checkpoint,
    exports it and starts the quick gate on it; while that gate runs no result is read and no other starts, and
    the next one is due at the next multiple of 5 after it ended (docs/until_gate.md)."""
    from trot.deploy.bundle import load_bundle

    watch = _schedule(tmp_path, every=5, start_it=0)
    try:
        watch.after_iteration(runner, 0)  # no gate started yet: nothing to read
        watch.after_iteration(runner, 3)
        assert not watch.side.busy and not list(tmp_path.glob("model_*.pt"))
        watch.after_iteration(runner, 4)  # the 5th iteration
        assert watch.side.busy and watch.progress.note == "quick gate @5: running"
        bundle = tmp_path / "gate" / "model_4.onnx"
        assert (tmp_path / "model_4.pt").is_file()
        assert load_bundle(bundle).contract.name == "pupper_v3"  # a verified bundle of the run's policy
        assert watch.side.pending.bundle == str(bundle) and watch.side.pending.iteration == 4
        assert watch.side.pending.env_steps == 64 == runner.logger.tot_timesteps
        watch.after_iteration(runner, 5)  # the gate runs (seven PyBullet cells take minutes): nothing yet
        watch.after_iteration(runner, 9)  # due, but one gate at a time
        assert watch.outcome.gates == [] and watch.progress.note == "quick gate @5: running"
        assert not (tmp_path / "model_9.pt").exists()
        watch.side.stop()
        watch.after_iteration(runner, 10)  # no longer busy, but the 11th is not a multiple of 5
        assert not watch.side.busy
        watch.after_iteration(runner, 14)
        assert watch.side.busy and watch.side.pending.iteration == 14
        assert (tmp_path / "gate" / "model_14.onnx").is_file()
    finally:
        watch.side.stop()


@pytest.mark.parametrize("start_it", [6, 7])
def test_a_resumed_run_trains_n_iterations_before_its_first_quick_gate(runner, tmp_path, start_it):
    """Resumed at iteration 7 (or 6) with a gate every 5: the 10th iteration is only the 3rd (4th) of this run; the
    first gate comes after the 15th. The resumed run gates in its own run folder, whose gate/ the first part of the
    run made: its bundles stay."""
    earlier = tmp_path / "gate" / "model_4.onnx"
    earlier.parent.mkdir()
    earlier.write_bytes(b"the first part's bundle")
    watch = _schedule(tmp_path, every=5, start_it=start_it)
    try:
        watch.after_iteration(runner, 9)
        assert not watch.side.busy and not (tmp_path / "model_9.pt").exists()
        watch.after_iteration(runner, 14)
        assert watch.side.busy and watch.side.pending.iteration == 14
        assert earlier.read_bytes() == b"the first part's bundle"
    finally:
        watch.side.stop()


# ---- the full gate: gate_passed.onnx only after a pass ---------------------------------------------------------------


@pytest.fixture
def one_cell_full_gate(monkeypatch):
    """The full gate on one PyBullet cell of 3 s (the full matrix is 72 cells, minutes of CPU), taken as the full run
    it stands for (so it writes its gate record): set `cell[0]` to the command. The untrained policy stands (it passes
    `stand`) and cannot walk (it fails `forward_max`)."""
    import dataclasses

    import trot.hil.gate.run as gate_run

    real, cell = gate_run.run_gate, ["stand"]
    monkeypatch.setattr(gate_run, "run_gate", lambda bundle, robot: dataclasses.replace(real(
        bundle, robot, commands=cell, perturbations=["nominal"], seconds=3.0, jobs=1), full=True))  # fmt: skip
    return cell


def test_a_failing_full_gate_leaves_no_gate_passed_bundle_and_the_run_says_no_policy_passed(
    tiny_bundle, tmp_path, one_cell_full_gate, capsys
):
    one_cell_full_gate[0] = "forward_max"
    watch = _watch(tmp_path)
    bundle = _gated_bundle(tmp_path, tiny_bundle, 9)
    watch.quick_passed = GateResult(9, str(bundle), True, True, 7, 7, 1000, 1.0, "r")
    result = watch.full_gate()
    assert (result.quick, result.passed, result.cells_passed, result.cells) == (False, False, 0, 1)
    assert (result.iteration, result.bundle, result.env_steps) == (9, str(bundle), 1000)
    report = json.loads((tmp_path / "gate" / "model_9_full" / "gate.json").read_text())
    assert report["passed"] is False and len(report["cells"]) == 1
    assert not (tmp_path / "gate_passed.onnx").exists(), "gate_passed.onnx written for a policy that failed the gate"
    assert not (tmp_path / "gate_passed.onnx.gate.json").exists()
    assert watch.progress.note == "full gate @10: 0/1"
    outcome = watch.finish("iterations", 2000)
    assert outcome.passed is None and outcome.gates == [result]
    summary = json.loads((tmp_path / SUMMARY).read_text())
    assert summary["reason"] == "iterations" and summary["passed"] is None and summary["env_steps"] == 2000
    assert summary["cfg"] == {"every": 1000, "max_minutes": 60} and summary["wall_s"] > 0
    assert [(g["iteration"], g["quick"], g["passed"]) for g in summary["gates"]] == [(9, False, False)]
    out = capsys.readouterr().out
    assert "the quick gate passed at iteration 10; running the full gate" in out
    assert "trot train: NO policy passed the full gate: the iterations ran out" in out
    assert "last: full gate @10: 0/1" in out


def test_a_passing_full_gate_makes_the_bundle_that_passed_gate_passed_onnx(tiny_bundle, tmp_path, one_cell_full_gate,
                                                                          monkeypatch):  # fmt: skip
    """gate_passed.onnx is the bundle that passed, byte for byte, with the gate record of its bytes beside it (what
    `trot flash` asks for), and the full gate's report folder holds the report and the record, no plots (they would
    cost the training process minutes). What the run says goes to the terminal `trot train` hands the hook, not to
    its own stdout (train.log), each line flushed when printed: the full gate runs for minutes after the first."""
    import trot.hil.gate.run as gate_run
    from trot.gate_record import file_sha256, read_record, record_path

    terminal, log = Terminal(), io.StringIO()
    seen_at_start = []
    inner = gate_run.run_gate
    monkeypatch.setattr(gate_run, "run_gate", lambda b, r: seen_at_start.append(terminal.seen) or inner(b, r))
    watch = _watch(tmp_path, out=terminal)
    bundle = _gated_bundle(tmp_path, tiny_bundle, 9)
    watch.quick_passed = GateResult(9, str(bundle), True, True, 7, 7, 1000, 1.0, "r")
    with contextlib.redirect_stdout(log):
        before = watch.elapsed()
        result = watch.full_gate()
        after = watch.elapsed()
        table = terminal.seen
        outcome = watch.finish("passed", 1000)
    assert (result.quick, result.passed, result.cells_passed, result.cells) == (False, True, 1, 1)
    assert before <= result.known_at_s <= after
    report = tmp_path / "gate" / "model_9_full"
    assert result.report == str(report)
    assert json.loads((report / "gate.json").read_text())["passed"] is True
    assert (tmp_path / "gate_passed.onnx").read_bytes() == bundle.read_bytes()
    record = read_record(record_path(tmp_path / "gate_passed.onnx"))
    assert record.passed and record.bundle_sha256 == file_sha256(tmp_path / "gate_passed.onnx")
    assert record_path(tmp_path / "gate_passed.onnx").read_bytes() == record_path(bundle).read_bytes()
    assert (report / record_path(bundle).name).read_bytes() == record_path(bundle).read_bytes()
    assert not list(report.glob("*.png")), sorted(p.name for p in report.iterdir())
    assert outcome.passed is result
    summary = json.loads((tmp_path / SUMMARY).read_text())
    assert summary["reason"] == "passed" and summary["passed"]["cells_passed"] == 1
    assert seen_at_start == ["trot train: the quick gate passed at iteration 10; running the full gate\n"]
    assert "pybullet: 0 of 1 judged cells fail" in table and "stand" in table  # the full gate's summary table
    assert terminal.seen.startswith(table) and terminal.seen.rstrip("\n").endswith(
        f"; bundle {tmp_path / 'gate_passed.onnx'}"
    )
    assert "trot train: the policy passed the full gate (1/1 cells) at iteration 10" in terminal.seen
    assert terminal.seen == terminal.getvalue() and log.getvalue() == ""


def test_a_capped_run_says_so_on_the_terminal(tmp_path):
    terminal, log = Terminal(), io.StringIO()
    watch = _watch(tmp_path, out=terminal)
    with contextlib.redirect_stdout(log):
        outcome = watch.finish("cap", 640)
    assert outcome.reason == "cap" and outcome.passed is None
    assert terminal.seen.startswith("trot train: NO policy passed the full gate: the 60 min cap was hit after 0.0 min")
    assert log.getvalue() == ""


def test_the_full_gate_holds_the_bundle_to_the_run_s_robot(tiny_bundle, tmp_path, one_cell_full_gate):
    """The full gate judges on the robot the run trains (its folder: latency, limits, gate commands), not on the one
    the bundle names: a Pupper bundle in a run told it is a Go2 is refused, and nothing passes."""
    from trot.bundle import BundleError

    watch = _watch(tmp_path, load_robot("go2").folder)
    bundle = _gated_bundle(tmp_path, tiny_bundle, 9)
    watch.quick_passed = GateResult(9, str(bundle), True, True, 7, 7, 1000, 1.0, "r")
    with pytest.raises(BundleError, match="made for robot 'pupper_v3'.*not for 'go2'"):
        watch.full_gate()
    assert not (tmp_path / "gate_passed.onnx").exists()


def test_the_run_s_last_line_says_how_it_ended():
    """What `trot train --until_gate` prints last: a pass with the full gate's cells, iteration (counted from 1), env
    steps and minutes and where the bundle is; otherwise why it ended, and the last gate's result or that none came."""
    from trot.train.until_gate import Outcome

    run, cfg = Path("/runs/r"), UntilGateCfg(every=25, max_minutes=30.0)
    full = GateResult(249, "b.onnx", False, True, 72, 72, 1_234_567, 900.0, "r")
    quick = GateResult(99, "q.onnx", True, False, 3, 7, 500_000, 600.0, "r")
    assert Outcome("passed", 930.0, 1_300_000, passed=full, gates=[quick, full]).message(run, cfg) == (
        "trot train: the policy passed the full gate (72/72 cells) at iteration 250, 1,234,567 env steps, after "
        "15.5 min; bundle /runs/r/gate_passed.onnx"
    )
    assert Outcome("cap", 1800.0, 2_000_000, gates=[full, quick]).message(run, cfg) == (
        "trot train: NO policy passed the full gate: the 30 min cap was hit after 30.0 min; last: quick gate @100: 3/7"
    )
    assert Outcome("iterations", 90.0, 10_000).message(run, cfg) == (
        "trot train: NO policy passed the full gate: the iterations ran out after 1.5 min; no gate result yet"
    )
