"""Unitree's service request/response types and the motion switcher's calls, without a DDS peer: type names and
identifiers against unitree_sdk2's, the CDR bytes of known requests against an independent XCDR1 encoding and
against bytes written out by hand from the IDL, the JSON unitree_sdk2_python sends, the API ids, and the
policy's rules. The calls over DDS, against the emulated robot: tests/hil/test_hil_unitree.py."""

import json
import struct

import pytest

pytest.importorskip("cyclonedds")

from unitree_idl import (  # noqa: E402
    API_IDL,
    UNITREE_API_BYTES,
    UNITREE_API_TYPE_IDS,
    build,
    default_fields,
    request_fields,
    xcdr1_le,
)

from trot.deploy.unitree import api_msgs, motion, rpc  # noqa: E402


def test_types_carry_unitree_api_type_names_and_the_services_topics():
    names = {name: getattr(api_msgs, name).__idl_typename__ for name in API_IDL}
    assert names == {name: f"unitree_api::msg::dds_::{name}" for name in API_IDL}
    assert (api_msgs.request_topic("motion_switcher"), api_msgs.response_topic("motion_switcher")) == (
        "rt/api/motion_switcher/request",
        "rt/api/motion_switcher/response",
    )
    assert (api_msgs.request_topic("sport"), api_msgs.response_topic("sport")) == (
        "rt/api/sport/request",
        "rt/api/sport/response",
    )


@pytest.mark.parametrize("type_name", sorted(API_IDL))
def test_field_order_follows_the_idl(type_name):
    assert list(getattr(api_msgs, type_name).__dataclass_fields__) == [f[0] for f in API_IDL[type_name]]


@pytest.mark.parametrize("type_name", sorted(UNITREE_API_TYPE_IDS))
def test_type_identifiers_equal_unitree_sdk2s(type_name):
    info = getattr(api_msgs, type_name).__idl__.get_type_info()
    minimal, complete = UNITREE_API_TYPE_IDS[type_name]
    assert bytes(info.minimal.typeid_with_size.type_id.value).hex() == minimal
    assert bytes(info.complete.typeid_with_size.type_id.value).hex() == complete


def test_api_ids_are_unitree_sdk2s():
    assert (motion.CHECK_MODE, motion.SELECT_MODE, motion.RELEASE_MODE, motion.STAND_DOWN) == (1001, 1002, 1003, 1005)
    assert (motion.MOTION_SWITCHER, motion.SPORT) == ("motion_switcher", "sport")


def test_the_parameters_are_the_json_unitree_sdk2_python_sends():
    """MotionSwitcherClient.SelectMode sends json.dumps({"name": name}); CheckMode, ReleaseMode and StandDown "{}"."""
    assert rpc.build_request(7, motion.SELECT_MODE, {"name": "normal"}).parameter == '{"name": "normal"}'
    assert rpc.build_request(7, motion.CHECK_MODE).parameter == "{}"


def test_select_mode_request_bytes_are_the_idls():
    """The SelectMode("normal") request with id 0x0102030405060708, field by field as XCDR1 lays it out."""
    request = rpc.build_request(0x0102030405060708, motion.SELECT_MODE, {"name": "normal"})
    parameter = b'{"name": "normal"}\x00'  # 19 bytes with its NUL
    by_hand = (
        b"\x00\x01\x00\x00"  # encapsulation: CDR, little-endian
        + struct.pack("<q", 0x0102030405060708)  # header.identity.id at 0
        + struct.pack("<q", 1002)  # header.identity.api_id at 8
        + struct.pack("<q", 0)  # header.lease.id at 16
        + struct.pack("<i", 0)  # header.policy.priority at 24
        + b"\x00\x00\x00\x00"  # header.policy.noreply at 28, then 3 bytes to align the string's length
        + struct.pack("<I", 19)  # parameter: length with the NUL, at 32
        + parameter  # 36..54
        + b"\x00"  # to align the sequence's length to 4
        + struct.pack("<I", 0)  # binary: empty, at 56
    )
    assert len(by_hand) == 4 + 60
    assert request.serialize() == by_hand
    assert by_hand == xcdr1_le("Request_", request_fields(0x0102030405060708, 1002, '{"name": "normal"}'))
    assert by_hand.hex() == UNITREE_API_BYTES["Request_"]  # what unitree_sdk2_python's own Request_ serializes


def test_response_bytes_decode_to_the_fields_the_client_reads():
    fields = default_fields("Response_")
    fields["header"] = dict(identity=dict(id=-5, api_id=1001), status=dict(code=7004))
    fields["data"] = json.dumps({"form": "0", "name": "normal"})
    fields["binary"] = [1, 2, 250]
    response = api_msgs.Response_.deserialize(xcdr1_le("Response_", fields))
    assert response == build("Response_", fields)
    assert response.serialize().hex() == UNITREE_API_BYTES["Response_"]  # unitree_sdk2_python's bytes for it
    assert (response.header.identity.id, response.header.status.code, json.loads(response.data)["name"]) == (
        -5,
        7004,
        "normal",
    )


def test_status_codes_are_named():
    assert api_msgs.status_text(7004) == "7004 (name or alias is invalid)"
    assert api_msgs.status_text(3203) == "3203 (API not implemented by the server)"
    assert api_msgs.status_text(12345) == "12345 (no published meaning)"


def test_request_ids_increase_even_within_one_clock_tick():
    ids = [rpc.new_request_id() for _ in range(1000)]
    assert all(b > a for a, b in zip(ids, ids[1:]))


def test_motion_policy_refuses_a_restore_without_a_release_and_a_release_without_the_switcher():
    with pytest.raises(ValueError, match="only a mode trot released can be restored"):
        motion.MotionPolicy(restore=True)
    with pytest.raises(ValueError, match="needs the motion switcher"):
        motion.MotionPolicy(check=False, release=True)


def test_modes_are_described_with_their_service():
    assert motion.Mode("normal", "0").describe() == "'normal' (Unitree's sport_mode, form '0')"
    assert motion.Mode("ai-w", "1").describe() == "'ai-w' (form '1')"
    assert motion.Mode("normal").describe() == "'normal' (Unitree's sport_mode)"
    assert motion.Mode("mcf").describe() == "'mcf'"


def test_wait_until_still_needs_the_minimum_wait_and_a_still_window():
    """On a fake clock: still from the start, it returns once STAND_DOWN_MIN_S + STILL_S have passed; a joint
    moving the whole time is a refusal naming its speed after STAND_DOWN_TIMEOUT_S; no LowState says so."""
    now = [0.0]

    def clock():
        return now[0]

    def sleep(dt):
        now[0] += dt

    waited = motion.wait_until_still(lambda: 0.05, clock, sleep)
    assert motion.STAND_DOWN_MIN_S + motion.STILL_S <= waited < motion.STAND_DOWN_MIN_S + motion.STILL_S + 0.05
    speeds = iter([1.0] * 150 + [0.0] * 1000)  # asked from 1 s on: moving for 150 polls (3 s at 20 ms), then still
    now[0] = 0.0
    assert 4.0 + motion.STILL_S <= motion.wait_until_still(lambda: next(speeds), clock, sleep) < 4.6
    now[0] = 0.0
    with pytest.raises(motion.MotionServiceError, match=r"not still within 8 s \(a joint still moved at 0\.90 rad/s"):
        motion.wait_until_still(lambda: 0.9, clock, sleep)
    now[0] = 0.0
    with pytest.raises(motion.MotionServiceError, match=r"\(no LowState arrived; "):
        motion.wait_until_still(lambda: None, clock, sleep)
