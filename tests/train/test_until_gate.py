"""`trot train --until_gate`: flags, the wall-time cap, the side-process quick gate and the stop on a pass."""

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from trot.hil.gate.run import QUICK_CELLS
from trot.robots import load_robot
from trot.train.progress import Progress
from trot.train.runner import until_gate_cfg
from trot.train.until_gate import SUMMARY, GateResult, Stop, UntilGate, UntilGateCfg


def _args(**kw):
    return argparse.Namespace(**{"until_gate": False, "gate_every": None, "max_minutes": None, **kw})


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"gate_every": 10}, "--gate_every and --max_minutes only apply with --until_gate"),
        ({"max_minutes": 5.0}, "--gate_every and --max_minutes only apply with --until_gate"),
        ({"until_gate": True, "gate_every": 0}, "--gate_every 0: expected a whole number of iterations >= 1"),
        ({"until_gate": True, "max_minutes": -1.0}, "--max_minutes -1.0: expected minutes > 0"),
    ],
)
def test_gate_flags_are_refused_without_until_gate_or_with_bad_values(kw, message):
    with pytest.raises(SystemExit, match=message):
        until_gate_cfg(_args(**kw))


def test_until_gate_flags_and_defaults():
    assert until_gate_cfg(_args()) is None
    assert until_gate_cfg(_args(until_gate=True)) == UntilGateCfg(every=25, max_minutes=30.0)
    assert until_gate_cfg(_args(until_gate=True, gate_every=7, max_minutes=2.5)) == UntilGateCfg(7, 2.5)


@pytest.fixture(scope="module")
def capped_run(tmp_path_factory):
    """A tiny --until_gate run the cap ends after its first iteration (3 s), before any gate result."""
    root = tmp_path_factory.mktemp("until_gate")
    out = subprocess.run(
        [sys.executable, "-m", "trot.cli", "train", "--until_gate", "--gate_every", "1", "--max_minutes", "0.05",
         "--max_iterations", "1000", "--num_envs", "8", "--set", "runner.num_steps_per_env=8", "--log_root", str(root)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    return out, next((root / "pupper_v3" / "walk").iterdir())


def test_the_cap_ends_the_run_and_says_so(capped_run):
    out, run = capped_run
    assert out.returncode == 1, out.stderr  # no policy passed: not a success
    assert "trot train: NO policy passed the full gate: the 0.05 min cap was hit" in out.stdout
    summary = json.loads((run / SUMMARY).read_text())
    assert summary["reason"] == "cap" and summary["passed"] is None and summary["wall_s"] >= 3.0
    last = max(int(p.stem.split("_")[1]) for p in run.glob("model_*.pt"))
    assert summary["env_steps"] == (last + 1) * 8 * 8  # the cap's checkpoint holds every iteration trained
    assert not (run / "gate_passed.onnx").exists()


def _watch(run: Path, every=1000):
    progress = Progress(0, 10, stream=open("/dev/null", "w"), quiet=True)  # noqa: SIM115
    return UntilGate(UntilGateCfg(every=every, max_minutes=60), run, load_robot("pupper_v3").folder, 0, progress)


@pytest.mark.slow
def test_a_failing_quick_gate_is_read_from_the_side_process_and_training_goes_on(tiny_bundle, tmp_path):
    watch = _watch(tmp_path)
    bundle = tmp_path / "gate" / "model_0.onnx"
    shutil.copyfile(tiny_bundle, bundle)  # one iteration of training: it does not walk
    watch.side.start(0, bundle, 64)
    assert watch.side.busy
    watch.after_iteration(None, 1)  # the gate still runs: nothing to read, no stop, no new gate
    watch.side.proc.wait()
    watch.after_iteration(None, 2)  # its result: the real PyBullet cells, a random policy fails some
    result = watch.outcome.gates[0]
    assert (result.cells, result.passed, result.env_steps) == (len(QUICK_CELLS), False, 64)
    assert result.cells_passed < len(QUICK_CELLS)
    assert watch.progress.note == f"quick gate @1: {result.cells_passed}/{len(QUICK_CELLS)}"
    report = json.loads((tmp_path / "gate" / "model_0_quick" / "gate.json").read_text())
    assert [c["passed"] for c in report["cells"]].count(True) == result.cells_passed


def test_bench_train_figures_from_until_gate_summaries():
    from trot.train.bench import seed_row, spread

    passed = {"reason": "passed", "wall_s": 250.0, "first_quick_pass": {"known_at_s": 180.0, "env_steps": 2_949_120},
              "passed": {"env_steps": 2_949_120}}  # fmt: skip
    capped = {"reason": "cap", "wall_s": 600.0, "first_quick_pass": None, "passed": None}
    rows = [seed_row(1, passed), seed_row(2, capped), seed_row(3, dict(passed, wall_s=310.0))]
    assert rows[0] == {"seed": 1, "quick_s": 180.0, "quick_steps": 2_949_120, "passed_s": 250.0,
                       "passed_steps": 2_949_120, "reason": "passed"}  # fmt: skip
    assert rows[1]["passed_s"] is None and rows[1]["reason"] == "cap"
    assert spread([r["passed_s"] for r in rows]) == "280 (250-310), 2 of 3"  # a capped run is not a time
    assert spread([None, None]) == "none of 2"


def test_a_passing_quick_gate_stops_training_and_the_cap_stops_it_too(tmp_path):
    """The decision after each iteration; the side process's real result is read in the test above (a real
    passing policy needs a trained one, which the shipped policy's own gate tests cover)."""
    watch = _watch(tmp_path)
    passed = GateResult(9, "b.onnx", True, True, 4, 4, 1000, 0.0, "r")
    watch.side.poll = lambda now_s: passed
    with pytest.raises(Stop, match="quick_pass"):
        watch.after_iteration(None, 12)
    assert watch.quick_passed is passed and watch.outcome.first_quick_pass is passed
    assert watch.progress.note == "quick gate @10: 4/4"
    watch.side.poll = lambda now_s: None
    watch.after_iteration(None, 13)  # under the cap, no gate due: goes on
    watch.started -= 3601  # an hour and a second in: past the 60 min cap
    with pytest.raises(Stop, match="cap"):
        watch.after_iteration(None, 14)


@pytest.mark.slow
def test_the_full_gate_after_a_quick_pass_writes_its_report_and_the_passing_bundle(
    tiny_checkpoint, tmp_path, monkeypatch
):
    """The full gate's plumbing on a one-cell matrix (the full matrix is 72 PyBullet cells, minutes of CPU), taken
    as the full run it stands for: the shipped policy stands still, so the gate passes, the run's checkpoint becomes
    gate_passed.onnx and the gate record of its bytes goes along."""
    import dataclasses

    import trot.hil.gate.run as gate_run
    from trot.gate_record import file_sha256, read_record, record_path

    real = gate_run.run_gate
    monkeypatch.setattr(gate_run, "run_gate", lambda bundle, robot: dataclasses.replace(real(
        bundle, robot, commands=["stand"], perturbations=["nominal"], seconds=4.0, jobs=1), full=True))  # fmt: skip
    watch = _watch(tmp_path)
    shutil.copyfile(tiny_checkpoint, tmp_path / "model_9.pt")
    bundle = tmp_path / "gate" / "model_9.onnx"
    shutil.copyfile(Path(__file__).resolve().parents[2] / "robots/pupper_v3/policies/walk.onnx", bundle)
    watch.quick_passed = GateResult(9, str(bundle), True, True, 4, 4, 1000, 1.0, "r")
    result = watch.full_gate()
    assert (result.quick, result.passed, result.cells_passed, result.cells) == (False, True, 1, 1)
    assert json.loads((tmp_path / "gate" / "model_9_full" / "gate.json").read_text())["passed"]
    assert (tmp_path / "gate_passed.onnx").is_file() and watch.progress.note == "full gate @10: 1/1"
    record = read_record(record_path(tmp_path / "gate_passed.onnx"))
    assert record.passed and record.bundle_sha256 == file_sha256(tmp_path / "gate_passed.onnx") == file_sha256(bundle)
    assert record_path(bundle).read_bytes() == record_path(tmp_path / "gate_passed.onnx").read_bytes()
    outcome = watch.finish("passed", 1000)
    assert outcome.passed is result
    assert json.loads((tmp_path / SUMMARY).read_text())["passed"]["cells_passed"] == 1
