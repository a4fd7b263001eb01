"""One rclpy node for the rclpy path of the ROS 2 transport and of the emulator: the counterpart of `dds.DdsNode`.

The node lives in an rclpy context of its own (so it never touches a context the embedding program made) and is
spun by an executor thread: subscription callbacks run on that thread, as they arrive. rclpy's own SIGINT handling
is off, so the program's handlers (the deploy loop damps, then exits) keep Ctrl-C. Imports rclpy only when a node
is made; `import_problem` says whether it can be.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from trot.deploy.ros2.topics import QosProfile, Ros2Topics, domain_id_from_env


def import_problem() -> str | None:
    """None when rclpy and the message packages trot uses import here; else why not, for people (an ROS 2 install
    that is not sourced, or wheels whose libraries are not on the loader path)."""
    try:
        import rclpy  # noqa: F401

        from trot.deploy.ros2.rclpy_msgs import rclpy_message_types

        rclpy_message_types()
    except Exception as e:  # ImportError, or OSError from a C extension's libraries: rclpy is not usable
        return f"{type(e).__name__}: {e}"
    return None


def rclpy_qos(profile: QosProfile):
    """The rclpy QoSProfile of a profile (keep-last history)."""
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=profile.depth,
        reliability=ReliabilityPolicy.RELIABLE if profile.reliability == "reliable" else ReliabilityPolicy.BEST_EFFORT,
        durability=(
            DurabilityPolicy.TRANSIENT_LOCAL if profile.durability == "transient_local" else DurabilityPolicy.VOLATILE
        ),
    )


class RclpyNode:
    """An rclpy node with subscriptions and publishers on the transport's topics, by field name of `Ros2Topics`
    (`node.subscribe("imu", Imu, callback)`), each with that topic's name and QoS; `start()` spins it."""

    def __init__(self, name: str, topics: Ros2Topics | None = None, domain_id: int | None = None):
        import rclpy
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.signals import SignalHandlerOptions

        self.topics = topics or Ros2Topics()
        self.domain_id = domain_id_from_env() if domain_id is None else domain_id
        self._context = rclpy.Context()
        rclpy.init(context=self._context, domain_id=self.domain_id, signal_handler_options=SignalHandlerOptions.NO)
        try:
            self.node = rclpy.create_node(name, context=self._context)
            self._executor = SingleThreadedExecutor(context=self._context)
            self._executor.add_node(self.node)
        except Exception:
            rclpy.shutdown(context=self._context)
            raise
        self._spin: threading.Thread | None = None

    def subscribe(self, topic: str, msg_type: type, callback: Callable[[Any], None]) -> Any:
        """A subscription to a `Ros2Topics` field, with its QoS; `callback(msg)` runs on the executor thread."""
        qos = rclpy_qos(self.topics.qos(topic))

        def on_message(msg: Any) -> None:  # rclpy inspects a callback's signature: builtins (deque.append) have none
            callback(msg)

        return self.node.create_subscription(msg_type, self.topics.ros_name(topic), on_message, qos)

    def publisher(self, topic: str, msg_type: type) -> Any:
        """A publisher on a `Ros2Topics` field, with its QoS."""
        return self.node.create_publisher(msg_type, self.topics.ros_name(topic), rclpy_qos(self.topics.qos(topic)))

    def start(self) -> None:
        """Spin the node on a thread of its own."""
        self._spin = threading.Thread(target=self._executor.spin, name="trot-rclpy", daemon=True)
        self._spin.start()

    def close(self) -> None:
        """Stop spinning, destroy the node and shut its context down."""
        import rclpy

        self._executor.shutdown()
        self.node.destroy_node()
        rclpy.shutdown(context=self._context)
        if self._spin is not None:
            self._spin.join(timeout=1.0)
