"""Topic names, QoS profiles and frame ids of the ROS 2 transport, with ROS-conventional defaults.

Plain data, no middleware import: the rclpy path and the raw Cyclone DDS path read the same
`Ros2Topics`. Names are ROS names (relative ones are resolved against `namespace`); the raw DDS
path adds ROS 2's `rt/` prefix (`dds_name`), which is what `rmw_cyclonedds_cpp` puts on the wire.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Literal

# ROS 2 name tokens: letters, digits and underscores, not starting with a digit, joined by "/".
_TOKEN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
DDS_TOPIC_PREFIX = "rt"
# A service is two DDS topics: rq<service>Request and rr<service>Reply (rmw_cyclonedds_cpp and rmw_fastrtps_cpp alike).
DDS_SERVICE_REQUEST, DDS_SERVICE_REPLY = "rq", "rr"


@dataclass(frozen=True)
class QosProfile:
    """The QoS policies that decide whether two ROS 2 endpoints match (reliability, durability) and
    how many samples a reader or writer keeps (`depth`, keep-last history)."""

    reliability: Literal["reliable", "best_effort"]
    durability: Literal["volatile", "transient_local"]
    depth: int

    def __post_init__(self):
        if self.reliability not in ("reliable", "best_effort"):
            raise ValueError(
                f"QosProfile.reliability = {self.reliability!r}; expected reliable or best_effort"
            )
        if self.durability not in ("volatile", "transient_local"):
            raise ValueError(
                f"QosProfile.durability = {self.durability!r}; expected volatile or transient_local"
            )
        if not (isinstance(self.depth, int) and self.depth >= 1):
            raise ValueError(f"QosProfile.depth = {self.depth!r}; expected an integer >= 1")


# Sensor streams: the newest sample is all the loop wants, and a late one is worse than a lost one
# (rclcpp's SensorDataQoS, with a history of one). A best-effort reader matches any writer.
SENSOR_QOS = QosProfile("best_effort", "volatile", 1)
# Commands: delivered or retransmitted, never queued behind stale ones (a reliable writer matches
# both reliable and best-effort readers, so ros2_control's default subscription accepts it).
COMMAND_QOS = QosProfile("reliable", "volatile", 1)
# Latched state: a late joiner still gets the last value (an e-stop asserted before the robot
# started, the gains in force). A transient-local reader only matches transient-local writers.
LATCHED_QOS = QosProfile("reliable", "transient_local", 1)
# diagnostic_msgs consumers (diagnostic_aggregator, rqt_robot_monitor) subscribe with ROS defaults.
DIAGNOSTICS_QOS = QosProfile("reliable", "volatile", 10)
# A robot's own e-stop announcement (the Pupper's gamepad: std_msgs/Empty, published volatile with depth 10): a
# transient-local reader would not match its volatile writer.
ROBOT_ESTOP_QOS = QosProfile("reliable", "volatile", 10)

# Topics a robot's ROS 2 profile (`profile.py`) may add; "" (the default) means the robot has none.
OPTIONAL_TOPIC_FIELDS = ("kp_commands", "kd_commands", "robot_estop")

TOPIC_FIELDS = (
    "imu",
    "joint_states",
    "cmd_vel",
    "estop",
    "joint_commands",
    "joint_targets",
    "joint_gains",
    "diagnostics",
    *OPTIONAL_TOPIC_FIELDS,
)


@dataclass(frozen=True)
class Ros2Topics:
    """Every topic of the transport: its name, its QoS (`<topic>_qos`) and the frame ids stamped
    on what the robot publishes. Override fields by name."""

    namespace: str = ""
    # subscribed
    imu: str = "imu/data"  # sensor_msgs/Imu
    joint_states: str = "joint_states"  # sensor_msgs/JointState
    cmd_vel: str = "cmd_vel"  # geometry_msgs/Twist
    estop: str = "estop"  # std_msgs/Bool, true = stop
    # published
    joint_commands: str = "forward_position_controller/commands"  # std_msgs/Float64MultiArray
    joint_targets: str = "joint_targets"  # sensor_msgs/JointState (position targets)
    joint_gains: str = "joint_gains"  # std_msgs/Float64MultiArray (2 x joints: kp row, kd row)
    diagnostics: str = "diagnostics"  # diagnostic_msgs/DiagnosticArray
    # a robot's profile: the gains as forward command controllers take them, its own e-stop ("": none)
    kp_commands: str = ""  # std_msgs/Float64MultiArray, kp per joint (published)
    kd_commands: str = ""  # std_msgs/Float64MultiArray, kd per joint (published)
    robot_estop: str = ""  # std_msgs/Empty, the robot's e-stop (subscribed, and published on a host e-stop)

    imu_qos: QosProfile = SENSOR_QOS
    joint_states_qos: QosProfile = SENSOR_QOS
    cmd_vel_qos: QosProfile = COMMAND_QOS
    estop_qos: QosProfile = LATCHED_QOS
    joint_commands_qos: QosProfile = COMMAND_QOS
    joint_targets_qos: QosProfile = COMMAND_QOS
    joint_gains_qos: QosProfile = LATCHED_QOS
    diagnostics_qos: QosProfile = DIAGNOSTICS_QOS
    kp_commands_qos: QosProfile = COMMAND_QOS
    kd_commands_qos: QosProfile = COMMAND_QOS
    robot_estop_qos: QosProfile = ROBOT_ESTOP_QOS

    # REP 103/105 style frame ids; JointState headers conventionally carry an empty frame id.
    imu_frame_id: str = "imu_link"
    joint_frame_id: str = ""

    def __post_init__(self):
        if self.namespace:
            _check_name("namespace", self.namespace)
        for topic in TOPIC_FIELDS:
            if topic in OPTIONAL_TOPIC_FIELDS and getattr(self, topic) == "":
                continue
            _check_name(topic, getattr(self, topic))

    def has(self, topic: str) -> bool:
        """Whether a topic field is in use (the optional ones are "" when the robot has no such topic)."""
        return getattr(self, _topic_field(topic)) != ""

    def ros_name(self, topic: str) -> str:
        """The fully qualified ROS name of a topic field, e.g. `ros_name("imu")` -> `/imu/data`."""
        return resolve_name(getattr(self, _topic_field(topic)), self.namespace)

    def dds_name(self, topic: str) -> str:
        """The DDS topic name ROS 2 uses on the wire, e.g. `dds_name("imu")` -> `rt/imu/data`."""
        return DDS_TOPIC_PREFIX + self.ros_name(topic)

    def qos(self, topic: str) -> QosProfile:
        """The QoS profile of a topic field."""
        return getattr(self, _topic_field(topic) + "_qos")


def resolve_name(name: str, namespace: str = "") -> str:
    """The fully qualified ROS name of `name`: itself when absolute, else under `namespace` (none: under "/")."""
    if name.startswith("/"):
        return name
    namespace = namespace.strip("/")
    return f"/{namespace}/{name}" if namespace else f"/{name}"


def check_name(what: str, name: str) -> None:
    """ValueError naming `what` unless `name` is a ROS name (tokens of letters, digits and '_', joined by '/')."""
    _check_name(what, name)


def _topic_field(topic: str) -> str:
    if topic not in TOPIC_FIELDS:
        raise ValueError(f"unknown topic {topic!r}; expected one of {', '.join(TOPIC_FIELDS)}")
    return topic


def _check_name(field: str, name: str) -> None:
    tokens = name.strip("/").split("/") if isinstance(name, str) else []
    if not tokens or not all(_TOKEN.fullmatch(token) for token in tokens) or "//" in name:
        raise ValueError(
            f"Ros2Topics.{field} = {name!r}; expected a ROS name: tokens of letters, digits and '_' "
            "(not starting with a digit) separated by '/', e.g. 'imu/data' or '/robot/imu/data'"
        )
    if name.endswith("/"):
        raise ValueError(f"Ros2Topics.{field} = {name!r}; expected no trailing '/'")


def domain_id_from_env() -> int:
    """`ROS_DOMAIN_ID` as ROS 2 reads it, 0 when unset."""
    value = os.environ.get("ROS_DOMAIN_ID", "").strip()
    if not value:
        return 0
    if not value.isdigit() or not 0 <= int(value) <= 232:
        raise ValueError(f"ROS_DOMAIN_ID = {value!r}; expected an integer in 0..232")
    return int(value)
