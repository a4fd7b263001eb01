"""The emulator's ROS 2 link through rclpy: the middleware of `ros2_link.Ros2Link` with `backend="rclpy"`, the same
robot with its topics on the ROS 2 middleware rclpy runs (Fast DDS by default, as on a stock Pupper v3), so that
trot's raw DDS path and its rclpy path are both tested against a robot on the other one.

Only the middleware differs: an `RclpyNode` (spun by its own thread) whose subscriptions fill one inbox per reader,
and publishers behind the `write` the link's shared code calls. This module does not import `ros2_link`.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

INBOX_DEPTH = 64  # the newest messages kept per topic between two physics steps


@dataclass
class _Writer:
    """An rclpy publisher behind the `write(msg)` of a Cyclone DDS writer."""

    publisher: Any

    def write(self, msg: Any) -> None:
        self.publisher.publish(msg)


def connect_rclpy(link) -> Callable[[str], list]:
    """Join the ROS 2 graph for a `Ros2Link` through one rclpy node: set its `_types`, `_node`, `_writers` and
    `_readers`; return its `take(reader)`, the messages that arrived on that reader since the last take."""
    from trot.deploy.ros2.rclpy_msgs import rclpy_message_types
    from trot.deploy.ros2.rclpy_node import RclpyNode

    T = link._types = rclpy_message_types()
    node = link._node = RclpyNode("trot_emulator", link.ros2.topics, link.ros2.domain_id)
    command = link.ros2.command_topic
    link._writers = {
        "imu": _Writer(node.publisher("imu", T.Imu)),
        "joint_states": _Writer(node.publisher("joint_states", T.JointState)),
        "estop": _Writer(node.publisher("estop", T.Bool)),
    }
    readers = {"command": (command, T.JointState if command == "joint_targets" else T.Float64MultiArray),
               "joint_gains": ("joint_gains", T.Float64MultiArray)}  # fmt: skip
    if link.ros2.listen_estop:
        readers["estop"] = ("estop", T.Bool)
    inboxes = {reader: deque(maxlen=INBOX_DEPTH) for reader in readers}
    link._readers = {reader: node.subscribe(topic, cls, inboxes[reader].append)
                     for reader, (topic, cls) in readers.items()}  # fmt: skip
    node.start()

    def take(reader: str) -> list:
        # deque's append (the executor thread) and popleft (here) are thread-safe: nothing lost in between.
        inbox, messages = inboxes[reader], []
        while inbox:
            messages.append(inbox.popleft())
        return messages

    return take
