"""Robot emulator: a real pty, the protocol codec on the host side, the emulator in a background thread."""

import math
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import serial

from trot.deploy.protocol import (
    PROTOCOL_VERSION,
    Command,
    ControlMode,
    Decoder,
    EStop,
    EStopReason,
    Heartbeat,
    Hello,
    HelloAck,
    State,
    StatusFlags,
    encode,
    seq_delta,
)
from trot.hil.emulator import Emulator, EmulatorOptions
from trot.robots import load_robot

ROBOT = load_robot("pupper_v3")
N = ROBOT.num_joints
DEFAULT_POS = np.array(ROBOT.default_joint_pos)
COMMAND_PERIOD = ROBOT.control_dt  # the host commands at the control rate, like the deploy loop
# Scheduling on a shared 2-core machine: how late a frame may be beyond what the emulator promises.
SCHEDULING_SLACK_S = 0.025


class Host:
    """The deploy loop's side of the link, reduced to what the tests need."""

    def __init__(self, port: str):
        self.serial = serial.Serial(port, timeout=0.005)
        self.decoder = Decoder(N)
        self.received: list[tuple[float, object]] = []  # (host monotonic time, message)
        self.command_seq = 0
        self.last_command_t = -math.inf

    def send(self, msg) -> None:
        self.serial.write(encode(msg))

    def poll(self) -> None:
        data = self.serial.read(max(1, self.serial.in_waiting))
        now = time.monotonic()
        self.received += [(now, msg) for msg in self.decoder.feed(data)]

    def handshake(self, num_joints: int = N) -> HelloAck:
        """Send Hello every 100 ms until a HelloAck arrives."""
        start = time.monotonic()
        while time.monotonic() - start < 2.0:
            self.send(Hello(num_joints, bytes.fromhex(ROBOT.contract_sha256())))
            sent = time.monotonic()
            while time.monotonic() - sent < 0.1:
                self.poll()
                acks = [m for _, m in self.received if isinstance(m, HelloAck)]
                if acks:
                    return acks[-1]
        raise AssertionError("no HelloAck within 2 s")

    def command(self, target=DEFAULT_POS, mode=ControlMode.POSITION) -> None:
        kp, kd = np.full(N, ROBOT.kp), np.full(N, ROBOT.kd)
        self.send(Command(self.command_seq, mode, target, kp, kd, np.zeros(N)))
        self.command_seq += 1
        self.last_command_t = time.monotonic()

    def run(self, seconds: float, target=None, on_poll=None) -> None:
        """Poll for `seconds`, sending a POSITION Command every control period when target is given.

        target: joint targets, or a function of the time since the call; on_poll: called after each poll.
        """
        start = time.monotonic()
        next_command = start
        while (now := time.monotonic()) - start < seconds:
            if target is not None and now >= next_command:
                self.command(target(now - start) if callable(target) else target)
                next_command += COMMAND_PERIOD
            self.poll()
            if on_poll is not None:
                on_poll()

    def states(self, since: float = -math.inf) -> list[State]:
        return [m for t, m in self.received if isinstance(m, State) and t >= since]

    def close(self) -> None:
        self.serial.close()


@pytest.fixture
def emulate():
    """start(**options) -> (emulator, host): an emulator running in a thread and a host on its pty."""
    running = []

    def start(**options) -> tuple[Emulator, Host]:
        emulator = Emulator(ROBOT, EmulatorOptions(**options))
        port = emulator.start()
        thread = threading.Thread(target=emulator.run, kwargs={"duration_s": 20.0}, daemon=True)
        thread.start()
        running.append((emulator, thread))
        host = Host(port)
        running.append(host)
        return emulator, host

    yield start
    for item in reversed(running):
        if isinstance(item, Host):
            item.close()
        else:
            emulator, thread = item
            emulator.stop()
            thread.join(timeout=5.0)
            emulator.close()
            assert not thread.is_alive()


def tilt_deg(quat_wxyz) -> float:
    """Angle between the body z axis and the world z axis."""
    w, x, y, z = quat_wxyz
    return math.degrees(math.acos(np.clip(1 - 2 * (x * x + y * y), -1.0, 1.0)))


def test_handshake_then_states_at_the_configured_rate_with_increasing_seq_and_time(emulate):
    _, host = emulate(state_rate_hz=100.0)
    ack = host.handshake()
    assert (ack.version, ack.num_joints, ack.firmware_name) == (PROTOCOL_VERSION, N, "trot-emulator")
    start = time.monotonic()
    host.send(Heartbeat(0, 123))
    host.run(1.0)
    states = host.states(since=start)
    assert 80 <= len(states) <= 120
    assert all(seq_delta(a.seq, b.seq) == 1 for a, b in zip(states, states[1:]))
    stamps = np.array([s.timestamp_us for s in states])
    assert (np.diff(stamps) > 0).all()
    assert np.mean(np.diff(stamps)) == pytest.approx(10_000, rel=0.2)
    assert any(isinstance(m, Heartbeat) for _, m in host.received)


def test_hello_with_wrong_joint_count_is_acked_but_opens_no_session(emulate):
    emulator, host = emulate()
    ack = host.handshake(num_joints=N - 1)
    assert ack.num_joints == N  # the emulator states its own n so that the host can name both
    host.decoder = Decoder(N)  # the test host keeps reading the emulator's frames
    start = time.monotonic()
    host.run(0.3, target=DEFAULT_POS)
    assert all(s.status & StatusFlags.MOTORS_OFF for s in host.states(since=start))
    assert emulator.stats.commands == 0 and emulator.stats.commands_ignored > 0


def test_position_commands_at_the_default_pose_keep_the_robot_standing(emulate):
    emulator, host = emulate()
    host.handshake()
    height_at_start = emulator.ground_truth()["base_pos"][2]
    start = time.monotonic()
    host.run(1.5, target=DEFAULT_POS)
    truth = emulator.ground_truth()
    assert truth["base_pos"][2] > 0.95 * height_at_start > 0.15
    assert tilt_deg(truth["base_quat"]) < 5.0
    states = host.states(since=start + 0.5)
    assert 250 * 0.8 <= len(states) / 1.0 <= 250 * 1.2  # the default: one State per physics step
    assert not any(s.status for s in states)
    np.testing.assert_allclose(states[-1].joint_pos, DEFAULT_POS, atol=0.1)
    assert states[-1].accel[2] == pytest.approx(9.81, abs=1.0)  # specific force at rest: up


def test_watchdog_damps_within_its_timeout_the_robot_sags_and_commands_resume_it(emulate):
    watchdog_ms = 100.0
    emulator, host = emulate(watchdog_ms=watchdog_ms)
    host.handshake()
    host.run(0.6, target=DEFAULT_POS)
    last_command = host.last_command_t
    host.run(0.3)
    flagged = [
        t for t, m in host.received if isinstance(m, State) and m.status & StatusFlags.WATCHDOG_DAMPING
    ]
    assert flagged, "no State with WATCHDOG_DAMPING after the Commands stopped"
    state_period = ROBOT.physics_dt
    assert 0.9 * watchdog_ms / 1e3 <= flagged[0] - last_command
    assert flagged[0] - last_command <= watchdog_ms / 1e3 + state_period + SCHEDULING_SLACK_S

    height = emulator.ground_truth()["base_pos"][2]
    host.run(0.8)
    assert emulator.ground_truth()["base_pos"][2] < height - 0.02  # damping alone does not hold it up
    resumed = time.monotonic()
    host.run(0.3, target=DEFAULT_POS)
    late = host.states(since=resumed + 0.05)
    assert late and not any(s.status & StatusFlags.WATCHDOG_DAMPING for s in late)


def test_host_estop_latches_damps_then_turns_motors_off_until_a_new_hello(emulate):
    emulator, host = emulate(estop_damping_s=0.3)
    host.handshake()
    host.run(0.3, target=DEFAULT_POS)
    host.send(EStop(0, EStopReason.HOST))
    pressed = time.monotonic()
    host.run(0.6, target=DEFAULT_POS)  # POSITION Commands must not release it
    after = host.states(since=pressed + 0.05)
    assert after and all(s.status & StatusFlags.ESTOP for s in after)
    assert not after[0].status & StatusFlags.MOTORS_OFF  # damping first
    assert after[-1].status & StatusFlags.MOTORS_OFF  # then off
    assert emulator.stats.commands_ignored > 0

    hello = time.monotonic()
    host.handshake()
    host.run(0.3, target=DEFAULT_POS)
    assert not any(s.status & StatusFlags.ESTOP for s in host.states(since=hello + 0.1))


def test_drop_loses_states_but_their_seq_is_used(emulate):
    _, host = emulate(drop=0.5, seed=1)
    host.handshake()
    start = time.monotonic()
    host.run(1.0)
    states = host.states(since=start)
    assert 0.3 * 250 <= len(states) <= 0.7 * 250
    gaps = [seq_delta(a.seq, b.seq) for a, b in zip(states, states[1:])]
    assert max(gaps) > 1 and min(gaps) >= 1


def test_corrupt_shows_up_as_crc_errors(emulate):
    _, host = emulate(corrupt=0.2, seed=2)
    host.handshake()
    host.run(0.5)
    assert host.decoder.crc_errors > 10
    assert len(host.states()) > 0.5 * 250 * 0.5  # the intact frames still decode


def test_delay_holds_every_outgoing_frame_back(emulate):
    _, host = emulate(delay_ms=80.0)
    host.handshake()
    host.send(Heartbeat(0, 0))
    sent = time.monotonic()
    host.run(0.3)
    replies = [t for t, m in host.received if isinstance(m, Heartbeat)]
    assert replies and 0.08 <= replies[0] - sent <= 0.08 + 2 * ROBOT.physics_dt + SCHEDULING_SLACK_S


def test_freeze_imu_keeps_the_imu_constant_while_the_joints_move(emulate):
    _, host = emulate(freeze_imu_at=0.6)
    host.handshake()

    def swing(t):  # hips swing, so the body rocks
        return DEFAULT_POS + 0.3 * math.sin(2 * math.pi * 2 * t) * (np.arange(N) % 3 == 1)

    start = time.monotonic()
    host.run(1.4, target=swing)
    states = host.states(since=start)
    frozen = [s for s in states if s.status & StatusFlags.IMU_STALE]
    assert len(frozen) > 50 and not states[0].status & StatusFlags.IMU_STALE
    for field in ("imu_quat", "gyro", "accel"):
        values = np.array([getattr(s, field) for s in frozen])
        assert (values == values[0]).all(), field
    assert np.ptp([s.joint_pos[1] for s in frozen]) > 0.1
    live_gyro = np.array([s.gyro for s in states if not s.status & StatusFlags.IMU_STALE])
    assert np.ptp(live_gyro, axis=0).max() > 0  # before the fault it did change


def test_nan_at_puts_nan_in_a_joint_position_from_then_on(emulate):
    _, host = emulate(nan_at=0.5)
    host.handshake()
    host.run(0.9, target=DEFAULT_POS)
    has_nan = [bool(np.isnan(s.joint_pos).any()) for s in host.states()]
    assert not has_nan[0] and has_nan[-1]
    first = has_nan.index(True)
    assert all(has_nan[first:])


def test_disconnect_closes_the_port_and_stops_the_emulator(emulate):
    emulator, host = emulate(disconnect_at=0.5)
    host.handshake()
    with pytest.raises(serial.SerialException):
        host.run(2.0, target=DEFAULT_POS)
    assert emulator.disconnected
    deadline = time.monotonic() + 1.0
    while emulator.stats.wall_s == 0 and time.monotonic() < deadline:  # set when run() returns
        time.sleep(0.01)
    assert 0.4 < emulator.stats.wall_s < 1.0  # run() returned at the disconnect, not at its duration


def test_push_kicks_the_base_sideways(emulate):
    emulator, host = emulate(push_at=0.5, push_velocity=1.0)
    host.handshake()
    speeds = []
    host.run(1.0, target=DEFAULT_POS, on_poll=lambda: speeds.append(emulator.ground_truth()["base_lin_vel"]))
    lateral = np.abs(np.array(speeds)[:, 1])
    assert lateral[:10].max() < 0.1 and lateral.max() > 0.7
    assert max(abs(s.accel[1]) for s in host.states()) > 50.0  # the IMU felt the kick


def test_tip_rolls_the_robot_past_60_degrees(emulate):
    _, host = emulate(tip_at=0.4)
    host.handshake()
    host.run(0.8, target=DEFAULT_POS)
    tilts = [tilt_deg(s.imu_quat) for s in host.states()]
    assert tilts[0] < 10.0 and tilts[-1] > 60.0


def test_estop_at_sends_an_estop_frame_from_the_button_and_latches(emulate):
    _, host = emulate(estop_at=0.4)
    host.handshake()
    host.run(0.8, target=DEFAULT_POS)  # still sending POSITION: the MCU repeats its EStop
    estops = [m for _, m in host.received if isinstance(m, EStop)]
    assert len(estops) >= 2 and all(m.reason == EStopReason.BUTTON for m in estops)
    assert [m.seq for m in estops] == list(range(len(estops)))
    assert host.states()[-1].status & StatusFlags.ESTOP


def test_module_runs_as_a_process_prints_its_port_and_links_it(tmp_path: Path):
    link = tmp_path / "robot_tty"
    proc = subprocess.Popen(
        [sys.executable, "-m", "trot.hil.emulator", "--duration", "1.5", "--link", str(link)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = proc.stdout.readline()
        while line and not line.startswith("emulator:"):  # PyBullet prints its own banner first
            line = proc.stdout.readline()
        port = line.removeprefix("emulator: serial port ").strip()
        assert port.startswith("/dev/") and link.resolve() == Path(port)
        with serial.Serial(str(link), timeout=0.2) as port_file:
            frames = Decoder(N).feed(port_file.read(2000))
        assert any(isinstance(m, State) for m in frames)
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert "physics" in out and not link.exists()  # the summary printed; the link removed
