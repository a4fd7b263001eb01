"""The seam between the deploy loop and the robot: a small `Transport` protocol and its serial implementation.

A transport opens the link (handshake), hands the loop everything that arrived since the last tick without
blocking (`Poll`: the newest `Sample` and the link's health), sends one motor command per tick, and raises
an e-stop on the robot side. The serial transport speaks `deploy/PROTOCOL.md` through pyserial.

The ROS 2 transport (`deploy/ros2/transport.py`, ROS2.md) implements the same methods: `open` waits for the
first Imu and JointState; `poll` builds a `Sample` from the newest of each (joints reordered to the contract's
order by name; `rx_time` the older topic's receive time, so either topic going quiet is a stale State; `seq`
None, so the sequence check is skipped; `timestamp_us` the JointState's header stamp; `status` 0, or
`StatusFlags.ESTOP` while the estop topic says true) and sets `peer_estop_from` when the estop topic turns
true; `send` publishes the targets and, when they change (DAMPING: kp 0), the gains; `lost` reports a
publish failure or a message that does not convert. It also takes the loop's tick records (`report`) for its
diagnostics topic. The safety checks on the loop's side (stale, NaN, fall, inference time...) apply unchanged.
"""

from __future__ import annotations

import os
import select
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from trot.deploy.protocol import (
    Command,
    ControlMode,
    Decoder,
    EStop,
    Hello,
    HelloAck,
    MessageType,
    State,
    check_version,
    encode,
    seq_delta,
)

HELLO_PERIOD_S = 0.1  # PROTOCOL.md: Hello every 100 ms until a HelloAck
READ_SIZE = 1 << 16
MAX_READS_PER_POLL = 16  # a pty hands out at most ~4 KB per read; bounds one poll's work
MAX_TX_BACKLOG = 2048  # bytes not yet taken by the port (about 10 Commands) before the link counts as lost


class TransportError(Exception):
    """The link cannot be opened or used: no port, no answer, or the peer is not what we expect."""


@dataclass(frozen=True)
class Sample:
    """One sensor reading, in the robot contract's joint order, SI units."""

    rx_time: float  # host monotonic clock when it arrived, s (the loop shifts it to its own clock)
    seq: int | None  # sender's sequence number (None where the transport has none)
    timestamp_us: int | None  # sender's clock when the joints were sampled
    joint_pos: np.ndarray  # (J,) rad
    joint_vel: np.ndarray  # (J,) rad/s
    joint_current: np.ndarray  # (J,) A (the emulator: N·m)
    imu_quat: np.ndarray  # (4,) w x y z, body to world
    gyro: np.ndarray  # (3,) rad/s, body frame
    accel: np.ndarray  # (3,) m/s², body frame
    status: int = 0  # protocol.StatusFlags bits


@dataclass
class Poll:
    """What arrived since the last poll."""

    sample: Sample | None = None  # the newest reading, None if none arrived
    received: int = 0  # readings that arrived
    seq_gap: int | None = None  # largest sequence step among them, from the previous one (1: none lost)
    link_errors: int = 0  # cumulative frames refused for framing or CRC (line noise)
    payload_errors: int = 0  # cumulative frames with a valid CRC but a wrong type or size (peer mismatch)
    peer_estop: int | None = None  # EStopReason code of an e-stop raised by the robot side
    peer_estop_from: str | None = None  # an e-stop raised without an EStop frame: by what (ros2: the estop topic)
    lost: str | None = None  # the link is gone, and why
    raw: bytes = b""  # every byte read, for telemetry (empty where the transport has no byte stream)
    frames: dict = field(default_factory=dict)  # message type name -> count, for telemetry


class Transport(Protocol):
    """What the deploy loop needs from a link to the robot."""

    name: str  # "serial", "ros2"
    describe: str  # where it connects, for logs: "serial /dev/ttyACM0 at 1000000 baud"

    def open(self, timeout_s: float) -> str:
        """Connect and handshake; return the peer's description. Raise TransportError on failure."""

    def poll(self) -> Poll:
        """Everything that arrived since the last call; never blocks."""

    def send(self, mode: ControlMode, target: np.ndarray, kp: np.ndarray, kd: np.ndarray) -> str | None:
        """Send one motor command; return why it failed (the link is gone) or None."""

    def estop(self, reason: int) -> None:
        """Raise the e-stop on the robot side (repeated by the caller until the robot reports it)."""

    def close(self) -> None:
        """Release the link; safe to call twice."""


class SerialTransport:
    """`deploy/PROTOCOL.md` over a serial port (UART, USB CDC or the emulator's pty) with pyserial."""

    name = "serial"

    def __init__(self, port: str, baud: int, num_joints: int, robot_id: bytes):
        self.port, self.baud, self.num_joints, self.robot_id = port, baud, num_joints, robot_id
        self.describe = f"serial {port} at {baud} baud"
        self.decoder = Decoder(num_joints)
        self._serial = None
        self._fd = -1
        self._tx = bytearray()  # bytes the port has not taken yet
        self._seq = dict.fromkeys(MessageType, 0)
        self._last_state_seq: int | None = None
        self._pending: list = []  # messages decoded during the handshake after the HelloAck
        self._handshake_raw = b""  # bytes read during the handshake, handed to telemetry with the first poll
        self._lost: str | None = None
        self.firmware = ""

    # ---- opening --------------------------------------------------------------------------------

    def open(self, timeout_s: float = 3.0) -> str:
        """Open the port and handshake (Hello every 100 ms until a HelloAck); raise TransportError."""
        if not Path(self.port).exists():
            raise TransportError(f"serial port {self.port} does not exist")
        import serial  # pyserial

        try:
            # pyserial sets the port up (raw mode, baud rate) and opens it non-blocking; reads and writes then go
            # straight to the file descriptor, so that neither ever waits (pyserial's write timeout can fire
            # after the bytes are written when the process was descheduled).
            self._serial = serial.Serial(self.port, self.baud, timeout=0)
        except (serial.SerialException, OSError, ValueError) as e:
            raise TransportError(f"serial port {self.port}: cannot open ({e})") from e
        self._fd = self._serial.fileno()
        os.set_blocking(self._fd, False)
        self._serial.reset_input_buffer()  # frames from before this session are of no use
        deadline = time.monotonic() + timeout_s
        next_hello = 0.0
        while time.monotonic() < deadline:
            now = time.monotonic()
            if now >= next_hello:
                self._write(encode(Hello(self.num_joints, self.robot_id)))
                next_hello = now + HELLO_PERIOD_S
            chunk = self._read_all()
            self._handshake_raw += chunk
            messages = self.decoder.feed(chunk)
            if self._lost:
                raise TransportError(f"serial port {self.port}: {self._lost} during the handshake")
            for i, msg in enumerate(messages):
                if isinstance(msg, HelloAck):
                    try:
                        check_version(msg, self.num_joints)
                    except Exception as e:  # ProtocolError: versions or joint counts differ
                        raise TransportError(str(e)) from e
                    self.firmware = msg.firmware_name
                    self._pending = messages[i + 1 :]  # States after the ack belong to the new session
                    return f"firmware {self.firmware!r}, protocol version {msg.version}, {msg.num_joints} joints"
            time.sleep(0.002)
        raise TransportError(
            f"serial port {self.port}: no HelloAck within {timeout_s:.1f} s "
            "(is the microcontroller powered and running trot firmware, and is this the right port?)"
        )

    # ---- the loop's side ------------------------------------------------------------------------

    def poll(self) -> Poll:
        fresh = self._read_all()
        raw, self._handshake_raw = self._handshake_raw + fresh, b""  # the first poll also logs the handshake's
        messages, self._pending = self._pending + self.decoder.feed(fresh), []
        now = time.monotonic()
        poll = Poll(raw=raw, lost=self._lost)
        newest = None
        for msg in messages:
            kind = msg.msg_type.name
            poll.frames[kind] = poll.frames.get(kind, 0) + 1
            if isinstance(msg, State):
                if self._last_state_seq is not None:
                    step = seq_delta(self._last_state_seq, msg.seq)
                    # The worst step: a restart (<= 0) beats any gap.
                    if poll.seq_gap is None or step <= 0 or (poll.seq_gap > 0 and step > poll.seq_gap):
                        poll.seq_gap = step
                self._last_state_seq = msg.seq
                poll.received += 1
                newest = msg
            elif isinstance(msg, EStop):
                poll.peer_estop = msg.reason
        if newest is not None:
            poll.sample = Sample(
                now,
                newest.seq,
                newest.timestamp_us,
                newest.joint_pos,
                newest.joint_vel,
                newest.joint_current,
                newest.imu_quat,
                newest.gyro,
                newest.accel,
                int(newest.status),
            )
        d = self.decoder
        poll.link_errors = d.framing_errors + d.crc_errors
        poll.payload_errors = d.payload_errors
        return poll

    def send(self, mode: ControlMode, target: np.ndarray, kp: np.ndarray, kd: np.ndarray) -> str | None:
        seq = self._next_seq(MessageType.COMMAND)
        tau_ff = np.zeros(self.num_joints)
        self._write(encode(Command(seq, mode, target, kp, kd, tau_ff), self.num_joints))
        return self._lost

    def estop(self, reason: int) -> None:
        self._write(encode(EStop(self._next_seq(MessageType.ESTOP), reason)))

    def close(self) -> None:
        deadline = time.monotonic() + 0.05  # the last frames (DAMPING) deserve a short wait, not an unbounded one
        while self._tx and not self._lost and self._serial is not None and time.monotonic() < deadline:
            self._write(b"")
            time.sleep(0.002)
        if self._serial is not None:
            try:
                self._serial.close()
            except OSError:
                pass  # closing a port whose device vanished
            self._serial = None

    # ---- bytes ----------------------------------------------------------------------------------

    def _next_seq(self, msg_type: MessageType) -> int:
        seq = self._seq[msg_type]
        self._seq[msg_type] = (seq + 1) % (1 << 32)
        return seq

    def _read_all(self) -> bytes:
        """Drain what the port holds without blocking; a read error or end of file marks the link lost."""
        if self._lost or self._serial is None:
            return b""
        chunks = []
        for _ in range(MAX_READS_PER_POLL):
            try:
                chunk = os.read(self._fd, READ_SIZE)
            except BlockingIOError:
                break
            except OSError as e:  # EIO: the device (or the emulator's pty) went away
                self._lost = f"read failed: {e}"
                break
            if not chunk:  # raw mode with VMIN 0 reads 0 bytes when none wait; a hang-up shows in poll()
                if self._hung_up():
                    self._lost = "read failed: the device hung up (disconnected)"
                break
            chunks.append(chunk)
        return b"".join(chunks)

    def _hung_up(self) -> bool:
        poller = select.poll()
        poller.register(self._fd, select.POLLIN)
        return any(events & (select.POLLHUP | select.POLLERR | select.POLLNVAL) for _, events in poller.poll(0))

    def _write(self, frame: bytes) -> None:
        """Queue a frame and write what the port takes now; never blocks (a Command must not wait)."""
        if self._lost or self._serial is None:
            return
        self._tx += frame
        try:
            while self._tx:
                written = os.write(self._fd, self._tx)
                del self._tx[:written]
        except BlockingIOError:
            pass
        except OSError as e:
            self._lost = f"write failed: {e}"
            return
        if len(self._tx) > MAX_TX_BACKLOG:
            self._lost = f"write failed: {len(self._tx)} bytes waiting (the other side is not reading)"
