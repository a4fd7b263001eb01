"""hil_timing.contention: which unexpected faults of a HIL run are put down to the machine (and rerun), and which
stay failures. Synthetic telemetry: the rule reads only transitions and tick records."""

from __future__ import annotations

from types import SimpleNamespace

import hil_timing

PERIOD_S, STALE_PERIODS = 0.02, 3.0
STILL = {"imu_quat": [1.0, 0.0, 0.0, 0.0], "gyro": [0.0, 0.0, 0.0], "accel": [0.0, 0.0, 9.81]}


def telemetry(ticks: list[dict], cause: str, src: str) -> SimpleNamespace:
    fault = {"kind": "transition", "src": src, "dst": "DAMPING", "cause": cause, "tick": len(ticks) - 1}
    return SimpleNamespace(ticks=ticks, transitions=[fault])


def why(tel) -> str | None:
    return hil_timing.contention(tel, None, PERIOD_S, STALE_PERIODS)


def test_a_frozen_imu_since_the_first_state_is_the_held_emulated_robot():
    """The emulator holds its robot still until the loop's first command arrives; a late command leaves its IMU
    bit-identical from the first State on: put down to the machine."""
    tel = telemetry([{"mode": "HANDSHAKE"}] + [dict(STILL) for _ in range(14)], "imu_frozen", "SOFT_START")
    assert "held waiting for the loop's first command" in why(tel)


def test_an_imu_that_moved_then_froze_is_a_stuck_sensor():
    moving = [dict(STILL, gyro=[0.01 * k, 0.0, 0.0]) for k in range(5)]
    tel = telemetry(moving + [dict(moving[-1]) for _ in range(14)], "imu_frozen", "SOFT_START")
    assert why(tel) is None


def test_a_frozen_imu_while_running_is_a_stuck_sensor():
    tel = telemetry([dict(STILL) for _ in range(14)], "imu_frozen", "RUNNING")
    assert why(tel) is None


def test_an_inference_fault_is_the_machines_only_when_its_cpu_time_fits_the_period():
    waited = telemetry([{"inference_ms": 31.0, "inference_cpu_ms": 1.0}], "inference", "FADE_IN")
    assert "waiting for a CPU" in why(waited)
    slow = telemetry([{"inference_ms": 31.0, "inference_cpu_ms": 29.0}], "inference", "FADE_IN")
    assert why(slow) is None


def test_only_a_handshake_refusal_beside_fast_dds_type_lookup_error_is_rerun():
    logged = "[TYPELOOKUP_SERVICE_REPLY_LISTENER Error] Error registering remote type: Inconsistent TypeObject"
    refused = "deploy: refused: no Imu on /ns/imu/data within 3.0 s"
    assert "type lookup" in hil_timing.fast_dds_type_lookup(f"{logged}\n{refused}")
    assert hil_timing.fast_dds_type_lookup(refused) is None  # no Fast DDS error: trot's own refusal
    assert hil_timing.fast_dds_type_lookup(f"{logged}\ndeploy: RUNNING -> DAMPING: state stale") is None
    assert hil_timing.fast_dds_type_lookup(None) is None


def test_a_robot_watchdog_trip_without_a_loop_fault_is_the_machines_only_if_the_loop_was_on_time():
    """A walk that sagged with no fault of the loop's: the emulated robot's watchdog damped it. Rerun when the loop
    sent every command on time (the lateness was on the emulator's side of the test process); not when it did not."""
    tripped = SimpleNamespace(watchdog_trips=1, max_late_ms=44.0)
    on_time = SimpleNamespace(ticks=[], transitions=[], summary={"own_overrun_pct": 0.0})
    late = SimpleNamespace(ticks=[], transitions=[], summary={"own_overrun_pct": 0.4})
    assert "watchdog tripped" in hil_timing.contention(on_time, tripped, PERIOD_S, STALE_PERIODS)
    assert hil_timing.contention(late, tripped, PERIOD_S, STALE_PERIODS) is None
    assert hil_timing.contention(on_time, SimpleNamespace(watchdog_trips=0), PERIOD_S, STALE_PERIODS) is None
