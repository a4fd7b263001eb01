"""The serial transport against a scripted microcontroller on a pty: the handshake, what a poll gathers (States
stamped on arrival, sequence steps, e-stops, errors, raw bytes), the frames it sends, and a lost link."""

import os
import select
import termios
import threading
import time
from types import SimpleNamespace

import numpy as np
import pytest

from trot.deploy.link import ControlMode, TransportError
from trot.deploy.protocol import Command, Decoder, EStop, Hello, HelloAck, State, encode
from trot.deploy.transport import SerialTransport

pytest.importorskip("serial")
N = 12
ROBOT_ID = bytes(range(32))


class FakeMcu:
    """The other end of a pty: answers the first Hello with `ack` and `after_ack` (in the same write, or
    `after_ack_delay` seconds later in a write of its own)."""

    def __init__(self, ack=None, after_ack=b"", after_ack_delay=None):
        self.master, self.slave = os.openpty()
        self.port = os.ttyname(self.slave)
        self.ack, self.after_ack, self.after_ack_delay = ack, after_ack, after_ack_delay
        self.decoder, self.received, self.raw = Decoder(N), [], b""
        self.stop, self.paused, self.idle = threading.Event(), threading.Event(), threading.Event()
        self.acked = threading.Event()  # set once the ack and `after_ack` are written
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while not self.stop.is_set():
            if self.paused.is_set():
                self.idle.set()
                time.sleep(0.01)
                continue
            if not select.select([self.master], [], [], 0.01)[0]:
                continue
            try:
                chunk = os.read(self.master, 4096)
            except OSError:
                return
            self.raw += chunk
            for msg in self.decoder.feed(chunk):
                self.received.append(msg)
                if isinstance(msg, Hello) and self.ack is not None:
                    if self.after_ack_delay is None:
                        os.write(self.master, encode(self.ack) + self.after_ack)
                    else:
                        os.write(self.master, encode(self.ack))
                        time.sleep(self.after_ack_delay)
                        os.write(self.master, self.after_ack)
                    self.ack = None
                    self.acked.set()

    def pause(self) -> None:
        """Stop reading, and return once the serving thread has seen it: a read it had already begun (a
        descheduled thread on a busy machine) can no longer free space in the pty after this."""
        self.idle.clear()
        self.paused.set()
        assert self.idle.wait(10.0), "the microcontroller thread never paused"

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
    after = encode(state(7)) + encode(state(8))
    m = mcu(ack=HelloAck(N, b"fake-fw 2.0"), after_ack=after)
    link = SerialTransport(m.port, 1_000_000, N, ROBOT_ID)
    try:
        assert link.open(2.0) == "firmware 'fake-fw 2.0', protocol version 1, 12 joints"
        assert link.firmware == "fake-fw 2.0"
        hello = m.received[0]
        assert isinstance(hello, Hello) and hello.robot_id == ROBOT_ID and hello.num_joints == N
        # The port is set up as asked: the baud rate, raw mode (no line editing, no echo).
        attrs = termios.tcgetattr(m.slave)
        assert attrs[4] == attrs[5] == termios.B1000000 and not attrs[3] & (termios.ICANON | termios.ECHO)
        samples, poll = wait_for(link.poll, lambda s, p: len(s) >= 2)
        assert [s.seq for s in samples] == [7, 8] and poll.frames == {"STATE": 2}  # not the ack itself
        # The handshake's bytes go to telemetry once, exactly as they came.
        assert poll.raw == encode(HelloAck(N, b"fake-fw 2.0")) + after
        assert link.poll().raw == b""
        # The reader thread, by its name: a daemon, so that a loop that dies without closing cannot hang the exit.
        (reader,) = [t for t in threading.enumerate() if t.name == "trot-serial-rx"]
        assert reader.daemon
    finally:
        link.close()
        link.close()  # twice is fine
    assert not reader.is_alive()


def test_a_silent_or_mismatched_microcontroller_is_refused(mcu, tmp_path):
    missing = SerialTransport(str(tmp_path / "none"), 1_000_000, N, ROBOT_ID)
    with pytest.raises(TransportError, match=rf"^serial port {tmp_path / 'none'} does not exist$"):
        missing.open(0.1)
    missing.close()  # closing after a failed open is fine
    (tmp_path / "file").write_text("not a tty")
    not_a_port = SerialTransport(str(tmp_path / "file"), 1_000_000, N, ROBOT_ID)
    with pytest.raises(TransportError, match=rf"^serial port {tmp_path / 'file'}: cannot open \(.*Inappropriate ioctl"):
        not_a_port.open(0.1)
    not_a_port.close()
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


def test_a_device_that_vanishes_during_the_handshake_is_named(mcu):
    m = mcu()  # never answers
    link = SerialTransport(m.port, 1_000_000, N, ROBOT_ID)
    threading.Timer(0.2, m.close).start()
    try:
        # whichever sees the hang-up first names it: the reader thread, or the next Hello's write (every 100 ms)
        named = rf"^serial port {m.port}: (read|write) failed: .* during the handshake$"
        with pytest.raises(TransportError, match=named):
            link.open(30.0)
    finally:
        link.close()


def slow_handshake_and_poll(monkeypatch):
    """The transport's clock with every sleep 0.2 s long: chunks that arrive apart pile up between two looks."""
    from trot.deploy import transport as transport_module

    monkeypatch.setattr(transport_module, "time", SimpleNamespace(monotonic=time.monotonic,
                                                                  sleep=lambda s: time.sleep(0.2)))  # fmt: skip


def test_every_chunk_read_between_two_looks_is_decoded(mcu, monkeypatch):
    """A descheduled handshake or loop finds several reads waiting: the messages of all of them count."""
    slow_handshake_and_poll(monkeypatch)
    m = mcu(ack=HelloAck(N, b"fw"), after_ack=encode(state(1)), after_ack_delay=0.05)
    link = SerialTransport(m.port, 1_000_000, N, ROBOT_ID)
    try:
        link.open(5.0)  # the ack and, 50 ms later, a State in a read of its own, both before the loop looks again
        assert m.acked.wait(5.0)  # State 1 is out before 2 and 3 (on a busy machine its thread can be late)
        for seq in (2, 3):
            time.sleep(0.05)
            m.write(encode(state(seq)))
        time.sleep(0.3)
        poll = link.poll()
        assert [s.seq for s in poll.samples] == [1, 2, 3]
        assert poll.raw == encode(HelloAck(N, b"fw")) + b"".join(encode(state(seq)) for seq in (1, 2, 3))
    finally:
        link.close()


def test_a_repeated_sequence_number_beats_any_gap_and_stays(mcu):
    m = mcu(ack=HelloAck(N, b"fw"))
    link = SerialTransport(m.port, 1_000_000, N, ROBOT_ID)
    try:
        link.open(2.0)
        m.write(encode(state(4)))
        wait_for(link.poll, lambda s, p: s)
        m.write(b"".join(encode(state(seq)) for seq in (8, 8, 9)))  # a gap of 4, a repeat, then one step on
        _, last = wait_for(link.poll, lambda s, p: len(s) >= 3)
        assert last.received == 3 and last.seq_gap == 0
    finally:
        link.close()


class FakeClock:
    """The transport's clock: `sleep` only moves it on, and counts."""

    def __init__(self):
        self.now, self.sleeps = 1000.0, 0

    def monotonic(self):
        return self.now

    def sleep(self, s):
        self.now += s
        self.sleeps += 1


def fill_until_queued(link) -> int:
    """Send Commands to a peer that does not read until the port takes no more and the transport queues; how many."""
    for sent in range(1, 5000):
        assert link.send(ControlMode.DAMPING, np.zeros(N), np.zeros(N), np.zeros(N)) is None
        if link._tx:
            return sent
    raise AssertionError("the port took 5000 Commands")


def test_close_waits_50_ms_for_unsent_bytes_and_not_at_all_without(mcu, monkeypatch):
    from trot.deploy import transport as transport_module

    m = mcu(ack=HelloAck(N, b"fw"))
    link = SerialTransport(m.port, 1_000_000, N, ROBOT_ID)
    link.open(2.0)
    clock = FakeClock()
    monkeypatch.setattr(transport_module, "time", clock)
    link.close()  # everything went out: nothing to wait for
    assert clock.sleeps == 0
    monkeypatch.undo()
    m2 = mcu(ack=HelloAck(N, b"fw"))
    link = SerialTransport(m2.port, 1_000_000, N, ROBOT_ID)
    link.open(2.0)
    m2.pause()  # the microcontroller stops reading: the pty fills, then the transport queues
    fill_until_queued(link)
    clock = FakeClock()
    monkeypatch.setattr(transport_module, "time", clock)
    link.close()  # bytes left that the port does not take: a bounded wait, then the port is released
    assert 0.05 <= clock.now - 1000.0 < 0.05 + 0.002 + 1e-9 and link._serial is None


def test_close_sends_what_was_queued_and_nothing_else(mcu, monkeypatch):
    from trot.deploy import transport as transport_module

    m = mcu(ack=HelloAck(N, b"fw"))
    link = SerialTransport(m.port, 1_000_000, N, ROBOT_ID)
    link.open(2.0)
    m.pause()
    sent = fill_until_queued(link)
    m.paused.clear()  # the microcontroller reads again while close waits (each 2 ms wait made 0.1 s of real time)
    clock = FakeClock()
    slow = SimpleNamespace(monotonic=clock.monotonic, sleep=lambda s: (clock.sleep(s), time.sleep(0.1)))
    monkeypatch.setattr(transport_module, "time", slow)
    link.close()
    end = time.monotonic() + 10
    while time.monotonic() < end and sum(isinstance(x, Command) for x in m.received) < sent:
        time.sleep(0.01)
    assert [c.seq for c in m.received if isinstance(c, Command)] == list(range(sent))
    assert m.raw == b"".join(encode(x) for x in m.received)  # every byte belongs to a frame


def test_an_idle_link_costs_the_reader_no_cpu(mcu):
    """The reader thread sleeps in poll() until bytes come (or 50 ms pass): a busy wait would spin a core."""
    m = mcu(ack=HelloAck(N, b"fw"))
    link = SerialTransport(m.port, 1_000_000, N, ROBOT_ID)
    try:
        link.open(2.0)
        (reader,) = [t for t in threading.enumerate() if t.name == "trot-serial-rx"]
        stat = f"/proc/self/task/{reader.native_id}/stat"
        if not os.path.exists(stat):
            pytest.skip("no per-thread CPU figures here (/proc/self/task)")

        def cpu_s():  # utime + stime of the reader thread, in seconds
            fields = open(stat).read().rpartition(")")[2].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

        before = cpu_s()
        time.sleep(1.0)
        assert cpu_s() - before < 0.05  # CPU time, not wall time: a busy machine does not inflate it
    finally:
        link.close()


class ScriptedPort:
    """Stands in for select.poll and the file descriptor: each poll() returns the next (events, read outcome)."""

    def __init__(self, link, script):
        self.link, self.script, self.outcome = link, list(script), None

    def register(self, fd, mask):
        pass

    def poll(self, timeout_ms):
        if not self.script:
            self.link._closing.set()
            return []
        events, self.outcome = self.script.pop(0)
        return [(7, events)] if events else []

    def read(self, fd, size):
        if isinstance(self.outcome, Exception):
            raise self.outcome
        return self.outcome


def test_the_reader_survives_empty_and_would_block_reads_and_ends_on_a_hang_up_or_a_read_error(monkeypatch):
    """What the OS can answer (a spurious wake-up, an empty read, a hang-up flag, EIO), scripted: pyserial on a pty
    shows only some of them."""
    from trot.deploy import transport as transport_module

    def run(script, backlog=1 << 20):
        link = SerialTransport("/dev/null", 1_000_000, N, ROBOT_ID)
        monkeypatch.setattr(transport_module, "MAX_RX_BACKLOG", backlog)
        port = ScriptedPort(link, script)
        monkeypatch.setattr(transport_module, "select", SimpleNamespace(
            poll=lambda: port, POLLIN=select.POLLIN, POLLHUP=select.POLLHUP, POLLERR=select.POLLERR,
            POLLNVAL=select.POLLNVAL))  # fmt: skip
        monkeypatch.setattr(transport_module, "os", SimpleNamespace(read=port.read))
        link._read_loop()
        return link._lost, b"".join(chunk for _, chunk in link._take_chunks()), link.rx_dropped

    eio = OSError(5, "Input/output error")
    assert run([(0, None), (select.POLLIN, BlockingIOError()), (select.POLLIN, b""), (select.POLLIN, b"ab"),
                (select.POLLIN, b"c")]) == (None, b"abc", 0)  # fmt: skip
    for flag in (select.POLLHUP, select.POLLERR, select.POLLNVAL):
        assert run([(select.POLLIN, b"ab"), (flag, b""), (select.POLLIN, b"c")]) == (
            "read failed: the device hung up (disconnected)", b"ab", 0)  # fmt: skip
    assert run([(select.POLLIN, eio), (select.POLLIN, b"c")]) == ("read failed: [Errno 5] Input/output error", b"", 0)
    # A loop that stopped polling: up to the backlog is kept, then the oldest chunks make room.
    assert run([(select.POLLIN, b"ab"), (select.POLLIN, b"cd")], backlog=4) == (None, b"abcd", 0)
    assert run([(select.POLLIN, b"ab"), (select.POLLIN, b"cd"), (select.POLLIN, b"e")], backlog=4) == (
        None, b"cde", 2)  # fmt: skip


def test_a_write_error_or_a_full_queue_is_a_lost_link(monkeypatch):
    from trot.deploy import transport as transport_module

    def writer(outcome):
        link = SerialTransport("/dev/null", 1_000_000, N, ROBOT_ID)
        link._serial = object()  # opened, as far as _write is concerned

        def write(fd, data):
            raise outcome

        monkeypatch.setattr(transport_module, "os", SimpleNamespace(write=write))
        return link

    link = writer(BlockingIOError())  # the port takes nothing: 2048 bytes may wait, one more may not
    link._write(b"x" * 2048)
    assert link._lost is None
    link._write(b"x")
    assert link._lost == "write failed: 2049 bytes waiting (the other side is not reading)"
    link = writer(OSError(5, "Input/output error"))
    link._write(b"x")
    assert link._lost == "write failed: [Errno 5] Input/output error"
