"""The deploy loop against a fake transport: fixed rate without drift, a command every tick, telemetry, command
sources, CLI refusals, and the import rule for the robot side."""

import dataclasses
import gc
import logging
import math
import os
import subprocess
import sys
import time

import numpy as np
import pytest

from trot.deploy.bundle import load_bundle
from trot.deploy.commands import (
    CommandError,
    ConstantCommand,
    GamepadCommand,
    KeyboardCommand,
    ScriptedCommand,
    clip_to_ranges,
    parse_velocity,
)
from trot.deploy.link import Poll, Sample
from trot.deploy.loop import LoopConfig, run_loop
from trot.deploy.protocol import ControlMode
from trot.deploy.safety import SafetyLimits
from trot.deploy.telemetry import read_telemetry
from trot.robots import load_robot

ROBOT = load_robot("pupper_v3")
FAST = SafetyLimits(soft_start_s=0.2, fade_in_s=0.2, shutdown_damping_s=0.1)


class FakeTransport:
    """A robot standing still at the default pose; one State per poll; records every command.

    `max_polls` bounds the run: a loop still polling after that many ticks (one poll a tick) never reached DONE, and
    the poll fails the test naming the loop's state, instead of the test hanging."""

    name = "fake"
    describe = "fake transport"

    def __init__(self, poll_hook=None, max_polls: int | None = None):
        self.sent: list[tuple[float, ControlMode, np.ndarray]] = []
        self.estops: list[int] = []
        self.seq = 0
        self.poll_hook = poll_hook
        self.max_polls = max_polls
        self.loop = None  # the loop under test, named when the bound is hit
        self.closed = False

    def open(self, timeout_s: float) -> str:
        return "fake peer"

    def poll(self) -> Poll:
        if self.max_polls is not None and self.seq >= self.max_polls:
            m = self.loop.machine if self.loop is not None else None
            raise AssertionError(
                f"the loop was still running after {self.seq} ticks ({self.seq * ROBOT.control_dt:.1f} s of control "
                f"periods), past the end of its run: state {m.state.name if m else '?'}, last transitions "
                f"{[f'{t.src.name}->{t.dst.name} ({t.cause})' for t in m.transitions[-6:]] if m else '?'}"
            )
        if self.poll_hook:
            self.poll_hook(self)
        self.seq += 1
        q = np.array(ROBOT.default_joint_pos)
        accel = np.array([0.0, 0.0, 9.81 + 1e-4 * (self.seq % 5)])
        s = Sample(time.monotonic(), self.seq, 4000 * self.seq, q, np.zeros(12), np.zeros(12),
                   np.array([1.0, 0, 0, 0]), np.zeros(3), accel, 0)  # fmt: skip
        return Poll(samples=[s], received=1, seq_gap=1, raw=b"\x00abc\x00")

    def send(self, mode, target, kp, kd):
        self.sent.append((time.monotonic(), ControlMode(mode), np.array(target)))
        return None

    def estop(self, reason: int) -> None:
        self.estops.append(reason)

    def report(self, record, *, overruns, missed_ticks, reason) -> None:
        pass

    def close(self) -> None:
        self.closed = True


@pytest.fixture(scope="module")
def bundle(tiny_bundle):
    return load_bundle(tiny_bundle)


# A run ends within its duration plus the longest damping (an e-stop's or a shutdown's, 1 s by default); this many
# seconds of control periods past its duration mean it never will.
OVERRUN_BOUND_S = 5.0


def run_fake(bundle, tmp_path, duration=1.0, limits=FAST, transport=None, commands=None, ready=None, runtime=None):
    """Run the loop on a fake transport for `duration` s, bounded in ticks: one that does not end fails, naming its
    state (the loop ticks at most once a control period, so the bound is never reached by a busy machine)."""
    transport = transport or FakeTransport()
    if transport.max_polls is None:
        transport.max_polls = math.ceil((duration + OVERRUN_BOUND_S) / ROBOT.control_dt)

    def on_ready(loop):
        transport.loop = loop
        if ready is not None:
            ready(loop)

    path = tmp_path / "t.jsonl"
    result = run_loop(bundle, ROBOT, transport, commands or ConstantCommand(), path, limits,
                      LoopConfig(duration_s=duration), runtime=runtime, ready=on_ready)  # fmt: skip
    return result, transport, read_telemetry(path)


def test_loop_runs_on_the_deadline_grid_without_drift_and_commands_every_tick(bundle, tmp_path):
    result, transport, tel = run_fake(bundle, tmp_path, duration=1.0)
    period = bundle.contract.control_dt
    assert result.exit_code == 0 and result.summary["end_state"] == "DONE"
    assert len(transport.sent) == len(tel.ticks) == result.summary["ticks"]
    # Each tick started at t0 + k·period + its measured lateness, k a whole number: no drift, whatever the load.
    t = tel.series("t")
    grid = (t - t[0] - tel.series("late_ms") / 1e3 + tel.ticks[0]["late_ms"] / 1e3) / period
    np.testing.assert_allclose(grid, np.round(grid), atol=1e-3)
    assert np.all(np.diff(np.round(grid)) >= 1)
    # Ticks and the slots skipped after a late one (a busy machine) fill the run: the rate of the grid is 1/period.
    s = result.summary
    assert (s["ticks"] - 1 + s["missed_ticks"]) / s["wall_s"] == pytest.approx(1 / period, rel=0.05)
    assert s["rate_hz"] == pytest.approx((s["ticks"] - 1) / s["wall_s"])
    assert transport.closed


def test_states_and_modes_follow_soft_start_fade_in_running_shutdown(bundle, tmp_path):
    result, transport, tel = run_fake(bundle, tmp_path, duration=1.0)
    assert [tr["dst"] for tr in tel.transitions] == ["HANDSHAKE", "SOFT_START", "FADE_IN", "RUNNING", "SHUTDOWN",
                                                     "DONE"]  # fmt: skip
    modes = {tick["state"]: tick["mode"] for tick in tel.ticks}
    assert modes["SOFT_START"] == modes["FADE_IN"] == modes["RUNNING"] == "POSITION"
    assert modes["SHUTDOWN"] == "DAMPING"
    assert tel.ticks[-1]["state"] == "DONE" and tel.ticks[-1]["mode"] == "DAMPING"
    # The policy runs only once the soft start is over, and its observations are in the log.
    policy_ticks = [tick for tick in tel.ticks if "action" in tick]
    assert {tick["state"] for tick in policy_ticks} <= {"FADE_IN", "RUNNING"}
    assert len(policy_ticks[0]["obs"]) == bundle.obs_size


def test_fade_in_blends_from_the_default_pose_to_the_policy_target(bundle, tmp_path):
    _, _, tel = run_fake(bundle, tmp_path, duration=0.8)
    default = np.array(ROBOT.default_joint_pos)
    fade = [tick for tick in tel.ticks if tick["state"] == "FADE_IN"]
    first = fade[0]
    np.testing.assert_allclose(first["target"], default, atol=1e-5)  # weight 0 on the policy at first
    for tick in fade[1:]:
        weight = np.linalg.norm(np.subtract(tick["target"], default)) / max(
            np.linalg.norm(np.subtract(tick["policy_target"], default)), 1e-9
        )
        assert 0.0 <= weight <= 1.0 + 1e-6


def test_telemetry_records_every_byte_received_and_every_transition(bundle, tmp_path):
    _, transport, tel = run_fake(bundle, tmp_path, duration=0.5)
    assert tel.complete and not tel.truncated
    assert tel.header["robot"]["name"] == "pupper_v3" and tel.header["control_dt"] == bundle.contract.control_dt
    assert tel.received_bytes() == b"\x00abc\x00" * len(tel.ticks)
    assert tel.summary["transitions"][-1]["line"].startswith("SHUTDOWN -> DONE")
    assert tel.series("joint_pos").shape == (len(tel.ticks), 12)


def test_telemetry_reader_skips_a_truncated_last_line(bundle, tmp_path):
    _, _, tel = run_fake(bundle, tmp_path, duration=0.3)
    path = tmp_path / "t.jsonl"
    data = path.read_bytes()
    cut = data[: data.rindex(b'"kind":"tick"') + 40]  # the process died in the middle of a tick record
    path.write_bytes(cut)
    partial = read_telemetry(path)
    assert partial.truncated and not partial.complete and partial.summary is None
    assert 0 < len(partial.ticks) < len(tel.ticks)


def test_log_plot_writes_pngs(bundle, tmp_path):
    run_fake(bundle, tmp_path, duration=0.6)
    from trot.deploy.cli import main

    assert main(["log", "plot", str(tmp_path / "t.jsonl"), "-o", str(tmp_path / "plots")]) == 0
    names = sorted(p.name for p in (tmp_path / "plots").glob("*.png"))
    assert names == ["currents.png", "joints.png", "orientation.png", "states.png", "timing.png"]
    assert main(["log", "summary", str(tmp_path / "t.jsonl")]) == 0


def test_slow_inference_two_ticks_in_a_row_damps_in_the_second(bundle, tmp_path):
    from trot.deploy.runtime import PolicyRuntime

    runtime = PolicyRuntime(bundle, ROBOT)
    act, calls = runtime.act, []

    def slow_act(obs):
        calls.append(1)
        if len(calls) in (30, 31):  # the warm-up makes 20 calls; the 10th and 11th in the loop are slow
            time.sleep(1.5 * bundle.contract.control_dt)
        return act(obs)

    runtime.act = slow_act
    result, transport, tel = run_fake(bundle, tmp_path, duration=1.0, runtime=runtime)
    (fault,) = [tr for tr in tel.transitions if tr["dst"] == "DAMPING"]
    assert fault["cause"] == "inference" and result.exit_code == 1
    tick = tel.ticks[fault["tick"]]
    assert tick["inference_ms"] > 1e3 * bundle.contract.control_dt and tick["mode"] == "DAMPING"


def test_overruns_and_missed_ticks_are_counted(bundle, tmp_path):
    polls = []

    def stall(transport):
        polls.append(1)
        if len(polls) == 10:
            time.sleep(2.5 * bundle.contract.control_dt)

    result, _, _ = run_fake(bundle, tmp_path, duration=0.6, transport=FakeTransport(poll_hook=stall),
                            limits=SafetyLimits(soft_start_s=5.0))  # fmt: skip
    assert result.summary["overruns"] >= 1 and result.summary["missed_ticks"] >= 1


def test_the_gait_clock_counts_the_control_periods_a_late_tick_skipped(bundle, tmp_path):
    """The policy's gait_phase input is the clock of training's episodes: control periods since the policy started,
    run or skipped. A tick stalled 3.5 periods in RUNNING makes the loop skip slots to stay on its grid; every policy
    observation's phase must still be that of the slot its tick ran in, counted from the policy's first tick."""
    from trot import mapping

    period = bundle.contract.control_dt
    polls = []

    def stall(transport):
        polls.append(1)
        if len(polls) == 30:  # soft start and fade-in take 0.4 s (20 ticks): this one is in RUNNING
            time.sleep(3.5 * period)

    result, _, tel = run_fake(bundle, tmp_path, duration=1.0, transport=FakeTransport(poll_hook=stall))
    assert result.summary["missed_ticks"] >= 2
    policy = [tick for tick in tel.ticks if "obs" in tick]
    assert tel.ticks[29]["state"] == "RUNNING" and tel.ticks[29] in policy
    # Which control period of the grid (start + k * period) each tick ran in: its deadline's, plus any it skipped.
    grid_start = tel.ticks[0]["t"] - tel.ticks[0]["late_ms"] / 1e3
    slot = np.array([np.floor((tick["t"] - grid_start) / period + 1e-6) for tick in policy])
    spec = bundle.meta.observation.to_spec()
    sizes = {t["name"]: t["size"] for t in spec.metadata(ROBOT.num_joints)["terms"]}
    names = [t.name for t in spec.terms]
    at = sum(sizes[n] for n in names[: names.index("gait_phase")])  # in the newest frame, which comes first
    seen = np.array([tick["obs"][at : at + 2] for tick in policy])
    expected = mapping.gait_phase(np, slot - slot[0], period, spec.gait_frequency_hz)
    why = "the gait phase (sin, cos) of each policy tick against its control period since the first: skipped ones count"
    np.testing.assert_allclose(seen, expected, atol=1e-5, err_msg=why)


def test_a_tick_the_loop_itself_made_late_counts_as_its_own_overrun(bundle, tmp_path):
    """60 ms of the loop thread's own CPU work in one tick: the next tick is late by its own doing (a run-queue wait
    cannot explain it), and every tick records its CPU time and, on Linux, its run-queue wait."""
    polls = []

    def busy(transport):
        polls.append(1)
        if len(polls) == 10:
            end = time.thread_time() + 0.06
            while time.thread_time() < end:
                pass

    result, _, tel = run_fake(bundle, tmp_path, duration=0.6, transport=FakeTransport(poll_hook=busy),
                              limits=SafetyLimits(soft_start_s=5.0))  # fmt: skip
    s = result.summary
    assert s["overruns"] - s["descheduled_overruns"] >= 1
    assert s["own_overrun_pct"] == pytest.approx(100 * (s["overruns"] - s["descheduled_overruns"]) / s["ticks"])
    assert tel.ticks[10]["cpu_ms"] >= 60.0  # the busy tick's work, seen at the next tick start
    assert all(t["cpu_ms"] >= 0 for t in tel.ticks)
    if sys.platform == "linux":
        assert all(t["wait_ms"] >= 0 for t in tel.ticks) and s["run_queue_wait_s"] >= 0


def test_a_full_garbage_collection_of_a_large_heap_does_not_stall_a_tick(bundle, tmp_path):
    """The interpreter may run a full collection in any tick. With a million live containers in the process (an
    onboard process holds rclpy, onnxruntime and numpy; the test process far more), scanning them all takes ~0.2 s:
    the heap from before the run must be out of the collector's reach, so that the tick stays within its period."""
    heap = [[] for _ in range(1_000_000)]  # noqa: F841 (alive for the whole run)
    polls = []

    def collect(transport):
        polls.append(1)
        if len(polls) == 10:
            gc.collect()

    result, _, tel = run_fake(bundle, tmp_path, duration=0.6, transport=FakeTransport(poll_hook=collect),
                              limits=SafetyLimits(soft_start_s=5.0))  # fmt: skip
    assert tel.ticks[10]["cpu_ms"] < result.summary["overrun_ms"], tel.ticks[10]
    assert gc.get_freeze_count() == 0  # the heap is the collector's again after the run


class LateFrames(FakeTransport):
    """Every State arrived `age_s` before the loop polls it (a slow link or driver between sensors and host)."""

    def __init__(self, age_s: float):
        super().__init__()
        self.age_s = age_s

    def poll(self) -> Poll:
        out = super().poll()
        out.samples[0] = dataclasses.replace(out.samples[0], rx_time=out.samples[0].rx_time - self.age_s)
        return out


def test_sensor_to_command_latency_is_measured_and_a_breach_of_the_declared_figure_is_said_once(bundle, tmp_path,
                                                                                                caplog):  # fmt: skip
    """Frames 30 ms old when read, against the Pupper's declared 20 ms (robot.toml [latency]): every policy tick
    measures at least 30 ms from the frame's arrival to its command written; one warning, in the log and the
    telemetry, however many ticks exceed it; the summary counts them all."""
    with caplog.at_level(logging.WARNING, logger="trot.deploy"):
        result, _, tel = run_fake(bundle, tmp_path, duration=1.0, transport=LateFrames(0.03))
    policy_ticks = [t for t in tel.ticks if "action" in t]
    assert len(policy_ticks) >= 10 and all(t["obs_to_cmd_ms"] >= 30.0 for t in policy_ticks)
    assert all("obs_to_cmd_ms" not in t for t in tel.ticks if "action" not in t)  # measured where the policy ran
    warnings = [e for e in tel.events if e["what"] == "latency"]
    assert len(warnings) == 1 and "more than the 20 ms robot 'pupper_v3' is declared to meet" in warnings[0]["message"]
    assert sum("is declared to meet" in r.getMessage() for r in caplog.records) == 1
    s = result.summary
    assert s["latency_declared_ms"] == 20.0 and s["latency_exceeded_ticks"] == len(policy_ticks)
    assert s["obs_to_cmd_p50_ms"] >= 30.0 and tel.header["latency_declared_s"] == 0.02


def test_no_latency_warning_within_the_declared_figure(bundle, tmp_path):
    """The same late frames on a robot declared to meet 0.5 s: measured, never warned about."""
    robot = dataclasses.replace(ROBOT, actuation_latency_s=0.5)
    path = tmp_path / "t.jsonl"
    result = run_loop(bundle, robot, LateFrames(0.03), ConstantCommand(), path, FAST, LoopConfig(duration_s=0.8))
    tel = read_telemetry(path)
    assert not [e for e in tel.events if e["what"] == "latency"] and result.summary["latency_exceeded_ticks"] == 0
    assert result.summary["obs_to_cmd_p50_ms"] >= 30.0


def test_host_estop_sends_estop_frames_then_damping_then_off(bundle, tmp_path):
    loops = []
    transport = FakeTransport(poll_hook=lambda t: loops[0].request_estop("test") if len(t.sent) == 5 else None)
    limits = SafetyLimits(soft_start_s=0.2, fade_in_s=0.2, estop_damping_s=0.3)
    result, transport, tel = run_fake(bundle, tmp_path, 1.6, limits, transport, ready=loops.append)
    assert [tr["dst"] for tr in tel.transitions][2:] == ["ESTOP_DAMPING", "OFF", "DONE"]
    assert result.exit_code == 1
    assert transport.estops and all(r == 2 for r in transport.estops)  # EStopReason.HOST, repeated
    modes = [m for _, m, _ in transport.sent]
    first_estop = next(i for i, tick in enumerate(tel.ticks) if tick["state"] == "ESTOP_DAMPING")
    assert set(modes[first_estop:]) <= {ControlMode.DAMPING, ControlMode.OFF}
    assert modes[-1] == ControlMode.OFF


def test_a_crash_in_the_loop_sends_damping_and_keeps_the_telemetry(bundle, tmp_path):
    def crash(transport):
        if transport.seq == 10:
            raise RuntimeError("sensor driver bug")

    transport = FakeTransport(poll_hook=crash)
    with pytest.raises(RuntimeError, match="sensor driver bug"):
        run_fake(bundle, tmp_path, transport=transport)
    tel = read_telemetry(tmp_path / "t.jsonl")
    assert tel.summary["exit_code"] == 1 and not tel.truncated
    assert any(e["what"] == "error" and "sensor driver bug" in e["message"] for e in tel.events)
    assert [mode for _, mode, _ in transport.sent[-3:]] == [ControlMode.DAMPING] * 3
    assert transport.closed


# ---- command sources ----------------------------------------------------------------------------


def test_scripted_commands_are_piecewise_constant(tmp_path):
    path = tmp_path / "cmds.txt"
    path.write_text('# t vx vy yaw\n0 0.1 0 0\n2.0, 0.3, 0, 0.5\n{"t": 4, "vx": -0.2}\n')
    cmds = ScriptedCommand(path)
    assert np.allclose(cmds.velocity(None), 0) and np.allclose(cmds.velocity(1.0), [0.1, 0, 0])
    assert np.allclose(cmds.velocity(2.0), [0.3, 0, 0.5]) and np.allclose(cmds.velocity(99), [-0.2, 0, 0])


@pytest.mark.parametrize("text, match", [("0 0.1 0\n", ":1:"), ("1 0 0 0\n0 0 0 0\n", "before"), ("", "no command")])
def test_bad_command_files_are_refused_naming_the_line(tmp_path, text, match):
    path = tmp_path / "cmds.txt"
    path.write_text(text)
    with pytest.raises(CommandError, match=match):
        ScriptedCommand(path)


def test_constant_command_parsing_and_clipping_to_the_bundle_ranges(bundle):
    assert np.allclose(parse_velocity("0.2,0,-0.5"), [0.2, 0, -0.5])
    with pytest.raises(CommandError, match="vx,vy,yaw"):
        parse_velocity("0.2,0")
    ranges = bundle.meta.commands
    clipped = clip_to_ranges([9.0, -9.0, 0.1], ranges)
    assert clipped[0] == ranges.vx[1] and clipped[1] == ranges.vy[0] and clipped[2] == 0.1


def test_keyboard_on_a_tty_steers_and_space_is_an_estop():
    master, slave = os.openpty()
    try:
        keys = KeyboardCommand(fd=slave)
        os.write(master, b"ww")
        keys.poll()
        assert np.allclose(keys.velocity(0.0), [0.1, 0, 0])
        os.write(master, b"aqx")
        keys.poll()
        assert np.allclose(keys.velocity(0.0), 0)
        os.write(master, b"e ")
        keys.poll()
        assert keys.estop is not None
        keys.close()
    finally:
        os.close(master)
        os.close(slave)


def test_keyboard_without_a_tty_is_refused(tmp_path):
    with open(tmp_path / "f", "w") as f, pytest.raises(CommandError, match="not a terminal"):
        KeyboardCommand(fd=f.fileno())


def test_gamepad_sticks_and_estop_button(tmp_path, bundle):
    import struct

    fifo = tmp_path / "js0"
    os.mkfifo(fifo)
    pad = GamepadCommand(str(fifo), bundle.meta.commands)
    writer = os.open(fifo, os.O_WRONLY)
    try:
        event = struct.Struct("<IhBB")
        os.write(writer, event.pack(0, -32767, 0x02, 1) + event.pack(0, 0, 0x02, 0))  # left stick full up
        pad.poll()
        v = pad.velocity(0.0)
        assert v[0] == pytest.approx(max(abs(x) for x in bundle.meta.commands.vx)) and v[1] == 0
        os.write(writer, event.pack(0, 1, 0x01, pad.estop_button))
        pad.poll()
        assert pad.estop is not None
    finally:
        os.close(writer)
        pad.close()


def test_missing_gamepad_is_refused(tmp_path, bundle):
    with pytest.raises(CommandError, match="cannot open"):
        GamepadCommand(str(tmp_path / "js9"), bundle.meta.commands)


# ---- CLI refusals and figures -------------------------------------------------------------------


def test_deploy_modules_import_no_torch_mujoco_pybullet_or_matplotlib():
    modules = ["loop", "safety", "transport", "commands", "telemetry", "cli"]
    code = (
        f"import sys\nfor m in {modules!r}: __import__('trot.deploy.' + m)\n"
        "bad = sorted(m for m in ('torch', 'mujoco', 'pybullet', 'matplotlib') if m in sys.modules)\n"
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"trot.deploy pulled in {out.stdout.strip()}"
