"""The serial link: `deploy/PROTOCOL.md` through pyserial, behind the loop's `Transport` seam (`link.py`).

A reader thread takes the bytes off the port as they come and stamps each chunk with the monotonic clock
when it arrived; `poll` decodes what the thread collected since the last tick, so that every State carries
its arrival time (the stale check times a State from when its bytes arrived, not from when the loop
looked). Writes happen on the loop's thread and never block.
"""

from __future__ import annotations

import os
import select
import threading
import time
from collections import deque
from pathlib import Path

import numpy as np

from trot.deploy.link import ControlMode, Poll, Sample, TransportError
from trot.deploy.protocol import (
    Command,
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
READER_WAKE_MS = 50  # the reader thread checks for close() this often while no byte comes
MAX_RX_BACKLOG = 1 << 20  # bytes the reader holds for a loop that stopped polling (older ones are dropped)
MAX_TX_BACKLOG = 2048  # bytes not yet taken by the port (about 10 Commands) before the link counts as lost


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
        self._rx: deque[tuple[float, bytes]] = deque()  # (arrival time, bytes), filled by the reader thread
        self._rx_bytes = 0
        self._rx_lock = threading.Lock()
        self.rx_dropped = 0  # bytes the reader dropped because the loop stopped polling
        self._reader: threading.Thread | None = None
        self._closing = threading.Event()
        self._pending: list[tuple[float, object]] = []  # (arrival, message) decoded in the handshake after the ack
        self._handshake_raw = b""  # bytes read during the handshake, handed to telemetry with the first poll
        self._lost: str | None = None  # set by either thread; a plain assignment
        self.firmware = ""

    # ---- opening --------------------------------------------------------------------------------

    def open(self, timeout_s: float) -> str:
        """Open the port and handshake (Hello every 100 ms until a HelloAck); raise TransportError."""
        if not Path(self.port).exists():
            raise TransportError(f"serial port {self.port} does not exist")
        import serial  # pyserial

        try:
            # pyserial sets the port up (raw mode, baud rate); reads and writes then go straight to the file
            # descriptor, made non-blocking below, so that neither ever waits (pyserial's read and write timeouts
            # are never used: its write timeout can fire after the bytes are written when the process was
            # descheduled).
            self._serial = serial.Serial(self.port, self.baud)
        except (serial.SerialException, OSError, ValueError) as e:
            raise TransportError(f"serial port {self.port}: cannot open ({e})") from e
        self._fd = self._serial.fileno()
        os.set_blocking(self._fd, False)
        self._serial.reset_input_buffer()  # frames from before this session are of no use
        self._reader = threading.Thread(target=self._read_loop, name="trot-serial-rx", daemon=True)
        self._reader.start()
        deadline = time.monotonic() + timeout_s
        next_hello = 0.0
        while time.monotonic() < deadline:
            now = time.monotonic()
            if now >= next_hello:
                self._write(encode(Hello(self.num_joints, self.robot_id)))
                next_hello = now + HELLO_PERIOD_S
            lost = self._lost
            messages = []
            for arrived, chunk in self._take_chunks():
                self._handshake_raw += chunk
                messages += [(arrived, msg) for msg in self.decoder.feed(chunk)]
            if lost:
                raise TransportError(f"serial port {self.port}: {lost} during the handshake")
            for i, (_, msg) in enumerate(messages):
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
        """Every message the reader thread collected, each State stamped with its bytes' arrival time."""
        lost = self._lost  # before draining: every chunk that came before the loss is drained below
        raw = [self._handshake_raw]
        self._handshake_raw = b""  # the first poll also logs the handshake's bytes
        messages, self._pending = self._pending, []
        for arrived, chunk in self._take_chunks():
            raw.append(chunk)
            messages += [(arrived, msg) for msg in self.decoder.feed(chunk)]
        poll = Poll(raw=b"".join(raw), lost=lost)
        for arrived, msg in messages:
            kind = msg.msg_type.name
            poll.frames[kind] = poll.frames.get(kind, 0) + 1
            if isinstance(msg, State):
                if self._last_state_seq is not None:
                    step = seq_delta(self._last_state_seq, msg.seq)
                    # The worst step: a restart (<= 0) beats any gap.
                    if poll.seq_gap is None or step <= 0 or (poll.seq_gap > 0 and step > poll.seq_gap):
                        poll.seq_gap = step
                self._last_state_seq = msg.seq
                poll.samples.append(
                    Sample(arrived, msg.seq, msg.timestamp_us, msg.joint_pos, msg.joint_vel, msg.joint_current,
                           msg.imu_quat, msg.gyro, msg.accel, int(msg.status))
                )  # fmt: skip
            elif isinstance(msg, EStop):
                poll.peer_estop = msg.reason
        poll.received = len(poll.samples)
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

    def report(self, record: dict, *, overruns: int, missed_ticks: int, reason: str) -> None:
        """No status channel on the serial link: the telemetry file has the record."""

    def close(self) -> None:
        deadline = time.monotonic() + 0.05  # the last frames (DAMPING) deserve a short wait, not an unbounded one
        while self._tx and not self._lost and self._serial is not None and time.monotonic() < deadline:
            self._write(b"")
            time.sleep(0.002)
        self._closing.set()
        if self._reader is not None:
            self._reader.join(timeout=1.0)
            self._reader = None
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

    def _take_chunks(self) -> list[tuple[float, bytes]]:
        """The (arrival time, bytes) chunks the reader collected, oldest first."""
        with self._rx_lock:
            out = list(self._rx)
            self._rx.clear()
            self._rx_bytes = 0
        return out

    def _read_loop(self) -> None:
        """Reader thread: wait for bytes, read them at once and stamp their arrival; a read error or a hang-up
        marks the link lost and ends the thread."""
        poller = select.poll()
        poller.register(self._fd, select.POLLIN)
        while not self._closing.is_set():
            events = poller.poll(READER_WAKE_MS)
            if not events:
                continue
            try:
                chunk = os.read(self._fd, READ_SIZE)
            except BlockingIOError:
                continue
            except OSError as e:  # EIO: the device (or the emulator's pty) went away
                self._lost = f"read failed: {e}"
                return
            arrived = time.monotonic()
            if not chunk:  # raw mode with VMIN 0 reads 0 bytes when none wait; a hang-up shows in the events
                if any(ev & (select.POLLHUP | select.POLLERR | select.POLLNVAL) for _, ev in events):
                    self._lost = "read failed: the device hung up (disconnected)"
                    return
                continue
            with self._rx_lock:
                self._rx.append((arrived, chunk))
                self._rx_bytes += len(chunk)
                while self._rx_bytes > MAX_RX_BACKLOG:  # a loop that stopped polling: keep the newest bytes
                    _, old = self._rx.popleft()
                    self._rx_bytes -= len(old)
                    self.rx_dropped += len(old)

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
