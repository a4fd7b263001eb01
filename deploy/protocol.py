"""Serial protocol between the onboard computer (host) and the motor/IMU microcontroller.

Every frame is ``0x00 COBS(type | payload | CRC-32) 0x00``, little-endian throughout.
``PROTOCOL.md`` next to this file is the specification; this module implements it.
"""

from __future__ import annotations

import enum
import operator
import struct
import zlib
from dataclasses import dataclass, fields
from typing import ClassVar

import numpy as np
from cobs import cobs  # C extension where it compiled, else its pure-Python fallback (PROTOCOL.md)

# The link's vocabulary, which frames carry; defined in the neutral `link` module and re-exported here.
from trot.deploy.link import ControlMode, EStopReason, StatusFlags  # noqa: F401

PROTOCOL_VERSION = 1
DELIMITER = b"\x00"
ROBOT_ID_SIZE = 32
FIRMWARE_SIZE = 16
# Longest run between delimiters the decoder examines (bounds its memory).
MAX_CANDIDATE_SIZE = 4096

_CRC = struct.Struct("<I")
_F32 = np.dtype("<f4")
# Frame body = type byte + payload + CRC; COBS adds one code byte, plus one more per 254 bytes.
_TYPE_SIZE = 1
_COBS_BLOCK = 254


class ProtocolError(Exception):
    """The two ends of the link cannot talk to each other (version or joint count differ)."""


class MessageType(enum.IntEnum):
    """First byte of every frame body."""

    HELLO = 0x01
    HELLO_ACK = 0x02
    STATE = 0x10
    COMMAND = 0x11
    HEARTBEAT = 0x20
    ESTOP = 0x21


def _uint(name: str, value: int, bits: int) -> int:
    """Return value as an int after checking it fits in an unsigned field of `bits` bits."""
    value = operator.index(value)
    if not 0 <= value < 1 << bits:
        raise ValueError(f"{name}={value} does not fit in uint{bits}")
    return value


def _vector(name: str, value: object, size: int | None = None) -> np.ndarray:
    """Copy value to a read-only 1-D float32 array, checking its length when given."""
    # Copy so that freezing never touches the caller's array.
    array = np.array(value, dtype=np.float32)
    if array.ndim != 1 or (size is not None and array.shape[0] != size):
        expected = f"({size},)" if size is not None else "1-D"
        raise ValueError(f"{name} has shape {array.shape}, expected {expected}")
    array.setflags(write=False)
    return array


def _fixed_bytes(name: str, value: bytes, size: int) -> bytes:
    """Return value NUL-padded to exactly `size` bytes."""
    if not isinstance(value, (bytes, bytearray, memoryview)):
        raise TypeError(f"{name} must be bytes, got {type(value).__name__}")
    value = bytes(value)
    if len(value) > size:
        raise ValueError(f"{name} is {len(value)} bytes, expected at most {size}")
    return value.ljust(size, b"\x00")


def _joint_vectors(msg: object, names: tuple[str, ...]) -> None:
    """Freeze the per-joint arrays of msg, checking they all have the same length."""
    num_joints = len(np.atleast_1d(getattr(msg, names[0])))
    if num_joints < 1:
        raise ValueError(f"{names[0]} is empty, expected one value per joint")
    for name in names:
        object.__setattr__(msg, name, _vector(name, getattr(msg, name), num_joints))


def _floats(*arrays: np.ndarray) -> bytes:
    """Little-endian float32 bytes of the arrays, one after the other."""
    return np.concatenate(arrays).astype(_F32, copy=False).tobytes()


def _split(payload: bytes, offset: int, sizes: tuple[int, ...]) -> list[np.ndarray]:
    """Read consecutive little-endian float32 vectors of the given sizes from payload."""
    values = np.frombuffer(payload, dtype=_F32, offset=offset)
    starts = np.cumsum((0, *sizes))
    return [values[a:b] for a, b in zip(starts[:-1], starts[1:], strict=True)]


class _Message:
    """Equality for messages: fields equal, arrays compared bitwise so that NaN equals itself."""

    msg_type: ClassVar[MessageType]

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return all(_same(getattr(self, f.name), getattr(other, f.name)) for f in fields(self))

    __hash__ = None  # arrays are mutable in general; messages are compared, not hashed


def _same(a: object, b: object) -> bool:
    """Field equality; arrays bitwise (a received NaN must compare equal to the sent NaN)."""
    if isinstance(a, np.ndarray):
        return a.shape == b.shape and a.tobytes() == b.tobytes()
    return a == b


_HELLO = struct.Struct(f"<HH{ROBOT_ID_SIZE}s")


@dataclass(frozen=True, eq=False)
class Hello(_Message):
    """Host → microcontroller: opens a session, stating the host's version and joint count."""

    num_joints: int
    robot_id: bytes  # up to 32 bytes, NUL-padded: e.g. bytes.fromhex(contract_sha256)
    version: int = PROTOCOL_VERSION
    msg_type: ClassVar[MessageType] = MessageType.HELLO

    def __post_init__(self) -> None:
        object.__setattr__(self, "num_joints", _uint("num_joints", self.num_joints, 16))
        object.__setattr__(self, "robot_id", _fixed_bytes("robot_id", self.robot_id, ROBOT_ID_SIZE))
        object.__setattr__(self, "version", _uint("version", self.version, 16))

    def _payload(self) -> bytes:
        return _HELLO.pack(self.version, self.num_joints, self.robot_id)

    @classmethod
    def _from_payload(cls, payload: bytes, num_joints: int) -> Hello:
        version, joints, robot_id = _HELLO.unpack(payload)
        return cls(joints, robot_id, version)


_HELLO_ACK = struct.Struct(f"<HH{FIRMWARE_SIZE}s")


@dataclass(frozen=True, eq=False)
class HelloAck(_Message):
    """Microcontroller → host: answers every Hello with its own version and joint count."""

    num_joints: int
    firmware: bytes  # up to 16 bytes of ASCII, NUL-padded
    version: int = PROTOCOL_VERSION
    msg_type: ClassVar[MessageType] = MessageType.HELLO_ACK

    def __post_init__(self) -> None:
        object.__setattr__(self, "num_joints", _uint("num_joints", self.num_joints, 16))
        object.__setattr__(self, "firmware", _fixed_bytes("firmware", self.firmware, FIRMWARE_SIZE))
        object.__setattr__(self, "version", _uint("version", self.version, 16))

    @property
    def firmware_name(self) -> str:
        """Firmware string without padding, for messages and logs."""
        return self.firmware.rstrip(b"\x00").decode("ascii", "replace")

    def _payload(self) -> bytes:
        return _HELLO_ACK.pack(self.version, self.num_joints, self.firmware)

    @classmethod
    def _from_payload(cls, payload: bytes, num_joints: int) -> HelloAck:
        version, joints, firmware = _HELLO_ACK.unpack(payload)
        return cls(joints, firmware, version)


_STATE_HEAD = struct.Struct("<IQH")  # seq, timestamp_us, status
_STATE_JOINT_FIELDS = ("joint_pos", "joint_vel", "joint_current")
_STATE_IMU_SIZES = (4, 3, 3)  # imu_quat, gyro, accel


@dataclass(frozen=True, eq=False)
class State(_Message):
    """Microcontroller → host: joint and IMU readings at one instant of the microcontroller clock."""

    seq: int
    timestamp_us: int  # microcontroller monotonic clock
    joint_pos: np.ndarray  # (num_joints,) rad
    joint_vel: np.ndarray  # (num_joints,) rad/s
    joint_current: np.ndarray  # (num_joints,) A
    imu_quat: np.ndarray  # (4,) w x y z, body to world
    gyro: np.ndarray  # (3,) rad/s, body frame
    accel: np.ndarray  # (3,) m/s², body frame
    status: StatusFlags = StatusFlags(0)
    msg_type: ClassVar[MessageType] = MessageType.STATE

    def __post_init__(self) -> None:
        object.__setattr__(self, "seq", _uint("seq", self.seq, 32))
        object.__setattr__(self, "timestamp_us", _uint("timestamp_us", self.timestamp_us, 64))
        object.__setattr__(self, "status", StatusFlags(_uint("status", self.status, 16)))
        _joint_vectors(self, _STATE_JOINT_FIELDS)
        for name, size in zip(("imu_quat", "gyro", "accel"), _STATE_IMU_SIZES, strict=True):
            object.__setattr__(self, name, _vector(name, getattr(self, name), size))

    @property
    def num_joints(self) -> int:
        return self.joint_pos.shape[0]

    def _payload(self) -> bytes:
        head = _STATE_HEAD.pack(self.seq, self.timestamp_us, self.status)
        return head + _floats(
            self.joint_pos, self.joint_vel, self.joint_current, self.imu_quat, self.gyro, self.accel
        )

    @classmethod
    def _from_payload(cls, payload: bytes, num_joints: int) -> State:
        seq, timestamp_us, status = _STATE_HEAD.unpack_from(payload)
        sizes = (num_joints,) * len(_STATE_JOINT_FIELDS) + _STATE_IMU_SIZES
        return cls(seq, timestamp_us, *_split(payload, _STATE_HEAD.size, sizes), status)


_COMMAND_HEAD = struct.Struct("<IB")  # seq, mode
_COMMAND_JOINT_FIELDS = ("joint_target", "kp", "kd", "tau_ff")
_MODES = frozenset(ControlMode)


@dataclass(frozen=True, eq=False)
class Command(_Message):
    """Host → microcontroller: per-joint PD targets; torque = kp (target - pos) - kd vel + tau_ff."""

    seq: int
    mode: ControlMode
    joint_target: np.ndarray  # (num_joints,) rad
    kp: np.ndarray  # (num_joints,) N·m/rad
    kd: np.ndarray  # (num_joints,) N·m·s/rad
    tau_ff: np.ndarray  # (num_joints,) N·m
    msg_type: ClassVar[MessageType] = MessageType.COMMAND

    def __post_init__(self) -> None:
        object.__setattr__(self, "seq", _uint("seq", self.seq, 32))
        object.__setattr__(self, "mode", ControlMode(self.mode))
        _joint_vectors(self, _COMMAND_JOINT_FIELDS)

    @property
    def num_joints(self) -> int:
        return self.joint_target.shape[0]

    def _payload(self) -> bytes:
        head = _COMMAND_HEAD.pack(self.seq, self.mode)
        return head + _floats(self.joint_target, self.kp, self.kd, self.tau_ff)

    @classmethod
    def _from_payload(cls, payload: bytes, num_joints: int) -> Command | None:
        seq, mode = _COMMAND_HEAD.unpack_from(payload)
        if mode not in _MODES:  # an unknown mode is never guessed at; the watchdog will damp
            return None
        sizes = (num_joints,) * len(_COMMAND_JOINT_FIELDS)
        return cls(seq, mode, *_split(payload, _COMMAND_HEAD.size, sizes))


_HEARTBEAT = struct.Struct("<IQ")


@dataclass(frozen=True, eq=False)
class Heartbeat(_Message):
    """Either direction: keeps a session alive when nothing else is due; never feeds the command watchdog."""

    seq: int
    timestamp_us: int  # sender's monotonic clock
    msg_type: ClassVar[MessageType] = MessageType.HEARTBEAT

    def __post_init__(self) -> None:
        object.__setattr__(self, "seq", _uint("seq", self.seq, 32))
        object.__setattr__(self, "timestamp_us", _uint("timestamp_us", self.timestamp_us, 64))

    def _payload(self) -> bytes:
        return _HEARTBEAT.pack(self.seq, self.timestamp_us)

    @classmethod
    def _from_payload(cls, payload: bytes, num_joints: int) -> Heartbeat:
        return cls(*_HEARTBEAT.unpack(payload))


_ESTOP = struct.Struct("<IB")


@dataclass(frozen=True, eq=False)
class EStop(_Message):
    """Either direction: raise the e-stop; `reason` is an EStopReason code (unknown codes kept)."""

    seq: int
    reason: int
    msg_type: ClassVar[MessageType] = MessageType.ESTOP

    def __post_init__(self) -> None:
        object.__setattr__(self, "seq", _uint("seq", self.seq, 32))
        object.__setattr__(self, "reason", _uint("reason", self.reason, 8))

    def _payload(self) -> bytes:
        return _ESTOP.pack(self.seq, self.reason)

    @classmethod
    def _from_payload(cls, payload: bytes, num_joints: int) -> EStop:
        return cls(*_ESTOP.unpack(payload))


Message = Hello | HelloAck | State | Command | Heartbeat | EStop

_CLASSES: dict[int, type[Message]] = {
    cls.msg_type: cls for cls in (Hello, HelloAck, State, Command, Heartbeat, EStop)
}
# (fixed bytes, bytes per joint) of each payload.
_PAYLOAD_SIZE: dict[MessageType, tuple[int, int]] = {
    MessageType.HELLO: (_HELLO.size, 0),
    MessageType.HELLO_ACK: (_HELLO_ACK.size, 0),
    MessageType.STATE: (_STATE_HEAD.size + 4 * sum(_STATE_IMU_SIZES), 4 * len(_STATE_JOINT_FIELDS)),
    MessageType.COMMAND: (_COMMAND_HEAD.size, 4 * len(_COMMAND_JOINT_FIELDS)),
    MessageType.HEARTBEAT: (_HEARTBEAT.size, 0),
    MessageType.ESTOP: (_ESTOP.size, 0),
}


def payload_size(msg_type: MessageType, num_joints: int) -> int:
    """Payload bytes of a message type (without type byte, CRC, COBS or delimiters)."""
    fixed, per_joint = _PAYLOAD_SIZE[MessageType(msg_type)]
    return fixed + per_joint * num_joints


def _max_cobs_size(size: int) -> int:
    """Largest COBS encoding of `size` (>= 1) bytes: one code byte per started 254-byte block."""
    return size + 1 + (size - 1) // _COBS_BLOCK


def frame_size(msg_type: MessageType, num_joints: int) -> int:
    """Bytes on the wire for one frame with both delimiters: exact up to a 254-byte body, else a bound."""
    body = _TYPE_SIZE + payload_size(msg_type, num_joints) + _CRC.size
    return 2 * len(DELIMITER) + _max_cobs_size(body)


def cobs_encode(data: bytes) -> bytes:
    """COBS-encode data (canonical: no empty trailing code after a full 254-byte block); no zero byte in the result."""
    return cobs.encode(data)


def cobs_decode(data: bytes) -> bytes | None:
    """Invert COBS; None when data is not a valid encoding."""
    try:
        return cobs.decode(data)
    except cobs.DecodeError:
        return None


def encode(msg: Message, num_joints: int | None = None) -> bytes:
    """Frame one message for the wire; when num_joints is given, refuse a message of another size."""
    joints = getattr(msg, "num_joints", None)
    if num_joints is not None and joints is not None and joints != num_joints:
        raise ValueError(f"{type(msg).__name__} has {joints} joints, expected {num_joints}")
    body = bytes([msg.msg_type]) + msg._payload()
    body += _CRC.pack(zlib.crc32(body))
    return DELIMITER + cobs_encode(body) + DELIMITER


def _parse(body: bytes, num_joints: int) -> Message | None:
    """Message from a CRC-checked body; None for an unknown type, wrong size or invalid field."""
    cls = _CLASSES.get(body[0])
    payload = body[_TYPE_SIZE : -_CRC.size]
    if cls is None or len(payload) != payload_size(cls.msg_type, num_joints):
        return None
    return cls._from_payload(payload, num_joints)


class Decoder:
    """Streaming decoder: feed it byte chunks as they arrive; it never raises on any input.

    Bad frames are dropped and counted; decoding resumes at the next 0x00 delimiter.
    """

    def __init__(self, num_joints: int) -> None:
        self.num_joints = _uint("num_joints", num_joints, 16)
        if self.num_joints < 1:
            raise ValueError(f"num_joints={num_joints}, expected at least 1")
        # Generous, so that a peer built for another joint count shows up as payload errors.
        largest = max(frame_size(t, self.num_joints) for t in MessageType) - 2
        self.max_encoded_size = max(largest, MAX_CANDIDATE_SIZE)
        self.frames_decoded = 0
        self.crc_errors = 0  # intact framing, CRC mismatch: line noise
        self.framing_errors = 0  # invalid COBS, too short, or too long
        self.payload_errors = 0  # CRC fine but unknown type, wrong size or invalid field: peer mismatch
        self.bytes_discarded = 0  # non-delimiter bytes outside accepted frames
        self._pending = b""  # bytes after the last delimiter
        self._synced = False  # a delimiter has been seen: bytes before it are a partial frame
        self._dropping = False  # the pending frame overflowed: drop it up to the next delimiter

    def feed(self, data: bytes) -> list[Message]:
        """Messages completed by this chunk, in order."""
        pieces = bytes(data).split(DELIMITER)
        pieces[0] = self._pending + pieces[0]
        self._pending = pieces.pop()  # not terminated yet
        messages = [msg for piece in pieces if (msg := self._take(piece)) is not None]
        if len(self._pending) > self.max_encoded_size:
            self._overflow()
        return messages

    def _take(self, piece: bytes) -> Message | None:
        """Handle the bytes between two delimiters."""
        if not self._synced or self._dropping:
            # Opening mid-frame is expected, and an overflow was already counted: no new error.
            self._synced, self._dropping = True, False
            self.bytes_discarded += len(piece)
            return None
        if not piece:  # back-to-back delimiters between frames
            return None
        msg = self._decode(piece)
        if msg is None:
            self.bytes_discarded += len(piece)
        else:
            self.frames_decoded += 1
        return msg

    def _decode(self, piece: bytes) -> Message | None:
        """Check one candidate frame in order: framing, CRC, then payload; count the first failure."""
        body = cobs_decode(piece) if len(piece) <= self.max_encoded_size else None
        if body is None or len(body) < _TYPE_SIZE + _CRC.size:
            self.framing_errors += 1
            return None
        if zlib.crc32(body[: -_CRC.size]) != _CRC.unpack_from(body, len(body) - _CRC.size)[0]:
            self.crc_errors += 1
            return None
        msg = _parse(body, self.num_joints)
        if msg is None:
            self.payload_errors += 1
        return msg

    def _overflow(self) -> None:
        """Bound memory when no delimiter arrives: drop the pending bytes, count one framing error."""
        if self._synced and not self._dropping:
            self.framing_errors += 1
        self._dropping = True
        self.bytes_discarded += len(self._pending)
        self._pending = b""


def check_version(peer: Hello | HelloAck, num_joints: int, version: int = PROTOCOL_VERSION) -> None:
    """Raise ProtocolError unless the peer's handshake matches our version and joint count."""
    side = "microcontroller" if isinstance(peer, HelloAck) else "host"
    if isinstance(peer, HelloAck):
        side += f" (firmware {peer.firmware_name!r})"
    if peer.version != version:
        raise ProtocolError(
            f"serial protocol version mismatch: this side speaks version {version}, "
            f"the {side} speaks version {peer.version}; flash firmware and install trot "
            "built for the same protocol version"
        )
    if peer.num_joints != num_joints:
        raise ProtocolError(
            f"joint count mismatch: this side expects {num_joints} joints, "
            f"the {side} reports {peer.num_joints}"
        )


def seq_delta(previous: int, current: int) -> int:
    """Signed distance between two uint32 sequence numbers: 1 is the next frame, >1 lost frames."""
    return (current - previous + (1 << 31)) % (1 << 32) - (1 << 31)
