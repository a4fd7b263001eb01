"""The gate: each perturbation (training's terms, pinned) changes the physics, a random policy fails, the
thresholds judge as documented, one cell reproduces standalone."""

import ast
import json
import subprocess
import sys
from argparse import ArgumentParser
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from trot.deploy.bundle import load_bundle
from trot.hil import gate
from trot.hil.gate.cell import ENGINES, CellSim, make_engine, unsupported
from trot.hil.gate.commands import command_at, gate_commands
from trot.hil.gate.judge import (
    CellResult,
    GateThresholds,
    engine_ratio,
    error_bounds,
    fall_reason,
    judge,
    ratio_failures,
    tilt_deg,
    tracking_failures,
)
from trot.hil.gate.perturbations import PERTURBATIONS, STRESS, Perturbation, policy_noise_stds, resolve
from trot.hil.gate.run import QUICK_CELLS, GateRun, run_gate
from trot.randomization import TERMS, TermSpec
from trot.randomization.params import CONTACT_SOLREF
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


def cell(engine: str, p: str | Perturbation = "nominal", seconds: float = 10.0) -> CellSim:
    """A gate perturbation (a name, or pinned terms) on a freshly built engine."""
    _engines.append(make_engine(engine, ROBOT))
    p = PERTURBATIONS[p](ROBOT) if isinstance(p, str) else p
    return CellSim(_engines[-1], ROBOT, p, seconds, np.random.default_rng(0), policy_noise_stds(ROBOT))


def hold(sim: CellSim, seconds: float, target=DEFAULT) -> None:
    for _ in range(round(seconds / ROBOT.control_dt)):
        sim.act(target)


def standing(engine: str, p: str | Perturbation = "nominal") -> tuple[float, float, float]:
    """After 1 s at the default pose: base height, summed |PD error| (rad), summed |torque| (N·m)."""
    sim = cell(engine, p)
    hold(sim, 1.0)
    q, _ = sim.engine.joint_state()
    return sim.engine.base_pose()[0][2], np.abs(q - DEFAULT).sum(), np.abs(sim.engine.last_torque).sum()


def test_the_perturbations_are_training_terms_in_their_units():
    """Payload +20 % of Pupper's 3.17 kg is 0.634 kg; the declared latency (robot.toml [latency]) one control step,
    0.02 s; the stress column two control steps, 0.04 s (10 physics steps), the training range's edge."""
    p = {name: make(ROBOT) for name, make in PERTURBATIONS.items()}
    assert dict(p["payload_+20%_friction_0.5"].terms) == {"payload_mass": 0.634, "friction": 0.5}
    assert ROBOT.actuation_latency_s == 0.02 and dict(p["latency_declared"].terms) == {"actuation_latency": 0.02}
    assert dict(p["latency_2_steps"].terms) == {"actuation_latency": 0.04}
    assert list(STRESS) == ["latency_2_steps"]
    assert dict(p["soft_contact"].terms) == {"contact_timeconst": 0.04}
    assert dict(p["armature_x0.5"].terms) == {"armature_scale": 0.5}
    assert all(name in TERMS for q in p.values() for name, _ in q.terms)
    assert p["sensor_noise"].sensor_noise and not p["sensor_noise"].terms


def test_the_gates_pybullet_steps_a_quarter_millisecond():
    _engines.append(make_engine("pybullet", ROBOT))
    assert _engines[-1].substeps == 16  # of a 4 ms physics_dt (the emulator's PyBullet: 4); docs/gate.md


@pytest.mark.parametrize("engine", ENGINES)
def test_payload_loads_the_legs_and_lowers_the_base(engine):
    h0, _, tau0 = standing(engine)
    h1, _, tau1 = standing(engine, Perturbation.of(payload_mass=0.2 * ROBOT.total_mass))
    assert h1 < h0 - 1e-4
    assert 1.1 < tau1 / tau0 < 1.5  # 20 % more mass on four legs: about 20-30 % more holding torque


@pytest.mark.parametrize("engine", ENGINES)
def test_weaker_motors_sag_more_under_the_same_load(engine):
    h0, sag0, _ = standing(engine)
    h1, sag1, _ = standing(engine, "motor_-20%")
    assert h1 < h0 - 1e-4
    assert sag1 / sag0 > 1.15  # kp × 0.8: at least 1/0.8 of the static PD error, less a little for posture


@pytest.mark.parametrize("engine", ENGINES)
def test_softer_contact_lets_the_feet_sink_further(engine):
    """solref 0.04 against MuJoCo's default 0.02: standing, the feet sink about 3.4 times as far (0.7 -> 2.4 mm)."""
    depth = {}
    for name in ("nominal", "soft_contact"):
        sim = cell(engine, name)
        hold(sim, 1.5)
        depth[name] = sim.engine.foot_penetration().mean()
    assert depth["soft_contact"] / depth["nominal"] == pytest.approx(3.35, rel=0.15), depth


@pytest.mark.parametrize("engine", ENGINES)
def test_low_friction_lets_the_feet_slide_further_after_a_push(engine):
    slide = {}
    for mu in (0.4, 1.2):
        sim = cell(engine, Perturbation.of(friction=mu, push_velocity=0.3))
        hold(sim, 0.2)
        before = sim.engine.foot_positions()
        sim.fire_events()
        hold(sim, 0.5)
        slide[mu] = np.linalg.norm((sim.engine.foot_positions() - before)[:, :2], axis=1).sum()
    assert slide[0.4] > 1.5 * slide[1.2], slide


def test_half_the_armature_speeds_the_knee_up_in_mujoco_and_pybullet_does_not_run_it():
    """Armature ×0.5 (0.0008 kg·m²), robot in the air without gravity: the knee's speed after the first physics step
    of a target step is h kp e / (I + a + h (kd + b)), 1.4 times the nominal's with I = 1.35e-4 kg·m² (the shank).
    PyBullet has no joint armature: the gate does not run the perturbation there."""
    rise = {}
    for name in ("nominal", "armature_x0.5"):
        engine = cell("mujoco", name).engine
        engine.model.opt.gravity[:] = 0.0
        engine.data.qpos[engine.idx.root_qpos + 2] = 1.0
        engine.step(DEFAULT + np.eye(12)[2] * 0.3)
        rise[name] = engine.joint_state()[1][2]
    h, damping = ROBOT.physics_dt, ROBOT.kd + ROBOT.damping
    expected = (1.35e-4 + ROBOT.armature + h * damping) / (1.35e-4 + 0.5 * ROBOT.armature + h * damping)
    assert rise["armature_x0.5"] / rise["nominal"] == pytest.approx(expected, rel=0.1)
    assert "no joint armature" in unsupported("pybullet", PERTURBATIONS["armature_x0.5"](ROBOT), ROBOT)
    assert unsupported("mujoco", PERTURBATIONS["armature_x0.5"](ROBOT), ROBOT) is None


@pytest.mark.parametrize("physics_steps", [0, 3, 5, 10])
def test_actuation_latency_holds_the_old_target_for_exactly_that_many_physics_steps(physics_steps):
    """The target issued at control step t reaches the motors `latency` physics steps later, as in training."""
    sim = cell("mujoco", Perturbation.of(actuation_latency=physics_steps * ROBOT.physics_dt))
    applied, step = [], sim.engine.step
    sim.engine.step = lambda target: (applied.append(np.asarray(target).copy()), step(target))
    for k in range(4):
        sim.act(DEFAULT + 0.01 * (k + 1))
    offsets = np.round([(a - DEFAULT)[0] / 0.01 for a in applied]).astype(int).tolist()  # which target, 0 = default
    expected = [max(0, (i - physics_steps) // ROBOT.decimation + 1) for i in range(4 * ROBOT.decimation)]
    assert offsets == expected


@pytest.mark.parametrize("engine", ENGINES)
def test_two_control_steps_of_latency_delay_the_joint_response_by_two_steps(engine):
    target = DEFAULT.copy()
    target[2] += 0.3  # step the front-right knee
    moved = {}
    for name in ("nominal", "latency_2_steps"):
        sim = cell(engine, name)
        hold(sim, 0.3)
        start = sim.engine.joint_state()[0][2]
        moved[name] = []
        for _ in range(4):
            sim.act(target)
            moved[name].append(sim.engine.joint_state()[0][2] - start)
    assert moved["nominal"][0] > 0.03 and max(abs(x) for x in moved["latency_2_steps"][:2]) < 0.005, moved
    np.testing.assert_allclose(moved["latency_2_steps"][2:], moved["nominal"][:2], atol=0.01)


def test_observation_latency_shows_the_gyro_of_two_control_steps_before():
    sim = cell("mujoco", Perturbation.of(observation_latency=2 * ROBOT.control_dt))
    gyros = []
    rng = np.random.default_rng(1)
    for _ in range(4):
        sim.act(DEFAULT + rng.normal(0.0, 0.2, 12))
        gyros.append(sim._imu_now()[1])
    np.testing.assert_array_equal(sim.sensors()[1], gyros[-3])
    assert not np.allclose(gyros[-3], gyros[-1])


def test_joint_zero_offset_moves_the_true_joint_not_the_measured_one():
    sim = cell("mujoco", Perturbation.of(joint_zero_offset=0.05))
    hold(sim, 1.0)
    true, _ = sim.engine.joint_state()
    measured = sim.sensors()[2]
    assert (true - DEFAULT).mean() == pytest.approx(-0.05, abs=0.01)
    assert (measured - DEFAULT).mean() == pytest.approx(0.0, abs=0.01)


@pytest.mark.parametrize("engine", ENGINES)
def test_push_kicks_the_base_by_its_speed_at_its_time(engine):
    sim = cell(engine, "push_0.3", seconds=2.0)  # a 2 s cell pushes at half time, 1 s
    assert sim.event_step == round(1.0 / ROBOT.control_dt)
    speeds = []
    for _ in range(sim.event_step + 1):
        v0 = sim.engine.base_velocity()[0]
        if sim.steps == sim.event_step:
            sim.fire_events()
            kick = sim.engine.base_velocity()[0] - v0
        sim.act(DEFAULT)
        speeds.append(np.linalg.norm(sim.engine.base_velocity()[0][:2]))
    assert np.linalg.norm(kick[:2]) == pytest.approx(0.3, abs=1e-6) and abs(kick[2]) < 1e-9  # horizontal
    # At rest for the 0.2 s before it (the robot settles into its stance in the first 0.4 s); after one control
    # period on the ground, some of the kick is left.
    assert max(speeds[-11:-1]) < 0.01 and speeds[-1] > 0.1


@pytest.mark.parametrize("engine", ENGINES)
def test_a_new_training_term_is_testable_in_the_gate_with_no_gate_code(engine, monkeypatch):
    """Declared in TERMS alone (as tests/sim does), pinned with --pin: the engine's torque limit halves."""

    def torque_limit_scale(p, ids, v):
        p.torque_limit[ids] *= v[:, None]

    spec = TermSpec("actuation", "x", 1.0, (0.1, 2.0), torque_limit_scale, help="scales the torque limit")
    monkeypatch.setitem(TERMS, "torque_limit_scale", spec)
    pinned = resolve([], ["torque_limit_scale=0.5"], ROBOT)["torque_limit_scale=0.5"]
    sim = cell(engine, pinned)
    np.testing.assert_allclose(sim.torque_limit, 1.5)
    sim.engine.step(DEFAULT + 1.0)  # 5 N·m asked of every joint: each held at 1.5 (but a light shank, damped)
    torque = np.abs(sim.engine.last_torque)
    assert torque.max() == pytest.approx(1.5) and (torque > 1.5 - 1e-9).sum() >= 8, torque


def test_unknown_terms_and_values_outside_their_bounds_are_refused_by_name():
    with pytest.raises(ValueError, match="unknown perturbation"):
        resolve(["earthquake"], [], ROBOT)
    with pytest.raises(ValueError, match="'randomization.terms.gravity_scale'"):
        resolve([], ["gravity_scale=0.5"], ROBOT)
    with pytest.raises(ValueError, match=r"perturbation 'friction=-1'.*physical bounds"):
        resolve([], ["friction=-1"], ROBOT)
    with pytest.raises(ValueError, match="is not TERM=VALUE"):
        resolve([], ["friction"], ROBOT)


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


def test_the_commands_are_the_robots_range_ends_and_its_task_toml():
    """Pupper's task.toml: vx ±0.6 m/s, vy ±0.4 m/s, yaw rate ±1.5 rad/s; [gate] adds forward_0.3 and the sequence."""
    cmds = {name: segments[0][1] for name, segments in gate_commands(ROBOT).items()}
    assert cmds == {
        "stand": (0.0, 0.0, 0.0), "forward_max": (0.6, 0.0, 0.0), "backward_max": (-0.6, 0.0, 0.0),
        "left_max": (0.0, 0.4, 0.0), "right_max": (0.0, -0.4, 0.0), "turn_left_max": (0.0, 0.0, 1.5),
        "turn_right_max": (0.0, 0.0, -1.5), "forward_0.3": (0.3, 0.0, 0.0), "sequence": (0.3, 0.0, 0.0),
    }  # fmt: skip
    assert len(gate_commands(ROBOT)["sequence"]) == 5


def test_a_task_toml_command_that_redefines_a_range_end_is_refused(tmp_path):
    import shutil

    from trot.robots import ContractError

    folder = tmp_path / "robot"
    shutil.copytree(ROBOT.folder, folder, ignore=shutil.ignore_patterns("policies"))
    toml = folder / "task.toml"
    toml.write_text(toml.read_text().replace('"forward_0.3" = [0.3, 0.0, 0.0]', '"forward_max" = [0.5, 0.0, 0.0]'))
    with pytest.raises(ContractError, match="a name other than the gate's own commands") as e:
        gate_commands(load_robot(folder))
    assert e.value.field == "gate.commands.forward_max" and e.value.file == str(toml)


def test_thresholds_are_the_documented_numbers():
    th = GateThresholds()
    assert (th.lin_err_floor, th.yaw_err_floor, th.err_fraction, th.max_stand_drift) == (0.05, 0.1, 0.2, 0.1)
    assert (th.max_ratio_median, th.max_ratio_cell) == (1.25, 2.0)
    assert (th.max_heading_swing_deg, th.max_roll_swing_deg, th.max_pitch_swing_deg) == (10.0, 15.0, 15.0)
    assert (th.max_tilt_deg, th.max_torque_saturation, th.no_clock_stride_s) == (60.0, 0.10, 0.5)
    # max(floor, 20 % of the command): 0.05 m/s up to 0.25 m/s, then a fifth; 0.1 rad/s up to 0.5 rad/s.
    assert error_bounds(th, (0.2, 0.0, 0.0)) == (0.05, 0.1)
    assert error_bounds(th, (0.6, 0.0, 0.0)) == (pytest.approx(0.12), 0.1)
    assert error_bounds(th, (0.3, 0.4, 1.5)) == (pytest.approx(0.1), pytest.approx(0.3))


def test_a_sequence_is_judged_segment_by_segment_against_each_command():
    th = GateThresholds()
    segments = gate_commands(ROBOT)["sequence"]
    t = np.arange(1, 501) * ROBOT.control_dt
    cmds, starts = zip(*(command_at(segments, x - ROBOT.control_dt, 10.0) for x in t))
    trace = {"t": t, "command": np.array(cmds), "command_start": np.array(starts)}
    measured = t > th.settle_s
    still = dict(trace, lin_vel=np.zeros((len(t), 2)), yaw_rate=np.zeros(len(t)))
    assert len(tracking_failures(th, still, measured, 20)) == 4  # three linear segments and the turn
    tracking = dict(trace, lin_vel=trace["command"][:, :2], yaw_rate=trace["command"][:, 2])
    assert tracking_failures(th, tracking, measured, 20) == []
    off = dict(tracking, lin_vel=trace["command"][:, :2] + [0.06, 0.0])  # 0.06 m/s off: > 0.05, > 20 % of 0.2
    assert len(tracking_failures(th, off, measured, 20)) == 4  # every segment but the first (0.3: 0.06 allowed)


def _spec(command=(0.3, 0.0, 0.0), judged=True):
    return SimpleNamespace(thresholds=GateThresholds(), segments=((0.0, command),), seconds=10.0, engine="mujoco",
                           command="c", perturbation="p", stride_steps=20, judged=judged)  # fmt: skip


def _trace(command=(0.3, 0.0, 0.0), **series) -> dict:
    """A 10 s cell's trace (500 control steps) tracking `command` exactly, level; `series` replaces any of it."""
    t = np.arange(1, 501) * ROBOT.control_dt
    n = len(t)
    trace = {"t": t, "command": np.tile(command, (n, 1)), "command_start": np.zeros(n),
             "lin_vel": np.tile(command[:2], (n, 1)), "yaw_rate": np.full(n, command[2]), "roll_deg": np.zeros(n),
             "pitch_deg": np.zeros(n), "pos_xy": np.zeros((n, 2)), "start_xy": np.zeros(2)}  # fmt: skip
    return trace | series


def _samples(n=500, saturated=None):
    sat = np.zeros(12) if saturated is None else saturated
    return [{"slip": np.zeros(4), "saturated_steps": sat, "peak_torque": 1.0}] * n


def _judge(trace, samples=None, spec=None):
    return judge(spec or _spec(), trace, samples or _samples(), None, 0.5, ROBOT, 3.0, 0.0, 0.0)


def test_tracking_is_judged_over_whole_strides_a_wobble_passes_a_steady_turn_fails():
    """Walking forward at 0.3 m/s: a pure ±0.16 rad/s yaw wobble at the 2.5 Hz gait keeps the heading (±0.6°) and
    passes; a steady unasked 0.12 rad/s turn (7°/s off course) fails. Judged per control step, as the gate did until
    2026-12, both fail (0.102 and 0.12 > 0.1 rad/s)."""
    t = np.arange(1, 501) * ROBOT.control_dt
    wobble = _judge(_trace(yaw_rate=0.16 * np.sin(2 * np.pi * 2.5 * t)))
    turn = _judge(_trace(yaw_rate=np.full(500, 0.12)))
    assert wobble.passed, wobble.failures
    assert wobble.yaw_err < 1e-3 and wobble.strides == 20  # 8 s measured after the 2 s settle: 20 strides of 0.4 s
    assert wobble.yaw_err_per_step == pytest.approx(0.32 / np.pi, abs=1e-3) and wobble.yaw_err_per_step > 0.1
    # The heading's swing within a stride: 0.16 / (pi 2.5 Hz) = 0.0204 rad = 1.17° peak to peak.
    assert wobble.heading_swing_deg == pytest.approx(np.degrees(0.16 / (np.pi * 2.5)), rel=0.02)
    assert turn.failures == ["yaw err 0.120 > 0.1 rad/s"]
    assert turn.yaw_err == pytest.approx(0.12) and turn.heading_swing_deg == pytest.approx(0.0, abs=1e-9)
    # The same for the linear speed: a ±0.08 m/s surge at the gait frequency passes, 0.06 m/s short fails.
    surge = _judge(_trace(lin_vel=np.column_stack([0.3 + 0.08 * np.sin(2 * np.pi * 2.5 * t), np.zeros(500)])))
    slow = _judge(_trace(lin_vel=np.tile([0.23, 0.0], (500, 1))))
    assert surge.passed and surge.lin_err < 1e-3 and surge.lin_err_per_step > 0.05
    assert slow.failures == ["lin err 0.070 > 0.06 m/s"]


def test_the_stride_is_the_bundles_gait_clock_period_or_a_fixed_window_without_one():
    from trot.hil.gate.judge import stride_steps

    th = GateThresholds()
    assert stride_steps(2.5, 0.02, th) == 20 and stride_steps(2.0, 0.02, th) == 25  # Pupper's and Go2's clocks
    assert stride_steps(0.0, 0.02, th) == 25  # no gait clock: no_clock_stride_s, 0.5 s
    # A wobble at 2 Hz is not averaged out by 0.4 s windows: the stride must be the policy's own.
    t = np.arange(1, 501) * ROBOT.control_dt
    wobble = _trace(yaw_rate=0.3 * np.sin(2 * np.pi * 2.0 * t))
    assert _judge(wobble, spec=SimpleNamespace(**{**vars(_spec()), "stride_steps": 25})).yaw_err < 1e-3
    assert _judge(wobble).yaw_err > 0.03  # 0.4 s windows over a 0.5 s wobble leave 0.045 rad/s of it


def test_swing_within_a_stride_is_judged_in_degrees_against_its_bounds():
    """A heading that snakes ±6° every stride (12° peak to peak) and a body that rocks ±8° in roll fail; the same
    at ±4° pass. Stride averaging alone would pass all four: their mean motion is exactly the command's."""
    t = np.arange(1, 501) * ROBOT.control_dt
    f = 2.5

    def snake(amplitude_deg):  # yaw rate whose integral swings the heading ±amplitude about the course
        return np.radians(amplitude_deg) * 2 * np.pi * f * np.cos(2 * np.pi * f * t)

    assert _judge(_trace(yaw_rate=snake(4.0))).passed
    wide = _judge(_trace(yaw_rate=snake(6.0)))
    assert wide.heading_swing_deg == pytest.approx(12.0, rel=0.03) and wide.yaw_err < 1e-3
    assert [x.split(" > ")[0] for x in wide.failures] == [f"heading swing {wide.heading_swing_deg:.1f}°"]
    assert _judge(_trace(roll_deg=4.0 * np.sin(2 * np.pi * f * t))).passed
    rocking = _judge(_trace(roll_deg=8.0 * np.sin(2 * np.pi * f * t), pitch_deg=2.0 * np.sin(2 * np.pi * f * t)))
    assert rocking.roll_swing_deg == pytest.approx(16.0, rel=0.02) and rocking.pitch_swing_deg < 4.1
    assert rocking.failures == [f"roll swing {rocking.roll_swing_deg:.1f}° > 15° per stride"]


def test_torque_saturation_is_judged_on_the_worst_joint_not_the_mean():
    """One knee at its limit 20 % of the time, the eleven other joints never: the mean joint is at 1.7 %, under
    the 10 % bound; the worst joint is at 20 %, and that fails (docs/gate.md: a motor pinned at its limit has no
    authority left, however idle the others are)."""
    sat = np.zeros(12)
    sat[2] = 0.2 * ROBOT.decimation  # physics steps at the limit per control period
    cell = _judge(_trace(), samples=_samples(saturated=sat))
    assert cell.torque_saturation == pytest.approx(0.2)
    assert cell.failures == ["torque saturation 0.20 > 0.1"]
    spread = np.full(12, 0.09 * ROBOT.decimation)  # every joint at 9 %: the worst is under the bound
    assert _judge(_trace(), samples=_samples(saturated=spread)).passed


def _tilted(degrees: float, axis: int) -> np.ndarray:
    c, s = np.cos(np.radians(degrees)), np.sin(np.radians(degrees))
    a, b = [(1, 2), (2, 0), (0, 1)][axis]
    rot = np.eye(3)
    rot[a, a], rot[a, b], rot[b, a], rot[b, b] = c, -s, s, c
    return rot


@pytest.mark.parametrize("axis", [0, 1])
def test_the_fall_tilt_is_the_base_angle_from_vertical_in_degrees_against_60(axis):
    """docs/gate.md: a fall is the base tilted more than 60° from the vertical (the training termination). The tilt
    of a base rolled (pitched) by 30° is 30°, no fall; by 70°, a fall. A radian/degree mix-up in either the tilt or
    the bound fails here: 70° is 1.22 rad (< 60: no fall), and 30° is more than 60° read as 1.05 rad."""
    th = GateThresholds()
    assert tilt_deg(_tilted(30.0, axis)) == pytest.approx(30.0)
    assert fall_reason(th, _tilted(30.0, axis), 0.18, 0.18, False) is None
    assert fall_reason(th, _tilted(59.0, axis), 0.18, 0.18, False) is None
    assert fall_reason(th, _tilted(70.0, axis), 0.18, 0.18, False) == "tilt 70° > 60°"
    assert fall_reason(th, np.eye(3), 0.08, 0.18, False).startswith("base at 0.080 m < 0.5")
    assert fall_reason(th, np.eye(3), 0.18, 0.18, True) == "base touched the floor"


def test_a_cell_stops_on_a_tilt_past_60_degrees_and_not_before(monkeypatch):
    """The cell loop asks fall_reason with the engine's own rotation: a base held at 45° runs the whole cell, one at
    65° falls at the first control step."""
    import trot.hil.gate.cell as cell_module
    from trot.hil.gate.cell import CellSpec, run_cell

    real = cell_module.rotation
    for degrees, fell in ((45.0, False), (65.0, True)):
        monkeypatch.setattr(cell_module, "rotation", lambda q, d=degrees: _tilted(d, 0) @ real(q))
        spec = CellSpec("mujoco", "stand", ((0.0, (0.0, 0.0, 0.0)),), "nominal", Perturbation(), load_bundle(TRAINED),
                        "pupper_v3", 0.2, 0, GateThresholds())  # fmt: skip
        result = run_cell(spec)
        assert result.fell == fell and (result.fall_time_s == pytest.approx(ROBOT.control_dt) if fell else True)
        assert result.trace["tilt_deg"][0] == pytest.approx(degrees, abs=2.0)


def test_the_engines_agreement_fails_on_the_median_or_on_one_cell():
    th = GateThresholds()
    ok = {"lin_err": {("a", "x"): 1.2, ("b", "x"): 0.5, ("c", "x"): 1.9}, "yaw_err": {}}
    assert ratio_failures(th, ok) == []
    high_median = {"lin_err": {("a", "x"): 1.3, ("b", "x"): 1.3, ("c", "x"): 0.5}}
    assert ratio_failures(th, high_median) == ["PyBullet/MuJoCo lin_err ratio: median 1.30 > 1.25"]
    one_cell = {"yaw_err": {("a", "x"): 1.0, ("b", "x"): 2.1, ("c", "x"): 1.0}}
    assert ratio_failures(th, one_cell) == ["PyBullet/MuJoCo yaw_err ratio 2.10 > 2.0 in b / x"]


def _cell(engine="pybullet", command="forward_max", perturbation="nominal", lin=0.02, yaw=0.02, failures=(),
          judged=True, lin_bound=0.12, yaw_bound=0.1) -> CellResult:  # fmt: skip
    return CellResult(engine, command, perturbation, False, None, lin, yaw, None, 1.0, 3.0, 0.0, 0.5, 0.0,
                      list(failures), 0.0, 0.0, judged=judged, lin_bound=lin_bound, yaw_bound=yaw_bound)  # fmt: skip


def test_in_the_engine_ratio_an_error_below_half_its_bound_counts_as_half_the_bound():
    """Turning left at 1.5 rad/s the shipped policy's linear errors were 0.03-0.04 m/s in PyBullet against 0.016 in
    MuJoCo (ratio up to 2.47 with the old 0.01 floor, failing the 2.0 per cell), both inside the 0.05 bound:
    MuJoCo's counts as 0.025, the ratio is at most 1.6. Two errors both under half the bound read 1.0."""
    pb, mj = _cell(lin=0.04, lin_bound=0.05), _cell("mujoco", lin=0.016, lin_bound=0.05)
    assert engine_ratio(pb, mj, "lin_err") == pytest.approx(1.6)
    one_cell = {("turn_left_max", "nominal"): 1.6, ("forward_max", "nominal"): 1.0, ("stand", "nominal"): 1.0}
    assert ratio_failures(GateThresholds(), {"lin_err": one_cell}) == []  # under the 2.0 a cell may reach
    pb, mj = _cell(lin=0.02, lin_bound=0.05), _cell("mujoco", lin=0.008, lin_bound=0.05)
    assert engine_ratio(pb, mj, "lin_err") == pytest.approx(1.0)
    pb, mj = _cell(lin=0.10), _cell("mujoco", lin=0.04)  # bound 0.12: MuJoCo's 0.04 counts as 0.06
    assert engine_ratio(pb, mj, "lin_err") == pytest.approx(0.10 / 0.06)
    pb, mj = _cell(yaw=0.30, yaw_bound=0.3), _cell("mujoco", yaw=0.20, yaw_bound=0.3)
    assert engine_ratio(pb, mj, "yaw_err") == pytest.approx(1.5)
    assert engine_ratio(pb, _cell("mujoco", yaw=None), "yaw_err") is None


def _run(cells, perturbations=("nominal", "latency_declared", "latency_2_steps")) -> GateRun:
    pinned = {p: PERTURBATIONS[p](ROBOT) for p in perturbations}
    commands = {"forward_max": ((0.0, (0.6, 0.0, 0.0)),)}
    return GateRun(load_bundle(TRAINED), ROBOT, cells, ("pybullet", "mujoco"), commands, pinned, 10.0, 0, 1,
                   GateThresholds(), 0.0)  # fmt: skip


def test_the_declared_latency_is_judged_and_the_training_edge_is_stress_reported_not_judged():
    """A policy that fails only at two control steps of latency (the stress column) passes; one that fails at the
    robot's declared latency fails. The stress cell's failure and its engine ratio are reported, not judged."""
    from trot.hil.gate.report import gate_json, summary_table

    ok = [_cell(e, perturbation=p) for e in ("pybullet", "mujoco") for p in ("nominal", "latency_declared")]
    stress = [_cell(e, perturbation="latency_2_steps", lin=0.3 if e == "pybullet" else 0.05, judged=False,
                    failures=["lin err 0.300 > 0.12 m/s"] if e == "pybullet" else ()) for e in ("pybullet", "mujoco")]
    run = _run(ok + stress)
    assert run.passed and run.failed("pybullet") == 0 and run.failed("pybullet", judged=False) == 1
    assert run.ratios("lin_err", judged=None)[("forward_max", "latency_2_steps")] == pytest.approx(5.0)
    assert ("forward_max", "latency_2_steps") not in run.ratios("lin_err") and run.ratio_failures() == []
    table = summary_table(run)
    assert "latency_2_steps*" in table and "(fail) 0.30/0.02" in table
    assert "pybullet: 0 of 2 judged cells fail; stress: 1 of 1 fail (not judged)" in table
    failing = [_cell(e, perturbation=p, failures=["yaw err 0.200 > 0.1 rad/s"] if p == "latency_declared" else ())
               for e in ("pybullet", "mujoco") for p in ("nominal", "latency_declared")]  # fmt: skip
    run = _run(failing + stress)
    assert not run.passed and run.failed("mujoco") == 1
    doc = gate_json(run)
    assert doc["stress"] == {"latency_2_steps": STRESS["latency_2_steps"]}
    assert doc["perturbations"]["latency_2_steps"]["judged"] is False and doc["latency"]["judged_s"] == 0.02


def test_run_gate_marks_the_stress_column_and_times_the_latencies_in_physics_steps(tiny_bundle):
    """In a run, the declared latency's cells are judged and the training edge's are not; the cell holds a target
    5 (10) physics steps, 0.02 (0.04) s, as the pinned terms say."""
    from trot.hil.gate.cell import CellSim

    run = run_gate(load_bundle(tiny_bundle), commands=["stand"], perturbations=["latency_declared", "latency_2_steps"],
                   seconds=1.0, jobs=1)  # fmt: skip
    assert {c.perturbation: c.judged for c in run.cells} == {"latency_declared": True, "latency_2_steps": False}
    assert not run.full and run.stress == ["latency_2_steps"]
    for name, steps in (("latency_declared", 5), ("latency_2_steps", 10)):
        _engines.append(make_engine("mujoco", ROBOT))
        sim = CellSim(_engines[-1], ROBOT, run.perturbations[name], 1.0, np.random.default_rng(0))
        assert sim.latency == steps


def _run_cli(*argv) -> int:
    parser = ArgumentParser()
    gate.add_args(parser)
    return gate.run_cli(parser.parse_args([str(a) for a in argv]))


def test_random_weights_bundle_fails_the_gate_and_the_report_says_why(tiny_bundle, tmp_path, capsys):
    out = tmp_path / "gate"
    rc = _run_cli(tiny_bundle, "-o", out, "--seconds", 3, "--jobs", 2, "--mujoco", "--commands", "stand,forward_max",
                  "--perturbations", "nominal,armature_x0.5", "--pin", "friction=0.6,contact_timeconst=0.03")
    assert rc == 1
    report = json.loads((out / "gate.json").read_text())
    assert not report["passed"] and len(report["cells"]) == 10  # 2 × 3 in MuJoCo, 2 × 2 in PyBullet
    assert {(c["engine"], c["command"], c["perturbation"]) for c in report["not_run"]} == {
        ("pybullet", "stand", "armature_x0.5"), ("pybullet", "forward_max", "armature_x0.5")}  # fmt: skip
    assert report["perturbations"]["friction=0.6,contact_timeconst=0.03"]["terms"] == {
        "friction": 0.6, "contact_timeconst": 0.03}  # fmt: skip
    forward = [c for c in report["cells"] if c["command"] == "forward_max"]
    assert all(not c["passed"] and c["failures"] for c in forward)
    assert report["thresholds"]["lin_err_floor"] == 0.05
    assert report["pybullet_mujoco_ratio"]["lin_err"]["median"] > 0
    md = (out / "gate.md").read_text()
    assert "FAIL" in md and "## Pass/fail: pybullet" in md and "## Pass/fail: mujoco" in md and "n/a" in md
    assert (out / "tracking_error.png").stat().st_size > 0
    assert "gate: FAIL" in capsys.readouterr().out


def test_a_file_that_is_not_a_bundle_or_an_unknown_cell_exits_2(tmp_path, tiny_bundle, capsys):
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not an onnx file")
    assert _run_cli(junk, "-o", tmp_path / "out") == 2
    assert "not a readable ONNX model" in capsys.readouterr().err
    assert _run_cli(tiny_bundle, "--perturbations", "earthquake") == 2
    assert "unknown perturbation" in capsys.readouterr().err
    assert _run_cli(tiny_bundle, "--commands", "moonwalk") == 2
    assert "unknown command(s) ['moonwalk']" in capsys.readouterr().err
    assert _run_cli(tiny_bundle, "--pin", "friction=9") == 2
    assert "physical bounds" in capsys.readouterr().err


def test_help_lists_every_perturbation_and_the_generated_commands():
    parser = ArgumentParser()
    gate.add_args(parser)
    text = "".join(parser.format_help().split())  # argparse %-formats help: a '%' in a name must not break it
    assert all(name in text for name in [*PERTURBATIONS, "forward_max", "turn_right_max", "--quick", "--pin"])


def test_the_gate_is_deterministic_given_its_seed(tiny_bundle):
    runs = [
        run_gate(load_bundle(tiny_bundle), commands=["forward_0.3"], perturbations=["sensor_noise", "push_0.3"],
                 seconds=4.0, seed=7, jobs=1).cells  # fmt: skip
        for _ in range(2)
    ]
    for a, b in zip(*runs):
        assert a.metrics() | {"wall_s": 0, "cpu_s": 0} == b.metrics() | {"wall_s": 0, "cpu_s": 0}


def test_the_quick_subset_runs_its_cells_in_pybullet_only(tiny_bundle):
    run = run_gate(load_bundle(tiny_bundle), engines=("pybullet", "mujoco"), seconds=2.0, jobs=2, quick=True)
    assert run.quick and run.engines == ("pybullet",)
    assert [(c.engine, c.command, c.perturbation) for c in run.cells] == [("pybullet", *x) for x in QUICK_CELLS]
    assert run.cpu_s > 0 and all(c.lin_err is not None or c.fell for c in run.cells)


def test_a_standing_cell_is_judged_on_its_drift(tiny_bundle):
    """A random-weights policy does stand: its one drift figure is the base's displacement over the cell."""
    c = run_gate(load_bundle(tiny_bundle), commands=["stand"], perturbations=["nominal"], seconds=3.0, jobs=1).cells[0]
    assert c.drift is not None and 0 <= c.drift < 0.1
    assert c.drift == pytest.approx(np.linalg.norm(c.trace["pos_xy"][-1] - c.trace["start_xy"]))
    moving = run_gate(load_bundle(tiny_bundle), commands=["forward_0.3"], perturbations=["nominal"], seconds=3.0,
                      jobs=1).cells[0]  # fmt: skip
    assert moving.drift is None


@pytest.mark.slow
def test_the_shipped_policy_stays_up_unsaturated_in_the_nominal_cells():
    """What the shipped policy meets whatever its tracking: in both engines, no fall, no torque saturation and no
    foot slip standing, walking at 0.3 m/s and at the top speed, and turning at the top rate. It still fails some
    cells of the stricter gate on yaw wobble (docs/gate.md, "The shipped policy under this gate")."""
    if not TRAINED.is_file():
        pytest.skip(f"no shipped policy at {TRAINED}")
    run = run_gate(load_bundle(TRAINED), engines=ENGINES, commands=["stand", "forward_0.3", "forward_max",
                   "turn_left_max"], perturbations=["nominal"], seconds=6.0, jobs=2)  # fmt: skip
    th = run.thresholds
    for c in run.cells:
        assert not c.fell, c
        assert c.torque_saturation <= th.max_torque_saturation and c.foot_slip <= th.max_foot_slip, c


def test_standalone_script_imports_no_trot():
    tree = ast.parse(STANDALONE.read_text())
    modules = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    modules += [n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    assert not [m for m in modules if m.split(".")[0] == "trot"]


def test_standalone_script_reproduces_a_nominal_gate_cell(tiny_bundle):
    from trot.hil.pybullet_model import matched_contact

    bundle = TRAINED if TRAINED.is_file() else tiny_bundle
    stiffness, damping = matched_contact(ROBOT, *CONTACT_SOLREF)
    out = subprocess.run(
        [sys.executable, str(STANDALONE), str(bundle), str(ROBOT.urdf_path), "--command", "0.3", "0", "0",
         "--seconds", "5", "--contact-stiffness", str(stiffness), "--contact-damping", str(damping)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    alone = json.loads(out.stdout)
    cell_ = run_gate(load_bundle(bundle), commands=["forward_0.3"], perturbations=["nominal"], seconds=5.0, jobs=1)
    cell_ = cell_.cells[0]
    # The same engine, the same inputs: the same trajectory to rounding. (When the script took PyBullet's base pose,
    # the inertial frame on the principal axes of the authors' full base inertia, for the base link's, the robot
    # started pitched 4.6 degrees and walked another gait: yaw error 0.071 against 0.094.)
    assert alone["fell"] == cell_.fell
    assert alone["lin_err"] == pytest.approx(cell_.lin_err_per_step, abs=1e-6)  # the script's: per control step
    assert alone["yaw_err"] == pytest.approx(cell_.yaw_err_per_step, abs=1e-6)
    assert alone["joint_margin"] == pytest.approx(cell_.joint_margin, abs=1e-6)


def test_every_cell_passing_exits_0(tmp_path):
    """The shipped policy passes one documented cell of the stricter gate: forward 0.3 m/s, nominal, in PyBullet."""
    if not TRAINED.is_file():
        pytest.skip(f"no shipped policy at {TRAINED}")
    rc = _run_cli(TRAINED, "-o", tmp_path, "--jobs", 1, "--no-plots", "--commands", "forward_0.3",
                  "--perturbations", "nominal")  # fmt: skip
    assert rc == 0
    assert json.loads((tmp_path / "gate.json").read_text())["passed"]


def test_pinned_params_reach_the_engine_through_the_training_loop():
    """payload +20 % on friction 0.5, in MuJoCo: the base mass (1.506 kg) + 0.634 kg, floor and feet μ 0.5."""
    sim = cell("mujoco", "payload_+20%_friction_0.5")
    m = sim.engine.model
    assert m.body_mass[m.body(ROBOT.base_link).id] == pytest.approx(1.506 + 0.634)
    assert m.geom_friction[m.geom("floor").id, 0] == 0.5
    assert sim.latency == 0 and sim.obs_latency == 0 and not torch.is_tensor(sim.torque_limit)
