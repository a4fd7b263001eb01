"""ROS 2 over raw Cyclone DDS: the path used when rclpy is not importable.

Interoperates with ROS 2 nodes running `rmw_cyclonedds_cpp`: the topics are `rt/<ROS name>`, the
types ROS 2's (`msgs`), the samples classic CDR. Cyclone DDS is configured the way ROS 2 users
already configure it, through `CYCLONEDDS_URI`, which must be set before the first participant of
a domain is created in the process. Tests and the emulator use `loopback_config_xml()`: loopback
interface only, no multicast, unicast discovery on 127.0.0.1; `loopback_config_problems` and
`loopback_trace_problems` show it is in force.
"""

from __future__ import annotations

import os
import re
import xml.etree.ElementTree as ET
from typing import Any
from xml.sax.saxutils import escape as xml_escape

from cyclonedds.core import Qos
from cyclonedds.domain import DomainParticipant
from cyclonedds.pub import DataWriter
from cyclonedds.qos import Policy
from cyclonedds.sub import DataReader
from cyclonedds.topic import Topic
from cyclonedds.util import duration

from trot.deploy.ros2 import typehash, xtypes
from trot.deploy.ros2.topics import QosProfile, Ros2Topics, domain_id_from_env

LOOPBACK_INTERFACE = "lo"
LOOPBACK_ADDRESS = "127.0.0.1"
# How long a reliable writer may block when a reader's queue is full: short, the loop is real-time.
MAX_BLOCKING_S = 0.01


def loopback_config_xml(trace_file: str | None = None) -> str:
    """A Cyclone DDS configuration that keeps every domain on the loopback interface: interface
    `lo`, multicast off, discovery by unicast to 127.0.0.1. `trace_file` (may contain
    `${CYCLONEDDS_PID}`) records the applied configuration and discovery, for tests to check."""
    # Domain id="any": applies to whichever domain id a participant asks for, so no domain can fall
    # back to the default configuration (every interface, multicast discovery).
    tracing = (
        "<Tracing><Category>config,discovery</Category>"
        f"<OutputFile>{xml_escape(trace_file)}</OutputFile></Tracing>"
        if trace_file
        else ""
    )
    return (
        '<CycloneDDS xmlns="https://cdds.io/config"><Domain id="any">'
        f'<General><Interfaces><NetworkInterface name="{LOOPBACK_INTERFACE}"/></Interfaces>'
        "<AllowMulticast>false</AllowMulticast></General>"
        # Without multicast, peers are found by unicast to the ports of each participant index.
        "<Discovery><ParticipantIndex>auto</ParticipantIndex>"
        f'<Peers><Peer address="{LOOPBACK_ADDRESS}"/></Peers></Discovery>'
        f"{tracing}</Domain></CycloneDDS>"
    )


def use_config(xml_or_uri: str) -> None:
    """Set `CYCLONEDDS_URI`; takes effect for domains created afterwards in this process (and in
    its child processes), not for a domain that already has a participant."""
    os.environ["CYCLONEDDS_URI"] = xml_or_uri


def loopback_config_problems(uri: str | None = None) -> list[str]:
    """What in a Cyclone DDS configuration (default: `$CYCLONEDDS_URI`, inline XML or file://
    paths) would let traffic leave the loopback interface; empty when it is loopback-only."""
    uri = os.environ.get("CYCLONEDDS_URI", "") if uri is None else uri
    if not uri.strip():
        return ["CYCLONEDDS_URI is not set: Cyclone DDS would use every interface and multicast"]
    root = ET.Element("CycloneDDS")
    root.extend(_config_elements(uri))
    for element in root.iter():
        element.tag = element.tag.rsplit("}", 1)[-1]  # drop the XML namespace

    problems = []
    interfaces = root.findall(".//General/Interfaces/NetworkInterface")
    names = [i.get("name") or i.get("address") for i in interfaces]
    if not interfaces or any(n not in (LOOPBACK_INTERFACE, LOOPBACK_ADDRESS) for n in names):
        problems.append(f"network interfaces {names}; expected only {LOOPBACK_INTERFACE!r}")
    multicast = [e.text.strip().lower() for e in root.findall(".//General/AllowMulticast") if e.text]
    if multicast != ["false"]:
        problems.append(f"AllowMulticast {multicast}; expected ['false']")
    peers = [p.get("address") or p.get("Address") for p in root.findall(".//Discovery/Peers/Peer")]
    if not peers or any(p not in (LOOPBACK_ADDRESS, "localhost") for p in peers):
        problems.append(f"discovery peers {peers}; expected only {LOOPBACK_ADDRESS}")
    return problems


# Lines of a Cyclone DDS trace that list configured or available addresses rather than ones used:
# the host's interfaces, and the (unused, multicast being off) default multicast groups.
_LISTING_LINE = re.compile(r"\b(interfaces|SPDP MC|default MC|config):")
_UDP_ADDRESS = re.compile(r"udp/([0-9.]+)")


def loopback_trace_problems(trace_text: str) -> list[str]:
    """What in a Cyclone DDS trace (written by a `loopback_config_xml(trace_file)` config) shows
    the loopback configuration not in force: another interface selected, multicast allowed, or
    any address other than 127.0.0.1 used for discovery or data; empty when all is loopback."""
    problems = []
    selected = [
        re.findall(r"(\S+) \(index", line) for line in re.findall(r"selected interfaces: (.*)", trace_text)
    ]
    if not selected or any(names != [LOOPBACK_INTERFACE] for names in selected):
        problems.append(f"selected interfaces {selected}; expected only [{LOOPBACK_INTERFACE!r}]")
    if not re.search(r"Domain/General/AllowMulticast/#text: false", trace_text):
        problems.append("the trace does not show AllowMulticast false")
    used = {
        address
        for line in trace_text.splitlines()
        if not _LISTING_LINE.search(line)
        for address in _UDP_ADDRESS.findall(line)
    }
    if used != {LOOPBACK_ADDRESS}:
        problems.append(f"addresses used {sorted(used)}; expected only {LOOPBACK_ADDRESS}")
    return problems


def dds_qos(profile: QosProfile, msg_type: type | None = None) -> Qos:
    """The Cyclone DDS QoS of a profile, restricted to classic CDR as `rmw_cyclonedds_cpp` is; with `msg_type`,
    the endpoint USER_DATA `typehash=RIHS01_<hex>;` that rmw_cyclonedds_cpp announces (REP-2011)."""
    reliability = (
        Policy.Reliability.Reliable(max_blocking_time=duration(seconds=MAX_BLOCKING_S))
        if profile.reliability == "reliable"
        else Policy.Reliability.BestEffort
    )
    latched = profile.durability == "transient_local"
    durability = Policy.Durability.TransientLocal if latched else Policy.Durability.Volatile
    policies = [
        reliability,
        durability,
        Policy.History.KeepLast(depth=profile.depth),
        Policy.DataRepresentation(use_cdrv0_representation=True),
    ]
    if msg_type is not None:
        policies.append(Policy.Userdata(data=typehash.user_data(msg_type)))
    return Qos(*policies)


class DdsNode:
    """One DDS participant with readers and writers on the transport's topics, by field name of
    `Ros2Topics` (`node.reader("imu", msgs.Imu)`), each with that topic's name and QoS."""

    def __init__(self, topics: Ros2Topics | None = None, domain_id: int | None = None):
        self.topics = topics or Ros2Topics()
        self.domain_id = domain_id_from_env() if domain_id is None else domain_id
        xtypes.use_interop()  # Fast DDS peers' type information is ignored: they match by type name (xtypes.py)
        self.participant = DomainParticipant(self.domain_id)
        self._topics: dict[str, Topic] = {}

    def _topic(self, topic: str, msg_type: type) -> Topic:
        name = self.topics.dds_name(topic)
        if name not in self._topics:
            self._topics[name] = Topic(self.participant, name, msg_type)
        return self._topics[name]

    def reader(self, topic: str, msg_type: type) -> DataReader:
        """A reader of a `Ros2Topics` field, with its QoS."""
        qos = dds_qos(self.topics.qos(topic), msg_type)
        return DataReader(self.participant, self._topic(topic, msg_type), qos=qos)

    def writer(self, topic: str, msg_type: type) -> DataWriter:
        """A writer of a `Ros2Topics` field, with its QoS."""
        qos = dds_qos(self.topics.qos(topic), msg_type)
        return DataWriter(self.participant, self._topic(topic, msg_type), qos=qos)

    def close(self) -> None:
        """Delete the participant and every reader, writer and topic under it."""
        self._topics.clear()
        # cyclonedds has no public delete: Entity.__del__ is dds_delete, which frees the children.
        self.participant.__del__()

    def __enter__(self) -> DdsNode:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def take_latest(reader: DataReader, max_samples: int = 64) -> Any | None:
    """The newest sample waiting in a reader, or None; never blocks. Older waiting samples are
    dropped (the loop only wants the latest)."""
    samples = reader.take(N=max_samples)
    return samples[-1] if samples else None


def _config_elements(uri: str) -> list[ET.Element]:
    """The top-level configuration elements of a CYCLONEDDS_URI: comma-separated inline XML fragments and file
    paths (optionally file://), as Cyclone DDS reads it."""
    roots = [
        ET.fromstring(item) if item.startswith("<") else ET.parse(item.removeprefix("file://")).getroot()
        for item in uri_items(uri)
    ]
    # Cyclone accepts a bare <Domain> or section as well as a full <CycloneDDS> document.
    return [child for root in roots for child in (root if root.tag.endswith("CycloneDDS") else [root])]


def uri_items(uri: str) -> list[str]:
    """The items of a CYCLONEDDS_URI in order: each inline XML fragment whole (commas inside it included), each
    file path stripped."""
    items, rest = [], uri.strip()
    while rest:
        if rest.startswith("<"):
            tag = re.match(r"<\s*([\w:.-]+)[^>]*?(/?)>", rest)
            if tag and tag.group(2):  # a self-closing root: the fragment ends with its tag
                close, end = ">", tag.end() - 1
            else:
                close = f"</{tag.group(1)}>" if tag else ">"
                end = rest.find(close)
            if end < 0:
                raise ValueError(f"CYCLONEDDS_URI: the XML fragment {rest[:60]!r}... has no closing {close}")
            items.append(rest[: end + len(close)])
            rest = rest[end + len(close) :].lstrip().removeprefix(",").strip()
        else:
            item, _, rest = rest.partition(",")
            if item.strip():
                items.append(item.strip())
            rest = rest.strip()
    return items
