"""The gate's verdict travels with the bundle: a full `trot gate` run writes a record bound to the bundle file's
sha256 beside it and in the report folder; a subset does not; `trot inspect` shows it and `trot flash` takes it.

The full matrix is 81 cells of minutes of CPU: these tests run its plumbing with each cell's physics replaced by a
stub result (`_stub_cells`), so the record's content and where it goes are what is tested here. The judging itself
is tested on real traces and real engines in test_gate.py."""

import argparse
import json
import shutil
from argparse import ArgumentParser

import pytest

import trot.hil.gate.run as gate_run
from trot.deploy.bundle import load_bundle, run_inspect
from trot.deploy.flash import DirTarget, FlashError, flash
from trot.gate_record import file_sha256, read_record, record_path
from trot.hil import gate
from trot.hil.gate.commands import gate_commands
from trot.hil.gate.judge import CellResult
from trot.hil.gate.perturbations import PERTURBATIONS, STRESS
from trot.revision import code_revision
from trot.robots import load_robot

ROBOT = load_robot("pupper_v3")


def _run_cli(*argv) -> int:
    parser = ArgumentParser()
    gate.add_args(parser)
    return gate.run_cli(parser.parse_args([str(a) for a in argv]))


def _stub_cells(monkeypatch, fail=()):
    """Every cell a pass without physics, but the (command, perturbation) pairs in `fail`."""

    def run_cell(spec):
        failures = ["lin err 0.300 > 0.12 m/s"] if (spec.command, spec.perturbation) in fail else []
        return CellResult(spec.engine, spec.command, spec.perturbation, False, None, 0.01, 0.01, None, 1.0, 3.0, 0.0,
                          0.5, 0.0, failures, 0.0, 0.0, judged=spec.judged, lin_bound=0.05, yaw_bound=0.1)  # fmt: skip

    monkeypatch.setattr(gate_run, "run_cell", run_cell)


@pytest.fixture
def bundle(tiny_bundle, tmp_path):
    path = tmp_path / "walk.onnx"
    shutil.copyfile(tiny_bundle, path)
    return path


def test_a_full_run_writes_the_record_beside_the_bundle_and_in_the_report(bundle, tmp_path, monkeypatch, capsys):
    _stub_cells(monkeypatch, fail={("forward_max", "latency_2_steps")})  # a stress cell fails: not judged
    out = tmp_path / "report"
    assert _run_cli(bundle, "-o", out, "--jobs", 1, "--no-plots") == 0
    record = read_record(record_path(bundle))
    assert (out / "walk.onnx.gate.json").read_bytes() == record_path(bundle).read_bytes()
    assert record.passed and record.bundle_sha256 == file_sha256(bundle) and record.bundle_file == "walk.onnx"
    assert record.trot_revision == code_revision() and record.engines == ("pybullet",)
    assert record.latency_s == ROBOT.actuation_latency_s and record.latency_source == ROBOT.actuation_latency_source
    assert set(record.commands) == set(gate_commands(ROBOT)) and set(record.perturbations) == set(PERTURBATIONS)
    assert {n for n, p in record.perturbations.items() if not p["judged"]} == set(STRESS)
    assert record.thresholds["lin_err_floor"] == 0.05 and record.seconds == 10.0
    n_commands, n_run = len(gate_commands(ROBOT)), len(PERTURBATIONS) - 1  # PyBullet has no armature cell
    assert record.counts("pybullet") == (n_commands * (n_run - 1),) * 2
    assert record.counts("pybullet", judged=False) == (n_commands - 1, n_commands)
    stdout = capsys.readouterr().out
    assert f"gate record: PASS for {bundle} (sha256 {file_sha256(bundle)[:16]}…): {record_path(bundle)}" in stdout
    assert json.loads((out / "gate.json").read_text())["settings"]["full"] is True
    # What reads it: inspect shows the verdict for this exact file; flash takes it and copies it to the robot.
    assert run_inspect(argparse.Namespace(bundle=str(bundle), json=False)) == 0
    gate_line = capsys.readouterr().out.splitlines()[-1]
    assert gate_line.startswith(f"gate                {record_path(bundle)}: PASS on ")
    assert gate_line.endswith(f"for this exact file (sha256 {file_sha256(bundle)[:16]}…)")
    flash(bundle, DirTarget(tmp_path / "robot"), ROBOT)
    on_robot = tmp_path / "robot" / "policies" / f"{file_sha256(bundle)}.onnx.gate.json"
    assert on_robot.read_bytes() == record_path(bundle).read_bytes()


def test_a_failing_full_run_records_what_failed_and_flash_names_it(bundle, tmp_path, monkeypatch):
    _stub_cells(monkeypatch, fail={("forward_max", "latency_declared")})
    assert _run_cli(bundle, "-o", tmp_path / "report", "--jobs", 1, "--no-plots") == 1
    record = read_record(record_path(bundle))
    assert not record.passed and record.failures() == [
        "pybullet forward_max / latency_declared: lin err 0.300 > 0.12 m/s"]  # fmt: skip
    with pytest.raises(FlashError, match=r"failed the gate \(FAIL on .*pybullet forward_max / latency_declared: lin "
                                         r"err 0\.300 > 0\.12 m/s"):  # fmt: skip
        flash(bundle, DirTarget(tmp_path / "robot"), ROBOT)


@pytest.mark.parametrize("flags", [["--commands", "stand"], ["--perturbations", "nominal"], ["--seconds", "5"],
                                   ["--quick"]])  # fmt: skip
def test_a_run_that_is_not_the_full_matrix_writes_no_record(bundle, tmp_path, monkeypatch, capsys, flags):
    _stub_cells(monkeypatch)
    assert _run_cli(bundle, "-o", tmp_path / "report", "--jobs", 1, "--no-plots", *flags) == 0
    assert not record_path(bundle).exists() and not (tmp_path / "report" / "walk.onnx.gate.json").exists()
    assert f"no gate record written for {bundle}: not the full matrix" in capsys.readouterr().out


def test_a_full_matrix_judged_with_other_thresholds_is_not_full(bundle, monkeypatch):
    from trot.hil.gate.judge import GateThresholds

    _stub_cells(monkeypatch)
    assert gate_run.run_gate(load_bundle(bundle), jobs=1).full
    assert not gate_run.run_gate(load_bundle(bundle), jobs=1, thresholds=GateThresholds(lin_err_floor=0.5)).full


def test_a_bundle_that_changes_while_the_gate_runs_gets_no_record(bundle, monkeypatch):
    from trot.hil.gate.record import write_records

    _stub_cells(monkeypatch)
    run = gate_run.run_gate(load_bundle(bundle), jobs=1)
    assert run.full
    bundle.write_bytes(bundle.read_bytes() + b"\0")
    with pytest.raises(RuntimeError, match="changed while the gate ran"):
        write_records(run)
    assert not record_path(bundle).exists()
