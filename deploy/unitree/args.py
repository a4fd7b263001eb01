"""Command-line flags of `trot deploy --transport unitree` (and `trot flash`'s unit line), and the transport.

The DDS domain and the loopback switch are the ROS 2 group's `--domain_id` and `--dds_loopback` (one parser
holds every transport's flags, and both are plain DDS settings); this adds the network interface and what to do
about the robot's motion service (`motion.MotionPolicy`). argparse only at import time.
"""

from __future__ import annotations

import argparse
import os
from xml.sax.saxutils import quoteattr

UNITREE_DOMAIN_ID = 0  # the domain a Go2 and unitree_sdk2's examples use


def add_args(p: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """`--network_interface` (the domain and loopback flags come with the ros2 group)."""
    p.add_argument(
        "--network_interface",
        default=None,
        metavar="NAME",
        help="network interface facing the robot, e.g. eth0, as unitree_sdk2's examples take it (sets "
        "CYCLONEDDS_URI; default: Cyclone DDS's choice, or CYCLONEDDS_URI). Domain: --domain_id, default "
        f"{UNITREE_DOMAIN_ID}",
    )
    p.add_argument(
        "--release_motion_service",
        action="store_true",
        help="if the robot's motion service runs a mode (CheckMode), lie the robot down (StandDown) and release it "
        "(ReleaseMode) before the first LowCmd; without this flag trot refuses to start while a mode is active",
    )
    p.add_argument(
        "--restore_motion_service",
        action="store_true",
        help="with --release_motion_service: select the released mode again (SelectMode) when the run ends without "
        "a fault or an e-stop",
    )
    p.add_argument(
        "--no_motion_switcher",
        action="store_true",
        help="the peer has no motion switcher (unitree_mujoco, a bare DDS peer): do not ask CheckMode",
    )


def interface_config_xml(name: str) -> str:
    """A Cyclone DDS configuration that uses one network interface, for every domain."""
    return (
        '<CycloneDDS xmlns="https://cdds.io/config"><Domain id="any"><General><Interfaces>'
        f"<NetworkInterface name={quoteattr(name)}/></Interfaces></General></Domain></CycloneDDS>"
    )


def transport_from_args(args: argparse.Namespace, robot):
    """The unitree transport the flags describe, not opened yet; ValueError saying why it can't be used."""
    if getattr(args, "port", None):
        raise ValueError("--port is for --transport serial; --transport unitree finds the robot on DDS")
    interface, loopback = args.network_interface, getattr(args, "dds_loopback", False)
    if interface and loopback:
        raise ValueError(f"--network_interface {interface} and --dds_loopback: expected one of them")
    domain = UNITREE_DOMAIN_ID if getattr(args, "domain_id", None) is None else args.domain_id
    if not 0 <= domain <= 232:
        raise ValueError(f"--domain_id {domain}: expected an integer in 0..232")
    from trot.deploy.unitree.convert import MotorMap  # imports cyclonedds: only when the transport is built
    from trot.deploy.unitree.transport import UnitreeTransport

    motion = motion_policy(args)
    motors = MotorMap.from_robot(robot)  # ValueError naming robot.toml's hardware.motor_id
    if loopback or interface:  # before any participant exists
        from trot.deploy.ros2.dds import loopback_config_xml

        os.environ["CYCLONEDDS_URI"] = loopback_config_xml() if loopback else interface_config_xml(interface)
    return UnitreeTransport(motors, domain, motion)


def motion_policy(args: argparse.Namespace):
    """The MotionPolicy the flags say; ValueError naming the flags that don't go together."""
    release, restore = getattr(args, "release_motion_service", False), getattr(args, "restore_motion_service", False)
    absent = getattr(args, "no_motion_switcher", False)
    if restore and not release:
        raise ValueError("--restore_motion_service: only a mode trot released can be restored; expected "
                         "--release_motion_service too")  # fmt: skip
    if absent and release:
        raise ValueError("--no_motion_switcher and --release_motion_service: expected one of them")
    from trot.deploy.unitree.motion import MotionPolicy  # imports cyclonedds: only when the transport is built

    return MotionPolicy(check=not absent, release=release, restore=restore)


def unit_args(args: argparse.Namespace) -> list[str]:
    """The same flags again, for the command line of a systemd unit."""
    out = []
    if getattr(args, "domain_id", None) is not None:
        out += ["--domain_id", str(args.domain_id)]
    if args.network_interface:
        out += ["--network_interface", args.network_interface]
    if getattr(args, "dds_loopback", False):
        out.append("--dds_loopback")
    for flag in ("release_motion_service", "restore_motion_service", "no_motion_switcher"):
        if getattr(args, flag, False):
            out.append(f"--{flag}")
    return out
