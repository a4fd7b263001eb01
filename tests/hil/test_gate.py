"""The gate: each perturbation changes the physics, a random policy fails, one cell reproduces standalone."""

import ast
import json
import subprocess
import sys
from argparse import ArgumentParser
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from trot.deploy.bundle import load_bundle
from trot.hil import gate
from trot.hil.gate.cell import ENGINES, CellSim, make_engine
from trot.hil.gate.commands import command_at
from trot.hil.gate.judge import error_bounds, tracking_failures
from trot.hil.gate.perturbations import policy_noise_stds
from trot.hil.gate.run import run_gate
from trot.robots import load_robot

ROBOT = load_robot("pupper_v3")
DEFAULT = np.array(ROBOT.default_joint_pos)
STANDALONE = Path(__file__).resolve().parent / "gate_cell_standalone.py"
TRAINED = ROBOT.folder / "policies" / "walk.onnx"


_engines = []


@pytest.fixture(autouse=True)
def close_engines():
    yield
    while _engines:
        _engines.pop().close()


def cell(engine: str, perturbation: str = "nominal", seconds: float = 10.0, **changes) -> CellSim:
    """A gate perturbation's physics on a freshly built engine (CellSim applies it once, at build)."""
    _engines.append(make_engine(engine, ROBOT))
    p = replace(gate.PERTURBATIONS[perturbation], **changes)
    return CellSim(_engines[-1], ROBOT, p, seconds, np.random.default_rng(0), policy_noise_stds(ROBOT))


def hold(sim: CellSim, seconds: float, target=DEFAULT) -> None:
    for _ in range(round(seconds / ROBOT.control_dt)):
        sim.act(target)


def standing(engine: str, perturbation: str = "nominal") -> tuple[float, float, float]:
    """After 1 s at the default pose: base height, summed |PD error| (rad), summed |torque| (N·m)."""
    sim = cell(engine, perturbation)
    hold(sim, 1.0)
    q, _ = sim.engine.joint_state()
    return sim.engine.base_pose()[0][2], np.abs(q - DEFAULT).sum(), np.abs(sim.engine.last_torque).sum()


@pytest.mark.parametrize("engine", ENGINES)
def test_payload_loads_the_legs_and_lowers_the_base(engine):
    h0, _, tau0 = standing(engine)
    h1, _, tau1 = standing(engine, "payload_+20%")
    assert h1 < h0 - 1e-4
    assert 1.1 < tau1 / tau0 < 1.5  # 20 % more mass on four legs: about 20-30 % more holding torque


@pytest.mark.parametrize("engine", ENGINES)
def test_weaker_motors_sag_more_under_the_same_load(engine):
    h0, sag0, _ = standing(engine)
    h1, sag1, _ = standing(engine, "motor_-20%")
    assert h1 < h0 - 1e-4
    assert sag1 / sag0 > 1.15  # kp × 0.8: at least 1/0.8 of the static PD error, less a little for posture


@pytest.mark.parametrize("engine", ENGINES)
def test_low_friction_lets_the_feet_slide_further_after_a_push(engine):
    slide = {}
    for mu in (0.5, 1.2):
        sim = cell(engine, f"friction_{mu}", push_mps=0.3)
        hold(sim, 0.2)
        before = sim.engine.foot_positions()
        sim.kick()
        hold(sim, 0.5)
        slide[mu] = np.linalg.norm((sim.engine.foot_positions() - before)[:, :2], axis=1).sum()
    assert slide[0.5] > 1.5 * slide[1.2], slide


@pytest.mark.parametrize("engine", ENGINES)
def test_latency_delays_the_joint_response_by_one_control_step(engine):
    target = DEFAULT.copy()
    target[2] += 0.3  # step the front-right knee
    moved = {}
    for steps in (0, 1):
        sim = cell(engine, "latency_1_step" if steps else "nominal")
        hold(sim, 0.3)
        start = sim.engine.joint_state()[0][2]
        moved[steps] = []
        for _ in range(3):
            sim.act(target)
            moved[steps].append(sim.engine.joint_state()[0][2] - start)
    assert moved[0][0] > 0.03 and abs(moved[1][0]) < 0.005, moved
    np.testing.assert_allclose(moved[1][1:], moved[0][:2], atol=0.01)


@pytest.mark.parametrize("engine", ENGINES)
def test_push_kicks_the_base_sideways_by_its_speed_at_its_time(engine):
    sim = cell(engine, "push_0.3", seconds=2.0)  # a 2 s cell pushes at half time, 1 s
    assert sim.push_step == round(1.0 / ROBOT.control_dt)
    hold(sim, 0.5)
    v0 = sim.engine.base_velocity()[0]
    sim.kick()
    np.testing.assert_allclose(sim.engine.base_velocity()[0] - v0, [0, 0.3, 0], atol=0.01)  # body y = world y

    sim = cell(engine, "push_0.3", seconds=2.0)
    lateral = []
    for _ in range(sim.push_step + 1):
        sim.act(DEFAULT)
        lateral.append(sim.engine.base_velocity()[0][1])
    assert max(abs(v) for v in lateral[:-1]) < 0.01
    assert lateral[-1] > 0.15  # what is left of 0.3 m/s after one control period on the ground


@pytest.mark.parametrize("engine", ENGINES)
def test_sensor_noise_has_the_training_stds_and_nominal_sensors_are_exact(engine):
    stds = policy_noise_stds(ROBOT)
    quiet, noisy = cell(engine), cell(engine, "sensor_noise")
    hold(quiet, 0.2)
    hold(noisy, 0.2)
    truth = quiet.sensors()  # the same state as the noisy cell's: both engines ran the same steps
    for exact, reading in zip(truth[2:], noisy.engine.joint_state()):
        np.testing.assert_array_equal(exact, reading)
    reads = [noisy.sensors() for _ in range(3000)]
    quat0, gyro0, q0, qd0 = truth
    grav = np.array([_gravity(r[0]) for r in reads]) - _gravity(quat0)
    for values, std in (
        (np.array([r[1] for r in reads]) - gyro0, stds["base_ang_vel"]),
        (grav[:, :2], stds["projected_gravity"]),
        (np.array([r[2] for r in reads]) - q0, stds["joint_pos_rel"]),
        (np.array([r[3] for r in reads]) - qd0, stds["joint_vel"]),
    ):
        assert abs(values.mean()) < 0.1 * std
        assert values.std() == pytest.approx(std, rel=0.05)


def _gravity(quat_wxyz) -> np.ndarray:
    from trot import mapping

    return mapping.projected_gravity(np, np.asarray(quat_wxyz, dtype=float)[None])[0]


def _run_cli(*argv) -> int:
    parser = ArgumentParser()
    gate.add_args(parser)
    return gate.run_cli(parser.parse_args([str(a) for a in argv]))


def test_random_weights_bundle_fails_the_gate_and_the_report_says_why(tiny_bundle, tmp_path, capsys):
    out = tmp_path / "gate"
    rc = _run_cli(
        tiny_bundle,
        "-o",
        out,
        "--seconds",
        3,
        "--jobs",
        2,
        "--mujoco",
        "--commands",
        "stand,forward_0.4",
        "--perturbations",
        "nominal,push_0.3",
    )
    assert rc == 1
    report = json.loads((out / "gate.json").read_text())
    assert not report["passed"] and len(report["cells"]) == 8
    forward = [c for c in report["cells"] if c["command"] == "forward_0.4"]
    assert all(not c["passed"] and c["failures"] for c in forward)
    assert report["thresholds"]["max_lin_err"] == gate.GateThresholds().max_lin_err
    assert report["pybullet_mujoco_ratio"]["lin_err"]["median"] > 0
    md = (out / "gate.md").read_text()
    assert "FAIL" in md and "## Pass/fail: pybullet" in md and "## Pass/fail: mujoco" in md
    assert (out / "tracking_error.png").stat().st_size > 0
    assert "gate: FAIL" in capsys.readouterr().out


def test_a_file_that_is_not_a_bundle_or_an_unknown_cell_exits_2(tmp_path, tiny_bundle, capsys):
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not an onnx file")
    assert _run_cli(junk, "-o", tmp_path / "out") == 2
    assert "not a readable ONNX model" in capsys.readouterr().err
    assert _run_cli(tiny_bundle, "--perturbations", "earthquake") == 2
    assert "unknown perturbation" in capsys.readouterr().err


def test_help_lists_every_command_and_perturbation():
    parser = ArgumentParser()
    gate.add_args(parser)
    text = "".join(parser.format_help().split())  # argparse %-formats help: a '%' in a name must not break it
    assert all(name in text for name in [*gate.COMMANDS, *gate.PERTURBATIONS])


def test_the_gate_is_deterministic_given_its_seed(tiny_bundle):
    runs = [
        run_gate(
            load_bundle(tiny_bundle),
            commands=["forward_0.2"],
            perturbations=["sensor_noise"],
            seconds=2.0,
            seed=7,
            jobs=1,
        ).cells[0]
        for _ in range(2)
    ]
    assert runs[0].metrics() | {"wall_s": 0} == runs[1].metrics() | {"wall_s": 0}


def test_standalone_script_imports_no_trot():
    tree = ast.parse(STANDALONE.read_text())
    modules = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    modules += [n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    assert not [m for m in modules if m.split(".")[0] == "trot"]


def test_standalone_script_reproduces_a_nominal_gate_cell(tiny_bundle):
    bundle = TRAINED if TRAINED.is_file() else tiny_bundle
    out = subprocess.run(
        [
            sys.executable,
            str(STANDALONE),
            str(bundle),
            str(ROBOT.urdf_path),
            "--command",
            "0.2",
            "0",
            "0",
            "--seconds",
            "5",
            "--armature",
            str(ROBOT.armature),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    alone = json.loads(out.stdout)
    cell_ = run_gate(
        load_bundle(bundle), commands=["forward_0.2"], perturbations=["nominal"], seconds=5.0, jobs=1
    ).cells[0]
    assert alone["fell"] == cell_.fell
    assert alone["lin_err"] == pytest.approx(cell_.lin_err, abs=0.01)
    assert alone["yaw_err"] == pytest.approx(cell_.yaw_err, abs=0.02)
    assert alone["joint_margin"] == pytest.approx(cell_.joint_margin, abs=0.01)


def test_every_cell_passing_exits_0(tiny_bundle, tmp_path):
    # A random-weights policy does stand: the one cell it can pass.
    rc = _run_cli(tiny_bundle, "-o", tmp_path, "--seconds", 3, "--jobs", 1, "--no-plots",
                  "--commands", "stand", "--perturbations", "nominal")  # fmt: skip
    assert rc == 0
    assert json.loads((tmp_path / "gate.json").read_text())["passed"]


def test_a_sequence_is_judged_segment_by_segment_against_each_command():
    th = gate.GateThresholds()
    segments = gate.COMMANDS["sequence"]
    t = np.arange(1, 501) * ROBOT.control_dt
    cmds, starts = zip(*(command_at(segments, x - ROBOT.control_dt, 10.0) for x in t))
    trace = {"t": t, "command": np.array(cmds), "command_start": np.array(starts)}
    measured = t > th.settle_s
    # A robot that stands still averages under max_lin_err over the sequence but fails its moving segments.
    still = dict(trace, lin_vel=np.zeros((len(t), 2)), yaw_rate=np.zeros(len(t)))
    assert np.linalg.norm(trace["command"][measured, :2], axis=1).mean() <= th.max_lin_err
    assert len(tracking_failures(th, still, measured)) == 4  # three linear segments and the turn
    tracking = dict(trace, lin_vel=trace["command"][:, :2], yaw_rate=trace["command"][:, 2])
    assert tracking_failures(th, tracking, measured) == []
    assert error_bounds(th, (0.2, 0.0, 0.0)) == (pytest.approx(0.1), th.max_yaw_err)
    assert error_bounds(th, (0.4, 0.0, 1.0)) == (th.max_lin_err, th.max_yaw_err)
