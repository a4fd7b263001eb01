"""ROS 2 type hashes (REP-2011) of the six message types trot puts on topics, against the values ROS 2 Jazzy
generates, and the `typehash=` USER_DATA on every endpoint, as rmw_cyclonedds_cpp announces it."""

import os
import re
import subprocess
import sys

import pytest

pytest.importorskip("cyclonedds")

from trot.deploy.ros2 import dds, msgs  # noqa: E402
from trot.deploy.ros2.convert import MessageTypes  # noqa: E402
from trot.deploy.ros2.typehash import individual_description, type_hash, user_data  # noqa: E402

# The hashes rosidl generates for ROS 2 Jazzy (rosidl_generator_c's `*__get_type_hash` / `*__EXPECTED_HASH`
# in the generated `*__description.c` of sensor_msgs, geometry_msgs, std_msgs and diagnostic_msgs).
JAZZY = {
    msgs.Imu: "RIHS01_7d9a00ff131080897a5ec7e26e315954b8eae3353c3f995c55faf71574000b5b",
    msgs.JointState: "RIHS01_a13ee3a330e346c9d87b5aa18d24e11690752bd33a0350f11c5882bc9179260e",
    msgs.Twist: "RIHS01_9c45bf16fe0983d80e3cfe750d6835843d265a9a6c46bd2e609fcddde6fb8d2a",
    msgs.Bool: "RIHS01_feb91e995ff9ebd09c0cb3d2aed18b11077585839fb5db80193b62d74528f6c9",
    msgs.Float64MultiArray: "RIHS01_1025ddc6b9552d191f89ef1a8d2f60f3d373e28b283d8891ddcc974e8c55397f",
    msgs.DiagnosticArray: "RIHS01_5a8a36efb05fb25070fa0fb3810290c0e6cd4862b54a8fb975a1ee8dc55a333e",
}


@pytest.mark.parametrize("struct", list(JAZZY), ids=lambda s: s.__name__)
def test_type_hash_equals_the_ros2_jazzy_value(struct):
    assert type_hash(struct) == JAZZY[struct]
    assert user_data(struct) == f"typehash={JAZZY[struct]};".encode()


def test_diagnostic_level_is_uint8_on_the_wire_and_byte_in_the_description():
    """Issue 13 item 7: rmw_cyclonedds_cpp maps `byte` to uint8; the REP-2011 description still says BYTE (16)."""
    from typing import get_type_hints

    assert get_type_hints(msgs.DiagnosticStatus, include_extras=True)["level"].__metadata__ == ("uint8",)
    fields = {f["name"]: f["type"]["type_id"] for f in individual_description(msgs.DiagnosticStatus)["fields"]}
    assert fields == {"level": 16, "name": 17, "message": 17, "hardware_id": 17, "values": 1 + 144}


def test_a_struct_that_differs_from_the_ros_definition_hashes_differently():
    from dataclasses import dataclass

    from cyclonedds.idl import IdlStruct
    from cyclonedds.idl import types as t

    @dataclass
    class Bool(IdlStruct, typename="std_msgs::msg::dds_::Bool_"):
        data: t.uint8 = 0  # bool in std_msgs/msg/Bool

    assert type_hash(Bool) != JAZZY[msgs.Bool]


def test_the_message_list_is_one_list_and_matches_the_dds_type_names():
    from dataclasses import fields

    for f in fields(MessageTypes):
        struct = getattr(msgs.IDL_TYPES, f.name)
        assert struct.__idl_typename__ == f"{f.metadata['package']}::msg::dds_::{f.name}_"


# A node with every endpoint of the ROS 2 transport (argv[1] "node"), or a bare participant that only discovers
# it ("observer"); each lives for two seconds. The observer's Cyclone DDS trace records what discovery (SEDP)
# brought it over the wire: each endpoint's topic, type and QoS, user data included.
PARTICIPANT = r"""
import sys, time
from trot.deploy.ros2 import dds, transport
from trot.deploy.ros2.msgs import IDL_TYPES as T
from trot.deploy.ros2.topics import Ros2Topics

node = dds.DdsNode(Ros2Topics(namespace="typehash_test"), domain_id=43)
if sys.argv[1] == "node":
    kinds = transport.TOPIC_TYPES
    endpoints = [node.reader(t, getattr(T, kinds[t])) for t in transport.SUBSCRIBED]
    endpoints += [node.writer(t, getattr(T, kinds[t])) for t in transport.PUBLISHED]
time.sleep(2.0)
node.close()
"""
_SEDP = re.compile(
    r'SEDP ST0 .*? (writer|reader) .*?QOS=\{user_data=\d+<"([^"]*)">,topic_name="([^"]+)",type_name="([^"]+)"'
)


def test_every_endpoint_announces_its_type_hash_in_user_data_over_discovery(tmp_path):
    """What a ROS 2 node on the other end receives: discovery data carrying `typehash=RIHS01_...;`."""
    from trot.deploy.ros2 import transport

    procs = []
    for role in ("node", "observer"):
        env = {**os.environ, "CYCLONEDDS_URI": dds.loopback_config_xml(str(tmp_path / f"{role}.log"))}
        procs.append(subprocess.Popen([sys.executable, "-c", PARTICIPANT, role], env=env, stderr=subprocess.PIPE,
                                      text=True))  # fmt: skip
    for proc in procs:
        assert proc.wait(timeout=60) == 0, proc.stderr.read()[-2000:]
    seen = {(kind, topic): (type_name, data)
            for kind, data, topic, type_name in _SEDP.findall((tmp_path / "observer.log").read_text())}  # fmt: skip
    topics = dds.Ros2Topics(namespace="typehash_test")
    expected = {}
    for kind, names in (("reader", transport.SUBSCRIBED), ("writer", transport.PUBLISHED)):
        for name in names:
            struct = getattr(msgs.IDL_TYPES, transport.TOPIC_TYPES[name])
            expected[(kind, topics.dds_name(name))] = (struct.__idl_typename__, f"typehash={type_hash(struct)};")
    assert {k: v for k, v in seen.items() if k[1].startswith("rt/typehash_test/")} == expected
