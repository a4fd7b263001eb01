"""Hardware in the loop over ROS 2: the deploy loop's ROS 2 transport (raw Cyclone DDS) against the emulator
over ROS 2 (PyBullet), the counterpart of test_hil_serial.py.

DDS stays on the loopback interface: the module's fixture points CYCLONEDDS_URI at the loopback
configuration (interface lo, no multicast, peer 127.0.0.1), asserts it is in force, and the test that runs
`trot deploy` in a second process checks what both processes' Cyclone DDS applied and used. A DDS domain id
of this process's own (hil_timing.private_domain_id: held through a lock file, so two test runs on one machine
never share one) and a namespace per test keep concurrent runs apart. Fault times are on the emulator's
session clock (from the first command). The walking test needs the shipped policy
(robots/pupper_v3/policies/walk.onnx, or TROT_WALK_BUNDLE) and skips without it.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pybullet")
pytest.importorskip("cyclonedds")

import hil_timing  # noqa: E402  (tests/hil/hil_timing.py)
import hil_walk  # noqa: E402  (tests/hil/hil_walk.py)
import ros2_rclpy  # noqa: E402  (tests/ros2_rclpy.py)

from trot.deploy.bundle import load_bundle  # noqa: E402
from trot.deploy.commands import ConstantCommand  # noqa: E402
from trot.deploy.loop import LoopConfig, run_loop  # noqa: E402
from trot.deploy.protocol import ControlMode  # noqa: E402
from trot.deploy.ros2 import convert, dds, fastdds, msgs  # noqa: E402
from trot.deploy.ros2.msgs import IDL_TYPES as T  # noqa: E402
from trot.deploy.ros2.topics import Ros2Topics  # noqa: E402
from trot.deploy.ros2.transport import CmdVelCommand, Ros2Transport  # noqa: E402
from trot.deploy.safety import SafetyLimits  # noqa: E402
from trot.deploy.telemetry import read_telemetry  # noqa: E402
from trot.deploy.transport import TransportError  # noqa: E402
from trot.hil.emulator import Emulator, EmulatorOptions  # noqa: E402
from trot.hil.emulator.ros2_link import Ros2EmulatorOptions, ros2_link  # noqa: E402
from trot.robots import load_robot  # noqa: E402

ROBOT = load_robot("pupper_v3")
N = ROBOT.num_joints
DT = ROBOT.control_dt
DOMAIN_ID = hil_timing.private_domain_id()  # not ROS's default 0, nor test_dds_loopback's 42, nor another run's
# Short phases so that each fault test reaches RUNNING in 0.6 s; faults at 1.0 s on the session clock.
FAST = SafetyLimits(soft_start_s=0.3, fade_in_s=0.3, estop_damping_s=0.3, shutdown_damping_s=0.2)
FAULT_AT = 1.0
STATE_RATE_HZ = 125  # Imu and JointState each, like a ros2_control broadcaster; spares the shared CPUs
SLACK_S = 0.025  # scheduling on a shared 2-core machine
LAST: dict = {}  # the latest run's telemetry and emulator stats, for hil_timing.tolerate_contention
contended = hil_timing.tolerate_contention(LAST, DT, FAST.stale_periods)


@pytest.fixture(scope="module", autouse=True)
def onboard_priority():
    with hil_timing.onboard_priority():
        yield


@pytest.fixture(scope="module")
def loopback(tmp_path_factory):
    """CYCLONEDDS_URI = the loopback-only configuration for this module (each process tracing to a folder)."""
    traces = tmp_path_factory.mktemp("dds_traces")
    previous = os.environ.get("CYCLONEDDS_URI")
    dds.use_config(dds.loopback_config_xml(str(traces / "dds-${CYCLONEDDS_PID}.log")))
    uri = os.environ["CYCLONEDDS_URI"]
    assert '<NetworkInterface name="lo"/>' in uri and "<AllowMulticast>false</AllowMulticast>" in uri
    assert '<Peer address="127.0.0.1"/>' in uri
    assert dds.loopback_config_problems() == []
    yield traces
    if previous is None:
        os.environ.pop("CYCLONEDDS_URI", None)
    else:
        os.environ["CYCLONEDDS_URI"] = previous


@pytest.fixture
def topics(loopback, request) -> Ros2Topics:
    """The default topics under a namespace of this test's own."""
    return Ros2Topics(namespace=re.sub(r"\W", "_", f"trot_hil_{os.getpid()}_{request.node.name}"))


@pytest.fixture(scope="module")
def bundle(tiny_bundle):
    return load_bundle(tiny_bundle)


# (deploy side, robot side) middlewares: trot's raw Cyclone DDS and rclpy on Fast DDS (a stock robot's), each way.
PAIRS = [("dds", "dds"), ("rclpy", "dds"), ("dds", "rclpy"), ("rclpy", "rclpy")]


def pair_id(pair) -> str:
    return f"deploy_{pair[0]}-robot_{pair[1]}"


@pytest.fixture
def middlewares(request, monkeypatch):
    """The (deploy, robot) pair of a test parametrized over PAIRS; skips, saying why, where rclpy cannot run. An
    rclpy robot runs in this process: Fast DDS gets the loopback profile here."""
    deploy_backend, robot_backend = request.param
    if "rclpy" in request.param:
        ros2_rclpy.require_rclpy()
    if robot_backend == "rclpy":
        from trot.deploy.ros2.rclpy_node import import_problem

        problem = import_problem()
        if problem is not None:
            pytest.skip(f"rclpy does not import in this process ({problem}): the emulated robot runs here")
        for name, value in {**fastdds.loopback_env(), "RMW_IMPLEMENTATION": ros2_rclpy.RMW}.items():
            monkeypatch.setenv(name, value)
        for name in fastdds.WIDENING_VARIABLES:
            monkeypatch.delenv(name, raising=False)
    return request.param


@contextmanager
def emulator(topics: Ros2Topics, start_physics: bool = True, ros2: dict | None = None, backend: str = "dds",
             **options):  # fmt: skip
    """An emulator over ROS 2 (raw DDS or rclpy), its physics in a thread; always stopped and closed."""
    emu = Emulator(
        ROBOT,
        EmulatorOptions(fault_clock="session", state_rate_hz=STATE_RATE_HZ, **options),
        ros2_link(Ros2EmulatorOptions(topics=topics, domain_id=DOMAIN_ID, **(ros2 or {})), backend),
    )
    LAST["emulator"] = emu.stats
    thread = threading.Thread(target=emu.run, name="emulator", daemon=True)
    try:
        emu.start()
        if start_physics:
            thread.start()
        yield emu
    finally:
        emu.stop()
        if thread.is_alive():
            thread.join(timeout=5.0)
        emu.close()


def transport(topics: Ros2Topics) -> Ros2Transport:
    return Ros2Transport(ROBOT.joint_names, topics, DOMAIN_ID, ROBOT.name, DT)


def deploy(bundle, topics, tmp_path, duration=2.0, limits=FAST, ready=None):
    """Run the loop in this thread over ROS 2; return the result and the telemetry, checked complete."""
    path = tmp_path / "telemetry.jsonl"
    result = run_loop(bundle, ROBOT, transport(topics), ConstantCommand((0.0, 0.0, 0.0)), path, limits,
                      LoopConfig(duration_s=duration), None, ready)  # fmt: skip
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
    assert fault["src"] == "RUNNING", fault["line"]
    after = tel.ticks[fault["tick"] :]
    assert after[0]["mode"] == "DAMPING", "the tick of the transition must already send the safe command"
    assert all(t["mode"] in ("DAMPING", "OFF") for t in after)
    return fault


def take_within(reader, timeout_s: float = 2.0):
    """The newest valid sample a reader gets within timeout_s, or None."""
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        samples = [s for s in reader.take(N=64) if s.sample_info.valid_data]
        if samples:
            return samples[-1]
        time.sleep(0.005)
    return None


def assert_loopback_only(traces: Path, processes: int, fastdds_pids: tuple[int, ...] = ()) -> None:
    """What each process's Cyclone DDS applied and every address it used: loopback only; and every Fast DDS
    participant of `fastdds_pids` was seen announcing 127.0.0.1 only."""
    files = sorted(traces.glob("dds-*.log"))
    assert len(files) >= processes, files
    announced: dict[int, set[str]] = {}
    for trace in files:
        text = trace.read_text()
        assert dds.loopback_trace_problems(text) == [], trace
        for pid, addresses in ros2_rclpy.fastdds_participants(text).items():
            announced.setdefault(pid, set()).update(addresses)
    for pid in fastdds_pids:
        assert announced.get(pid) == {"127.0.0.1"}, (pid, announced)


# ---- the transport on its own -------------------------------------------------------------------


def test_ros2_transport_imports_no_torch_mujoco_pybullet_cyclonedds_or_rclpy():
    code = (
        "import sys, trot.deploy.ros2.transport, trot.deploy.ros2.args, trot.deploy.cli\n"
        "bad = sorted(m for m in ('torch', 'mujoco', 'pybullet', 'cyclonedds', 'rclpy') if m in sys.modules)\n"
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"importing the ROS 2 transport pulled in {out.stdout.strip()}"


def test_no_sensor_topics_is_a_refusal_naming_them(topics):
    link = transport(topics)
    try:
        with pytest.raises(TransportError, match=r"no Imu on /trot_hil_\w+/imu/data and JointState on /\w+"):
            link.open(0.3)
    finally:
        link.close()


def test_joint_states_of_another_robot_are_refused_at_open(topics):
    with dds.DdsNode(topics, DOMAIN_ID) as robot:
        imu, joints = robot.writer("imu", msgs.Imu), robot.writer("joint_states", msgs.JointState)
        link = transport(topics)
        stop = threading.Event()

        def publish():
            while not stop.is_set():
                imu.write(convert.arrays_to_imu(T, [1, 0, 0, 0], [0, 0, 0], [0, 0, 9.81], time.time()))
                joints.write(convert.arrays_to_joint_state(T, ["hip", "knee"], [0.0, 0.0], stamp=time.time()))
                time.sleep(0.01)

        publisher = threading.Thread(target=publish, daemon=True)
        publisher.start()
        try:
            with pytest.raises(TransportError, match=r"JointState on .* refused: .*missing \['leg_front_r_1'"):
                link.open(2.0)
        finally:
            stop.set()
            publisher.join()
            link.close()


def test_transport_maps_sensors_in_and_commands_gains_diagnostics_out(topics):
    """Joints reordered by name, cmd_vel as the velocity command, DAMPING/OFF as gains with the measured pose."""
    rng = np.random.default_rng(0)
    order = rng.permutation(N)
    names = [ROBOT.joint_names[i] for i in order]
    pos, vel = rng.uniform(-0.5, 0.5, N), rng.standard_normal(N)
    damping_kd = np.full(N, ROBOT.hardware["damping_kd"])
    with dds.DdsNode(topics, DOMAIN_ID) as robot:
        imu, joints = robot.writer("imu", msgs.Imu), robot.writer("joint_states", msgs.JointState)
        cmd_vel = robot.writer("cmd_vel", msgs.Twist)
        readers = {
            t: robot.reader(t, c)
            for t, c in (("joint_commands", msgs.Float64MultiArray), ("joint_targets", msgs.JointState),
                         ("joint_gains", msgs.Float64MultiArray), ("diagnostics", msgs.DiagnosticArray))
        }  # fmt: skip
        link = transport(topics)
        stop = threading.Event()

        def publish():
            while not stop.is_set():
                imu.write(convert.arrays_to_imu(T, [1, 0, 0, 0], [0.1, 0.2, 0.3], [0, 0, 9.81], time.time()))
                joints.write(convert.arrays_to_joint_state(T, names, pos[order], vel[order], stamp=time.time()))
                cmd_vel.write(convert.command_to_twist(T, [0.3, -0.1, 0.5]))
                time.sleep(0.01)

        publisher = threading.Thread(target=publish, daemon=True)
        publisher.start()
        try:
            link.open(3.0)
            time.sleep(0.05)
            poll = link.poll()
            np.testing.assert_allclose(poll.sample.joint_pos, pos)
            np.testing.assert_allclose(poll.sample.joint_vel, vel)
            assert np.isnan(poll.sample.joint_current).all()  # effort not reported
            assert poll.sample.seq is None and poll.received >= 1
            np.testing.assert_allclose(CmdVelCommand(link).velocity(None), [0.3, -0.1, 0.5])

            target, kp, kd = rng.uniform(-0.5, 0.5, N), np.full(N, ROBOT.kp), np.full(N, ROBOT.kd)
            got = []
            for mode, gains in (
                (ControlMode.POSITION, (kp, kd)),
                (ControlMode.DAMPING, (np.zeros(N), damping_kd)),
                (ControlMode.OFF, (np.zeros(N), np.zeros(N))),
            ):
                assert link.send(mode, target, *gains) is None
                sent = {t: take_within(r) for t, r in readers.items() if t != "diagnostics"}
                got.append((mode, gains, sent))
            link.report({"t": 0.0, "state": "DAMPING", "mode": "DAMPING", "late_ms": 0.5}, overruns=0,
                        missed_ticks=0, reason="state stale 70 ms > 60 ms: damping")  # fmt: skip
            diagnostics = take_within(readers["diagnostics"])
        finally:
            stop.set()
            publisher.join()
            link.close()
    for mode, (kp_sent, kd_sent), sent in got:
        expected = target if mode == ControlMode.POSITION else pos  # DAMPING and OFF hold the measured pose
        np.testing.assert_allclose(convert.float64_multiarray_to_command(sent["joint_commands"], N), expected)
        np.testing.assert_allclose(convert.joint_state_to_targets(sent["joint_targets"], ROBOT.joint_names), expected)
        assert list(sent["joint_targets"].name) == list(ROBOT.joint_names)
        kp_got, kd_got = convert.float64_multiarray_to_gains(sent["joint_gains"], N)
        np.testing.assert_array_equal(kp_got, kp_sent)
        np.testing.assert_array_equal(kd_got, kd_sent)
    (status,) = diagnostics.status
    values = convert.status_values(status)
    assert convert.status_level(status) == convert.ERROR and status.hardware_id == ROBOT.name
    assert status.message == "DAMPING: state stale 70 ms > 60 ms: damping"
    assert values["state"] == "DAMPING" and float(values["imu_age_ms"]) >= 0 and values["backend"] == "dds"


def test_each_test_process_gets_a_domain_of_its_own_and_hears_nothing_from_another(topics):
    """Two processes running these tests at once (two worktrees, parallel CI jobs) hold different domain ids, and
    what one publishes under the very same topic names never reaches the other."""
    code = (
        "import sys, time; sys.path.insert(0, sys.argv[1])\n"
        "import hil_timing\n"
        "from trot.deploy.ros2 import convert, dds, msgs\n"
        "from trot.deploy.ros2.msgs import IDL_TYPES as T\n"
        "from trot.deploy.ros2.topics import Ros2Topics\n"
        "domain = hil_timing.private_domain_id()\n"
        "print(domain, flush=True)\n"
        "with dds.DdsNode(Ros2Topics(namespace=sys.argv[2]), domain) as node:\n"
        "    imu = node.writer('imu', msgs.Imu)\n"
        "    for _ in range(300):\n"
        "        imu.write(convert.arrays_to_imu(T, [1, 0, 0, 0], [0, 0, 0], [0, 0, 9.81], time.time()))\n"
        "        time.sleep(0.01)\n"
    )
    other = subprocess.Popen([sys.executable, "-c", code, str(Path(__file__).parent), topics.namespace],
                             stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        other_domain = int(other.stdout.readline())
        assert other_domain != DOMAIN_ID and 0 <= other_domain <= 232
        with dds.DdsNode(topics, DOMAIN_ID) as mine, dds.DdsNode(topics, other_domain) as theirs:
            ours, probe = mine.reader("imu", msgs.Imu), theirs.reader("imu", msgs.Imu)
            assert take_within(probe, 3.0) is not None  # the other process is publishing, on its own domain
            assert take_within(ours, 1.0) is None  # and none of it reaches ours
    finally:
        other.kill()
        other.wait()


# ---- faults against the emulator ----------------------------------------------------------------


# The robot takes the JointState targets in one case, the forward command controller's array in the other.
@pytest.mark.parametrize("topic, command_topic", [("imu", "joint_targets"), ("joint_states", "joint_commands")])
@contended
def test_a_stale_sensor_topic_damps_within_the_stale_bound(bundle, topics, tmp_path, topic, command_topic):
    loops = []
    with emulator(topics, ros2={f"stop_{topic}_at": FAULT_AT, "command_topic": command_topic}) as emu:
        result, tel = deploy(bundle, topics, tmp_path, ready=loops.append)
        last_published = emu.link.last_published[topic]
    fault = only_fault(tel, "stale")
    tick = tel.ticks[fault["tick"]]
    bound_ms = 1e3 * FAST.stale_periods * DT
    # The State's age is the older topic's: it crossed the stale limit in this tick, not before.
    assert tick["age_ms"] > bound_ms and tel.ticks[fault["tick"] - 1]["age_ms"] <= bound_ms
    assert tick["age_ms"] <= bound_ms + 1e3 * (DT + SLACK_S)  # documented: stale limit + one period
    kind = {"imu": "Imu", "joint_states": "JointState"}[topic]
    other = {"Imu": "JointState", "JointState": "Imu"}[kind]
    # Ages count from arrival: the last message came in the period before the two polls that saw nothing.
    quiet = tel.ticks[fault["tick"] - 1 : fault["tick"] + 1]
    assert all(kind not in t["frames"] for t in quiet) and all(other in t["frames"] for t in quiet), [
        t["frames"] for t in quiet
    ]
    since_publish = fault["t"] + loops[0].t0 - last_published
    print(f"stale {topic}: damped at State age {tick['age_ms']:.0f} ms (bound {bound_ms + 1e3 * DT:.0f} ms), "
          f"{1e3 * since_publish:.0f} ms after the last {kind} was published")  # fmt: skip
    assert since_publish <= FAST.stale_periods * DT + 2 * DT + SLACK_S  # + up to a period until the first poll
    assert result.exit_code == 1 and tel.summary["end_state"] == "DONE"
    assert [mode for _, mode in emu.link.command_modes][-2:] == ["POSITION", "DAMPING"]  # applied by the robot


@contended
def test_an_imu_repeating_its_stamp_is_no_news_and_the_loop_damps_as_if_it_stopped(bundle, topics, tmp_path):
    """The emulator's IMU repeats its last message, stamp and all (a driver republishing stale data): those repeats
    must not count as fresh (ROS2.md, "What counts as a fresh sensor message"), so the State goes stale and the
    loop damps within the stale bound, while JointState keeps coming."""
    with emulator(topics, freeze_imu_at=FAULT_AT) as emu:
        result, tel = deploy(bundle, topics, tmp_path)
        assert emu.stats.states_sent > 0
    fault = only_fault(tel, "stale")
    tick = tel.ticks[fault["tick"]]
    bound_ms = 1e3 * FAST.stale_periods * DT
    assert bound_ms < tick["age_ms"] <= bound_ms + 1e3 * (DT + SLACK_S)
    quiet = tel.ticks[fault["tick"] - 1 : fault["tick"] + 1]
    # The Imu still arrived, every one a repeat; the joints were news.
    assert all("Imu repeated" in t["frames"] and "Imu" not in t["frames"] and "JointState" in t["frames"]
               for t in quiet), [t["frames"] for t in quiet]  # fmt: skip
    print(f"frozen Imu stamp: damped at State age {tick['age_ms']:.0f} ms (bound {bound_ms + 1e3 * DT:.0f} ms)")


def deploy_args(backend: str) -> list[str]:
    """The flags that pick the deploy side's middleware; rclpy's also keep Fast DDS on loopback."""
    return ["--ros2_backend", backend] + (["--dds_loopback"] if backend == "rclpy" else [])


def deploy_env(backend: str) -> dict[str, str] | None:
    return ros2_rclpy.rclpy_env(DOMAIN_ID) if backend == "rclpy" else None


def deploy_process(*args, backend: str = "dds") -> subprocess.Popen:
    # The generic topics (this file's emulator link): not the Pupper's own bring-up (test_hil_ros2_bringup.py).
    cmd = [sys.executable, "-m", "trot.deploy.cli", "deploy", "--transport", "ros2", "--ros_profile", "none",
           *deploy_args(backend), *map(str, args)]  # fmt: skip
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=deploy_env(backend))


def wait_for_state(telemetry: Path, state: str, proc: subprocess.Popen, timeout: float = 60.0) -> None:
    """Until the deploy process's telemetry shows `state` (generous: a busy machine starts Python slowly)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end and proc.poll() is None:
        if telemetry.exists() and f'"state":"{state}"' in telemetry.read_text(errors="replace"):
            return
        time.sleep(0.02)
    tel = LAST["tel"] = read_telemetry(telemetry) if telemetry.exists() else None  # for `contended` to judge
    seen = [f"t={tr['t']:.2f} {tr['line']}" for tr in tel.transitions] if tel else "no telemetry"
    raise AssertionError(f"never reached {state} (exit code {proc.poll()}; transitions: {seen})")


@pytest.mark.parametrize("middlewares", PAIRS, ids=pair_id, indirect=True)
@contended
def test_estop_topic_damps_then_turns_the_motors_off(tiny_bundle, topics, tmp_path, loopback, middlewares):
    """`trot deploy --transport ros2` in its own process; an operator's latched Bool on the estop topic (raw DDS);
    the deploy side and the robot each on raw Cyclone DDS or rclpy on Fast DDS."""
    deploy_backend, robot_backend = middlewares
    telemetry = tmp_path / "t.jsonl"
    # The emulator ignores the estop topic here, so that what it applies is what the loop commands.
    with emulator(topics, ros2={"listen_estop": False}, backend=robot_backend) as emu, \
            dds.DdsNode(topics, DOMAIN_ID) as operator:  # fmt: skip
        estop = operator.writer("estop", msgs.Bool)
        proc = deploy_process("--bundle", tiny_bundle, "--telemetry", telemetry, "--domain_id", DOMAIN_ID,
                              "--ros_namespace", topics.namespace, "--soft_start_s", 0.3, "--fade_in_s", 0.3,
                              "--duration", 6.0, backend=deploy_backend)  # fmt: skip
        # (6 s: the handshake alone, DDS discovery on a busy 2-core machine, took up to 3 s, Fast DDS the longest)
        try:
            wait_for_state(telemetry, "RUNNING", proc)
            time.sleep(0.3)
            pressed = time.monotonic()
            estop.write(convert.make_bool(T, True))
            out, err = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
        modes = [(emu.board.t0 + t, mode) for t, mode in emu.link.command_modes]
    assert proc.returncode == 1, err[-2000:]
    tel = LAST["tel"] = read_telemetry(telemetry)
    fault = only_fault(tel, "estop_topic")
    assert fault["reason"].startswith(f"e-stop: {topics.ros_name('estop')} is true")
    first_bool = next(i for i, t in enumerate(tel.ticks) if "Bool" in t["frames"])
    assert fault["tick"] == first_bool  # damping in the tick the message arrived
    assert [tr["dst"] for tr in tel.transitions][-3:] == ["ESTOP_DAMPING", "OFF", "DONE"]
    assert tel.ticks[-1]["mode"] == "OFF" and (tel.ticks[-1]["kp"], tel.ticks[-1]["kd"]) == (0.0, 0.0)
    # What the robot applied: POSITION, then DAMPING (kp 0, damping kd) within a period, OFF after estop_damping_s.
    assert [mode for _, mode in modes][-3:] == ["POSITION", "DAMPING", "OFF"], modes
    (damped, _), (off, _) = modes[-2], modes[-1]
    print(f"e-stop, deploy {deploy_backend}, robot {robot_backend}: robot damped {1e3 * (damped - pressed):.0f} ms "
          f"after the Bool was published (bound {1e3 * DT:.0f} ms + delivery), motors off {off - damped:.2f} s "
          "later")  # fmt: skip
    assert 0 < damped - pressed <= DT + ROBOT.physics_dt + SLACK_S
    assert off - damped == pytest.approx(SafetyLimits().estop_damping_s, abs=DT + SLACK_S)  # the CLI's default
    assert "-> ESTOP_DAMPING" in err and "cmd_vel" in out  # the default command source over ROS 2
    assert f"ros2 ({deploy_backend})" in err + out  # the middleware asked for is the one that ran
    assert "invalid type object" not in err
    fastdds_pids = (proc.pid,) if deploy_backend == "rclpy" else ()
    assert_loopback_only(loopback, processes=1 + (deploy_backend == "dds"), fastdds_pids=fastdds_pids)


# ---- walking with the shipped policy ------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("middlewares", PAIRS, ids=pair_id, indirect=True)
@contended
def test_shipped_policy_walks_forward_over_ros2_for_20_s(topics, tmp_path, loopback, middlewares):
    deploy_backend, robot_backend = middlewares
    policy = hil_walk.shipped_policy("ROS 2")
    telemetry = tmp_path / "walk.jsonl"
    with emulator(topics, backend=robot_backend) as emu, dds.DdsNode(topics, DOMAIN_ID) as teleop:
        cmd_vel = teleop.writer("cmd_vel", msgs.Twist)
        twist = convert.command_to_twist(T, list(hil_walk.COMMAND))
        # The velocity command comes over cmd_vel, as from a teleop node.
        walk = hil_walk.deploy_walk(emu, policy, telemetry, "--transport", "ros2", "--ros_profile", "none",
                                    *deploy_args(deploy_backend), "--domain_id", DOMAIN_ID,
                                    "--ros_namespace", topics.namespace,
                                    each=lambda: cmd_vel.write(twist), env=deploy_env(deploy_backend))  # fmt: skip
    print(emu.stats.summary(ROBOT.physics_dt))
    LAST["tel"], LAST["stderr"] = read_telemetry(telemetry), walk.err
    hil_walk.check_walk(walk, telemetry, f"ROS 2 (deploy {deploy_backend}, robot {robot_backend})")
    assert_loopback_only(loopback, processes=1 + (deploy_backend == "dds"))
