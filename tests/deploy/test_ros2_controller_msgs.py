"""controller_manager_msgs on the wire for the raw DDS path: the SwitchController request framed as each RMW frames
it (bytes pinned by hand from the CDR rules and the RMWs' sources), type hashes against the values rosidl generates,
and a client that keeps only its own reply under rmw_cyclonedds_cpp's framing."""

from __future__ import annotations

import os
import struct
import threading
import time
from dataclasses import dataclass, field

import pytest

pytest.importorskip("cyclonedds")

from cyclonedds.domain import DomainParticipant  # noqa: E402
from cyclonedds.idl import IdlStruct  # noqa: E402
from cyclonedds.idl import types as t  # noqa: E402
from cyclonedds.pub import DataWriter  # noqa: E402
from cyclonedds.sub import DataReader  # noqa: E402
from cyclonedds.topic import Topic  # noqa: E402

from trot.deploy.ros2 import controller_msgs as cm  # noqa: E402
from trot.deploy.ros2 import dds, msgs  # noqa: E402
from trot.deploy.ros2.controllers import SERVICE_QOS, ControllerManagerError, DdsControllerManager  # noqa: E402
from trot.deploy.ros2.typehash import type_hash  # noqa: E402

# Hashes rosidl generates (rosidl_generator_type_description: share/<package>/{msg,srv}/<Type>.json of the ROS 2
# packages std_msgs and lifecycle_msgs 2.3.0): a message, and a service's request and response.
ROS = {
    "std_msgs/msg/Empty": "RIHS01_20b625256f32d5dbc0d04fee44f43c41e51c70d3502f84b4a08e7a9c26a96312",
    "lifecycle_msgs/msg/State": "RIHS01_dd2d02b82f3ebc858e53c431b1e6e91f3ffc71436fc81d0715214ac6ee2107a0",
    "lifecycle_msgs/srv/ChangeState_Request": "RIHS01_d74c6f524e14cade7b67e7297190360ed749264af300524fc1456f27cc2a553a",
    "lifecycle_msgs/srv/ChangeState_Response": "RIHS01_e1ddfed0271fefe63767aa71561926e4d9eac0f1ddf9e71a8873eb46b36deac2",  # noqa: E501
}


@dataclass
class Transition(IdlStruct, typename="lifecycle_msgs::msg::dds_::Transition_"):
    id: t.uint8 = 0
    label: str = ""


@dataclass
class ChangeStateRequest(IdlStruct, typename="lifecycle_msgs::srv::dds_::ChangeState_Request_"):
    transition: Transition = field(default_factory=Transition)


@dataclass
class ChangeStateResponse(IdlStruct, typename="lifecycle_msgs::srv::dds_::ChangeState_Response_"):
    success: bool = False


def test_type_hashes_equal_the_ones_rosidl_generates_for_messages_and_service_halves():
    """The hash of a service's request and response is that of a message named <Service>_Request/_Response: the
    same algorithm covers controller_manager_msgs' SwitchController halves."""
    assert type_hash(msgs.Empty) == ROS["std_msgs/msg/Empty"]
    assert type_hash(cm.LifecycleState) == ROS["lifecycle_msgs/msg/State"]
    assert type_hash(ChangeStateRequest) == ROS["lifecycle_msgs/srv/ChangeState_Request"]
    assert type_hash(ChangeStateResponse) == ROS["lifecycle_msgs/srv/ChangeState_Response"]
    # The Cyclone framing's header is not part of the ROS type: its struct must not be what the hash is taken of.
    assert type_hash(cm.CycloneSwitchControllerRequest) != type_hash(cm.SwitchControllerRequest)


def cdr_string(s: str) -> bytes:
    raw = s.encode() + b"\0"
    return struct.pack("<I", len(raw)) + raw


def pad(buf: bytes, align: int) -> bytes:
    return buf + b"\0" * (-(len(buf) - 4) % align)  # alignment counts from after the 4-byte encapsulation header


def test_switch_request_bytes_under_each_rmw_framing():
    """Classic little-endian CDR: encapsulation 00 01 00 00; rmw_cyclonedds_cpp puts uint64 guid and int64 seq before
    the fields (serdata.cpp), rmw_fastrtps_cpp nothing (the identity rides in the RTPS submessage)."""
    fields = dict(activate_controllers=["fwd"], deactivate_controllers=["nc", "n3"], strictness=cm.STRICT,
                  activate_asap=True, timeout=cm.Duration(sec=5, nanosec=0))  # fmt: skip
    body = struct.pack("<I", 1) + cdr_string("fwd")
    body = pad(body, 4) + struct.pack("<I", 2) + cdr_string("nc")
    body = pad(body, 4) + cdr_string("n3")
    body = pad(body, 4) + struct.pack("<i", 2) + b"\x01"
    body = pad(body, 4) + struct.pack("<iI", 5, 0)
    header = b"\x00\x01\x00\x00"
    fast = cm.wire_types("rmw_fastrtps_cpp").request(**fields).serialize()
    assert fast == header + body
    cyclone = cm.wire_types("rmw_cyclonedds_cpp").request(guid=0x1122334455667788, seq=7, **fields).serialize()
    assert cyclone[:20] == header + struct.pack("<Qq", 0x1122334455667788, 7)
    assert cyclone[20:] == body  # the fields start 8-aligned after the header either way
    reply = cm.wire_types("rmw_cyclonedds_cpp").response.deserialize(
        header + struct.pack("<Qq", 9, 3) + b"\x01" + b"\0\0\0" + cdr_string("done")
    )
    assert (reply.guid, reply.seq, reply.ok, reply.message) == (9, 3, True, "done")
    with pytest.raises(ValueError, match="rmw 'rmw_zenoh_cpp': expected one of rmw_cyclonedds_cpp, rmw_fastrtps_cpp"):
        cm.wire_types("rmw_zenoh_cpp")


def test_cyclone_framing_client_keeps_only_the_reply_to_its_own_request(monkeypatch):
    """rmw_cyclonedds_cpp's service writes every reply to every client; the client keeps the one whose header is its
    own (guid and seq). A server that first answers someone else (ok false) must not fool it."""
    monkeypatch.setenv("CYCLONEDDS_URI", dds.loopback_config_xml())
    domain = 150 + os.getpid() % 60  # not 0, nor test_dds_loopback's 42; topics of this test's own names
    wire = cm.wire_types("rmw_cyclonedds_cpp")
    server = DomainParticipant(domain)
    client_side = DomainParticipant(domain)
    try:
        manager = DdsControllerManager(client_side, "/t_cm", "rmw_cyclonedds_cpp")
        requests = DataReader(server, Topic(server, "rq/t_cm/switch_controllerRequest", wire.request),
                              qos=dds.dds_qos(SERVICE_QOS, cm.SwitchControllerRequest))  # fmt: skip
        replies = DataWriter(server, Topic(server, "rr/t_cm/switch_controllerReply", wire.response),
                             qos=dds.dds_qos(SERVICE_QOS, cm.SwitchControllerResponse))  # fmt: skip
        seen = []

        def serve():
            end = time.monotonic() + 10
            while time.monotonic() < end and not seen:
                for s in requests.take(N=4):
                    if s.sample_info.valid_data:
                        seen.append(s)
                        replies.write(wire.response(guid=s.guid + 1, seq=s.seq, ok=False, message="someone else's"))
                        replies.write(wire.response(guid=s.guid, seq=s.seq + 1, ok=False, message="an older one"))
                        replies.write(wire.response(guid=s.guid, seq=s.seq, ok=True, message="yours"))
                time.sleep(0.005)

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        assert manager.switch(["a"], ["b"], strict=True, timeout_s=5.0) == (True, "yours")
        thread.join()
        (request,) = seen
        assert (list(request.activate_controllers), list(request.deactivate_controllers)) == (["a"], ["b"])
        assert request.strictness == cm.STRICT and request.activate_asap and request.guid == manager._guid
        with pytest.raises(ControllerManagerError, match=r"no reply from /t_cm/switch_controller within 0.3 s"):
            manager.switch(["a"], [], timeout_s=0.3)  # the server is gone quiet
    finally:
        client_side.__del__()
        server.__del__()
