"""`trot watchdog`'s logic on a clock it is handed, its damping gains, and its command line."""

from __future__ import annotations

import numpy as np
import pytest

from trot.cli import build_parser
from trot.deploy.watchdog import DAMPING_REPEAT_S, DAMPING_REPEATS, Watchdog, damping_gains, run_watchdog
from trot.robots import load_robot


def test_not_armed_before_the_first_command():
    dog = Watchdog(timeout_s=0.1)
    assert not any(dog.due(t) for t in (0.0, 1.0, 100.0)) and dog.trips == 0


def test_damps_once_the_silence_exceeds_the_timeout_three_times_then_stays_quiet():
    dog = Watchdog(timeout_s=0.1)
    dog.heard(0.0)
    assert not dog.due(0.05) and not dog.due(0.1)  # exactly the timeout is not yet beyond it
    assert dog.due(0.1001) and dog.trips == 1
    assert (DAMPING_REPEATS, DAMPING_REPEAT_S) == (3, 0.02)
    assert not dog.due(0.11) and dog.due(0.1202) and not dog.due(0.13) and dog.due(0.1402)
    assert not any(dog.due(t) for t in (0.2, 2.0, 50.0)) and dog.sent == 3 and dog.trips == 1


def test_commands_resuming_rearm_it():
    dog = Watchdog(timeout_s=0.1)
    dog.heard(0.0)
    assert dog.due(0.2)
    assert dog.heard(0.3) is True  # it ends a silence that was damped
    assert dog.heard(0.31) is False
    assert not dog.due(0.4) and dog.due(0.42) and dog.trips == 2


def test_damping_is_kp_zero_and_the_contracts_damping_kd_not_the_policys_kd():
    robot = load_robot("pupper_v3")
    kp, kd = damping_gains(robot)
    np.testing.assert_array_equal(kp, np.zeros(12))
    np.testing.assert_array_equal(kd, np.full(12, 0.1))
    assert robot.kd == 0.25


@pytest.mark.parametrize("argv, message", [
    (["--robot", "nobot"], "robot 'nobot': no robot.toml"),
    (["--robot", "pupper_v3", "--timeout_ms", "0"], "--timeout_ms 0.0 and --check_ms 10.0: expected both > 0"),
    (["--robot", "pupper_v3", "--ros_profile", "/nowhere.toml"], "/nowhere.toml: field '<file>'"),
])  # fmt: skip
def test_a_bad_command_line_is_refused_saying_why(argv, message, capsys):
    assert run_watchdog(build_parser().parse_args(["watchdog", *argv])) == 2
    assert message in capsys.readouterr().err
