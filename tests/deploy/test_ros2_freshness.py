"""What counts as a fresh sensor message over ROS 2 (deploy/ROS2.md, "What counts as a fresh sensor message"): a
message is news only if its header stamp is newer than the newest accepted one on its topic, or it is unstamped
(stamp 0). A repeated or older stamp is counted (`<kind> repeated`) and changes nothing: not the values the loop
sees, not the State's receive time, so a driver that repeats itself goes stale in the loop.

The transport runs with its middleware replaced by the test: messages go in through `_on_message`, the hook the DDS
reader thread and the rclpy executor call as each message arrives, so every case is exact. (The wire and the loop's
reaction: tests/hil/test_hil_ros2.py, the frozen-IMU test.)
"""

from __future__ import annotations

import pytest

pytest.importorskip("cyclonedds")

from trot.deploy.ros2 import convert  # noqa: E402
from trot.deploy.ros2.msgs import IDL_TYPES as T  # noqa: E402
from trot.deploy.ros2.transport import Ros2Transport  # noqa: E402

JOINTS = ["hip", "knee"]


class InjectedTransport(Ros2Transport):
    """The ROS 2 transport with no middleware: the test delivers each message, at an arrival time it chooses."""

    def _connect(self) -> None:
        self.types = T

    def _publish(self, topic, msg) -> None:
        pass

    def _disconnect(self) -> None:
        pass

    def deliver(self, topic: str, msg, arrived: float) -> None:
        with self._inbox_lock:
            self._inbox[topic].append((arrived, msg))


def imu(gyro_x: float, stamp: float):
    return convert.arrays_to_imu(T, [1, 0, 0, 0], [gyro_x, 0, 0], [0, 0, 9.81], stamp=stamp)


def joints(position: float, stamp: float):
    return convert.arrays_to_joint_state(T, JOINTS, [position, -position], stamp=stamp)


@pytest.fixture
def link():
    link = InjectedTransport(JOINTS)
    link.deliver("imu", imu(1.0, 500.0), arrived=10.0)
    link.deliver("joint_states", joints(0.1, 500.0), arrived=10.0)
    link.open(0.1)
    link.poll()  # the State open() built
    yield link
    link.close()


def test_a_repeated_or_older_imu_stamp_is_no_news_and_the_state_keeps_ageing(link):
    # The IMU driver repeats its stamp with new values, then sends an older stamp; the joints stay fresh.
    link.deliver("imu", imu(2.0, 500.0), arrived=10.01)
    link.deliver("joint_states", joints(0.2, 500.01), arrived=10.01)
    link.deliver("imu", imu(3.0, 499.0), arrived=10.02)
    link.deliver("joint_states", joints(0.3, 500.02), arrived=10.02)
    poll = link.poll()
    assert poll.frames == {"Imu repeated": 2, "JointState": 2}
    assert [s.joint_pos[0] for s in poll.samples] == [0.2, 0.3]  # the joints are news
    assert [s.gyro[0] for s in poll.samples] == [1.0, 1.0]  # the repeats' values never got in
    assert [s.rx_time for s in poll.samples] == [10.0, 10.0]  # the State is as old as the last fresh Imu

    # A newer stamp is news again: its values, and the State's receive time moves on.
    link.deliver("imu", imu(4.0, 500.03), arrived=10.03)
    poll = link.poll()
    assert poll.frames == {"Imu": 1}
    assert [(s.gyro[0], s.rx_time) for s in poll.samples] == [(4.0, 10.02)]  # now the older topic is JointState


def test_a_repeated_joint_state_stamp_is_no_news_either(link):
    link.deliver("joint_states", joints(0.5, 500.0), arrived=10.01)  # same stamp as the accepted one
    link.deliver("imu", imu(2.0, 500.01), arrived=10.02)
    poll = link.poll()
    assert poll.frames == {"JointState repeated": 1, "Imu": 1}
    assert [(s.joint_pos[0], s.gyro[0], s.rx_time) for s in poll.samples] == [(0.1, 2.0, 10.0)]


def test_an_unstamped_publisher_is_always_news():
    link = InjectedTransport(JOINTS)
    link.deliver("imu", imu(1.0, 0.0), arrived=10.0)
    link.deliver("joint_states", joints(0.1, 0.0), arrived=10.0)
    link.open(0.1)
    link.poll()
    link.deliver("imu", imu(2.0, 0.0), arrived=10.01)
    link.deliver("imu", imu(3.0, 0.0), arrived=10.02)
    poll = link.poll()
    link.close()
    assert poll.frames == {"Imu": 2}
    assert [(s.gyro[0], s.rx_time) for s in poll.samples] == [(2.0, 10.0), (3.0, 10.0)]  # JointState is older
