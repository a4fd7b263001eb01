"""Fast DDS (the default ROS 2 middleware, `rmw_fastrtps_cpp`) kept on the loopback interface: the counterpart of
`dds.loopback_config_xml` for rclpy nodes, used by `trot emulate --transport ros2 --ros2_backend rclpy`,
`trot deploy --dds_loopback` and the tests.

`rmw_fastrtps_cpp` loads the default participant profile of `FASTDDS_DEFAULT_PROFILES_FILE` and then applies
`ROS_AUTOMATIC_DISCOVERY_RANGE`. Its LOCALHOST range is not loopback-only: it adds a UDP transport of its own on
every interface (a Fast DDS participant measured here announced the host's eth0 address as its locators), so the
loopback profile (`fastdds_loopback.xml` beside this file: UDP on 127.0.0.1 only, shared memory, no multicast,
initial peers 127.0.0.1) is used with SYSTEM_DEFAULT, where rmw changes nothing. Standard library only.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from pathlib import Path

LOOPBACK_PROFILE = Path(__file__).with_name("fastdds_loopback.xml")
PROFILE_VARIABLE = "FASTDDS_DEFAULT_PROFILES_FILE"
RANGE_VARIABLE = "ROS_AUTOMATIC_DISCOVERY_RANGE"
# Variables that would widen discovery again: the deprecated localhost switch (it means the LOCALHOST range), and
# static peers (rmw adds them as initial peers).
WIDENING_VARIABLES = ("ROS_LOCALHOST_ONLY", "ROS_STATIC_PEERS")
LOOPBACK = "127.0.0.1"


def loopback_env() -> dict[str, str]:
    """The variables that keep a ROS 2 node on Fast DDS on the loopback interface (with `WIDENING_VARIABLES`
    unset)."""
    return {PROFILE_VARIABLE: str(LOOPBACK_PROFILE), RANGE_VARIABLE: "SYSTEM_DEFAULT"}


def use_loopback() -> None:
    """Set `loopback_env()` in this process (before rclpy's context is created) and its children."""
    os.environ.update(loopback_env())
    for name in WIDENING_VARIABLES:
        os.environ.pop(name, None)


def loopback_problems(env: Mapping[str, str] | None = None) -> list[str]:
    """What in an environment (default: this process's) would let a Fast DDS participant leave the loopback
    interface; empty when the loopback profile is in force."""
    env = os.environ if env is None else env
    problems = [f"{name}={env[name]!r} widens discovery; expected it unset" for name in WIDENING_VARIABLES
                if env.get(name)]  # fmt: skip
    if env.get(RANGE_VARIABLE) != "SYSTEM_DEFAULT":
        problems.append(
            f"{RANGE_VARIABLE}={env.get(RANGE_VARIABLE)!r}; expected 'SYSTEM_DEFAULT' (LOCALHOST and SUBNET make "
            "rmw_fastrtps_cpp add transports or peers on every interface)"
        )
    path = env.get(PROFILE_VARIABLE)
    if not path or not Path(path).is_file():
        return [*problems, f"{PROFILE_VARIABLE}={path!r}; expected a Fast DDS profile file"]
    return problems + profile_problems(Path(path).read_text())


def profile_problems(xml_text: str) -> list[str]:
    """What in a Fast DDS XML profile's default participant would use an address other than 127.0.0.1."""
    root = ET.fromstring(xml_text)
    for element in root.iter():
        element.tag = element.tag.rsplit("}", 1)[-1]
    defaults = [p for p in root.iter("participant") if p.get("is_default_profile") == "true"]
    if len(defaults) != 1:
        return [f"{len(defaults)} default participant profiles; expected one"]
    rtps = defaults[0].find("rtps")
    if rtps is None:
        return ["the default participant profile has no <rtps>"]
    problems = []
    if (rtps.findtext("useBuiltinTransports") or "").strip() != "false":
        problems.append("useBuiltinTransports is not false: the built-in UDP transport uses every interface")
    descriptors = {d.findtext("transport_id"): d for d in root.iter("transport_descriptor")}
    for transport_id in [t.text for t in rtps.findall("userTransports/transport_id")]:
        descriptor = descriptors.get(transport_id)
        if descriptor is None:
            problems.append(f"user transport {transport_id!r} is not declared")
            continue
        kind = (descriptor.findtext("type") or "").strip()
        allowed = [a.text for a in descriptor.findall("interfaceWhiteList/address")]
        if kind.startswith("UDP") and allowed != [LOOPBACK]:
            problems.append(f"transport {transport_id!r} ({kind}) allows {allowed}; expected only {LOOPBACK}")
        elif kind not in ("UDPv4", "SHM"):
            problems.append(f"transport {transport_id!r} is {kind!r}; expected UDPv4 or SHM")
    builtin = rtps.find("builtin")
    lists = {name: [a.text for a in builtin.findall(f"{name}/locator/udpv4/address")] if builtin is not None else []
             for name in ("metatrafficUnicastLocatorList", "initialPeersList")}  # fmt: skip
    for name, addresses in lists.items():
        if addresses != [LOOPBACK]:
            problems.append(f"{name} {addresses}; expected [{LOOPBACK!r}] (none: multicast discovery)")
    if builtin is not None and builtin.find("metatrafficMulticastLocatorList") is not None:
        problems.append("a metatrafficMulticastLocatorList: multicast discovery")
    return problems
