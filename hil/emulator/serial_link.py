"""The serial link: the protocol of `deploy/PROTOCOL.md` (COBS frames, CRC) behind a pseudo-terminal.

The host opens the pty's slave like any serial port. Incoming frames go to the firmware (Hello, Command,
EStop) or are answered here (HelloAck, Heartbeat); readings leave as State frames numbered per message
type, through the corrupt and delay faults.
"""

from __future__ import annotations

import array
import fcntl
import logging
import os
import termios
import time
import tty
from collections import deque
from pathlib import Path

from trot.deploy.protocol import (
    Command,
    Decoder,
    EStop,
    EStopReason,
    Heartbeat,
    Hello,
    HelloAck,
    MessageType,
    State,
    encode,
)
from trot.hil.emulator.link import Board, Reading
from trot.hil.emulator.options import EmulatorOptions
from trot.robots import Robot

log = logging.getLogger(__name__)

# A host that keeps up never has this much unread; more means nobody reads, and a real UART's bytes are gone.
STALE_INPUT_BYTES = 4000


class SerialLink:
    """A pty speaking the serial protocol; `options.link` names a symlink to its slave."""

    label = "serial port "

    def __init__(self, robot: Robot, options: EmulatorOptions, board: Board):
        self.robot, self.options, self.board = robot, options, board
        self.port: str | None = None
        self._decoder = Decoder(robot.num_joints)
        self._master: int | None = None
        self._slave: int | None = None
        self._seq = dict.fromkeys(MessageType, 0)
        self._tx = bytearray()  # framed bytes waiting for room in the pty
        self._delayed: deque[tuple[float, bytes]] = deque()

    def open(self) -> str:
        """Open the pseudo-terminal (and the symlink); return the slave path, the 'serial port'."""
        self._master, self._slave = os.openpty()
        tty.setraw(self._slave)
        os.set_blocking(self._master, False)
        self.port = os.ttyname(self._slave)
        if self.options.link:
            link = Path(self.options.link)
            if link.is_symlink():
                link.unlink()  # left by an earlier run
            elif link.exists():
                raise FileExistsError(f"link {link}: exists and is not a symlink; expected a free path")
            link.symlink_to(self.port)
            log.info("link %s -> %s", link, self.port)
        return self.port

    # ---- receiving ------------------------------------------------------------------------------

    def receive(self, t: float) -> None:
        """Decode what the host wrote and act on each message."""
        while self._master is not None:
            try:
                chunk = os.read(self._master, 4096)
            except BlockingIOError:
                return
            if not chunk:
                return
            for msg in self._decoder.feed(chunk):
                self._handle(msg, t)
            d = self._decoder
            self.board.stats.rx_errors = d.framing_errors + d.crc_errors + d.payload_errors

    def _handle(self, msg, t: float) -> None:
        firmware = self.board.firmware
        if isinstance(msg, Hello):
            self._send(HelloAck(self.robot.num_joints, self.options.firmware.encode("ascii")))
            firmware.hello(msg, t)
        elif isinstance(msg, Command):
            firmware.on_command(msg, t)
        elif isinstance(msg, Heartbeat):
            self._send(Heartbeat(self._next_seq(MessageType.HEARTBEAT), self.board.clock_us()))
        elif isinstance(msg, EStop):
            if firmware.latch_estop(t, msg.reason, "the host"):
                self.send_estop()

    # ---- sending --------------------------------------------------------------------------------

    def publish(self, t: float, reading: Reading) -> None:
        """One State frame; a dropped State still uses its seq, so the host sees the gap."""
        r = reading
        state = State(
            self._next_seq(MessageType.STATE),
            self.board.clock_us(),
            r.joint_pos,
            r.joint_vel,
            r.joint_torque / self.options.torque_constant,
            *r.imu,
            r.status,
        )
        if self.board.faults.drop():
            return
        self.board.stats.states_sent += 1
        self._send(state)

    def send_estop(self) -> None:
        """EStop(BUTTON)."""
        self._send(EStop(self._next_seq(MessageType.ESTOP), EStopReason.BUTTON))

    def _next_seq(self, msg_type: MessageType) -> int:
        seq = self._seq[msg_type]
        self._seq[msg_type] = (seq + 1) % (1 << 32)
        return seq

    def _send(self, msg) -> None:
        """Frame a message and queue it, through the corrupt and delay faults."""
        faults = self.board.faults
        self._delayed.append((time.monotonic() + faults.delay_s, faults.corrupt(encode(msg))))

    def flush(self, now: float) -> None:
        """Write the frames due by `now`; throw away input nobody reads, as a UART would lose it."""
        if self._master is None:
            return
        while self._delayed and self._delayed[0][0] <= now:
            self._tx += self._delayed.popleft()[1]
        unread = array.array("i", [0])
        fcntl.ioctl(self._slave, termios.FIONREAD, unread)
        if unread[0] >= STALE_INPUT_BYTES:  # nobody is reading: drop what a UART would have lost
            termios.tcflush(self._slave, termios.TCIFLUSH)
            self.board.stats.stale_flushes += 1
        if self._tx:
            try:
                written = os.write(self._master, self._tx)
            except BlockingIOError:
                written = 0
            del self._tx[:written]
            if len(self._tx) > 1 << 16:  # the pty stays full: keep memory bounded
                self._tx.clear()

    # ---- closing --------------------------------------------------------------------------------

    def disconnect(self) -> None:
        """Close the pty: the host's reads fail."""
        for fd in (self._master, self._slave):
            if fd is not None:
                os.close(fd)
        self._master = self._slave = None

    def close(self) -> None:
        """Close the pty and remove the symlink if it still points at it."""
        self.disconnect()
        link = self.options.link
        if link and self.port and Path(link).is_symlink() and os.readlink(link) == self.port:
            Path(link).unlink()
