"""The serial transport against a scripted microcontroller on a pty: the handshake, what a poll gathers (States
stamped on arrival, sequence steps, e-stops, errors, raw bytes), the frames it sends, and a lost link."""

import os
import select
import threading
import time

import numpy as np
import pytest

from trot.deploy.link import ControlMode, TransportError
from trot.deploy.protocol import Command, Decoder, EStop, Hello, HelloAck, State, encode
from trot.deploy.transport import SerialTransport

pytest.importorskip("serial")
N = 12
ROBOT_ID = bytes(range(32))


class FakeMcu:
    """The other end of a pty: answers the first Hello with `ack` (and `after_ack` in the same write)."""

    def __init__(self, ack=None, after_ack=b""):
        self.master, self.slave = os.openpty()
        self.port = os.ttyname(self.slave)
        self.ack, self.after_ack = ack, after_ack
        self.decoder, self.received = Decoder(N), []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while not self.stop.is_set():
            if not select.select([self.master], [], [], 0.01)[0]:
                continue
            try:
                chunk = os.read(self.master, 4096)
            except OSError:
                return
            for msg in self.decoder.feed(chunk):
                self.received.append(msg)
                if isinstance(msg, Hello) and self.ack is not None:
                    os.write(self.master, encode(self.ack) + self.after_ack)
                    self.ack = None

    def write(self, data: bytes) -> None:
        os.write(self.master, data)

    def close(self):
        self.stop.set()
        self.thread.join(timeout=2)
        for fd in (self.master, self.slave):
            try:
                os.close(fd)
            except OSError:
                pass


def state(seq: int, status: int = 0) -> State:
    q = np.arange(N, dtype=np.float32) / 10
    return State(seq, 1000 * seq, q, -q, q * 2, [1.0, 0.0, 0.0, 0.0], [0.1, 0.2, 0.3], [0.0, 0.0, 9.81], status)


def wait_for(poll_fn, check, timeout=5.0):
    """Poll until `check(poll)` or the timeout; the polls' union of samples and the last poll."""
    end, samples, last = time.monotonic() + timeout, [], None
    while time.monotonic() < end:
        last = poll_fn()
        samples += last.samples
        if check(samples, last):
            return samples, last
        time.sleep(0.005)
    raise AssertionError(f"timed out: {len(samples)} samples, last poll {last}")


@pytest.fixture
def mcu():
    made = []

    def make(**kw):
        made.append(FakeMcu(**kw))
        return made[-1]

    yield make
    for m in made:
        m.close()


def test_handshake_sends_hellos_until_the_ack_and_keeps_what_came_after_it(mcu):
    m = mcu(ack=HelloAck(N, b"fake-fw 2.0"), after_ack=encode(state(7)))
    link = SerialTransport(m.port, 1_000_000, N, ROBOT_ID)
    try:
        assert link.open(2.0) == "firmware 'fake-fw 2.0', protocol version 1, 12 joints"
        assert link.firmware == "fake-fw 2.0"
        hello = m.received[0]
        assert isinstance(hello, Hello) and hello.robot_id == ROBOT_ID and hello.num_joints == N
        poll = link.poll()
        assert poll.received == 1 and poll.samples[0].seq == 7 and poll.frames == {"STATE": 1}
        assert encode(HelloAck(N, b"fake-fw 2.0")) in poll.raw  # the handshake's bytes go to telemetry once
        assert link.poll().raw == b""
    finally:
        link.close()
        link.close()  # twice is fine


def test_a_silent_or_mismatched_microcontroller_is_refused(mcu, tmp_path):
    with pytest.raises(TransportError, match=rf"^serial port {tmp_path / 'none'} does not exist$"):
        SerialTransport(str(tmp_path / "none"), 1_000_000, N, ROBOT_ID).open(0.1)
    silent = mcu()
    link = SerialTransport(silent.port, 1_000_000, N, ROBOT_ID)
    start = time.monotonic()
    with pytest.raises(TransportError) as err:
        link.open(0.35)
    link.close()
    assert str(err.value) == (f"serial port {silent.port}: no HelloAck within 0.3 s (is the microcontroller powered "
                              "and running trot firmware, and is this the right port?)")  # fmt: skip
    assert time.monotonic() - start >= 0.35
    assert 3 <= sum(isinstance(x, Hello) for x in silent.received) <= 5  # one every 100 ms
    other = mcu(ack=HelloAck(8, b"fw"))
    link = SerialTransport(other.port, 1_000_000, N, ROBOT_ID)
    with pytest.raises(TransportError, match="joint count mismatch: this side expects 12 joints, the microcontroller"):
        link.open(2.0)
    link.close()


def test_poll_stamps_states_on_arrival_and_reports_steps_estops_and_errors(mcu):
    m = mcu(ack=HelloAck(N, b"fw"))
    link = SerialTransport(m.port, 1_000_000, N, ROBOT_ID)
    try:
        link.open(2.0)
        sent = time.monotonic()
        m.write(encode(state(5)) + encode(state(6)) + encode(state(9)))
        samples, last = wait_for(link.poll, lambda s, p: len(s) >= 3)
        assert [s.seq for s in samples] == [5, 6, 9] and sent <= samples[0].rx_time <= time.monotonic()
        s = samples[-1]
        np.testing.assert_array_equal(s.joint_pos, state(9).joint_pos)
        np.testing.assert_array_equal(s.joint_vel, state(9).joint_vel)
        np.testing.assert_array_equal(s.joint_current, state(9).joint_current)
        np.testing.assert_array_equal(s.imu_quat, [1, 0, 0, 0])
        np.testing.assert_array_equal(s.gyro, np.float32([0.1, 0.2, 0.3]))
        np.testing.assert_array_equal(s.accel, np.float32([0.0, 0.0, 9.81]))
        assert (s.timestamp_us, s.status) == (9000, 0)
        m.write(encode(state(10)) + encode(state(14)) + encode(state(3, status=2)) + encode(EStop(0, 4)))
        samples, last = wait_for(link.poll, lambda s, p: p.peer_estop is not None)
        assert last.seq_gap <= 0 and last.peer_estop == 4  # a restart beats any gap; the MCU's e-stop reason
        m.write(encode(state(4)) + encode(state(8)) + encode(state(9)))
        _, last = wait_for(link.poll, lambda s, p: p.received > 0)
        assert last.seq_gap == 4 and last.frames == {"STATE": 3}  # the largest step of the three
        bad_crc = bytearray(encode(state(20)))
        bad_crc[-2] ^= 0x01  # the CRC's last byte (never a COBS code byte or zero here)
        assert bad_crc[-2] != 0
        m.write(b"\x00\x05junk\x00" + bytes(bad_crc) + encode(state(21, status=8)))
        raws = []
        samples, last = wait_for(link.poll, lambda s, p: raws.append(p.raw) or (p.link_errors >= 2 and s))
        assert (last.link_errors, last.payload_errors) == (2, 0)  # one framing, one CRC error
        assert b"".join(raws) == b"\x00\x05junk\x00" + bytes(bad_crc) + encode(state(21, status=8))
        assert samples[-1].status == 8 and type(samples[-1].status) is int
    finally:
        link.close()


def test_commands_and_estops_go_out_numbered_per_type(mcu):
    m = mcu(ack=HelloAck(N, b"fw"))
    link = SerialTransport(m.port, 1_000_000, N, ROBOT_ID)
    try:
        link.open(2.0)
        target, kp, kd = np.linspace(-1, 1, N), np.full(N, 5.0), np.full(N, 0.25)
        for mode in (ControlMode.POSITION, ControlMode.DAMPING):
            assert link.send(mode, target, kp, kd) is None
        link.estop(2)
        link.estop(2)
        end = time.monotonic() + 5
        while time.monotonic() < end and sum(isinstance(x, EStop) for x in m.received) < 2:
            time.sleep(0.01)
        commands = [x for x in m.received if isinstance(x, Command)]
        estops = [x for x in m.received if isinstance(x, EStop)]
        assert [(c.seq, c.mode) for c in commands] == [(0, ControlMode.POSITION), (1, ControlMode.DAMPING)]
        np.testing.assert_array_equal(commands[0].joint_target, target.astype(np.float32))
        np.testing.assert_array_equal(commands[0].kp, kp)
        np.testing.assert_array_equal(commands[0].kd, kd)
        np.testing.assert_array_equal(commands[0].tau_ff, np.zeros(N))
        assert [(e.seq, e.reason) for e in estops] == [(0, 2), (1, 2)]
    finally:
        link.close()


def test_a_vanished_device_is_a_lost_link(mcu):
    m = mcu(ack=HelloAck(N, b"fw"))
    link = SerialTransport(m.port, 1_000_000, N, ROBOT_ID)
    try:
        link.open(2.0)
        m.close()  # both ends of the pty gone: the reader's next read fails
        _, last = wait_for(link.poll, lambda s, p: p.lost is not None)
        assert last.lost.startswith("read failed")
        assert link.send(ControlMode.DAMPING, np.zeros(N), np.zeros(N), np.zeros(N)) == last.lost
    finally:
        link.close()


def test_a_loop_that_stops_polling_keeps_the_newest_megabyte(mcu, monkeypatch):
    from trot.deploy import transport as transport_module

    monkeypatch.setattr(transport_module, "MAX_RX_BACKLOG", 4096)
    m = mcu(ack=HelloAck(N, b"fw"))
    link = SerialTransport(m.port, 1_000_000, N, ROBOT_ID)
    try:
        link.open(2.0)
        assert link.describe == f"serial {m.port} at 1000000 baud"
        link.poll()
        frames = b"".join(encode(state(seq)) for seq in range(1, 61))  # 60 States, about 12 KB
        for k in range(0, len(frames), 1000):
            m.write(frames[k : k + 1000])
            time.sleep(0.002)
        end = time.monotonic() + 5
        while time.monotonic() < end and link._rx_bytes + link.rx_dropped < len(frames):
            time.sleep(0.01)
        assert link.rx_dropped + link._rx_bytes == len(frames) and 0 < link._rx_bytes <= 4096
        poll = link.poll()
        assert poll.samples[-1].seq == 60 and 0 < len(poll.samples) <= 4096 // len(encode(state(1)))
        assert link._rx_bytes == 0 and link.poll().raw == b""
    finally:
        link.close()


def test_a_peer_that_stops_reading_is_a_lost_link_after_the_backlog(mcu):
    m = mcu(ack=HelloAck(N, b"fw"))
    link = SerialTransport(m.port, 1_000_000, N, ROBOT_ID)
    try:
        link.open(2.0)
        m.stop.set()  # the microcontroller stops reading; the pty fills, then the transport's own queue
        m.thread.join()
        lost = None
        for _ in range(5000):
            lost = link.send(ControlMode.DAMPING, np.zeros(N), np.zeros(N), np.zeros(N))
            if lost:
                break
        assert lost is not None and lost.startswith("write failed: ") and lost.endswith(
            " bytes waiting (the other side is not reading)")  # fmt: skip
        assert int(lost.split()[2]) > 2048
    finally:
        link.close()


def test_sequence_numbers_wrap_at_32_bits_and_close_flushes_then_releases(mcu):
    from trot.deploy.protocol import MessageType

    m = mcu(ack=HelloAck(N, b"fw"))
    link = SerialTransport(m.port, 1_000_000, N, ROBOT_ID)
    link.open(2.0)
    link._seq[MessageType.COMMAND] = 2**32 - 1
    for _ in range(2):
        link.send(ControlMode.OFF, np.zeros(N), np.zeros(N), np.zeros(N))
    link.close()
    assert link._reader is None and link._serial is None
    end = time.monotonic() + 5
    while time.monotonic() < end and sum(isinstance(x, Command) for x in m.received) < 2:
        time.sleep(0.01)
    assert [c.seq for c in m.received if isinstance(c, Command)] == [2**32 - 1, 0]
