"""The deploy loop's state machine, checks and clamps, without any I/O: every transition of SAFETY.md."""

import math
from dataclasses import replace

import numpy as np
import pytest

from trot.bundle import Contract
from trot.deploy.link import Sample
from trot.deploy.protocol import ControlMode, StatusFlags
from trot.deploy.safety import (
    ACTIVE_MODES,
    COMMAND_MODE,
    Mode,
    SafetyLimits,
    SafetyMachine,
    TargetClamp,
    smoothstep,
    tilt_deg,
)
from trot.robots import load_robot

DT = 0.02
LIMITS = SafetyLimits()
ROBOT = load_robot("pupper_v3")
UPRIGHT = np.array([1.0, 0.0, 0.0, 0.0])


def roll_quat(deg: float) -> np.ndarray:
    half = math.radians(deg) / 2
    return np.array([math.cos(half), math.sin(half), 0.0, 0.0])


def sample(t: float, seq: int = 0, status: int = 0, quat=UPRIGHT, joint_pos=None, gyro=(0.0, 0.0, 0.0),
           accel=None, joint_vel=None) -> Sample:  # fmt: skip
    q = np.array(ROBOT.default_joint_pos) if joint_pos is None else np.asarray(joint_pos)
    qd = np.zeros(12) if joint_vel is None else np.asarray(joint_vel)
    # A live IMU: the accelerometer's low bits move every reading unless the test says otherwise.
    acc = np.array([0.0, 0.0, 9.81 + 1e-4 * (seq % 7)]) if accel is None else np.asarray(accel)
    return Sample(t, seq, 1000 * seq, q, qd, np.zeros(12), np.asarray(quat), np.asarray(gyro), acc, status)


class Clock:
    """Drives a machine through ticks with a fresh State each tick unless told otherwise."""

    def __init__(self, limits: SafetyLimits = LIMITS):
        self.m = SafetyMachine(limits, DT)
        self.t = 0.0
        self.seq = 0
        self.m.begin(self.t, "test link")
        self.m.connected(self.t)

    def tick(self, dt: float = DT, received: bool = True, seq_step: int = 1, **fields):
        self.t += dt
        s = None
        if received:
            self.seq += seq_step
            s = sample(self.t, self.seq, **fields)
        self.m.check_state(self.t, [s] if received else [], seq_step)
        self.last = s or getattr(self, "last", None)
        self.m.advance(self.t)
        return self.m.state

    def run_until(self, mode: Mode, limit_s: float = 10.0) -> None:
        end = self.t + limit_s
        while self.m.state != mode and self.t < end:
            self.tick()
        assert self.m.state == mode, self.m.transitions

    @property
    def last_transition(self):
        return self.m.transitions[-1]


def running(limits: SafetyLimits = LIMITS) -> Clock:
    c = Clock(limits)
    c.run_until(Mode.RUNNING)
    return c


def test_happy_path_goes_handshake_soft_start_fade_in_running():
    c = Clock()
    assert c.m.state == Mode.HANDSHAKE
    c.tick()
    assert c.m.state == Mode.SOFT_START and c.last_transition.cause == "first_state"
    c.run_until(Mode.FADE_IN)
    assert c.last_transition.t == pytest.approx(DT + LIMITS.soft_start_s, abs=DT)
    c.run_until(Mode.RUNNING)
    assert c.last_transition.t == pytest.approx(DT + LIMITS.soft_start_s + LIMITS.fade_in_s, abs=2 * DT)
    assert [t.dst for t in c.m.transitions] == [Mode.HANDSHAKE, Mode.SOFT_START, Mode.FADE_IN, Mode.RUNNING]
    assert not c.m.faulted


def test_progress_runs_from_zero_to_one_through_soft_start():
    c = Clock()
    c.tick()
    start = c.m.entered
    assert c.m.progress(start) == 0.0
    assert c.m.progress(start + LIMITS.soft_start_s / 2) == pytest.approx(0.5)
    assert c.m.progress(start + 10.0) == 1.0
    assert smoothstep(0.0) == 0.0 and smoothstep(1.0) == 1.0 and smoothstep(0.5) == 0.5


def test_only_soft_start_fade_in_and_running_send_position_commands():
    position = {mode for mode, cmd in COMMAND_MODE.items() if cmd == ControlMode.POSITION}
    assert position == set(ACTIVE_MODES) == {Mode.SOFT_START, Mode.FADE_IN, Mode.RUNNING}
    assert COMMAND_MODE[Mode.OFF] == ControlMode.OFF
    assert all(COMMAND_MODE[m] == ControlMode.DAMPING for m in (Mode.HANDSHAKE, Mode.DAMPING, Mode.ESTOP_DAMPING,
                                                                Mode.SHUTDOWN))  # fmt: skip


def test_transition_line_names_both_states_and_the_reason():
    c = running()
    c.tick(dt=0.062, received=False)
    assert c.last_transition.line == "RUNNING -> DAMPING: state stale 62 ms > 60 ms: damping"


@pytest.mark.parametrize("mode", [Mode.SOFT_START, Mode.FADE_IN, Mode.RUNNING])
def test_stale_state_damps_in_every_active_state_and_not_before_the_bound(mode):
    c = Clock()
    c.run_until(mode)
    c.tick(dt=LIMITS.stale_periods * DT - 1e-3, received=False)
    assert c.m.state == mode
    c.tick(dt=2e-3, received=False)
    assert c.m.state == Mode.DAMPING and c.last_transition.cause == "stale"


def test_no_state_after_the_handshake_damps_after_first_state_s():
    c = Clock()
    while c.t < LIMITS.first_state_s - DT:
        assert c.tick(received=False) == Mode.HANDSHAKE
    c.tick(dt=2 * DT, received=False)
    assert c.m.state == Mode.DAMPING and c.last_transition.cause == "no_state"


def test_sequence_gap_over_the_limit_damps():
    c = running()
    c.tick(seq_step=LIMITS.max_seq_gap + 1)  # max_seq_gap frames lost: tolerated
    assert c.m.state == Mode.RUNNING
    c.tick(seq_step=LIMITS.max_seq_gap + 2)
    assert c.m.state == Mode.DAMPING and c.last_transition.cause == "seq_gap"
    assert f"{LIMITS.max_seq_gap + 1} State frames lost" in c.last_transition.reason


@pytest.mark.parametrize("step", [0, -5])
def test_sequence_going_back_is_a_restarted_microcontroller(step):
    c = running()
    c.tick(seq_step=step)
    assert c.m.state == Mode.DAMPING and c.last_transition.cause == "seq_restart"


def test_crc_error_burst_damps_but_scattered_errors_do_not():
    c = running()
    errors = 0
    for _ in range(20):  # one error every 0.3 s: at most 4 in any 1 s window
        errors += 1
        c.t += 0.3
        c.m.check_link(c.t, None, errors, 0)
    assert c.m.state == Mode.RUNNING
    for _ in range(LIMITS.link_errors_max + 1):
        errors += 1
        c.t += DT
        c.m.check_link(c.t, None, errors, 0)
    assert c.m.state == Mode.DAMPING and c.last_transition.cause == "crc"


def test_payload_error_and_lost_link_damp_at_once():
    c = running()
    c.m.check_link(c.t, None, 0, 1)
    assert c.m.state == Mode.DAMPING and c.last_transition.cause == "payload"
    c = running()
    c.m.check_link(c.t, "read failed: [Errno 5] Input/output error", 0, 0)
    assert c.m.state == Mode.DAMPING and c.last_transition.cause == "link_lost"


@pytest.mark.parametrize(
    "fields, cause",
    [
        ({"joint_pos": [np.nan] + [0.0] * 11}, "nonfinite"),
        ({"gyro": (0.0, np.inf, 0.0)}, "nonfinite"),
        ({"quat": (0.0, 0.0, 0.0, 0.0)}, "imu_quat"),
        ({"quat": roll_quat(LIMITS.max_tilt_deg + 1)}, "fall"),
        ({"status": StatusFlags.WATCHDOG_DAMPING}, "mcu_status"),
        ({"status": StatusFlags.MOTOR_FAULT}, "mcu_status"),
        ({"status": StatusFlags.LOW_VOLTAGE}, "mcu_status"),
        ({"status": StatusFlags.MOTORS_OFF}, "mcu_status"),
    ],
)
def test_bad_state_damps_in_the_tick_it_arrives(fields, cause):
    c = running()
    c.tick(**fields)
    assert c.m.state == Mode.DAMPING and c.last_transition.cause == cause
    assert c.last_transition.t == c.t


def _one_bad(size: int, index: int, value: float) -> list[float]:
    values = [0.1] * size
    values[index] = value
    return values


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize(
    "field, kwargs",
    [
        ("joint_pos", lambda v: {"joint_pos": _one_bad(12, 7, v)}),
        ("joint_vel", lambda v: {"joint_vel": _one_bad(12, 7, v)}),
        ("gyro", lambda v: {"gyro": _one_bad(3, 2, v)}),
        ("imu_quat", lambda v: {"quat": [1.0, 0.0, v, 0.0]}),
    ],
)
def test_a_non_finite_value_in_any_state_field_damps_naming_the_field(field, kwargs, value):
    """Every field the policy or the clamps read is checked: SAFETY.md's `nonfinite` row names all four."""
    c = running()
    c.tick(**kwargs(value))
    assert c.m.state == Mode.DAMPING and c.last_transition.cause == "nonfinite", c.m.transitions
    index = {"gyro": 2, "imu_quat": 2}.get(field, 7)
    assert f"non-finite State: {field}[{index}] = {value}" in c.last_transition.reason


def test_the_default_fall_threshold_is_safety_md_s_50_degrees():
    """SAFETY.md promises 50°; the default must be that number, not just 'some threshold'."""
    from importlib import resources

    spec = (resources.files("trot.deploy") / "SAFETY.md").read_text()
    assert "above `max_tilt_deg` (50°)" in spec
    assert SafetyLimits().max_tilt_deg == 50.0
    for deg, state in ((49.0, Mode.RUNNING), (51.0, Mode.DAMPING)):  # on either side of 50, default limits
        c = running(SafetyLimits())
        c.tick(quat=roll_quat(deg))
        assert c.m.state == state, (deg, c.m.transitions)
    assert c.last_transition.reason == "fall: tilt 51 deg > 50 deg: damping"


def test_tilt_just_under_the_threshold_keeps_running():
    c = running()
    c.tick(quat=roll_quat(LIMITS.max_tilt_deg - 1))
    assert c.m.state == Mode.RUNNING


def test_bad_first_state_never_starts_the_soft_start():
    c = Clock()
    c.tick(quat=roll_quat(90))
    assert c.m.state == Mode.DAMPING and c.last_transition.cause == "fall"
    c = Clock()
    c.tick(status=StatusFlags.MOTORS_OFF)
    assert c.m.state == Mode.DAMPING and "no session" in c.last_transition.reason


def test_imu_stale_flag_is_tolerated_briefly_then_damps():
    c = running()
    c.tick(status=StatusFlags.IMU_STALE)
    c.tick(status=StatusFlags.IMU_STALE)
    assert c.m.state == Mode.RUNNING
    c.tick(status=0)  # cleared: the timer restarts
    for _ in range(int(LIMITS.imu_stale_periods) + 2):
        c.tick(status=StatusFlags.IMU_STALE)
    assert c.m.state == Mode.DAMPING and c.last_transition.cause == "imu_stale"


def test_staleness_and_the_imu_rules_count_from_arrival_not_from_the_poll():
    """States that arrived early in a period are as old as their arrival says (issue 13 item 6)."""
    c = running()
    t0 = c.t
    early = t0 + 0.002  # arrived 2 ms after the previous poll, read by the next one 18 ms later
    c.t = t0 + DT
    c.m.check_state(c.t, [sample(early, c.seq + 1)], 1)
    c.seq += 1
    for k in (2, 3):  # no State comes: at 60 - 2 ms of age it is not stale yet ...
        c.m.check_state(t0 + k * DT, [], None)
        assert c.m.state == Mode.RUNNING
    c.m.check_state(t0 + 3 * DT + 0.0021, [], None)  # ... 0.1 ms past 60 ms after its arrival it is
    assert c.m.state == Mode.DAMPING and c.last_transition.cause == "stale"

    c = running()
    t0, flag = c.t, StatusFlags.IMU_STALE
    flagged = [sample(t0 + 0.004 * i, c.seq + i, status=flag) for i in (1, 2, 3, 4, 5)]  # 250 Hz
    c.m.check_state(t0 + DT, flagged, 1)  # the flag first arrived at t0 + 4 ms
    limit = LIMITS.imu_stale_periods * DT
    c.m.check_state(t0 + 0.004 + limit - 1e-4, [sample(t0 + 0.004 + limit - 2e-4, c.seq + 6, status=flag)], 1)
    assert c.m.state == Mode.RUNNING
    c.m.check_state(t0 + 0.004 + limit + 1e-4, [sample(t0 + 0.004 + limit, c.seq + 7, status=flag)], 1)
    assert c.m.state == Mode.DAMPING and c.last_transition.cause == "imu_stale"


def test_frozen_imu_without_a_flag_damps_after_imu_frozen_s():
    c = running()
    frozen = {"accel": (0.0, 0.0, 9.81)}
    c.tick(**frozen)
    while c.t < c.m.transitions[-1].t + 100 and c.m.state == Mode.RUNNING:
        c.tick(**frozen)
    assert c.last_transition.cause == "imu_frozen"
    assert c.t - c.last_transition.t == 0


def test_slow_inference_and_nonfinite_policy_values_damp():
    c = running()
    c.m.check_policy(c.t, np.zeros(10), np.zeros(12), 0.9 * DT)
    assert c.m.state == Mode.RUNNING
    c.m.check_policy(c.t, np.zeros(10), np.zeros(12), 1.1 * DT)
    assert c.m.state == Mode.RUNNING  # one late tick is a hiccup
    c.m.check_policy(c.t, np.zeros(10), np.zeros(12), 0.5 * DT)
    c.m.check_policy(c.t, np.zeros(10), np.zeros(12), 1.1 * DT)
    assert c.m.state == Mode.RUNNING  # not in a row
    c.m.check_policy(c.t, np.zeros(10), np.zeros(12), 1.1 * DT)
    assert c.m.state == Mode.DAMPING and c.last_transition.cause == "inference"
    c = running()
    c.m.check_policy(c.t, np.zeros(10), np.zeros(12), 2.1 * DT)  # stalled for two periods: at once
    assert c.m.state == Mode.DAMPING and c.last_transition.cause == "inference"
    c = running()
    c.m.check_policy(c.t, np.array([0.0, np.nan]), np.zeros(12), 0.001)
    assert c.m.state == Mode.DAMPING and "obs[1]" in c.last_transition.reason


def test_faults_latch_and_report_only_the_first():
    c = running()
    c.tick(quat=roll_quat(80))
    c.tick(status=StatusFlags.MOTOR_FAULT)
    for _ in range(200):
        c.tick()  # healthy again: still damping
    assert c.m.state == Mode.DAMPING
    assert [t.cause for t in c.m.transitions if t.dst == Mode.DAMPING] == ["fall"]
    assert c.m.faulted


@pytest.mark.parametrize("cause", ["estop_host", "estop_mcu"])
def test_estop_damps_then_turns_the_motors_off_and_stays_off(cause):
    c = running()
    if cause == "estop_mcu":
        c.tick(status=StatusFlags.ESTOP)
    else:
        c.m.estop(c.t, cause, "e-stop: SIGUSR1")
    assert c.m.state == Mode.ESTOP_DAMPING and c.last_transition.cause == cause
    start = c.t
    while c.m.state == Mode.ESTOP_DAMPING:
        c.tick(status=StatusFlags.ESTOP)
    assert c.m.state == Mode.OFF and c.t - start == pytest.approx(LIMITS.estop_damping_s, abs=DT)
    for _ in range(100):
        c.tick()
    assert c.m.state == Mode.OFF
    c.m.request_stop(c.t, "SIGINT (Ctrl-C)")
    assert c.m.state == Mode.DONE and c.m.faulted


def test_an_estop_still_asserted_once_the_motors_are_off_keeps_them_off():
    """OFF is latched (docs: safety.py, `Mode.OFF`): the host keeps its e-stop request and the MCU keeps reporting
    ESTOP while the motors are off; neither may start a new e-stop (damping again, then OFF again, for ever), and a
    stop request still ends the run."""
    c = running()
    c.m.estop(c.t, "estop_host", "e-stop: keyboard")
    c.run_until(Mode.OFF)
    transitions = len(c.m.transitions)
    for _ in range(200):  # 4 s: four times the e-stop's damping
        c.m.estop(c.t, "estop_host", "e-stop: keyboard")
        c.tick(status=StatusFlags.ESTOP)
        assert c.m.state == Mode.OFF, c.m.transitions[transitions:]
    assert len(c.m.transitions) == transitions
    c.m.request_stop(c.t, "SIGINT (Ctrl-C)")
    assert c.m.state == Mode.DONE


def test_estop_overrides_damping_after_a_fault():
    c = running()
    c.tick(quat=roll_quat(80))
    c.m.estop(c.t, "estop_host", "e-stop: keyboard")
    assert c.m.state == Mode.ESTOP_DAMPING


def test_stop_request_damps_then_exits_cleanly():
    c = running()
    c.m.request_stop(c.t, "SIGTERM")
    assert c.m.state == Mode.SHUTDOWN and "SIGTERM" in c.last_transition.reason
    start = c.t
    while c.m.state == Mode.SHUTDOWN:
        c.tick()
    assert c.m.state == Mode.DONE and c.t - start == pytest.approx(LIMITS.shutdown_damping_s, abs=DT)
    assert not c.m.faulted


def test_stop_during_estop_damping_finishes_the_damping_then_exits():
    c = running()
    c.m.estop(c.t, "estop_host", "e-stop")
    c.m.request_stop(c.t, "SIGINT (Ctrl-C)")
    assert c.m.state == Mode.ESTOP_DAMPING
    while c.m.state not in (Mode.DONE,) and c.t < 5:
        c.tick(status=StatusFlags.ESTOP)
    assert [t.dst for t in c.m.transitions[-2:]] == [Mode.OFF, Mode.DONE]


def test_limits_are_validated():
    with pytest.raises(ValueError, match="max_tilt_deg"):
        SafetyLimits(max_tilt_deg=0)
    with pytest.raises(ValueError, match="stale_periods"):
        SafetyLimits(stale_periods=0)


def test_tilt_of_upright_rolled_and_upside_down_quaternions():
    assert tilt_deg(UPRIGHT) == pytest.approx(0.0)
    assert tilt_deg(roll_quat(90)) == pytest.approx(90.0)
    assert tilt_deg(np.array([0.0, 1.0, 0.0, 0.0])) == pytest.approx(180.0)
    assert tilt_deg(2 * roll_quat(30)) == pytest.approx(30.0)  # not normalized


# ---- clamps -------------------------------------------------------------------------------------

CONTRACT = Contract.from_robot(ROBOT)
CLAMP = TargetClamp(CONTRACT, ROBOT.hardware)
SOFT = TargetClamp(replace(CONTRACT, kp=1e-6, kd=0.0), ROBOT.hardware)  # no torque clamp
Q0 = np.array(ROBOT.default_joint_pos)


def test_targets_stay_inside_the_urdf_limits_less_the_margin():
    margin = ROBOT.hardware["soft_limit_margin"]
    lower, upper = np.array(ROBOT.joint_limits.lower), np.array(ROBOT.joint_limits.upper)
    target, counts = SOFT(upper + 1.0, upper, np.zeros(12), None)
    np.testing.assert_allclose(target, upper - margin)
    assert counts.position == 12
    target, _ = SOFT(lower - 1.0, lower, np.zeros(12), None)
    np.testing.assert_allclose(target, lower + margin)


def test_target_rate_is_limited_by_the_velocity_limit():
    step = ROBOT.velocity_limit[0] * ROBOT.control_dt  # 30 rad/s x 20 ms
    assert step == pytest.approx(0.6)
    wanted = Q0 + 0.1
    wanted[0] = Q0[0] + 5.0
    target, counts = SOFT(wanted, Q0, np.zeros(12), previous=Q0)
    assert target[0] == pytest.approx(min(Q0[0] + step, CLAMP.upper[0]))
    np.testing.assert_allclose(target[1:], wanted[1:])
    assert counts.rate == 1


def test_predicted_pd_torque_is_held_to_the_torque_limit_by_moving_the_target():
    qd = np.zeros(12)
    qd[1] = 4.0  # moving: the damping term counts too
    wanted = Q0.copy()
    wanted[0] += 2.0  # kp * 2 rad = 10 N·m > 3 N·m
    wanted[1] += 0.1  # 5 * 0.1 - 0.25 * 4 = -0.5 N·m: within
    target, counts = CLAMP(wanted, Q0, qd, None)
    torque = CLAMP.kp * (target - Q0) - CLAMP.kd * qd
    assert torque[0] == pytest.approx(3.0)
    assert target[1] == pytest.approx(wanted[1])
    assert np.all(np.abs(torque) <= 3.0 + 1e-9)
    assert counts.torque == 1


def test_torque_and_rate_clamps_use_each_joints_own_limit():
    """The Go2's limits differ per joint: hip and thigh 23.7 N·m and 30.1 rad/s, calf 45.43 N·m and 15.7 rad/s."""
    go2 = load_robot("go2")
    clamp = TargetClamp(Contract.from_robot(go2), go2.hardware)
    q0 = np.array(go2.default_joint_pos)
    wanted = q0.copy()
    wanted[[0, 2]] += 0.1  # hip and calf of FR: kp 25 x 0.1 rad = 2.5 N·m, within both limits
    wanted[4] += 1.5  # FL thigh: 37.5 N·m, over its 23.7
    wanted[5] -= 1.0  # FL calf: -25 N·m, over a thigh's limit but within the calf's 45.43
    target, counts = clamp(wanted, q0, np.zeros(12), None)
    torque = clamp.kp * (target - q0)
    np.testing.assert_allclose(torque[[0, 2, 4, 5]], [2.5, 2.5, 23.7, -25.0])
    assert counts.torque == 1
    target, counts = clamp(q0 + 1.0, q0, np.zeros(12), previous=q0)
    np.testing.assert_allclose((target - q0)[:3], [0.602, 0.602, 0.314])  # 30.1 and 15.7 rad/s x 20 ms
    assert counts.rate == 12


def test_gains_never_exceed_the_hardware_caps():
    clamp = TargetClamp(replace(CONTRACT, kp=1e3, kd=1e3), ROBOT.hardware)
    assert clamp.kp == ROBOT.hardware["kp_max"] and clamp.kd == ROBOT.hardware["kd_max"]
    assert clamp.damping_kd == ROBOT.hardware["damping_kd"]
