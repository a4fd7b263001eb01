"""Every transition of the safety layer with its cause, time and log line as SAFETY.md writes them, each bound
checked on both sides of its exact value, the limits' validation, and the clamps' arithmetic.

Times and limits are binary fractions (a period of 0.125 s) so that "exactly at the bound" is exact in floats.
"""

import math
from dataclasses import replace

import numpy as np
import pytest

from trot.bundle import Contract
from trot.deploy.link import Sample, StatusFlags
from trot.deploy.safety import Mode, SafetyLimits, SafetyMachine, TargetClamp, smoothstep, tilt_deg
from trot.robots import load_robot

DT = 0.125
LIM = SafetyLimits(soft_start_s=0.5, fade_in_s=0.5, first_state_s=0.5, stale_periods=2, max_seq_gap=10,
                   link_errors_max=5, link_error_window_s=0.5, imu_stale_periods=2, imu_frozen_s=0.5,
                   estop_damping_s=0.5, shutdown_damping_s=0.5)  # fmt: skip
ROBOT = load_robot("pupper_v3")
UPRIGHT = (1.0, 0.0, 0.0, 0.0)


def state(t: float, seq: int, status: int = 0, quat=UPRIGHT, live: bool = True, joint_vel=None) -> Sample:
    """A State that arrived at t; `live`: the accelerometer's last bits move with seq (a working IMU)."""
    accel = np.array([0.0, 0.0, 9.81 + (1e-4 * (seq % 7) if live else 0.0)])
    qd = np.zeros(12) if joint_vel is None else np.asarray(joint_vel, dtype=float)
    return Sample(t, seq, 1000 * seq, np.array(ROBOT.default_joint_pos), qd, np.zeros(12), np.asarray(quat),
                  np.zeros(3), accel, status)  # fmt: skip


def lines(m: SafetyMachine, start: int = 0) -> list[tuple[float, str, str]]:
    return [(tr.t, tr.cause, tr.line) for tr in m.transitions[start:]]


def running(limits: SafetyLimits = LIM) -> tuple[SafetyMachine, float, int]:
    """A machine in RUNNING at t = 1.125 s, fed a State every period; (machine, time, seq)."""
    m = SafetyMachine(limits, DT)
    m.begin(0.0, "test link")
    m.connected(0.0)
    t, seq = 0.0, 0
    while m.state != Mode.RUNNING:
        t, seq = t + DT, seq + 1
        m.check_state(t, [state(t, seq)], 1)
        m.advance(t)
    assert t == 1.125
    return m, t, seq


def test_a_fresh_machine_is_in_init_and_not_faulted():
    m = SafetyMachine(LIM, DT)
    assert m.state == Mode.INIT and m.faulted is False and m.transitions == []
    assert m.advance(0.0) is None and m.progress(0.0) == 1.0


def test_happy_path_lines_and_the_exact_end_of_each_phase():
    m = SafetyMachine(LIM, DT)
    m.begin(0.0, "test link")
    m.advance(2.0)  # not connected yet: no first-State deadline runs
    m.connected(0.0)
    m.check_state(0.125, [state(0.125, 1)], -3)  # the first State's sequence step is not judged
    for t in (0.5, 0.625, 1.0, 1.125):  # 0.625 and 1.125: exactly soft_start_s and fade_in_s after entering
        assert m.progress(t) == (min(1.0, (t - 0.125) / 0.5) if t <= 0.625 else min(1.0, (t - 0.625) / 0.5))
        m.check_state(t, [state(t, int(8 * t))], 1)
        m.advance(t)
    assert m.progress(1.25) == 1.0  # RUNNING
    m.request_stop(1.25, "SIGTERM")
    m.advance(1.625)
    m.advance(1.75)
    assert lines(m) == [
        (0.0, "begin", "INIT -> HANDSHAKE: opening test link"),
        (0.125, "first_state", "HANDSHAKE -> SOFT_START: first State: moving to the default pose over 0.5 s"),
        (0.625, "soft_start_done", "SOFT_START -> FADE_IN: at the default pose; fading the policy in over 0.5 s"),
        (1.125, "fade_in_done", "FADE_IN -> RUNNING: policy fully in control"),
        (1.25, "stop", "RUNNING -> SHUTDOWN: SIGTERM: damping 0.5 s, then exit"),
        (1.75, "stop_done", "SHUTDOWN -> DONE: damped 0.5 s: exiting"),
    ]
    assert m.faulted is False and m.stop_reason == "SIGTERM"


def test_estop_then_off_then_a_stop_exits():
    m, t, _ = running()
    m.estop(t, "estop_host", "e-stop: SIGUSR1")
    assert m.request_stop(t + 0.25, "SIGINT (Ctrl-C)") is None  # the e-stop's damping runs to its end
    m.advance(t + 0.375)
    m.advance(t + 0.5)
    m.advance(t + 0.625)
    assert lines(m, 4) == [
        (1.125, "estop_host", "RUNNING -> ESTOP_DAMPING: e-stop: SIGUSR1: damping 0.5 s, then motors off"),
        (1.625, "estop_off", "ESTOP_DAMPING -> OFF: e-stop: damped 0.5 s, motors off (latched)"),
        (1.75, "stop", "OFF -> DONE: SIGINT (Ctrl-C): exiting"),
    ]
    assert m.faulted is True


def test_a_stop_in_off_or_init_exits_at_once_and_a_refusal_is_done():
    m, t, _ = running()
    m.estop(t, "estop_mcu", "microcontroller sent EStop (reason 1 BUTTON)")
    m.advance(t + 0.5)
    m.request_stop(t + 0.625, "operator")
    assert lines(m)[-1] == (1.75, "stop", "OFF -> DONE: operator: exiting")
    idle = SafetyMachine(LIM, DT)
    idle.request_stop(0.25, "SIGTERM")
    assert lines(idle) == [(0.25, "stop", "INIT -> DONE: SIGTERM: exiting")]
    refused = SafetyMachine(LIM, DT)
    refused.begin(0.0, "serial /dev/ttyACM0")
    refused.refuse(0.5, "no HelloAck within 3.0 s")
    assert lines(refused)[-1] == (0.5, "refused", "HANDSHAKE -> DONE: refused: no HelloAck within 3.0 s")
    assert refused.state == Mode.DONE


def test_no_state_after_the_handshake_damps_just_after_first_state_s():
    m = SafetyMachine(LIM, DT)
    m.begin(0.0, "test link")
    m.connected(0.125)
    assert m.advance(0.625) is None  # exactly first_state_s: not yet
    m.advance(0.75)
    assert lines(m)[-1] == (0.75, "no_state", "HANDSHAKE -> DAMPING: no State within 0.5 s of the handshake: damping")
    assert m.advance(5.0) is None  # faults latch


def test_stale_damps_just_after_the_bound():
    m, t, seq = running()
    assert m.check_state(t + 0.25, [], None) is None  # exactly stale_periods × control_dt: not yet
    m.check_state(t + 0.375, [], None)
    assert lines(m)[-1] == (1.5, "stale", "RUNNING -> DAMPING: state stale 375 ms > 250 ms: damping")


@pytest.mark.parametrize("lost, payload, expected", [
    ("read failed: [Errno 5] Input/output error", 0,
     (1.125, "link_lost", "RUNNING -> DAMPING: link lost (read failed: [Errno 5] Input/output error): damping")),
    (None, 2, (1.125, "payload", "RUNNING -> DAMPING: 2 frames with a valid CRC but a wrong type or size: the "
                                 "microcontroller speaks another protocol or joint count: damping")),
])  # fmt: skip
def test_link_lost_and_payload_errors_damp_at_once(lost, payload, expected):
    m, t, _ = running()
    m.check_link(t, lost, 0, payload)
    assert lines(m)[-1] == expected


def test_crc_burst_counts_errors_since_the_newest_record_a_window_old():
    m, t, _ = running()
    for dt, errors in ((0.0, 0), (0.25, 5)):
        assert m.check_link(t + dt, None, errors, 0) is None  # 5 in the window: not more than link_errors_max
    m.check_link(t + 0.75, None, 8, 0)  # the record at t + 0.25 is exactly a window old: the baseline, 3 since
    assert m.state == Mode.RUNNING
    m.check_link(t + 0.875, None, 11, 0)  # still the baseline: 6 since
    assert lines(m)[-1] == (2.0, "crc", "RUNNING -> DAMPING: 6 framing/CRC errors in 0.5 s > 5: damping")


@pytest.mark.parametrize("status, src, expected", [
    (StatusFlags.WATCHDOG_DAMPING | StatusFlags.LOW_VOLTAGE, "RUNNING",
     "RUNNING -> DAMPING: microcontroller reports WATCHDOG_DAMPING|LOW_VOLTAGE: damping"),
    (StatusFlags.MOTORS_OFF, "RUNNING", "RUNNING -> DAMPING: microcontroller reports MOTORS_OFF: damping"),
    (StatusFlags.MOTORS_OFF | StatusFlags.IMU_STALE, "HANDSHAKE",
     "HANDSHAKE -> DAMPING: microcontroller reports MOTORS_OFF after the handshake: no session (robot_id/contract "
     "refused, or motors unpowered): damping"),
    (StatusFlags.MOTOR_FAULT, "HANDSHAKE", "HANDSHAKE -> DAMPING: microcontroller reports MOTOR_FAULT: damping"),
])  # fmt: skip
def test_fault_flags_name_every_flag_set_and_hint_at_no_session(status, src, expected):
    if src == "RUNNING":
        m, t, seq = running()
    else:
        m, t, seq = SafetyMachine(LIM, DT), 0.125, 0
        m.begin(0.0, "test link")
        m.connected(0.0)
    m.check_state(t, [state(t, seq + 1, status)], 1)
    assert lines(m)[-1] == (t, "mcu_status", expected)


def test_estop_flag_in_a_state():
    m, t, seq = running()
    m.check_state(t, [state(t, seq + 1, StatusFlags.ESTOP)], 1)
    assert lines(m)[-1] == (t, "estop_mcu", "RUNNING -> ESTOP_DAMPING: microcontroller reports ESTOP: damping 0.5 s, "
                                            "then motors off")  # fmt: skip


def test_sequence_rules_and_their_bounds():
    m, t, seq = running()
    assert m.check_state(t, [state(t, seq + 11)], 11) is None  # 10 lost: max_seq_gap, not more
    assert m.check_state(t, [state(t, seq + 12)], None) is None  # a transport without sequence numbers
    m.check_state(t, [state(t, seq + 24)], 12)
    assert lines(m)[-1] == (t, "seq_gap", "RUNNING -> DAMPING: 11 State frames lost > 10: damping")
    m, t, seq = running()
    m.check_state(t, [state(t, seq - 5)], -5)
    assert lines(m)[-1] == (t, "seq_restart", "RUNNING -> DAMPING: State seq stepped by -5, expected 1: the "
                                              "microcontroller restarted or repeated a frame: damping")  # fmt: skip


def test_quaternion_norm_and_tilt_at_their_exact_bounds():
    m, t, seq = running()
    assert m.check_state(t, [state(t, seq + 1, quat=(0.5, 0.0, 0.0, 0.0))], 1) is None  # norm exactly 0.5
    m.check_state(t, [state(t, seq + 2, quat=(0.25, 0.0, 0.0, 0.0))], 1)
    assert lines(m)[-1] == (t, "imu_quat", "RUNNING -> DAMPING: IMU quaternion norm 0.25 < 0.5: damping")
    tilted = (math.sqrt(0.75), 0.5, 0.0, 0.0)  # rolled 60°
    m, t, seq = running(replace(LIM, max_tilt_deg=tilt_deg(tilted)))
    assert m.check_state(t, [state(t, seq + 1, quat=tilted)], 1) is None  # exactly at the threshold
    m, t, seq = running(replace(LIM, max_tilt_deg=59.5))
    m.check_state(t, [state(t, seq + 1, quat=tilted)], 1)
    assert lines(m)[-1] == (t, "fall", "RUNNING -> DAMPING: fall: tilt 60 deg > 60 deg: damping")


def test_imu_stale_flag_from_the_first_state_times_from_its_arrival():
    m = SafetyMachine(LIM, DT)
    m.begin(0.0, "test link")
    m.connected(0.0)
    m.check_state(0.125, [state(0.125, 1, StatusFlags.IMU_STALE)], 1)
    assert m.state == Mode.SOFT_START
    assert m.check_state(0.375, [state(0.375, 2, StatusFlags.IMU_STALE)], 1) is None  # 250 ms: not more than 2 periods
    m.check_state(0.5, [state(0.5, 3, StatusFlags.IMU_STALE)], 1)
    assert lines(m)[-1] == (0.5, "imu_stale", "SOFT_START -> DAMPING: microcontroller reports IMU_STALE for 375 ms > "
                                              "250 ms: damping")  # fmt: skip


def test_frozen_imu_times_from_the_first_state_with_those_readings():
    m, t, seq = running()
    for k in range(5):  # identical readings from t (k = 0) to t + 0.5 (k = 4): exactly imu_frozen_s, not more
        assert m.check_state(t + k * DT, [state(t + k * DT, seq + 1 + k, live=False)], 1) is None
    m.check_state(t + 0.625, [state(t + 0.625, seq + 6, live=False)], 1)
    assert lines(m)[-1] == (1.75, "imu_frozen", "RUNNING -> DAMPING: IMU readings unchanged for 625 ms > 500 ms: "
                                                "damping")  # fmt: skip


def test_inference_rules_at_their_exact_bounds():
    ok = np.zeros(4)
    m, t, _ = running()
    for inference_s in (0.125, 0.1875, 0.125, 0.25):  # at the budget; one slow; at the budget; exactly twice it
        assert m.check_policy(t, ok, ok, inference_s) is None
    m2, t2, _ = running()
    m2.check_policy(t2, ok, ok, 0.1875)
    m2.check_policy(t2, ok, ok, 0.1875)
    assert lines(m2)[-1] == (t2, "inference", "RUNNING -> DAMPING: inference 187.5 ms > 125.0 ms (the control "
                                              "period), 2 tick(s) in a row: damping")  # fmt: skip
    m3, t3, _ = running()
    m3.check_policy(t3, ok, ok, 0.375)
    assert lines(m3)[-1] == (t3, "inference", "RUNNING -> DAMPING: inference 375.0 ms > 125.0 ms (the control "
                                              "period), 1 tick(s) in a row: damping")  # fmt: skip


def test_two_slow_ticks_must_be_in_a_row():
    ok = np.zeros(4)
    m, t, _ = running()
    m.check_policy(t, ok, ok, 0.1875)
    m.check_policy(t, ok, ok, 0.0625)
    m.check_policy(t, ok, ok, 0.1875)
    assert m.state == Mode.RUNNING


def test_a_non_finite_action_is_named():
    m, t, _ = running()
    m.check_policy(t, np.zeros(4), np.array([0.0, 0.0, 0.0, np.nan]), 0.01)
    assert lines(m)[-1] == (t, "nonfinite", "RUNNING -> DAMPING: non-finite policy input/output: action[3] = nan: "
                                            "damping")  # fmt: skip


@pytest.mark.parametrize("field, value, message", [
    ("soft_start_s", -0.5, "SafetyLimits.soft_start_s=-0.5, expected >= 0"),
    ("imu_frozen_s", -1.0, "SafetyLimits.imu_frozen_s=-1.0, expected >= 0"),
    ("first_state_s", 0.0, "SafetyLimits.first_state_s=0.0, expected > 0"),
    ("link_error_window_s", -1.0, "SafetyLimits.link_error_window_s=-1.0, expected > 0"),
    ("max_tilt_deg", 180.0, "SafetyLimits.max_tilt_deg=180.0, expected in (0, 180)"),
    ("max_tilt_deg", 0.0, "SafetyLimits.max_tilt_deg=0.0, expected in (0, 180)"),
    ("max_inference_fraction", 0.0, "SafetyLimits.max_inference_fraction=0.0, expected > 0"),
    ("max_seq_gap", -1, "SafetyLimits.max_seq_gap and link_errors_max must be >= 0"),
    ("link_errors_max", -1, "SafetyLimits.max_seq_gap and link_errors_max must be >= 0"),
])  # fmt: skip
def test_each_limit_is_validated_naming_field_value_and_expectation(field, value, message):
    with pytest.raises(ValueError) as err:
        SafetyLimits(**{field: value})
    assert str(err.value) == message


def test_the_edges_of_each_limit_are_accepted():
    SafetyLimits(soft_start_s=0.0, fade_in_s=0.0, estop_damping_s=0.0, shutdown_damping_s=0.0, imu_frozen_s=0.0,
                 max_tilt_deg=0.5, max_seq_gap=0, link_errors_max=0)  # fmt: skip
    SafetyLimits(max_tilt_deg=179.5)


def test_smoothstep_and_tilt_of_hand_computed_cases():
    assert [smoothstep(x) for x in (-1.0, 0.0, 0.25, 0.5, 1.0, 1.5)] == [0.0, 0.0, 0.15625, 0.5, 1.0, 1.0]
    assert tilt_deg([1, 0, 0, 0]) == 0.0  # integers are fine
    assert tilt_deg([0.0, 0.6, 0.8, 0.0]) == pytest.approx(180.0)  # upside down about a slanted axis
    assert tilt_deg([math.sqrt(0.5), 0.0, math.sqrt(0.5), 0.0]) == pytest.approx(90.0)


# ---- clamps ---------------------------------------------------------------------------------------------

CONTRACT = Contract.from_robot(ROBOT)
HW = ROBOT.hardware


def test_clamp_limits_come_from_the_contract_less_the_margin():
    clamp = TargetClamp(CONTRACT, HW)
    margin = HW["soft_limit_margin"]
    np.testing.assert_array_equal(clamp.lower, np.array(CONTRACT.joint_lower) + margin)
    np.testing.assert_array_equal(clamp.upper, np.array(CONTRACT.joint_upper) - margin)
    np.testing.assert_array_equal(clamp.max_step, np.array(CONTRACT.velocity_limit) * CONTRACT.control_dt)
    np.testing.assert_array_equal(clamp.torque_limit, np.full(12, 3.0))  # pupper_v3: 3 N·m every joint
    np.testing.assert_array_equal(clamp.default, np.clip(CONTRACT.default_joint_pos, clamp.lower, clamp.upper))
    assert clamp.lower.dtype == clamp.upper.dtype == clamp.default.dtype == np.float64
    low = replace(CONTRACT, default_joint_pos=tuple(np.array(CONTRACT.joint_lower) - 1.0))
    np.testing.assert_array_equal(TargetClamp(low, HW).default, clamp.lower)  # a default outside is clipped in


def test_rate_clamp_holds_both_directions():
    clamp = TargetClamp(replace(CONTRACT, kp=1e-6, kd=0.0), HW)
    q = np.array(CONTRACT.default_joint_pos)
    step = np.array(CONTRACT.velocity_limit) * CONTRACT.control_dt
    target, counts = clamp(q - 1.0, q, np.zeros(12), previous=q + 0.1)
    np.testing.assert_allclose(target, np.clip(q + 0.1 - step, clamp.lower, clamp.upper))
    assert counts.rate == 12


def test_torque_clamp_with_velocity_in_both_directions_and_a_small_kp():
    q = np.array(CONTRACT.default_joint_pos)
    qd = np.zeros(12)
    qd[0], qd[1] = 2.0, -2.0
    for kp, kd in ((5.0, 0.25), (0.5, 0.25)):
        clamp = TargetClamp(replace(CONTRACT, kp=kp, kd=kd), HW)
        wanted = q.copy()
        wanted[0] += 40.0  # far above: + torque_limit
        wanted[1] -= 40.0  # far below: - torque_limit
        target, counts = clamp(wanted, q, qd, None)
        # target = q + (±3 + kd qd) / kp, then the position limits
        expected = q.copy()
        expected[0] = q[0] + (3.0 + kd * 2.0) / kp
        expected[1] = q[1] + (-3.0 - kd * 2.0) / kp
        np.testing.assert_allclose(target, np.clip(expected, clamp.lower, clamp.upper), err_msg=f"kp {kp}")
        assert counts.torque == 2


def test_no_torque_clamp_on_a_non_finite_reading():
    clamp = TargetClamp(CONTRACT, HW)
    q = np.array(CONTRACT.default_joint_pos)
    wanted = q + 0.05
    for pos, vel in ((np.where(np.arange(12) == 3, np.nan, q), np.zeros(12)), (q, np.full(12, np.inf))):
        target, counts = clamp(wanted, pos, vel, None)
        assert np.all(np.isfinite(target)) and counts.torque == 0
        np.testing.assert_allclose(target, wanted)


def test_upside_down_with_rounding_past_minus_one_is_180_degrees_not_a_math_error():
    q = [0.0, -0.535669373161111, 0.36159505490948474, 0.0]  # normalized, 1 - 2(x² + y²) rounds to -1 - 4e-16
    assert tilt_deg(q) == 180.0


def test_ages_and_bounds_in_the_lines_are_whole_milliseconds():
    limits = replace(LIM, stale_periods=8, imu_stale_periods=8, imu_frozen_s=1.0)  # bounds of 1 s
    m, t, seq = running(limits)
    m.check_state(t + 2.0, [], None)
    assert lines(m)[-1][2] == "RUNNING -> DAMPING: state stale 2000 ms > 1000 ms: damping"
    m, t, seq = running(limits)
    for k in range(18):  # IMU_STALE from t + 0.125 on, each State fresh: 2 s flagged at the last
        m.check_state(t + 0.125 * (k + 1), [state(t + 0.125 * (k + 1), seq + 1 + k, StatusFlags.IMU_STALE)], 1)
    assert lines(m)[-1][2] == "RUNNING -> DAMPING: microcontroller reports IMU_STALE for 1125 ms > 1000 ms: damping"
    m, t, seq = running(replace(limits, imu_stale_periods=100))
    for k in range(18):
        m.check_state(t + 0.125 * k, [state(t + 0.125 * k, seq + 1 + k, live=False)], 1)
    assert lines(m)[-1][2] == "RUNNING -> DAMPING: IMU readings unchanged for 1125 ms > 1000 ms: damping"


def test_torque_clamp_counts_the_damping_term_and_is_off_without_a_position_gain():
    q = np.array(CONTRACT.default_joint_pos)
    clamp = TargetClamp(replace(CONTRACT, kp=5.0, kd=0.25), HW)
    qd = np.zeros(12)
    qd[0] = -4.0  # kp·0.5 = 2.5 N·m, and − kd·qd = +1 N·m: 3.5 > 3
    wanted = q.copy()
    wanted[0] += 0.5
    target, counts = clamp(wanted, q, qd, None)
    assert counts.torque == 1 and target[0] == pytest.approx(q[0] + (3.0 - 1.0) / 5.0)
    no_kp = TargetClamp(CONTRACT, {**HW, "kp_max": 0.0})
    target, counts = no_kp(q + 0.05, q, np.full(12, 20.0), None)  # kd·qd alone is past the torque limit
    assert no_kp.kp == 0.0 and counts.torque == 0 and np.all(np.isfinite(target))


def test_a_default_pose_above_the_limits_is_clipped_to_the_upper_limit():
    high = replace(CONTRACT, default_joint_pos=tuple(np.array(CONTRACT.joint_upper) + 1.0))
    clamp = TargetClamp(high, HW)
    np.testing.assert_array_equal(clamp.default, clamp.upper)
