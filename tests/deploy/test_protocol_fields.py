"""The codec's field checks and counters at their exact bounds: every integer field's width and name, handshake
mismatch messages, the decoder's size limit and error counts, message equality."""

import zlib

import numpy as np
import pytest
from cobs import cobs

from trot.deploy import protocol
from trot.deploy.protocol import (
    MAX_CANDIDATE_SIZE,
    Command,
    ControlMode,
    Decoder,
    EStop,
    Heartbeat,
    Hello,
    HelloAck,
    MessageType,
    ProtocolError,
    State,
    check_version,
    frame_size,
)

Z2 = np.zeros(2)


def make(kind: str, **fields):
    base = {
        "Hello": lambda f: Hello(**{"num_joints": 2, "robot_id": b"r", "version": 1, **f}),
        "HelloAck": lambda f: HelloAck(**{"num_joints": 2, "firmware": b"fw", "version": 1, **f}),
        "State": lambda f: State(**{"seq": 1, "timestamp_us": 2, "joint_pos": Z2, "joint_vel": Z2,
                                    "joint_current": Z2, "imu_quat": np.ones(4), "gyro": np.zeros(3),
                                    "accel": np.zeros(3), "status": 0, **f}),
        "Command": lambda f: Command(**{"seq": 1, "mode": ControlMode.OFF, "joint_target": Z2, "kp": Z2, "kd": Z2,
                                        "tau_ff": Z2, **f}),
        "Heartbeat": lambda f: Heartbeat(**{"seq": 1, "timestamp_us": 2, **f}),
        "EStop": lambda f: EStop(**{"seq": 1, "reason": 0, **f}),
    }  # fmt: skip
    return base[kind](fields)


INT_FIELDS = [("Hello", "num_joints", 16), ("Hello", "version", 16), ("HelloAck", "num_joints", 16),
              ("HelloAck", "version", 16), ("State", "seq", 32), ("State", "timestamp_us", 64),
              ("State", "status", 16), ("Command", "seq", 32), ("Heartbeat", "seq", 32),
              ("Heartbeat", "timestamp_us", 64), ("EStop", "seq", 32), ("EStop", "reason", 8)]  # fmt: skip


@pytest.mark.parametrize("kind, name, bits", INT_FIELDS, ids=[f"{k}.{n}" for k, n, _ in INT_FIELDS])
def test_every_integer_field_takes_its_full_width_as_a_python_int_and_refuses_one_more(kind, name, bits):
    top = make(kind, **{name: np.uint64(2**bits - 1)})
    assert getattr(top, name) == 2**bits - 1 and type(int(getattr(top, name))) is int
    if name != "status":  # status becomes StatusFlags (an int)
        assert type(getattr(top, name)) is int, "stored as a plain int, whatever integer type came in"
    with pytest.raises(ValueError) as err:
        make(kind, **{name: 2**bits})
    assert str(err.value) == f"{name}={2**bits} does not fit in uint{bits}"
    with pytest.raises(ValueError, match=rf"^{name}=-1 does not fit in uint{bits}$"):
        make(kind, **{name: -1})


@pytest.mark.parametrize("kind, name, size", [("Hello", "robot_id", 32), ("HelloAck", "firmware", 16)])
def test_fixed_byte_fields_are_nul_padded_at_the_end_and_checked_by_name(kind, name, size):
    msg = make(kind, **{name: b"ab"})
    assert getattr(msg, name) == b"ab" + b"\x00" * (size - 2)
    with pytest.raises(ValueError) as err:
        make(kind, **{name: b"x" * (size + 1)})
    assert str(err.value) == f"{name} is {size + 1} bytes, expected at most {size}"
    with pytest.raises(TypeError) as err:
        make(kind, **{name: "ab"})
    assert str(err.value) == f"{name} must be bytes, got str"
    assert getattr(make(kind, **{name: bytearray(b"ab")}), name) == b"ab" + b"\x00" * (size - 2)


def test_messages_compare_by_every_field_bitwise():
    a = make("State")
    assert a == make("State") and a != make("State", joint_pos=[0.0, 1.0])
    assert a != make("State", joint_pos=np.zeros(3), joint_vel=np.zeros(3), joint_current=np.zeros(3))
    assert make("State", joint_pos=[np.nan, 0.0]) == make("State", joint_pos=[np.nan, 0.0])
    assert a != make("Heartbeat") and a.__eq__(make("Heartbeat")) is NotImplemented


def test_check_version_names_the_side_and_both_values():
    ack = HelloAck(12, b"pupper-fw 1.0", version=2)
    with pytest.raises(ProtocolError) as err:
        check_version(ack, 12)
    assert str(err.value) == (
        "serial protocol version mismatch: this side speaks version 1, the microcontroller (firmware "
        "'pupper-fw 1.0') speaks version 2; flash firmware and install trot built for the same protocol version"
    )
    with pytest.raises(ProtocolError) as err:
        check_version(Hello(8, b"", version=1), 12)
    assert str(err.value) == "joint count mismatch: this side expects 12 joints, the host reports 8"
    check_version(Hello(12, b""), 12)
    check_version(HelloAck(12, b""), 12)


def test_frame_sizes_are_exact_integers_on_either_side_of_a_cobs_block():
    # body = 1 + payload + 4; COBS adds one byte per started 254-byte block; two delimiters.
    for n, body in ((16, 1 + 54 + 12 * 16 + 4), (17, 1 + 54 + 12 * 17 + 4)):  # 251 and 263 bytes
        assert frame_size(MessageType.STATE, n) == 2 + body + -(-body // 254)
        assert type(frame_size(MessageType.STATE, n)) is int
    assert protocol._max_cobs_size(254) == 255 and protocol._max_cobs_size(255) == 257
    assert protocol._max_cobs_size(1) == 2 and protocol._max_cobs_size(508) == 510


def test_decoder_joint_count_is_checked_and_its_size_limit_follows_the_largest_frame():
    with pytest.raises(ValueError, match=r"^num_joints=65536 does not fit in uint16$"):
        Decoder(65536)
    with pytest.raises(ValueError, match=r"^num_joints=0, expected at least 1$"):
        Decoder(0)
    assert Decoder(12).max_encoded_size == MAX_CANDIDATE_SIZE
    assert Decoder(400).max_encoded_size == frame_size(MessageType.COMMAND, 400) - 2 > MAX_CANDIDATE_SIZE  # 6436
    assert Decoder(65535).num_joints == 65535


def forged(size: int) -> bytes:
    """A run of exactly `size` COBS bytes (no delimiters) holding a body with a valid CRC and an unknown type."""
    body = b"\x7f" + b"\x01" * (size - 1 - 1 - 4 - (size - 1) // 255)
    body += zlib.crc32(body).to_bytes(4, "little")
    encoded = cobs.encode(body)
    assert len(encoded) == size, (len(encoded), size)
    return encoded


def test_a_run_longer_than_the_limit_is_a_framing_error_without_being_decoded():
    d = Decoder(12)
    d.feed(b"\x00" + forged(MAX_CANDIDATE_SIZE) + b"\x00")  # at the limit: decoded, a payload error
    assert (d.framing_errors, d.crc_errors, d.payload_errors) == (0, 0, 1)
    d.feed(forged(MAX_CANDIDATE_SIZE + 1) + b"\x00")  # one more: refused unread
    assert (d.framing_errors, d.crc_errors, d.payload_errors) == (1, 0, 1)


def test_pending_bytes_overflow_only_past_the_limit_and_each_overflow_counts_once():
    d = Decoder(12)
    d.feed(b"\x00" + b"\x01" * MAX_CANDIDATE_SIZE)  # exactly the limit pending: still a candidate
    assert d.framing_errors == 0
    d.feed(b"\x01")
    assert d.framing_errors == 1
    d.feed(b"\x01" * 10_000 + b"\x00" + b"\x01" * (MAX_CANDIDATE_SIZE + 1))
    assert d.framing_errors == 2


def test_each_bad_frame_counts_one_error_of_its_kind():
    d = Decoder(12)
    good = protocol.encode(Heartbeat(1, 2))
    body = bytearray(cobs.decode(good[1:-1]))
    body[-1] ^= 0x10  # the CRC's last byte
    for _ in range(3):
        d.feed(b"\x00" + cobs.encode(bytes(body)) + b"\x00")
    assert (d.crc_errors, d.framing_errors, d.payload_errors, d.frames_decoded) == (3, 0, 0, 0)
    assert d.feed(good) == [Heartbeat(1, 2)] and d.frames_decoded == 1


def test_array_fields_are_checked_naming_the_field_and_the_shape():
    with pytest.raises(ValueError) as err:
        make("State", joint_pos=[], joint_vel=[], joint_current=[])
    assert str(err.value) == "joint_pos is empty, expected one value per joint"
    with pytest.raises(ValueError) as err:
        make("State", imu_quat=[1.0, 0.0, 0.0])
    assert str(err.value) == "imu_quat has shape (3,), expected (4,)"
    with pytest.raises(ValueError) as err:
        make("Command", kd=np.zeros((2, 1)))
    assert str(err.value) == "kd has shape (2, 1), expected (2,)"
    with pytest.raises(ValueError) as err:
        protocol.encode(make("State"), num_joints=12)
    assert str(err.value) == "State has 2 joints, expected 12"


@pytest.mark.parametrize("body, counts", [
    (b"\x7f", (1, 0, 0)),  # shorter than type + CRC: framing
    (b"\x7f\x00\x00\x00", (1, 0, 0)),
    (b"\x7f" + zlib.crc32(b"\x7f").to_bytes(4, "little"), (0, 0, 1)),  # exactly type + CRC, no payload: payload
])  # fmt: skip
def test_the_shortest_body_is_type_and_crc(body, counts):
    d = Decoder(12)
    assert d.feed(b"\x00" + cobs.encode(body) + b"\x00") == []
    assert (d.framing_errors, d.crc_errors, d.payload_errors) == counts
