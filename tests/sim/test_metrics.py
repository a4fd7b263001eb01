"""Tracking error and settle times (sim/metrics.py), the one computation behind `trot play` and the gate."""

import subprocess
import sys

import numpy as np
import pytest

from trot.sim.metrics import settle_times, settled, tracking_errors


def test_tracking_errors_are_mean_planar_speed_error_and_mean_yaw_rate_error():
    lin_vel = np.array([[0.2, 0.0], [0.5, 0.4], [0.2, -0.1]])
    yaw_rate = np.array([0.0, 0.3, -0.5])
    # Against (0.2, 0, 0.1): |(0, 0)| = 0, |(0.3, 0.4)| = 0.5, |(0, -0.1)| = 0.1; yaw 0.1, 0.2, 0.6.
    assert tracking_errors(lin_vel, yaw_rate, (0.2, 0.0, 0.1)) == pytest.approx((0.2, 0.3))
    per_sample = np.array([[0.2, 0.0, 0.1], [0.5, 0.4, 0.3], [0.2, 0.0, 0.1]])  # the second sample tracked
    assert tracking_errors(lin_vel, yaw_rate, per_sample) == pytest.approx((0.1 / 3, 0.7 / 3))


def test_settle_times_are_capped_at_half_the_run_and_half_the_shortest_segment():
    assert settle_times(2.0, 0.5, [0.0], 10.0) == (2.0, 0.5)
    assert settle_times(2.0, 0.5, [0.0], 3.0) == (1.5, 0.5)  # a 3 s run keeps its last 1.5 s
    assert settle_times(2.0, 0.5, [0.0, 2.0, 2.6, 8.0], 10.0) == (2.0, pytest.approx(0.3))  # 0.6 s segment


def test_settled_skips_the_settle_time_and_the_time_after_each_command_change():
    t = np.arange(1, 11) * 0.5  # 0.5 ... 5.0 s
    assert settled(t, 2.0).tolist() == [False] * 4 + [True] * 6
    start = np.where(t > 3.0, 3.0, 0.0)  # the command changes at 3 s
    assert settled(t, 2.0, start, 1.0).tolist() == [False] * 4 + [True, True, False, False, True, True]


def test_metrics_import_no_torch():
    code = "import sys, trot.sim.metrics; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
