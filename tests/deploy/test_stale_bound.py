"""Issue 13 item 6: a State's age counts from when its bytes arrived, so the documented stale bound (SAFETY.md:
`stale_periods` x control_dt + one period, 80 ms on the Pupper) holds even when the stream stops right after
the loop polled. Measured end to end against the emulated microcontroller over a real pty."""

import base64
import os
import sys
import threading
import time

import pytest

from trot.deploy.bundle import load_bundle
from trot.deploy.commands import ConstantCommand
from trot.deploy.loop import LoopConfig, run_loop
from trot.deploy.protocol import Decoder, HelloAck, State, encode
from trot.deploy.safety import Mode, SafetyLimits
from trot.deploy.telemetry import read_telemetry
from trot.deploy.transport import SerialTransport
from trot.robots import load_robot

pytest.importorskip("pybullet")
from trot.hil.emulator import Emulator, EmulatorOptions  # noqa: E402

ROBOT = load_robot("pupper_v3")
DT = ROBOT.control_dt
READER_SLACK_S = 0.010  # pty delivery and the reader thread's wake-up (scheduling, GIL hand-over)


def last_state_timestamp_us(tel) -> int:
    decoder = Decoder(ROBOT.num_joints)
    states = [m for t in tel.ticks if t["rx"] for m in decoder.feed(base64.b64decode(t["rx"])) if isinstance(m, State)]
    return states[-1].timestamp_us


def test_stream_stopped_right_after_a_poll_damps_within_the_bound_from_arrival(tiny_bundle, tmp_path):
    stale_periods = 3.0  # the default
    limits = SafetyLimits(soft_start_s=0.3, fade_in_s=0.3, shutdown_damping_s=0.2, stale_periods=stale_periods)
    emu = Emulator(ROBOT, EmulatorOptions(fault_clock="session"))
    before = time.monotonic()
    port = emu.start()  # the emulator's State clock (timestamp_us) starts here
    after = time.monotonic()
    physics = threading.Thread(target=emu.run, name="emulator", daemon=True)
    switch = sys.getswitchinterval()
    sys.setswitchinterval(0.001)  # the emulator shares this process: let the reader thread in promptly
    loops, stop = [], {}
    transport = SerialTransport(port, 1_000_000, ROBOT.num_joints, bytes.fromhex(ROBOT.contract_sha256()))
    poll = transport.poll

    def poll_then_maybe_stop():
        """Right after the 10th poll in RUNNING: let one more State leave the emulator, then stop its stream. Bounded:
        a loop still polling 5 s of control periods past its 2 s never reached DONE, and fails naming its state."""
        loop = loops[0]
        stop["polls"] = stop.get("polls", 0) + 1
        if stop["polls"] > (2.0 + 5.0) / DT:
            last = [f"{t.src.name}->{t.dst.name} ({t.cause})" for t in loop.machine.transitions[-4:]]
            raise AssertionError(f"the loop still ran after {stop['polls']} ticks of a 2 s run: state "
                                 f"{loop.machine.state.name}, last transitions {last}")  # fmt: skip
        got = poll()
        if loop.machine.state == Mode.RUNNING and "poll_t" not in stop:
            stop["running_polls"] = stop.get("running_polls", 0) + 1
            if stop["running_polls"] == 10:
                stop["poll_t"], sent = time.monotonic(), emu.stats.states_sent

                def stop_after_one_more_state():
                    while emu.stats.states_sent == sent:
                        time.sleep(0.0002)
                    emu.stop()  # the pty stays open: the link is up, no State comes

                threading.Thread(target=stop_after_one_more_state, daemon=True).start()
        return got

    transport.poll = poll_then_maybe_stop
    try:
        physics.start()
        result = run_loop(load_bundle(tiny_bundle), ROBOT, transport, ConstantCommand(), tmp_path / "t.jsonl", limits,
                          LoopConfig(duration_s=2.0), ready=loops.append)  # fmt: skip
    finally:
        sys.setswitchinterval(switch)
        emu.stop()
        physics.join(timeout=5.0)
        emu.close()
    tel = read_telemetry(tmp_path / "t.jsonl")
    (fault,) = [tr for tr in tel.transitions if tr["dst"] == "DAMPING"]
    assert fault["cause"] == "stale" and result.exit_code == 1, fault
    tick = tel.ticks[fault["tick"]]
    damped_at = loops[0].t0 + tick["t"]
    last_sent = before + 1e-6 * last_state_timestamp_us(tel)  # at or before the true send time
    assert last_sent > stop["poll_t"] - (after - before), "the last State must have left after the poll"
    since_last = damped_at - last_sent
    bound = stale_periods * DT + DT  # SAFETY.md: stale_periods x control_dt (60 ms) + one period
    print(f"stale: damped {1e3 * since_last:.1f} ms after the last State was sent (bound {1e3 * bound:.0f} ms "
          f"+ tick lateness {tick['late_ms']:.1f} ms), State age at the fault {tick['age_ms']:.1f} ms")  # fmt: skip
    assert 1e3 * stale_periods * DT < tick["age_ms"] <= 1e3 * bound + tick["late_ms"]
    assert since_last <= bound + 1e-3 * tick["late_ms"] + READER_SLACK_S + (after - before)
    assert tick["mode"] == "DAMPING"


def test_a_state_is_stamped_when_its_bytes_arrive_not_when_the_loop_polls(tmp_path):
    """The mechanism, on a bare pty: a State written 300 ms before the poll carries its arrival time."""
    import tty

    import numpy as np

    master, slave = os.openpty()
    tty.setraw(slave)
    link = SerialTransport(os.ttyname(slave), 1_000_000, ROBOT.num_joints, b"id")
    answer = threading.Timer(0.1, os.write, args=(master, encode(HelloAck(ROBOT.num_joints, b"test"))))
    try:
        answer.start()  # after open() has flushed the port's input
        link.open(2.0)
        zeros = np.zeros(ROBOT.num_joints)
        state = State(7, 1000, zeros, zeros, zeros, [1, 0, 0, 0], [0, 0, 0], [0, 0, 9.81])
        written = time.monotonic()
        os.write(master, encode(state))
        time.sleep(0.3)
        polled = time.monotonic()
        poll = link.poll()
    finally:
        link.close()
        os.close(master)
        os.close(slave)
    assert [s.seq for s in poll.samples] == [7] and poll.received == 1
    waited = polled - poll.sample.rx_time
    print(f"State written {1e3 * (polled - written):.0f} ms before the poll; stamped {1e3 * waited:.1f} ms before it")
    assert written <= poll.sample.rx_time and waited > 0.2  # polling time would give 0; arrival gives about 300 ms
