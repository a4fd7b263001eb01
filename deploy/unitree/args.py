"""Command-line flags of `trot deploy --transport unitree` (and `trot flash`'s unit line), and the transport.

The DDS domain and the loopback switch are the ROS 2 group's `--domain_id` and `--dds_loopback` (one parser
holds every transport's flags, and both are plain DDS settings); this adds the network interface.
argparse only at import time.
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

    motors = MotorMap.from_robot(robot)  # ValueError naming robot.toml's hardware.motor_id
    if loopback or interface:  # before any participant exists
        from trot.deploy.ros2.dds import loopback_config_xml

        os.environ["CYCLONEDDS_URI"] = loopback_config_xml() if loopback else interface_config_xml(interface)
    return UnitreeTransport(motors, domain)


def unit_args(args: argparse.Namespace) -> list[str]:
    """The same flags again, for the command line of a systemd unit."""
    out = []
    if getattr(args, "domain_id", None) is not None:
        out += ["--domain_id", str(args.domain_id)]
    if args.network_interface:
        out += ["--network_interface", args.network_interface]
    if getattr(args, "dds_loopback", False):
        out.append("--dds_loopback")
    return out
