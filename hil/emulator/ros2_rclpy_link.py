"""The emulator's ROS 2 link through rclpy: the same robot (`ros2_link.Ros2Link`) with its topics on the ROS 2
middleware rclpy runs (Fast DDS by default, as on a stock Pupper v3), so that trot's raw DDS path and its rclpy path
are both tested against a robot on the other one.

Only the middleware differs: an `RclpyNode` (spun by its own thread) whose subscriptions fill one inbox per reader,
and publishers behind the `write` the shared code calls.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any

from trot.hil.emulator.ros2_link import Ros2Link

INBOX_DEPTH = 64  # the newest messages kept per topic between two physics steps


@dataclass
class _Writer:
    """An rclpy publisher behind the `write(msg)` of a Cyclone DDS writer."""

    publisher: Any

    def write(self, msg: Any) -> None:
        self.publisher.publish(msg)


class RclpyRos2Link(Ros2Link):
    """Imu and JointState out, joint commands, gains and the e-stop in, through one rclpy node."""

    def _connect(self) -> None:
        from trot.deploy.ros2.rclpy_msgs import rclpy_message_types
        from trot.deploy.ros2.rclpy_node import RclpyNode

        T = self._types = rclpy_message_types()
        node = self._node = RclpyNode("trot_emulator", self.ros2.topics, self.ros2.domain_id)
        command = self.ros2.command_topic
        self._writers = {
            "imu": _Writer(node.publisher("imu", T.Imu)),
            "joint_states": _Writer(node.publisher("joint_states", T.JointState)),
            "estop": _Writer(node.publisher("estop", T.Bool)),
        }
        readers = {"command": (command, T.JointState if command == "joint_targets" else T.Float64MultiArray),
                   "joint_gains": ("joint_gains", T.Float64MultiArray)}  # fmt: skip
        if self.ros2.listen_estop:
            readers["estop"] = ("estop", T.Bool)
        self._inbox = {reader: deque(maxlen=INBOX_DEPTH) for reader in readers}
        self._readers = {}
        for reader, (topic, msg_type) in readers.items():
            self._readers[reader] = node.subscribe(topic, msg_type, self._inbox[reader].append)
        node.start()

    def _take(self, reader: str) -> list:
        # deque's append (the executor thread) and popleft (here) are thread-safe: nothing lost in between.
        inbox, messages = self._inbox[reader], []
        while inbox:
            messages.append(inbox.popleft())
        return messages
