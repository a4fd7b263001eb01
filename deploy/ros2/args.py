"""Command-line flags shared by `trot deploy --transport ros2`, `trot flash --transport ros2` (the unit's
command line) and `trot emulate --transport ros2`, and the transport they build.

argparse and `topics` only at import time (no middleware, no numpy), so that building the CLI's parser
stays light; `transport_from_args` imports the transport when it runs.
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
        "--domain_id", type=int, default=None, metavar="N",
        help="DDS domain (ros2: default $ROS_DOMAIN_ID, else 0; unitree: default 0)",
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
    p.add_argument(
        "--ros_profile",
        default=None,
        metavar="FILE|none",
        help="the robot's ROS 2 profile (topics, controllers, gains, e-stop; deploy/ROS2.md): default the robot "
        "folder's ros2.toml when it has one; 'none': the generic topics; --ros_topic and --ros_qos override it",
    )


def profile_from_args(args: argparse.Namespace, robot):
    """The ROS 2 profile `--ros_profile` names: a file, 'none' (generic), or by default the robot folder's own."""
    from trot.deploy.ros2.profile import GENERIC, load_profile_file, load_ros2_profile

    choice = getattr(args, "ros_profile", None)
    if choice == "none":
        return GENERIC
    return load_profile_file(choice) if choice else load_ros2_profile(robot)


def topics_from_args(
    namespace: str, topic_overrides: Sequence[str] = (), qos_overrides: Sequence[str] = (), base: dict | None = None
) -> Ros2Topics:
    """A `Ros2Topics` with the defaults, a profile's names (`base`), `namespace` and `FIELD=VALUE` overrides on top;
    ValueError naming a bad one."""
    changes: dict = dict(base or {})
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


def add_deploy_ros2_args(p: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """The flags of the deploy side: the graph to join, the middleware and the cmd_vel timeout."""
    add_ros2_args(p)
    p.add_argument(
        "--ros2_backend",
        choices=["auto", "rclpy", "dds"],
        default="auto",
        help="auto: rclpy where it imports, else raw Cyclone DDS",
    )
    p.add_argument(
        "--dds_loopback",
        action="store_true",
        help="keep DDS on the loopback interface, as `trot emulate` does: CYCLONEDDS_URI = the loopback-only "
        "configuration (ros2, unitree); for rclpy on Fast DDS also the loopback profile (deploy/ROS2.md)",
    )
    p.add_argument(
        "--cmd_vel_timeout_s", type=float, default=0.5, help="cmd_vel: zero command after this long without a Twist"
    )


def transport_from_args(args: argparse.Namespace, robot):
    """The ROS 2 transport (rclpy or raw DDS) the flags describe, not opened yet; ValueError saying why not."""
    from trot.deploy.ros2.bringup import make_profiled_transport

    if getattr(args, "port", None):
        raise ValueError("--port is for --transport serial; --transport ros2 finds the robot by its topics")
    if not args.cmd_vel_timeout_s > 0:
        raise ValueError(f"--cmd_vel_timeout_s {args.cmd_vel_timeout_s}: expected > 0")
    profile = profile_from_args(args, robot)
    topics = topics_from_args(args.ros_namespace, args.ros_topic, args.ros_qos, profile.topics)
    if args.dds_loopback:  # before any participant exists: Cyclone DDS (raw, or rmw_cyclonedds_cpp) and Fast DDS
        from trot.deploy.ros2 import fastdds
        from trot.deploy.ros2.dds import loopback_config_xml, use_config

        use_config(loopback_config_xml())
        fastdds.use_loopback()
    try:
        return make_profiled_transport(
            args.ros2_backend,
            profile,
            robot,
            joint_names=robot.joint_names,
            topics=topics,
            domain_id=args.domain_id,
            hardware_id=robot.name,
            control_dt=robot.control_dt,
            cmd_vel_timeout_s=args.cmd_vel_timeout_s,
        )
    except ImportError as e:
        raise ValueError(str(e)) from e


def unit_args(args: argparse.Namespace) -> list[str]:
    """The same flags again, for the command line of a systemd unit."""
    out = []
    if args.ros_namespace:
        out += ["--ros_namespace", args.ros_namespace]
    if args.domain_id is not None:
        out += ["--domain_id", str(args.domain_id)]
    for item in args.ros_topic:
        out += ["--ros_topic", item]
    for item in args.ros_qos:
        out += ["--ros_qos", item]
    if getattr(args, "ros_profile", None):
        out += ["--ros_profile", args.ros_profile]
    out += ["--ros2_backend", args.ros2_backend, "--cmd_vel_timeout_s", f"{args.cmd_vel_timeout_s:g}"]
    if args.dds_loopback:
        out.append("--dds_loopback")
    return out
