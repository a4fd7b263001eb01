"""Hardware in the loop: the deploy loop over a real pty against the emulated microcontroller (PyBullet).

Each fault of the issue is injected once; each test checks that the loop reached its safe action in the tick
the fault became observable (or within the documented bound), said why, and left a complete, readable
telemetry file. Fault times are on the emulator's session clock (from the Hello). The walking test needs
the shipped policy (robots/pupper_v3/policies/walk.onnx, or TROT_WALK_BUNDLE) and skips without it.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from trot.deploy.bundle import load_bundle
from trot.deploy.commands import ConstantCommand
from trot.deploy.loop import LoopConfig, run_loop
from trot.deploy.protocol import Decoder, EStop, HelloAck, State, StatusFlags
from trot.deploy.safety import SafetyLimits, tilt_deg
from trot.deploy.telemetry import read_telemetry
from trot.deploy.transport import SerialTransport
from trot.robots import load_robot

pytest.importorskip("pybullet")
pytest.importorskip("serial")
import hil_timing  # noqa: E402  (tests/hil/hil_timing.py)
import hil_walk  # noqa: E402  (tests/hil/hil_walk.py)

from trot.hil.emulator import Emulator, EmulatorOptions  # noqa: E402

ROBOT = load_robot("pupper_v3")
DT = ROBOT.control_dt
ROBOT_ID = bytes.fromhex(ROBOT.contract_sha256())
# Short phases so that each fault test reaches RUNNING in 0.6 s; faults at 1.0 s on the session clock.
FAST = SafetyLimits(soft_start_s=0.3, fade_in_s=0.3, estop_damping_s=0.3, shutdown_damping_s=0.2)
FAULT_AT = 1.0
LAST: dict = {}  # the latest run's telemetry and emulator stats, for hil_timing.tolerate_contention
contended = hil_timing.tolerate_contention(LAST, DT, FAST.stale_periods)


@pytest.fixture(scope="module", autouse=True)
def onboard_priority():
    with hil_timing.onboard_priority():
        yield


@contextlib.contextmanager
def emulator(start_physics: bool = True, **options):
    """An emulator on a fresh pty, its physics in a thread; always stopped and closed."""
    emu = Emulator(ROBOT, EmulatorOptions(fault_clock="session", **options))
    LAST["emulator"] = emu.stats
    thread = threading.Thread(target=emu.run, name="emulator", daemon=True)
    try:
        emu.start()
        if start_physics:
            thread.start()
        yield emu, thread
    finally:
        emu.stop()
        if thread.is_alive():
            thread.join(timeout=5.0)
        emu.close()


@pytest.fixture(scope="module")
def bundle(tiny_bundle):
    return load_bundle(tiny_bundle)


def deploy(bundle, port, tmp_path, duration=2.0, limits=FAST, runtime=None, ready=None, command=(0.0, 0.0, 0.0)):
    """Run the loop in this thread over `port`; return the result and the telemetry, checked complete."""
    path = tmp_path / "telemetry.jsonl"
    transport = SerialTransport(port, 1_000_000, ROBOT.num_joints, ROBOT_ID)
    result = run_loop(bundle, ROBOT, transport, ConstantCommand(command), path, limits,
                      LoopConfig(duration_s=duration), runtime, ready)  # fmt: skip
    tel = LAST["tel"] = read_telemetry(path)
    assert tel.complete, "telemetry file incomplete"
    assert len(tel.ticks) == result.summary["ticks"] and tel.summary["exit_code"] == result.exit_code
    return result, tel


def only_fault(tel, cause: str) -> dict:
    """The one transition to a safe state; checks its cause, its log line and that it left POSITION at once."""
    faults = [tr for tr in tel.transitions if tr["dst"] in ("DAMPING", "ESTOP_DAMPING")]
    assert len(faults) == 1, [tr["line"] for tr in tel.transitions]
    (fault,) = faults
    assert fault["cause"] == cause, fault["line"]
    assert fault["line"].startswith(f"{fault['src']} -> {fault['dst']}: ")
    assert fault["src"] in ("HANDSHAKE", "SOFT_START", "FADE_IN", "RUNNING")
    after = tel.ticks[fault["tick"] :]
    assert after[0]["mode"] == "DAMPING", "the tick of the transition must already send the safe command"
    assert all(t["mode"] in ("DAMPING", "OFF") for t in after)
    return fault


def decoded_per_tick(tel) -> list[list]:
    """The messages each tick received, decoded from the raw bytes in the telemetry."""
    decoder = Decoder(ROBOT.num_joints)
    out = []
    import base64

    for tick in tel.ticks:
        out.append(decoder.feed(base64.b64decode(tick["rx"])) if tick["rx"] else [])
    return out


# ---- faults -------------------------------------------------------------------------------------


@contended
def test_nan_in_a_state_damps_in_the_tick_it_arrives(bundle, tmp_path):
    with emulator(nan_at=FAULT_AT) as (emu, _):
        result, tel = deploy(bundle, emu.port, tmp_path)
    fault = only_fault(tel, "nonfinite")
    first_nan = next(i for i, t in enumerate(tel.ticks) if not np.all(np.isfinite(t.get("joint_pos", [0]))))
    assert fault["tick"] == first_nan and "non-finite State: joint_pos" in fault["reason"]
    assert result.exit_code == 1 and fault["src"] == "RUNNING"


@contended
def test_tip_over_is_a_fall_that_damps_in_the_tick_it_is_seen(bundle, tmp_path):
    with emulator(tip_at=FAULT_AT) as (emu, _):
        result, tel = deploy(bundle, emu.port, tmp_path)
        height = emu.ground_truth()["base_pos"][2]
    fault = only_fault(tel, "fall")
    tilted = next(i for i, t in enumerate(tel.ticks) if tilt_deg(t["imu_quat"]) > FAST.max_tilt_deg)
    assert fault["tick"] == tilted
    assert height < 0.15  # it fell, damped, instead of being driven upright


@contended
def test_disconnect_damps_at_the_first_failed_read(bundle, tmp_path):
    with emulator(disconnect_at=FAULT_AT) as (emu, _):
        result, tel = deploy(bundle, emu.port, tmp_path)
    fault = only_fault(tel, "link_lost")
    last_rx = max(i for i, t in enumerate(tel.ticks) if t["received"])
    # States are read off the port as they arrive: the ones sent before the pty closed may come with the loss.
    assert fault["tick"] in (last_rx, last_rx + 1)
    assert result.exit_code == 1 and tel.summary["end_state"] == "DONE"


def test_frozen_microcontroller_is_a_stale_state_within_the_bound(bundle, tmp_path):
    """The emulator as a separate process, stopped with SIGSTOP: the link stays up, no State comes."""
    link = tmp_path / "tty"
    emu = subprocess.Popen([sys.executable, "-m", "trot.hil.emulator", "--link", str(link), "--duration", "20"],
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)  # fmt: skip
    frozen = threading.Event()
    try:
        for line in emu.stdout:
            if line.startswith("emulator: serial port"):
                break

        def freeze_at_running(loop):
            def watch():
                while loop.machine.state.value != "RUNNING" and emu.poll() is None:
                    time.sleep(0.005)
                time.sleep(0.2)
                emu.send_signal(signal.SIGSTOP)
                frozen.set()
                time.sleep(0.3)
                emu.send_signal(signal.SIGCONT)

            threading.Thread(target=watch, daemon=True).start()

        result, tel = deploy(bundle, str(link), tmp_path, duration=1.6, ready=freeze_at_running)
    finally:
        if emu.poll() is None:
            emu.send_signal(signal.SIGCONT)
            emu.terminate()
        emu.wait(timeout=10)
    assert frozen.is_set()
    fault = only_fault(tel, "stale")
    tick = tel.ticks[fault["tick"]]
    bound_ms = 1e3 * FAST.stale_periods * DT
    assert tick["age_ms"] > bound_ms and tel.ticks[fault["tick"] - 1]["age_ms"] <= bound_ms
    assert tick["age_ms"] <= bound_ms + 1e3 * DT + 10  # documented bound: stale limit + one period (+ sleep slack)


@contended
def test_dropped_states_are_a_sequence_gap(bundle, tmp_path):
    limits = SafetyLimits(soft_start_s=0.3, fade_in_s=0.3, shutdown_damping_s=0.2, stale_periods=10)
    with emulator(drop=0.8, seed=3) as (emu, _):
        result, tel = deploy(bundle, emu.port, tmp_path, limits=limits)
    fault = only_fault(tel, "seq_gap")
    last, gap_tick, session = None, None, False
    for i, messages in enumerate(decoded_per_tick(tel)):  # the first tick holds the handshake's bytes too
        for msg in messages:
            session = session or isinstance(msg, HelloAck)  # States before the ack belong to no session
            if session and isinstance(msg, State):
                if last is not None and msg.seq - last - 1 > limits.max_seq_gap and gap_tick is None:
                    gap_tick = i
                last = msg.seq
    assert fault["tick"] == gap_tick


@contended
def test_corrupted_frames_are_a_crc_burst(bundle, tmp_path):
    with emulator(corrupt=0.5, seed=1) as (emu, _):
        result, tel = deploy(bundle, emu.port, tmp_path, duration=1.0)
    fault = only_fault(tel, "crc")
    # The same rule as the loop: errors since the newest tick at least a window old (or the first tick).
    t, errors = tel.series("t"), tel.series("link_errors")
    window = FAST.link_error_window_s

    def recent(i):
        old = [j for j in range(i + 1) if t[j] <= t[i] - window]
        return errors[i] - errors[old[-1] if old else 0]

    first = next(i for i in range(len(t)) if recent(i) > FAST.link_errors_max)
    assert fault["tick"] == first


@contended
def test_slow_inference_damps_in_the_same_tick(bundle, tmp_path):
    from trot.deploy.runtime import PolicyRuntime

    runtime = PolicyRuntime(bundle, ROBOT)
    act = runtime.act
    loops = []

    def slow_after_a_second_of_running(obs):
        loop = loops[0] if loops else None  # None during the warm-up
        if loop and loop.machine.state.value == "RUNNING" and loop.machine.entered + 0.3 < loop._now():
            time.sleep(1.5 * DT)
        return act(obs)

    runtime.act = slow_after_a_second_of_running
    with emulator() as (emu, _):
        result, tel = deploy(bundle, emu.port, tmp_path, runtime=runtime, ready=loops.append)
    fault = only_fault(tel, "inference")
    assert tel.ticks[fault["tick"]]["inference_ms"] > 1e3 * DT


@contended
def test_stalled_host_trips_the_microcontroller_watchdog_and_then_ours(bundle, tmp_path):
    loops = []

    def ready(loop):
        loops.append(loop)
        poll = loop.transport.poll

        def stalling_poll():
            if loop.machine.state.value == "RUNNING" and not hasattr(loop, "_stalled"):
                loop._stalled = True
                time.sleep(0.15)  # > the MCU's 100 ms watchdog
            return poll()

        loop.transport.poll = stalling_poll

    with emulator() as (emu, _):
        result, tel = deploy(bundle, emu.port, tmp_path, ready=ready)
    fault = only_fault(tel, "mcu_status")
    assert "WATCHDOG_DAMPING" in fault["reason"]
    assert tel.summary["overruns"] >= 1


def grid_time(tick: dict) -> float:
    """When the tick was due (its start less its lateness): bounds are checked on the loop's deadline grid."""
    return tick["t"] - tick["late_ms"] / 1e3


@pytest.mark.parametrize("silent", [False, True])
@contended
def test_frozen_imu_damps_within_its_bound(bundle, tmp_path, silent):
    with emulator(freeze_imu_at=FAULT_AT, freeze_imu_silent=silent) as (emu, _):
        result, tel = deploy(bundle, emu.port, tmp_path)
    fault = only_fault(tel, "imu_frozen" if silent else "imu_stale")
    ticks = tel.ticks[: fault["tick"] + 1]
    if silent:  # the first tick since which the IMU has read exactly what it read at the fault
        imu = [(t["imu_quat"], t["gyro"], t["accel"]) for t in ticks]
        first = next(i for i in range(len(imu)) if all(x == imu[-1] for x in imu[i:]))
        bound = FAST.imu_frozen_s + DT
    else:
        first = next(i for i, t in enumerate(ticks) if t["status"] & StatusFlags.IMU_STALE)
        bound = FAST.imu_stale_periods * DT + DT
    assert 0 < grid_time(ticks[-1]) - grid_time(ticks[first]) <= bound + 1e-3


@contended
def test_push_is_not_a_fault(bundle, tmp_path):
    with emulator(push_at=FAULT_AT, push_velocity=0.2) as (emu, _):
        result, tel = deploy(bundle, emu.port, tmp_path)
    assert result.exit_code == 0, [tr["line"] for tr in tel.transitions]
    assert [tr["dst"] for tr in tel.transitions][-3:] == ["RUNNING", "SHUTDOWN", "DONE"]


@contended
def test_microcontroller_estop_damps_then_off_and_stops_position_commands(bundle, tmp_path):
    with emulator(estop_at=FAULT_AT) as (emu, _):
        result, tel = deploy(bundle, emu.port, tmp_path)
        applied, ignored = emu.stats.commands, emu.stats.commands_ignored
    fault = only_fault(tel, "estop_mcu")

    def shows_estop(msg) -> bool:
        return isinstance(msg, EStop) or (isinstance(msg, State) and bool(msg.status & StatusFlags.ESTOP))

    seen = next(i for i, msgs in enumerate(decoded_per_tick(tel)) if any(shows_estop(m) for m in msgs))
    assert fault["tick"] == seen
    assert [tr["dst"] for tr in tel.transitions][-3:] == ["ESTOP_DAMPING", "OFF", "DONE"]
    assert tel.ticks[-1]["mode"] == "OFF" and result.exit_code == 1
    assert ignored > 0 and applied > 0  # the MCU ignores everything after its latch


@contended
def test_host_estop_latches_the_microcontroller(bundle, tmp_path):
    loops = []

    def ready(loop):
        loops.append(loop)
        threading.Timer(1.0, loop.request_estop, args=("keyboard e-stop (space)",)).start()

    with emulator() as (emu, _):
        result, tel = deploy(bundle, emu.port, tmp_path, ready=ready)
    fault = only_fault(tel, "estop_host")
    assert "keyboard e-stop" in fault["reason"]
    assert any(e["what"] == "estop_ack" for e in tel.events)  # the MCU reported ESTOP: the repeats stopped
    assert any(t.get("status", 0) & StatusFlags.ESTOP for t in tel.ticks)
    assert tel.ticks[-1]["mode"] == "OFF"


# ---- signals, refusals: the CLI in a subprocess ----------------------------------------------------


def deploy_process(*args, physics: threading.Thread | None = None) -> subprocess.Popen:
    """`trot deploy` in a subprocess; with `physics`, start the emulator's thread once the process is up.

    The emulated robot damps until the first Command and is lying down within a second; starting its physics
    when the deploy process prints its banner gives the soft start a robot that is still near its pose.
    """
    cmd = [sys.executable, "-m", "trot.deploy.cli", "deploy", *map(str, args)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if physics is not None:
        proc.stdout.readline()  # the banner, printed before the policy loads and the handshake starts
        physics.start()
    return proc


def wait_for_state(telemetry: Path, state: str, proc: subprocess.Popen, timeout: float = 60.0) -> None:
    """Until the deploy process's telemetry shows `state` (generous: a busy machine starts Python slowly)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end and proc.poll() is None:
        if telemetry.exists() and f'"state":"{state}"' in telemetry.read_text(errors="replace"):
            return
        time.sleep(0.05)
    seen = [tr["line"] for tr in read_telemetry(telemetry).transitions] if telemetry.exists() else "no telemetry"
    raise AssertionError(f"never reached {state} (exit code {proc.poll()}; transitions: {seen})")


@pytest.mark.parametrize("sig, exit_code, path", [
    (signal.SIGINT, 0, ["SHUTDOWN", "DONE"]),
    (signal.SIGTERM, 0, ["SHUTDOWN", "DONE"]),
    (signal.SIGUSR1, 1, ["ESTOP_DAMPING", "OFF", "DONE"]),
])  # fmt: skip
def test_signals_damp_and_exit(tiny_bundle, tmp_path, sig, exit_code, path):
    telemetry = tmp_path / "t.jsonl"
    with emulator(start_physics=False) as (emu, physics):
        proc = deploy_process("--bundle", tiny_bundle, "--port", emu.port, "--telemetry", telemetry,
                              "--soft_start_s", 0.3, "--fade_in_s", 0.3, "--duration", 30, physics=physics)  # fmt: skip
        try:
            wait_for_state(telemetry, "RUNNING", proc)
            proc.send_signal(sig)
            if sig == signal.SIGUSR1:  # the e-stop latches; the operator then stops the loop
                wait_for_state(telemetry, "OFF", proc)
                proc.send_signal(signal.SIGTERM)
            out, err = proc.communicate(timeout=20)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    assert proc.returncode == exit_code, err
    tel = read_telemetry(telemetry)
    assert tel.complete
    assert [tr["dst"] for tr in tel.transitions][-len(path) :] == path
    assert f"-> {path[0]}" in err and "exit code" in out
    if sig != signal.SIGUSR1:
        assert tel.ticks[-1]["mode"] == "DAMPING" and not tel.summary["faulted"]


def test_telemetry_survives_a_killed_process(tiny_bundle, tmp_path):
    telemetry = tmp_path / "t.jsonl"
    with emulator(start_physics=False) as (emu, physics):
        proc = deploy_process("--bundle", tiny_bundle, "--port", emu.port, "--telemetry", telemetry,
                              "--soft_start_s", 0.3, "--fade_in_s", 0.3, physics=physics)  # fmt: skip
        try:
            wait_for_state(telemetry, "RUNNING", proc)
            proc.kill()  # SIGKILL: no handler, no finally
            proc.communicate(timeout=20)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    tel = read_telemetry(telemetry)  # a cut-off last line is skipped, everything before it is there
    assert tel.summary is None and not tel.complete
    assert any(t["state"] == "RUNNING" for t in tel.ticks)
    assert [t["i"] for t in tel.ticks] == list(range(len(tel.ticks)))


def reordered_bundle(tiny_bundle, out: Path) -> Path:
    """The bundle with two joints swapped in its contract and re-exported (hashes recomputed): it passes the
    integrity check, so only the field-by-field comparison with the robot can refuse it."""
    from dataclasses import replace

    import onnx

    from trot.bundle import read_bundle_meta
    from trot.train.export import write_bundle

    meta = read_bundle_meta(tiny_bundle)
    names = list(meta.contract.joint_names)
    names[0], names[3] = names[3], names[0]
    contract = replace(meta.contract, joint_names=tuple(names))
    write_bundle(onnx.load(str(tiny_bundle)), replace(meta, contract=contract, integrity=None), out)
    assert read_bundle_meta(out).contract.joint_names == tuple(names)  # loads: its hashes match
    return out


@pytest.mark.parametrize("mismatch", ["robot_kp", "bundle_joint_order"])
def test_bundle_robot_mismatch_is_refused_before_any_frame(tiny_bundle, tmp_path, mismatch):
    robot_args, bundle = [], tiny_bundle
    if mismatch == "robot_kp":
        other = tmp_path / "pupper_stiff"
        shutil.copytree(ROBOT.folder, other)
        (other / "robot.toml").write_text((other / "robot.toml").read_text().replace("kp = 5.0 ", "kp = 6.0 "))
        robot_args, expected = ["--robot", other], "kp: bundle 5.0, robot 6.0"
    else:
        bundle = reordered_bundle(tiny_bundle, tmp_path / "reordered.onnx")
        expected = "differing fields: joint_names: bundle ['leg_front_l_1'"
    with emulator() as (emu, _):
        proc = deploy_process("--bundle", bundle, *robot_args, "--port", emu.port,
                              "--telemetry", tmp_path / "t.jsonl")  # fmt: skip
        out, err = proc.communicate(timeout=60)
        time.sleep(0.05)
        hellos, commands = emu.stats.hellos, emu.stats.commands + emu.stats.commands_ignored
    assert proc.returncode == 2, err
    assert "refused" in err and expected in err, err
    assert hellos == 0 and commands == 0
    assert not (tmp_path / "t.jsonl").exists()


def test_missing_port_is_refused_naming_it(tiny_bundle, tmp_path):
    proc = deploy_process("--bundle", tiny_bundle, "--port", tmp_path / "ttyNOPE", "--telemetry", tmp_path / "t.jsonl")
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 2
    assert f"serial port {tmp_path / 'ttyNOPE'} does not exist" in err
    assert not (tmp_path / "t.jsonl").exists()


# ---- walking with the shipped policy ------------------------------------------------------------


@pytest.mark.slow
@contended
def test_shipped_policy_walks_forward_over_the_serial_link_for_20_s(tmp_path):
    policy = hil_walk.shipped_policy("the serial link")
    telemetry = tmp_path / "walk.jsonl"
    with emulator(start_physics=False) as (emu, physics):
        walk = hil_walk.deploy_walk(emu, policy, telemetry, "--port", emu.port,
                                    "--command", ",".join(map(str, hil_walk.COMMAND)), physics=physics)  # fmt: skip
    print(emu.stats.summary(ROBOT.physics_dt))
    LAST["tel"] = read_telemetry(telemetry)
    hil_walk.check_walk(walk, telemetry, "the serial link")
