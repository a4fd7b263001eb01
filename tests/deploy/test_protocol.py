"""Serial protocol codec: round trips, streaming, resynchronization, fuzzing, handshake."""

import zlib
from importlib import resources

import numpy as np
import pytest

from trot.deploy import protocol
from trot.deploy.protocol import (
    Command,
    ControlMode,
    Decoder,
    EStop,
    EStopReason,
    Heartbeat,
    Hello,
    HelloAck,
    MessageType,
    ProtocolError,
    State,
    StatusFlags,
    check_version,
    encode,
    frame_size,
    payload_size,
    seq_delta,
)

PUPPER_JOINTS = 12


def make_message(rng: np.random.Generator, msg_type: MessageType, num_joints: int, seq: int):
    """A message of the given type filled with random values."""
    vec = lambda size: rng.standard_normal(size).astype(np.float32)  # noqa: E731
    if msg_type == MessageType.HELLO:
        return Hello(num_joints, rng.bytes(32), version=int(rng.integers(0, 1 << 16)))
    if msg_type == MessageType.HELLO_ACK:
        return HelloAck(num_joints, b"pupper-fw 1.0", version=int(rng.integers(0, 1 << 16)))
    if msg_type == MessageType.STATE:
        quat = vec(4)
        status = StatusFlags(int(rng.integers(0, 1 << 16)))
        n = num_joints
        return State(seq, int(rng.integers(0, 1 << 63)), vec(n), vec(n), vec(n), quat, vec(3), vec(3), status)
    if msg_type == MessageType.COMMAND:
        mode = ControlMode(int(rng.integers(0, len(ControlMode))))
        n = num_joints
        return Command(seq, mode, vec(n), np.full(n, 5.0), np.full(n, 0.1), np.zeros(n))
    if msg_type == MessageType.HEARTBEAT:
        return Heartbeat(seq, int(rng.integers(0, 1 << 63)))
    return EStop(seq, int(rng.integers(0, 256)))


def one_of_each(num_joints: int, seed: int = 0) -> list:
    """One random message of every type."""
    rng = np.random.default_rng(seed)
    return [make_message(rng, t, num_joints, seq) for seq, t in enumerate(MessageType)]


def forge(body: bytes) -> bytes:
    """A well-framed frame with a correct CRC around an arbitrary body (type byte + payload)."""
    body += zlib.crc32(body).to_bytes(4, "little")
    return b"\x00" + protocol.cobs_encode(body) + b"\x00"


def garbage(rng: np.random.Generator, size: int) -> bytes:
    """Random bytes with no 0x00, so that they cannot end a frame."""
    return rng.integers(1, 256, size, dtype=np.uint8).tobytes()


@pytest.mark.parametrize("num_joints", [1, PUPPER_JOINTS, 40])
def test_every_message_type_round_trips_with_equal_float32_values(num_joints):
    sent = one_of_each(num_joints)
    decoder = Decoder(num_joints)
    received = [msg for m in sent for msg in decoder.feed(encode(m))]
    assert received == sent
    for msg in received:
        for value in vars(msg).values():
            if isinstance(value, np.ndarray):
                assert value.dtype == np.float32
    assert decoder.frames_decoded == len(sent)
    assert decoder.crc_errors == decoder.framing_errors == decoder.payload_errors == 0


def test_decoded_fields_keep_their_values_and_types():
    state = State(7, 123456789012, [0.5] * 3, [1.5] * 3, [2.5] * 3, [1, 0, 0, 0], [0, 0, 0.25], [0, 0, 9.81])
    (got,) = Decoder(3).feed(encode(state))
    assert got.seq == 7 and got.timestamp_us == 123456789012
    assert got.status == StatusFlags(0) and isinstance(got.status, StatusFlags)
    np.testing.assert_array_equal(got.accel, np.float32([0, 0, 9.81]))
    cmd = Command(8, ControlMode.DAMPING, [0.1] * 3, [4] * 3, [0.2] * 3, [0] * 3)
    (got,) = Decoder(3).feed(encode(cmd))
    assert got.mode is ControlMode.DAMPING


@pytest.mark.parametrize("num_joints", [1, PUPPER_JOINTS, 16, 40])
def test_frame_size_matches_encoded_length(num_joints):
    for msg in one_of_each(num_joints):
        size = frame_size(msg.msg_type, num_joints)
        body_size = 1 + payload_size(msg.msg_type, num_joints) + 4
        if body_size <= 254:
            assert len(encode(msg)) == size
        else:
            assert len(encode(msg)) <= size


def test_frame_sizes_for_the_pupper_match_the_specification():
    sizes = {t.name: frame_size(t, PUPPER_JOINTS) for t in MessageType}
    assert sizes == {"HELLO": 44, "HELLO_ACK": 28, "STATE": 206, "COMMAND": 205, "HEARTBEAT": 20, "ESTOP": 13}


def test_cobs_matches_the_published_examples():
    run = bytes(range(1, 255))  # 254 non-zero bytes
    examples = {
        b"\x00": b"\x01\x01",
        b"\x00\x00": b"\x01\x01\x01",
        b"\x00\x11\x00": b"\x01\x02\x11\x01",
        b"\x11\x22\x00\x33": b"\x03\x11\x22\x02\x33",
        b"\x11\x22\x33\x44": b"\x05\x11\x22\x33\x44",
        b"\x11\x00\x00\x00": b"\x02\x11\x01\x01\x01",
        run: b"\xff" + run,
        b"\x00" + run: b"\x01\xff" + run,
        run + b"\xff": b"\xff" + run + b"\x02\xff",
        run + b"\x00": b"\xff" + run + b"\x01\x01",
    }
    from cobs.cobs import _cobs_py  # the pure-Python fallback, what a robot without a C compiler installs

    for raw, cobs in examples.items():
        assert protocol.cobs_encode(raw) == cobs == _cobs_py.encode(raw)
        assert protocol.cobs_decode(cobs) == raw == _cobs_py.decode(cobs)


def test_the_pure_python_cobs_fallback_passes_the_fuzz_too(monkeypatch):
    from cobs.cobs import _cobs_py

    from trot.deploy.fuzz import run_fuzz

    for name in ("encode", "decode", "DecodeError"):
        monkeypatch.setattr(protocol.cobs, name, getattr(_cobs_py, name))
    figures = run_fuzz(20_000, PUPPER_JOINTS, seed=7)
    assert figures["problems"] == [] and figures["accepted"] == figures["intact_sent"] > 3000


def test_golden_frame_in_the_specification_matches_the_encoder():
    # Firmware authors check their encoder against this frame; keep PROTOCOL.md in step.
    frame = encode(Heartbeat(seq=1, timestamp_us=1000))
    spec = (resources.files("trot.deploy") / "PROTOCOL.md").read_text()
    assert frame.hex(" ") in spec


def test_stream_split_at_every_byte_boundary_gives_the_same_messages():
    sent = one_of_each(PUPPER_JOINTS)
    stream = b"".join(encode(m) for m in sent)
    for split in range(len(stream) + 1):
        decoder = Decoder(PUPPER_JOINTS)
        received = decoder.feed(stream[:split]) + decoder.feed(stream[split:])
        assert received == sent, f"split at byte {split}"
        assert decoder.bytes_discarded == 0
    decoder = Decoder(PUPPER_JOINTS)
    assert [m for i in range(len(stream)) for m in decoder.feed(stream[i : i + 1])] == sent


def test_garbage_before_and_between_frames_is_skipped_and_counted():
    rng = np.random.default_rng(1)
    sent = one_of_each(PUPPER_JOINTS)
    runs = [garbage(rng, int(size)) for size in rng.integers(1, 300, len(sent))]
    stream = b"".join(run + encode(m) for run, m in zip(runs, sent, strict=True))
    decoder = Decoder(PUPPER_JOINTS)
    assert decoder.feed(stream) == sent
    assert decoder.bytes_discarded == sum(map(len, runs))
    # The run before the first delimiter is a partial frame, expected on opening the port.
    assert decoder.framing_errors + decoder.crc_errors == len(runs) - 1
    assert decoder.payload_errors == 0


def test_garbage_containing_delimiters_loses_no_frame():
    rng = np.random.default_rng(2)
    sent = one_of_each(PUPPER_JOINTS)
    stream = b"".join(rng.bytes(100) + b"\x00\x00" + rng.bytes(50) + encode(m) for m in sent)
    assert Decoder(PUPPER_JOINTS).feed(stream) == sent


def test_opening_the_port_mid_frame_drops_the_partial_frame_without_an_error():
    sent = one_of_each(PUPPER_JOINTS)
    stream = b"".join(encode(m) for m in sent)
    decoder = Decoder(PUPPER_JOINTS)
    assert decoder.feed(stream[30:]) == sent[1:]
    assert decoder.crc_errors == decoder.framing_errors == 0
    assert decoder.bytes_discarded == len(encode(sent[0])) - 30 - 1


def test_endless_bytes_without_delimiter_are_bounded_and_counted_once():
    decoder = Decoder(PUPPER_JOINTS)
    decoder.feed(b"\x00")
    noise = b"\x01" * 4096
    for _ in range(256):
        decoder.feed(noise)
        assert len(decoder._pending) <= decoder.max_encoded_size
    beat = Heartbeat(5, 6)
    assert decoder.feed(encode(beat)) == [beat]
    assert decoder.framing_errors == 1
    assert decoder.bytes_discarded == 256 * len(noise)


def test_wrong_num_joints_payload_is_rejected():
    for msg in one_of_each(PUPPER_JOINTS)[2:4]:  # State and Command
        for joints in (PUPPER_JOINTS - 1, PUPPER_JOINTS + 1):
            decoder = Decoder(joints)
            assert decoder.feed(encode(msg)) == []
            assert decoder.payload_errors == 1 and decoder.crc_errors == 0


def test_handshake_frames_decode_whatever_the_joint_count():
    # So that a joint-count mismatch is reported by check_version, not lost as a bad frame.
    hello = Hello(PUPPER_JOINTS, b"\x12" * 32)
    ack = HelloAck(PUPPER_JOINTS, b"fw")
    assert Decoder(3).feed(encode(hello) + encode(ack)) == [hello, ack]


def test_unknown_type_and_unknown_mode_are_rejected_even_with_a_valid_crc():
    decoder = Decoder(PUPPER_JOINTS)
    cmd = one_of_each(PUPPER_JOINTS)[3]
    payload = cmd._payload()
    bad_mode = payload[:4] + bytes([len(ControlMode)]) + payload[5:]
    frames = forge(bytes([0x7F]) + payload) + forge(bytes([MessageType.COMMAND]) + bad_mode)
    assert decoder.feed(frames + encode(cmd)) == [cmd]
    assert decoder.payload_errors == 2


def test_estop_with_an_unknown_reason_is_still_delivered():
    stops = [EStop(1, EStopReason.BUTTON), EStop(2, 250)]
    assert Decoder(PUPPER_JOINTS).feed(b"".join(map(encode, stops))) == stops


def test_nan_and_inf_survive_encoding():
    n = PUPPER_JOINTS
    pos = np.zeros(n, np.float32)
    pos[3] = np.nan
    state = State(1, 2, pos, np.zeros(n), np.zeros(n), [np.nan, 0, 0, 0], [np.inf, 0, 0], np.zeros(3))
    cmd = Command(3, ControlMode.POSITION, np.zeros(n), np.full(n, np.nan), np.zeros(n), np.zeros(n))
    got_state, got_cmd = Decoder(n).feed(encode(state) + encode(cmd))
    assert np.isnan(got_state.joint_pos[3]) and np.isnan(got_state.imu_quat[0])
    assert np.isposinf(got_state.gyro[0])
    assert np.isnan(got_cmd.kp).all()
    assert got_state == state and got_cmd == cmd


def test_check_version_mismatch_names_both_versions():
    with pytest.raises(ProtocolError, match=r"version 3.*version 7"):
        check_version(HelloAck(PUPPER_JOINTS, b"fw", version=7), PUPPER_JOINTS, version=3)
    with pytest.raises(ProtocolError, match=r"version 1.*host speaks version 2"):
        check_version(Hello(PUPPER_JOINTS, b"id", version=2), PUPPER_JOINTS, version=1)
    check_version(HelloAck(PUPPER_JOINTS, b"fw"), PUPPER_JOINTS)


def test_check_version_joint_count_mismatch_names_both_counts():
    with pytest.raises(ProtocolError, match=r"expects 12 joints.*reports 8"):
        check_version(HelloAck(8, b"fw"), PUPPER_JOINTS)


def test_messages_are_immutable_and_do_not_freeze_the_callers_arrays():
    target = np.zeros(PUPPER_JOINTS, np.float32)
    cmd = Command(1, ControlMode.OFF, target, target, target, target)
    assert target.flags.writeable
    assert not cmd.kp.flags.writeable
    with pytest.raises(AttributeError):
        cmd.seq = 2


def test_constructors_reject_inconsistent_or_out_of_range_fields():
    z = np.zeros(PUPPER_JOINTS)
    with pytest.raises(ValueError, match="kp"):
        Command(1, ControlMode.POSITION, z, z[:-1], z, z)
    with pytest.raises(ValueError, match="gyro"):
        State(1, 2, z, z, z, [1, 0, 0, 0], [0, 0], [0, 0, 0])
    with pytest.raises(ValueError, match="seq"):
        Heartbeat(1 << 32, 0)
    with pytest.raises(ValueError, match="robot_id"):
        Hello(PUPPER_JOINTS, b"x" * 33)
    with pytest.raises(ValueError, match="ControlMode"):
        Command(1, 9, z, z, z, z)


def test_encode_refuses_a_message_for_another_joint_count():
    cmd = one_of_each(PUPPER_JOINTS)[3]
    with pytest.raises(ValueError, match="12 joints, expected 8"):
        encode(cmd, num_joints=8)
    assert encode(cmd, num_joints=PUPPER_JOINTS) == encode(cmd)


def test_seq_delta_counts_lost_frames_across_wraparound():
    assert seq_delta(5, 6) == 1
    assert seq_delta(5, 9) == 4
    assert seq_delta((1 << 32) - 1, 1) == 2
    assert seq_delta(9, 5) == -4  # went backwards: the microcontroller restarted


def test_fuzz_never_raises_and_accepts_exactly_the_frames_sent_intact():
    """CI's short run of `trot bench fuzz` (which runs a million frames)."""
    from trot.deploy.fuzz import format_fuzz, run_fuzz

    figures = run_fuzz(120_000, PUPPER_JOINTS, seed=20240611)
    print(format_fuzz(figures))
    assert figures["problems"] == []
    # Every intact frame is self-delimited, so none may be lost; nothing else may get through.
    assert figures["accepted"] == figures["intact_sent"] > 20_000
    assert figures["crc_errors"] > 1000 and figures["framing_errors"] > 1000 and figures["payload_errors"] > 20_000


# ---- golden frames: every message type, byte for byte from PROTOCOL.md's tables ----------------------
# Each payload below is written out by hand from the offsets and types in PROTOCOL.md (little-endian
# uint/float32), with n = 2 joints; values are chosen so that every field has distinct bytes and a swapped
# field, a flipped byte order or a shifted offset changes the frame. Floats: 1.0 = 0000803f, -1.0 = 000080bf,
# 0.5 = 0000003f, -0.5 = 000000bf, 2.0 = 00000040, -2.0 = 000000c0, 0.25 = 0000803e, 0.125 = 0000003e,
# 3.0 = 00004040, 4.0 = 00008040, 9.75 = 00001c41, 0.0 = 00000000.
GOLDEN_JOINTS = 2
GOLDEN = [  # (message factory, type, payload): built in the test, not at import
    (
        lambda: Hello(num_joints=12, robot_id=bytes(range(1, 33)), version=1),
        "01",  # type
        "0100 0c00" + bytes(range(1, 33)).hex(),  # version, num_joints, robot_id[32]
    ),
    (
        lambda: HelloAck(num_joints=12, firmware=b"pupper-fw 1.0", version=1),
        "02",
        "0100 0c00" + b"pupper-fw 1.0".hex() + "000000",  # version, num_joints, firmware[16] NUL-padded
    ),
    (
        lambda: State(seq=0x04030201, timestamp_us=0x0C0B0A0908070605, joint_pos=[1.0, -1.0], joint_vel=[0.5, 2.0],
              joint_current=[-2.0, 0.25], imu_quat=[0.5, -0.5, 0.5, -0.5], gyro=[0.125, 3.0, 4.0],
              accel=[0.0, -0.5, 9.75], status=0x0209),  # fmt: skip
        "10",
        "01020304"  # seq          offset 0
        "05060708090a0b0c"  # timestamp_us  offset 4
        "0902"  # status       offset 12
        "0000803f 000080bf"  # joint_pos     offset 14
        "0000003f 00000040"  # joint_vel     offset 14 + 4n
        "000000c0 0000803e"  # joint_current offset 14 + 8n
        "0000003f 000000bf 0000003f 000000bf"  # imu_quat w x y z  offset 14 + 12n
        "0000003e 00004040 00008040"  # gyro   offset 30 + 12n
        "00000000 000000bf 00001c41",  # accel  offset 42 + 12n
    ),
    (
        lambda: Command(seq=0x0A0B0C0D, mode=ControlMode.DAMPING, joint_target=[1.0, -1.0], kp=[4.0, 3.0],
                kd=[0.25, 0.125], tau_ff=[-0.5, 0.0]),  # fmt: skip
        "11",
        "0d0c0b0a"  # seq           offset 0
        "01"  # mode (DAMPING)  offset 4
        "0000803f 000080bf"  # joint_target offset 5
        "00008040 00004040"  # kp           offset 5 + 4n
        "0000803e 0000003e"  # kd           offset 5 + 8n
        "000000bf 00000000",  # tau_ff      offset 5 + 12n
    ),
    (lambda: Heartbeat(seq=7, timestamp_us=0x0102030405060708), "20", "07000000 0807060504030201"),
    (lambda: EStop(seq=0x01020304, reason=EStopReason.HOST), "21", "04030201 02"),
]


def golden_wire(type_hex: str, payload_hex: str) -> bytes:
    """0x00 | COBS(type | payload | CRC-32 little-endian) | 0x00, COBS from the `cobs` package itself."""
    from cobs import cobs

    body = bytes.fromhex(type_hex + payload_hex.replace(" ", ""))
    body += zlib.crc32(body).to_bytes(4, "little")
    return b"\x00" + cobs.encode(body) + b"\x00"


@pytest.mark.parametrize("make, type_hex, payload_hex", GOLDEN, ids=[type(m()).__name__ for m, _, _ in GOLDEN])
def test_golden_frame_of_every_message_type_from_the_specification(make, type_hex, payload_hex):
    msg = make()
    payload = bytes.fromhex(payload_hex.replace(" ", ""))
    assert len(payload) == payload_size(msg.msg_type, GOLDEN_JOINTS)  # PROTOCOL.md's "payload bytes" column
    wire = golden_wire(type_hex, payload_hex)
    assert encode(msg) == wire, f"{type(msg).__name__}: encoder\n{encode(msg).hex(' ')}\nspec\n{wire.hex(' ')}"
    decoder = Decoder(GOLDEN_JOINTS)
    assert decoder.feed(wire) == [msg]
    assert (decoder.frames_decoded, decoder.framing_errors, decoder.crc_errors, decoder.payload_errors) == (1, 0, 0, 0)


def test_the_golden_frames_cover_every_message_type():
    assert {m().msg_type for m, _, _ in GOLDEN} == set(MessageType)


ZERO_CODE_INPUTS = [b"\x00", b"\x00\x01", b"\x01\x00", b"\x02\x11\x00", b"\x03\x11\x00\x22", b"\x02\x00\x00\x01"]


def test_cobs_decoder_refuses_a_zero_code_byte_promptly():
    """A zero byte is never valid inside a COBS run (only the delimiter is 0); a decoder that takes it as a code
    of length 0 loops forever. Checked in a child process so that a regression fails on the timeout instead of
    hanging the suite; both the C extension and the pure-Python fallback."""
    import subprocess
    import sys

    code = (
        "from cobs.cobs import _cobs_py\n"
        "from trot.deploy import protocol\n"
        "for impl in ('C extension', 'pure Python'):\n"
        f"    for data in {ZERO_CODE_INPUTS!r}:\n"
        "        assert protocol.cobs_decode(data) is None, (impl, data)\n"
        "    protocol.cobs.decode, protocol.cobs.DecodeError = _cobs_py.decode, _cobs_py.DecodeError\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)  # runs in ~0.3 s
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]
