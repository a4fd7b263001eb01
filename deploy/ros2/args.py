"""Command-line flags shared by `trot deploy --transport ros2` and `trot emulate --transport ros2`.

argparse and `topics` only (no middleware, no numpy), so that building the CLI's parser stays light.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import replace

from trot.deploy.ros2.topics import TOPIC_FIELDS, QosProfile, Ros2Topics

# Ros2Topics fields a `--ros_topic FIELD=VALUE` may set: topic names and frame ids.
NAME_FIELDS = (*TOPIC_FIELDS, "imu_frame_id", "joint_frame_id")


def add_ros2_args(p: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """The flags that say which ROS 2 graph to join: namespace, domain, topic names, frame ids, QoS."""
    p.add_argument(
        "--ros_namespace", default="", metavar="NS", help="namespace of the relative topic names (default: none)"
    )
    p.add_argument(
        "--domain_id", type=int, default=None, metavar="N", help="ROS 2 domain (default: $ROS_DOMAIN_ID, else 0)"
    )
    p.add_argument(
        "--ros_topic",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help=f"override a topic name or frame id, repeatable; FIELD one of {', '.join(NAME_FIELDS)} "
        "(e.g. imu=/pupper/imu/data)",
    )
    p.add_argument(
        "--ros_qos",
        action="append",
        default=[],
        metavar="TOPIC=RELIABILITY,DURABILITY,DEPTH",
        help="override a topic's QoS, repeatable (e.g. cmd_vel=best_effort,volatile,1); see deploy/ROS2.md",
    )


def topics_from_args(
    namespace: str, topic_overrides: Sequence[str] = (), qos_overrides: Sequence[str] = ()
) -> Ros2Topics:
    """A `Ros2Topics` with the defaults, `namespace` and `FIELD=VALUE` overrides; ValueError naming a bad one."""
    changes: dict = {}
    for item in topic_overrides:
        field, value = _split(item, "--ros_topic", "FIELD=VALUE")
        if field not in NAME_FIELDS:
            raise ValueError(f"--ros_topic {item!r}: unknown field {field!r}; expected one of {', '.join(NAME_FIELDS)}")
        changes[field] = value
    for item in qos_overrides:
        topic, value = _split(item, "--ros_qos", "TOPIC=RELIABILITY,DURABILITY,DEPTH")
        if topic not in TOPIC_FIELDS:
            raise ValueError(f"--ros_qos {item!r}: unknown topic {topic!r}; expected one of {', '.join(TOPIC_FIELDS)}")
        parts = value.split(",")
        if len(parts) != 3 or not parts[2].strip().isdigit():
            raise ValueError(
                f"--ros_qos {item!r}: expected RELIABILITY,DURABILITY,DEPTH, e.g. reliable,transient_local,1"
            )
        changes[f"{topic}_qos"] = QosProfile(parts[0].strip(), parts[1].strip(), int(parts[2]))
    return replace(Ros2Topics(namespace=namespace), **changes)


def _split(item: str, flag: str, form: str) -> tuple[str, str]:
    field, sep, value = item.partition("=")
    if not sep or not field.strip() or not value.strip():
        raise ValueError(f"{flag} {item!r}: expected {form}")
    return field.strip(), value.strip()
