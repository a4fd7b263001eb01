"""Hardware in the loop on a stock Pupper v3's ROS 2 bring-up: `trot deploy --transport ros2` with the robot's profile
(robots/pupper_v3/ros2.toml) against the emulator presenting the same stack (hil/emulator/ros2_controllers.py):
the controller manager with the authors' controller active and the forward controllers inactive, the gain
controllers, the IMU broadcaster's topic, the gamepad e-stop, and no watchdog on the robot side.

DDS stays on the loopback interface (CYCLONEDDS_URI set by the module's fixture), on a domain id of this process's
own and a namespace per test, as in test_hil_ros2.py. The raw DDS path is what runs (`--ros2_backend dds`).
"""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pybullet")
pytest.importorskip("cyclonedds")

import hil_timing  # noqa: E402  (tests/hil/hil_timing.py)

from trot.deploy.bundle import load_bundle  # noqa: E402
from trot.deploy.commands import ConstantCommand  # noqa: E402
from trot.deploy.loop import LoopConfig, run_loop  # noqa: E402
from trot.deploy.ros2 import convert, dds, msgs  # noqa: E402
from trot.deploy.ros2.bringup import DdsBringupTransport  # noqa: E402
from trot.deploy.ros2.profile import load_ros2_profile  # noqa: E402
from trot.deploy.ros2.topics import QosProfile  # noqa: E402
from trot.deploy.safety import COMMAND_MODE, Mode, SafetyLimits  # noqa: E402
from trot.deploy.telemetry import read_telemetry  # noqa: E402
from trot.hil.emulator import Emulator, EmulatorOptions  # noqa: E402
from trot.hil.emulator.ros2_controllers import ControllerStackOptions, stack_link  # noqa: E402
from trot.robots import load_robot  # noqa: E402

ROBOT = load_robot("pupper_v3")
PROFILE = load_ros2_profile(ROBOT)
N = ROBOT.num_joints
DT = ROBOT.control_dt
HW = ROBOT.hardware
DOMAIN_ID = hil_timing.private_domain_id()
# Short phases; and staleness judged over 10 periods, not 3: these tests are about the wiring, and the emulator's
# thread in this process stalls for 60 ms at times on a loaded 2-core machine (test_hil_ros2.py times staleness).
FAST = SafetyLimits(soft_start_s=0.3, fade_in_s=0.3, estop_damping_s=0.3, shutdown_damping_s=0.2, stale_periods=10)
STATE_RATE_HZ = 125
AUTHORS = ("neural_controller", "neural_controller_three_legged")
FORWARD = ("forward_position_controller", "forward_kp_controller", "forward_kd_controller")
# What the motors must get in each commanded mode: the contract's gains (capped), kp 0 with the contract's damping kd,
# nothing. Pinned from robots/pupper_v3/robot.toml: kp 5.0, kd 0.25, damping_kd 0.1 (the authors' estop_kd).
GAINS = {"POSITION": (5.0, 0.25), "DAMPING": (0.0, 0.1), "OFF": (0.0, 0.0)}
WIRE_QOS = QosProfile("reliable", "volatile", 1000)  # the spies keep every sample of a run


@pytest.fixture(scope="module", autouse=True)
def onboard_priority():
    with hil_timing.onboard_priority():
        yield


@pytest.fixture(scope="module", autouse=True)
def loopback():
    previous = os.environ.get("CYCLONEDDS_URI")
    dds.use_config(dds.loopback_config_xml())
    assert dds.loopback_config_problems() == []
    yield
    if previous is None:
        os.environ.pop("CYCLONEDDS_URI", None)
    else:
        os.environ["CYCLONEDDS_URI"] = previous


@pytest.fixture
def namespace(request) -> str:
    return re.sub(r"\W", "_", f"trot_bringup_{os.getpid()}_{request.node.name}")


@pytest.fixture(scope="module")
def bundle(tiny_bundle):
    return load_bundle(tiny_bundle)


def test_pupper_gains_are_the_ones_pinned_here():
    """The expectations below are the contract's numbers; the damping kd is not the policy's kd."""
    assert (ROBOT.kp, ROBOT.kd, HW["damping_kd"]) == (5.0, 0.25, 0.1) and HW["kd_max"] >= ROBOT.kd


@contextmanager
def stack(namespace: str, profile=PROFILE, **options):
    """The emulated Pupper bring-up, physics in a thread; always stopped and closed."""
    emu = Emulator(
        ROBOT,
        EmulatorOptions(state_rate_hz=STATE_RATE_HZ),
        stack_link(ControllerStackOptions(topics=profile.ros2_topics(namespace), domain_id=DOMAIN_ID,
                                          profile=profile, **options)),  # fmt: skip
    )
    thread = threading.Thread(target=emu.run, name="emulator", daemon=True)
    try:
        emu.start()
        thread.start()
        yield emu
    finally:
        emu.stop()
        thread.join(timeout=5.0)
        emu.close()


def transport(namespace: str, profile=PROFILE) -> DdsBringupTransport:
    return DdsBringupTransport(ROBOT.joint_names, profile.ros2_topics(namespace), DOMAIN_ID, ROBOT.name, DT,
                               profile=profile, damping_kd=HW["damping_kd"])  # fmt: skip


class Spy:
    """Every sample of some topics, with the monotonic time each arrived (a reader thread), for the test's eyes."""

    def __init__(self, namespace: str, topics: dict):
        wire = PROFILE.ros2_topics(namespace, **{f"{t}_qos": WIRE_QOS for t in topics})
        self.node = dds.DdsNode(wire, DOMAIN_ID)
        self.readers = {t: self.node.reader(t, kind) for t, kind in topics.items()}
        self.got: dict[str, list] = {t: [] for t in topics}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.is_set():
            for topic, reader in self.readers.items():
                for s in reader.take(N=256):
                    if s.sample_info.valid_data:
                        self.got[topic].append((time.monotonic(), s))
            time.sleep(0.001)

    def close(self):
        self._stop.set()
        self._thread.join()
        self.node.close()


def gains_on_the_wire(spy: Spy) -> list[tuple[float, float, float]]:
    """(arrival, kp, kd) of each pair of gain messages, with every joint's value checked equal."""
    kps, kds = spy.got["kp_commands"], spy.got["kd_commands"]
    out = []
    for (t, kp), (_, kd) in zip(kps, kds):
        kp = convert.float64_multiarray_to_command(kp, N)
        kd = convert.float64_multiarray_to_command(kd, N)
        assert np.all(kp == kp[0]) and np.all(kd == kd[0]), (kp, kd)
        out.append((t, float(kp[0]), float(kd[0])))
    return out


def runs(values):
    """Consecutive duplicates dropped."""
    out = []
    for v in values:
        if not out or out[-1] != v:
            out.append(v)
    return out


def run_deploy(bundle, namespace, tmp_path, duration, profile=PROFILE, during=None, config=None):
    path = tmp_path / "telemetry.jsonl"
    loops = []

    def ready(loop):
        loops.append(loop)
        if during is not None:
            threading.Thread(target=during, args=(loop,), daemon=True).start()

    result = run_loop(bundle, ROBOT, transport(namespace, profile), ConstantCommand((0.0, 0.0, 0.0)), path, FAST,
                      config or LoopConfig(duration_s=duration), None, ready)  # fmt: skip
    tel = read_telemetry(path)
    assert tel.complete
    return result, tel, loops[0]


def when_running(action, hold_s=0.3):
    """A `during` that waits for RUNNING, then `hold_s`, then does `action(loop)`."""

    def during(loop):
        end = time.monotonic() + 60
        while loop.machine.state != Mode.RUNNING and time.monotonic() < end:
            time.sleep(0.005)
        time.sleep(hold_s)
        action(loop)

    return during


# ---- switching ------------------------------------------------------------------------------------


@pytest.mark.parametrize("rmw", ["rmw_fastrtps_cpp", "rmw_cyclonedds_cpp"])
def test_controllers_switch_in_strictly_at_start_and_back_at_exit(bundle, namespace, tmp_path, rmw):
    """The authors' controller out and the forward ones in (STRICT) before the first command; at a clean exit, the
    reverse. Both service framings: Fast DDS's (no header) and Cyclone DDS's (guid, seq before the fields)."""
    profile = replace(PROFILE, rmw=rmw)
    with stack(namespace, profile) as emu:
        before = emu.link.states()
        result, tel, _ = run_deploy(bundle, namespace, tmp_path, 1.5, profile)
        time.sleep(0.1)
        after, switches, modes = emu.link.states(), list(emu.link.switches), list(emu.link.interface_log)
    assert before["neural_controller"] == "active" and all(before[c] == "inactive" for c in FORWARD)
    assert result.exit_code == 0, [t.line for t in result.transitions]
    (t_in, act, deact, strictness, ok, _), (t_out, back_in, back_out, strictness_back, ok_back, _) = switches
    assert (act, deact, strictness, ok) == (list(FORWARD), ["neural_controller"], 2, True)
    assert (back_in, back_out, strictness_back, ok_back) == (["neural_controller"], list(FORWARD), 2, True)
    assert after == before
    # No trot command reached the motors before the switch (the forward controllers were inactive), and the
    # authors' deactivation left damping (their estop kd) until trot's first command.
    first_trot = next(t for t, mode, kp, kd in modes if t >= t_in and (kp[0], kd[0]) == GAINS["POSITION"])
    assert [m for t, m, kp, kd in modes if t_in <= t < first_trot] == ["DAMPING"]
    (handshake,) = [e["message"] for e in tel.events if e["what"] == "handshake"]
    assert handshake.endswith("controllers forward_position_controller, forward_kp_controller, forward_kd_controller "
                              "active (authors' controllers deactivated: neural_controller)"), handshake  # fmt: skip


def test_a_switch_not_answered_is_a_refusal_and_the_motors_go_back(bundle, namespace, tmp_path, caplog):
    """The controller manager switches but its reply is lost: trot refuses (exit 2, nothing driven) and switches
    the authors' controller back in at the end."""
    profile = replace(PROFILE, controllers=replace(PROFILE.controllers, switch_timeout_s=1.0))
    with stack(namespace, profile, answer_switch=False) as emu:
        with caplog.at_level(logging.INFO, logger="trot.deploy"):
            result, tel, _ = run_deploy(bundle, namespace, tmp_path, 1.0, profile)
        time.sleep(0.1)
        states, switches = emu.link.states(), list(emu.link.switches)
    assert result.exit_code == 2
    (refused,) = [tr for tr in tel.transitions if tr["cause"] == "refused"]
    assert "no reply from /" in refused["reason"] and "/controller_manager/switch_controller within 1 s" in refused[
        "reason"]
    assert [(a, d) for _, a, d, *_ in switches] == [(list(FORWARD), ["neural_controller"]),
                                                    (["neural_controller"], list(FORWARD))]  # fmt: skip
    assert states["neural_controller"] == "active" and all(states[c] == "inactive" for c in FORWARD)
    assert tel.ticks == [] and "neural_controller active again" in caplog.text


def test_a_strict_refusal_is_a_refusal_naming_the_controller(bundle, namespace, tmp_path):
    """A controller of the authors' the profile does not know is active and claims the same interfaces: the STRICT
    switch fails, nothing is switched, and trot refuses with the controller manager's message."""
    with stack(namespace) as emu:
        # Between two physics ticks (the emulator's lock): a tick publishing the boot states meanwhile would clear
        # the flag after writing the old states, and trot would see neural_controller still active.
        with emu._lock:
            emu.link.controllers["forward_kp_controller"].interfaces = frozenset({"kp", "position"})
            emu.link.controllers["neural_controller"].state = "inactive"
            emu.link.controllers["forward_position_controller"].state = "active"
            emu.link._activity_dirty = True
        deadline = time.monotonic() + 10.0  # the next tick publishes them; a busy machine can delay it
        while emu.link._activity_dirty and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not emu.link._activity_dirty, "test setup: the emulator never published the controllers' new states"
        result, tel, _ = run_deploy(bundle, namespace, tmp_path, 1.0)
        states = emu.link.states()
    assert result.exit_code == 2
    (refused,) = [tr for tr in tel.transitions if tr["cause"] == "refused"]
    assert "refused to activate ['forward_kp_controller', 'forward_kd_controller']" in refused["reason"]
    assert "resource conflict: 'forward_kp_controller'" in refused["reason"]
    assert states["forward_kp_controller"] == "inactive" and states["forward_position_controller"] == "active"


# ---- gains on the wire ----------------------------------------------------------------------------


def _silence_imu(emu):
    return lambda loop: emu.link.silence("imu")


def _host_estop(emu):
    return lambda loop: loop.request_estop("test: host e-stop")


@pytest.mark.parametrize("fault, states", [(_silence_imu, ["DAMPING"]), (_host_estop, ["ESTOP_DAMPING", "OFF"])],
                         ids=["stale_imu_damping", "host_estop_then_off"])  # fmt: skip
def test_gains_on_the_wire_follow_every_safety_transition(bundle, namespace, tmp_path, fault, states):
    """kp and kd read off the forward kp/kd controllers' topics, tick by tick: the policy's gains while driving, kp 0
    with the contract's damping kd (0.1, not the policy's 0.25) in DAMPING, kp 0 kd 0 in OFF; and the motors apply
    them."""
    with stack(namespace) as emu:
        spy = Spy(namespace, {"kp_commands": msgs.Float64MultiArray, "kd_commands": msgs.Float64MultiArray})
        try:
            result, tel, loop = run_deploy(bundle, namespace, tmp_path, 2.5, during=when_running(fault(emu)))
            time.sleep(0.2)
        finally:
            spy.close()
        applied = list(emu.link.interface_log)
        exit_switch = emu.link.switches[-1][0]
    dst = [tr["dst"] for tr in tel.transitions]
    assert dst[:5] == ["HANDSHAKE", "SOFT_START", "FADE_IN", "RUNNING", states[0]] and dst[-1] == "DONE", dst
    assert all(s in dst for s in states)
    wire = gains_on_the_wire(spy)
    expected = []
    for tick in tel.ticks:
        state = Mode(tick["state"])
        if state != Mode.DONE:
            assert tick["mode"] == COMMAND_MODE[state].name, tick  # the loop commands what its state says
        expected.append(GAINS[tick["mode"]])
    got = [(kp, kd) for _, kp, kd in wire]
    print(f"{len(got)} gain pairs on the wire for {len(tel.ticks)} ticks; runs {runs(got)}")
    assert len(got) >= 0.9 * len(tel.ticks)  # one pair a tick (a reliable keep-last-1 writer may replace one)
    assert runs(got) == runs(expected), (runs(got), runs(expected))
    assert (0.0, 0.1) in got and (0.0, ROBOT.kd) not in got  # damping carries the contract's damping kd
    # What the motors applied (the hardware's kp/kd interfaces) until trot gave them back: the same sequence, after
    # the damping the authors' controller's deactivation left.
    motors = runs([(float(kp[0]), float(kd[0])) for t, _, kp, kd in applied if t < exit_switch])
    assert motors[-len(runs(got)) :] == runs(got), motors
    assert result.exit_code == 1


# ---- the gamepad e-stop -----------------------------------------------------------------------------


def test_gamepad_estop_is_heard_and_trot_stops_commanding_once_its_controllers_are_out(
    bundle, namespace, tmp_path, caplog
):
    """The gamepad e-stop: Empty on /emergency_stop (an e-stop in the tick it arrives), then joy_utils deactivates
    every controller. Trot notices its controllers out, says which, stops publishing, and at exit leaves the authors'
    controller inactive (the release button is the operator's); the release then gives the robot back."""
    with stack(namespace) as emu:
        spy = Spy(namespace, {"joint_commands": msgs.Float64MultiArray, "kp_commands": msgs.Float64MultiArray})
        pressed = []

        def press(loop):
            pressed.append(time.monotonic())
            emu.link.press_gamepad_estop()

        try:
            with caplog.at_level(logging.INFO, logger="trot.deploy"):
                result, tel, loop = run_deploy(bundle, namespace, tmp_path, 2.5, during=when_running(press))
            time.sleep(0.2)
        finally:
            spy.close()
        out_at = next(t for t, a, d, s, ok, m in emu.link.switches if s == 1 and not a)  # the e-stop's switch
        states_after = emu.link.states()
        log = [(t, m, float(kp[0]), float(kd[0])) for t, m, kp, kd in emu.link.interface_log]
        emu.link.press_gamepad_release()
        time.sleep(0.2)
        released = emu.link.states()
        out_at_mono = emu.board.t0 + out_at
    assert emu.link.estops_heard >= 1
    fault = next(tr for tr in tel.transitions if tr["dst"] == "ESTOP_DAMPING")
    assert fault["cause"] == "estop_topic" and "emergency_stop (std_msgs/Empty, the robot's e-stop)" in fault["reason"]
    first_empty = next(i for i, t in enumerate(tel.ticks) if "Empty" in t["frames"])
    assert fault["tick"] == first_empty  # acted on in the tick it arrived
    assert re.search(r"forward_position_controller is inactive, forward_kp_controller is inactive, "
                     r"forward_kd_controller is inactive \(/\w+/controller_manager/activity\): another node switched "
                     r"trot's controllers out", caplog.text)  # fmt: skip
    # Silent once the activity showed them out: nothing of trot's on the wire later than a tick after it.
    last_command = max(t for t, _ in spy.got["joint_commands"])
    held = [(m, kp, kd) for t, m, kp, kd in log if t <= out_at][-1]
    print(f"gamepad e-stop: controllers out {1e3 * (out_at_mono - pressed[0]):.0f} ms after the press; trot's last "
          f"position command {1e3 * (last_command - out_at_mono):.0f} ms after that; the motors held {held}, then "
          f"{log[-1][1:]}")  # fmt: skip
    assert last_command <= out_at_mono + 2 * DT + 0.05
    # Whichever came first, trot's e-stop damping or the deactivation, the motors end damped by the contract's gain,
    # through the gain controllers alone (switched in and out again), and every controller ends inactive.
    assert log[-1][1:] == ("DAMPING", 0.0, 0.1), log[-4:]
    gain_switches = [(a, d) for _, a, d, s, ok, _ in emu.link.switches if s == 2 and ok][1:]
    if held[0] == "POSITION":
        assert gain_switches == [(["forward_kp_controller", "forward_kd_controller"], []),
                                 ([], ["forward_kp_controller", "forward_kd_controller"])]  # fmt: skip
        assert "the robot's e-stop left trot's last target held: damped it through forward_kp_controller" in caplog.text
    assert result.exit_code == 1
    assert all(states_after[c] == "inactive" for c in (*AUTHORS, *FORWARD))  # not woken up at exit
    assert released["neural_controller"] == "active"


# ---- the watchdog -----------------------------------------------------------------------------------


def deploy_process(tiny_bundle, namespace, telemetry) -> subprocess.Popen:
    # No profile flag: the bundle's robot's ros2.toml. The domain, namespace and backend keep the test apart.
    cmd = [sys.executable, "-m", "trot.deploy.cli", "deploy", "--transport", "ros2", "--bundle", str(tiny_bundle),
           "--telemetry", str(telemetry), "--domain_id", str(DOMAIN_ID), "--ros_namespace", namespace,
           "--ros2_backend", "dds", "--soft_start_s", "0.3", "--fade_in_s", "0.3"]  # fmt: skip
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_commanding(telemetry: Path, proc: subprocess.Popen, timeout: float = 90.0) -> None:
    """Until the deploy process has sent commands for a while (SOFT_START reached, then 1 s): in whatever state a
    loaded machine leaves it (a stale fault damps), it is publishing every tick."""
    end = time.monotonic() + timeout
    while time.monotonic() < end and proc.poll() is None:
        if telemetry.exists() and '"state":"SOFT_START"' in telemetry.read_text(errors="replace"):
            time.sleep(1.0)
            return
        time.sleep(0.02)
    raise AssertionError(f"deploy never commanded (exit code {proc.poll()}): {proc.stderr.read()[-3000:]}")


def last_tick(telemetry: Path) -> dict:
    """The last complete tick record of a killed deploy process."""
    return read_telemetry(telemetry).ticks[-1]


def test_without_the_watchdog_a_killed_deploy_leaves_its_last_target_held(tiny_bundle, namespace, tmp_path):
    """The premise: the robot side has no watchdog. SIGKILL the deploy process: the motors keep its last target at
    the policy's gains."""
    telemetry = tmp_path / "t.jsonl"
    with stack(namespace) as emu:
        proc = deploy_process(tiny_bundle, namespace, telemetry)
        try:
            wait_commanding(telemetry, proc)
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)
            killed = time.monotonic() - emu.board.t0
            time.sleep(0.6)
            log = list(emu.link.interface_log)
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.communicate()
    tick = last_tick(telemetry)
    after = [(m, float(kp[0]), float(kd[0])) for t, m, kp, kd in log if t > killed]
    held = [(float(kp[0]), float(kd[0])) for t, m, kp, kd in log if t <= killed][-1]
    print(f"killed in {tick['state']}: the motors hold kp {held[0]:g}, kd {held[1]:g} for 0.6 s and on")
    assert held == (tick["kp"], tick["kd"]) and after == [], after


def test_watchdog_damps_within_its_bound_after_the_deploy_process_is_killed(tiny_bundle, namespace, tmp_path):
    """`trot watchdog` in its own process: SIGKILL `trot deploy`, and damping (kp 0, kd 0.1) appears on the gain
    topics within the watchdog's timeout (5 ticks) plus one check period, with slack for a busy machine; the motors
    apply it."""
    telemetry = tmp_path / "t.jsonl"
    timeout_s, check_s = 1e-3 * PROFILE.watchdog_timeout_ms, 0.010
    bound_s = timeout_s + check_s
    slack_s = 0.25
    with stack(namespace) as emu:
        spy = Spy(namespace, {"joint_targets": msgs.JointState, "kp_commands": msgs.Float64MultiArray,
                              "kd_commands": msgs.Float64MultiArray})  # fmt: skip
        dog = subprocess.Popen([sys.executable, "-m", "trot.deploy.watchdog", "--robot", "pupper_v3", "--domain_id",
                                str(DOMAIN_ID), "--ros_namespace", namespace, "--ros2_backend", "dds"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
        proc = None
        try:
            banner = dog.stdout.readline()
            assert "damping (kp 0, kd 0.1)" in banner and "silent for 100 ms" in banner, banner
            proc = deploy_process(tiny_bundle, namespace, telemetry)
            wait_commanding(telemetry, proc)
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)
            killed = time.monotonic()
            time.sleep(0.8)
            log = list(emu.link.interface_log)
        finally:
            spy.close()
            for p in (proc, dog):
                if p is not None and p.poll() is None:
                    p.send_signal(signal.SIGTERM)
            dog_out, dog_err = dog.communicate(timeout=10)
            if proc is not None:
                proc.communicate()
    # Timed by the writers' own stamps (DDS source timestamps, one host clock): from the killed process's last write
    # of its command stream to the watchdog's first write of damping, whatever the spy's thread was doing.
    last_target = max(s.sample_info.source_timestamp for _, s in spy.got["joint_targets"])
    wire = [(kp_sample.sample_info.source_timestamp, pair)
            for (_, kp_sample), pair in zip(spy.got["kp_commands"], gains_on_the_wire(spy))]  # fmt: skip
    damped = [stamp for stamp, (_, kp, kd) in wire if stamp > last_target and (kp, kd) == (0.0, 0.1)]
    assert damped, wire[-5:]
    delay = 1e-9 * (damped[0] - last_target)
    print(f"watchdog: damping written {1e3 * delay:.0f} ms ({delay / DT:.1f} ticks of {1e3 * DT:.0f} ms) after the "
          f"killed deploy process's last command (bound {1e3 * bound_s:.0f} ms + slack {1e3 * slack_s:.0f} ms)")
    assert timeout_s < delay <= bound_s + slack_s
    assert len(damped) == 3  # DAMPING_REPEATS, then quiet
    # The motors: the killed loop's gains held until the watchdog's damping, then damping.
    t_killed = killed - emu.board.t0
    tick = last_tick(telemetry)
    held = [(float(kp[0]), float(kd[0])) for t, m, kp, kd in log if t <= t_killed][-1]
    after = [(m, float(kp[0]), float(kd[0])) for t, m, kp, kd in log if t > t_killed]
    assert held == (tick["kp"], tick["kd"])
    assert after[-1] == ("DAMPING", 0.0, 0.1), after
    assert "silent for" in dog_err and "damping, kp 0 and kd 0.1" in dog_err, dog_err
    assert "damped 1 time(s)" in dog_out


def test_trot_emulate_over_ros2_presents_the_robots_own_stack_unless_told_none():
    """`trot emulate --transport ros2 --robot pupper_v3` is the stock bring-up (the profile's controllers, the
    authors' one active); `--ros_profile none` the generic topics."""
    from trot.cli import build_parser
    from trot.hil.emulator.cli import LINKS, options_from_args
    from trot.hil.emulator.ros2_controllers import ControllerStackLink

    argv = ["emulate", "--transport", "ros2", "--robot", "pupper_v3", "--gamepad_estop_at", "2", "--domain_id",
            str(DOMAIN_ID), "--ros_namespace", "trot_bringup_cli"]  # fmt: skip
    args = build_parser().parse_args(argv)
    with Emulator(ROBOT, options_from_args(args), LINKS["ros2"].from_args(args)) as emu:
        assert isinstance(emu.link, ControllerStackLink) and emu.link.ros2.gamepad_estop_at == 2.0
        states = emu.link.states()
        assert states["neural_controller"] == "active" and all(states[c] == "inactive" for c in FORWARD)
        port = emu.start()
    assert "controller manager /trot_bringup_cli/controller_manager (rmw_fastrtps_cpp service framing" in port
    assert "/trot_bringup_cli/imu_sensor_broadcaster/imu" in port
    args = build_parser().parse_args([*argv[:5], "--ros_profile", "none"])
    with Emulator(ROBOT, options_from_args(args), LINKS["ros2"].from_args(args)) as emu:
        assert not isinstance(emu.link, ControllerStackLink)
