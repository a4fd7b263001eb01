"""The emulator's parts on their own: the firmware state machine and the fault schedule, with no pty and no
physics; and the package's shape (no import cycle between its modules, a CLI parser that loads no engine)."""

import ast
import subprocess
import sys
from argparse import ArgumentParser
from pathlib import Path

import numpy as np
import pytest

from trot.deploy.protocol import PROTOCOL_VERSION, Command, ControlMode, EStopReason, Hello, StatusFlags
from trot.hil.emulator import EmulatorOptions, EmulatorStats, add_args
from trot.hil.emulator.cli import LINKS
from trot.hil.emulator.faults import Faults
from trot.hil.emulator.firmware import Firmware
from trot.robots import load_robot

ROBOT = load_robot("pupper_v3")
N = ROBOT.num_joints
ROBOT_ID = bytes.fromhex(ROBOT.contract_sha256())
Q = np.zeros(N)  # measured joint positions handed to actuation()
EMULATOR = Path(__file__).resolve().parents[2] / "hil" / "emulator"


def firmware(**options) -> Firmware:
    return Firmware(ROBOT, EmulatorOptions(**options), EmulatorStats())


def command(seq: int, mode=ControlMode.POSITION, target=None, kp=5.0, kd=0.25, tau_ff=0.0) -> Command:
    target = np.array(ROBOT.default_joint_pos) if target is None else target
    return Command(seq, mode, target, np.full(N, kp), np.full(N, kd), np.full(N, tau_ff))


def in_session(**options) -> Firmware:
    fw = firmware(**options)
    fw.hello(Hello(N, ROBOT_ID), t=1.0)
    return fw


def test_a_matching_hello_opens_a_session_and_a_mismatch_keeps_the_motors_off():
    fw = firmware()
    assert fw.actuation(0.0, Q).status == StatusFlags.MOTORS_OFF and not fw.started
    fw.hello(Hello(N - 1, ROBOT_ID), t=0.5)  # wrong joint count
    assert fw.session_t is None and fw.actuation(0.6, Q).status == StatusFlags.MOTORS_OFF
    fw.hello(Hello(N, bytes(32)), t=0.7)  # another robot's contract
    assert fw.session_t is None
    fw.hello(Hello(N, ROBOT_ID, version=PROTOCOL_VERSION + 1), t=0.8)
    assert fw.session_t is None
    fw.hello(Hello(N, ROBOT_ID), t=1.0)
    assert (fw.session_t, fw.first_session_t, fw.stats.hellos) == (1.0, 1.0, 4)
    anyone = firmware(check_robot_id=False)
    anyone.hello(Hello(N, bytes(32)), t=0.7)
    assert anyone.session_t == 0.7
    # Open, no Command yet: damping with the hardware's damping_kd (0.1), no flag.
    act = fw.actuation(1.01, Q)
    assert act.status == StatusFlags(0) and (act.kp == 0).all() and (act.kd == 0.1).all()


def test_commands_are_clamped_to_the_soft_limits_gain_caps_and_torque_limit():
    fw = in_session()
    target = np.full(N, 5.0)
    target[0] = -5.0
    fw.on_command(command(0, target=target, kp=20.0, kd=3.0, tau_ff=-7.0), t=1.1)
    act = fw.actuation(1.1, Q)
    assert act.status == StatusFlags(0)
    # Front right leg: URDF limits (-1.22, 2.51), (-0.42, 3.14), (-2.79, 0.71), 0.1 rad inside.
    np.testing.assert_allclose(act.target[:3], [-1.12, 3.04, 0.61])
    assert (act.kp == 10.0).all() and (act.kd == 1.0).all() and (act.tau_ff == -3.0).all()
    fw.on_command(command(1, mode=ControlMode.DAMPING, kd=0.0), t=1.2)
    act = fw.actuation(1.2, Q + 0.3)
    assert (act.target == 0.3).all() and (act.kp == 0).all() and (act.kd == 0.1).all()  # kd 0 -> damping_kd
    fw.on_command(command(2, mode=ControlMode.OFF), t=1.3)
    act = fw.actuation(1.3, Q)
    assert act.status == StatusFlags.MOTORS_OFF and not act.kp.any() and not act.kd.any()


def test_the_watchdog_damps_after_watchdog_ms_without_a_valid_command():
    fw = in_session(watchdog_ms=100.0)
    fw.on_command(command(0), t=2.0)
    assert fw.actuation(2.099, Q).status == StatusFlags(0)
    act = fw.actuation(2.101, Q)
    assert act.status == StatusFlags.WATCHDOG_DAMPING and (act.kd == 0.1).all() and not act.kp.any()
    fw.actuation(2.11, Q)
    assert fw.stats.watchdog_trips == 1  # counted once per trip, not per damped tick (the HIL tests read it)
    target = np.array(ROBOT.default_joint_pos)
    target[3] = np.nan
    fw.on_command(command(1, target=target), t=2.12)  # refused: it does not feed the watchdog
    assert fw.stats.commands_rejected == 1 and fw.actuation(2.13, Q).status == StatusFlags.WATCHDOG_DAMPING
    fw.on_command(command(5), t=2.14)  # seq 2..4 never arrived
    assert fw.actuation(2.14, Q).status == StatusFlags(0) and fw.stats.commands_lost == 3


def test_a_host_estop_latches_damps_then_turns_off_until_a_new_hello():
    fw = in_session(estop_damping_s=1.0)
    fw.on_command(command(0), t=1.0)
    assert fw.latch_estop(1.5, EStopReason.HOST, "the host") is False  # the host knows: nothing to send
    assert fw.latch_estop(1.6, EStopReason.HOST, "the host") is False and fw.estop_t == 1.5
    fw.on_command(command(1), t=1.7)
    assert fw.stats.commands_ignored == 1
    assert fw.actuation(2.49, Q).status == StatusFlags.ESTOP
    assert fw.actuation(2.51, Q).status == StatusFlags.ESTOP | StatusFlags.MOTORS_OFF
    assert not fw.estop_repeat_due(3.0)  # only the button's EStop is repeated
    fw.hello(Hello(N, ROBOT_ID), t=3.0)
    assert fw.estop_t is None and fw.actuation(3.0, Q).status == StatusFlags(0)


def test_the_button_estop_is_sent_at_once_and_repeated_at_10_hz_while_position_commands_arrive():
    fw = in_session()
    assert fw.latch_estop(2.0, EStopReason.BUTTON, "the e-stop button") is True
    assert not fw.estop_repeat_due(2.2)  # the host sent nothing since: it has seen it
    fw.on_command(command(0, mode=ControlMode.POSITION), t=2.25)
    assert not fw.estop_repeat_due(2.09) and fw.estop_repeat_due(2.3)
    assert not fw.estop_repeat_due(2.45)  # sent at 2.3; no POSITION since
    fw.on_command(command(1, mode=ControlMode.DAMPING), t=2.5)  # the host damps: no repeat
    assert not fw.estop_repeat_due(2.6)
    fw.release_estop(2.7, "a false on /estop")
    assert fw.estop_t is None and not fw.estop_repeat


def test_one_shot_faults_fire_once_on_the_session_clock_in_order():
    faults = Faults(EmulatorOptions(fault_clock="session", push_at=0.5, estop_at=0.5, tip_at=1.0), N, EmulatorStats())
    assert faults.clock(3.0, None) is None and faults.events(faults.clock(3.0, None)) == []
    assert faults.events(faults.clock(3.4, first_session_t=3.0)) == []
    assert faults.events(faults.clock(3.5, first_session_t=3.0)) == ["push", "estop"]
    assert faults.events(faults.clock(4.2, first_session_t=3.0)) == ["tip"]
    assert faults.events(faults.clock(9.0, first_session_t=3.0)) == []
    assert Faults(EmulatorOptions(push_at=0.5), N, EmulatorStats()).events(0.5) == ["push"]  # "start" clock: t


def test_nan_and_frozen_imu_change_the_readings_from_their_time_on():
    faults = Faults(EmulatorOptions(nan_at=1.0, freeze_imu_at=2.0, seed=4), N, EmulatorStats())
    imu = (np.array([1.0, 0, 0, 0]), np.zeros(3), np.array([0, 0, 9.81]))
    q, read, stale = faults.readings(0.9, 0.9, np.zeros(N), imu)
    assert not np.isnan(q).any() and read is imu and not stale
    q, read, stale = faults.readings(1.0, 1.0, np.zeros(N), imu)
    assert np.isnan(q).sum() == 1 and np.isnan(q[faults.nan_joint]) and not stale
    _, first, stale = faults.readings(2.0, 2.0, np.zeros(N), imu)
    _, later, _ = faults.readings(2.5, 2.5, np.zeros(N), (imu[0], np.ones(3), imu[2]))
    assert stale and first is imu and later is imu  # held at its value when it froze
    silent = Faults(EmulatorOptions(freeze_imu_at=0.0, freeze_imu_silent=True), N, EmulatorStats())
    assert silent.readings(0.0, 0.0, np.zeros(N), imu)[2] is False


def test_corrupt_changes_one_inner_byte_never_to_a_frame_delimiter():
    stats = EmulatorStats()
    faults = Faults(EmulatorOptions(corrupt=1.0, seed=0), N, stats)
    frame = bytes([0]) + bytes(range(1, 60)) + bytes([0])
    for _ in range(200):
        out = faults.corrupt(frame)
        diff = [i for i, (a, b) in enumerate(zip(frame, out)) if a != b]
        assert len(diff) == 1 and 0 < diff[0] < len(frame) - 1 and out[diff[0]] != 0
    assert stats.frames_corrupted == 200


def test_the_ros2_link_refuses_serial_only_options():
    from trot.hil.emulator.link import Board
    from trot.hil.emulator.ros2_link import Ros2EmulatorOptions, ros2_link

    options = EmulatorOptions(corrupt=0.1, link="/tmp/tty")
    board = Board(Firmware(ROBOT, options, EmulatorStats()), Faults(options, N, EmulatorStats()), EmulatorStats())
    with pytest.raises(ValueError, match="EmulatorOptions corrupt, link: serial link only"):
        ros2_link(Ros2EmulatorOptions())(ROBOT, options, board)


def test_transport_flag_offers_every_registered_link():
    parser = ArgumentParser()
    add_args(parser)
    transport = next(a for a in parser._actions if a.dest == "transport")
    assert transport.choices == ["serial", "ros2", "unitree"] == list(LINKS) and transport.default == "serial"


def _intra_package_imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    names |= {f"{n.module}.{a.name}" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module
              for a in n.names}  # fmt: skip
    prefix = "trot.hil.emulator."
    return {name[len(prefix) :].split(".")[0] for name in names if name.startswith(prefix)}


def test_no_import_cycle_between_the_emulator_modules():
    modules = {p.stem for p in EMULATOR.glob("*.py") if p.stem not in ("__init__", "__main__")}
    graph = {m: _intra_package_imports(EMULATOR / f"{m}.py") & modules for m in modules}
    assert {"firmware", "plant", "faults", "link", "serial_link", "ros2_link", "runner", "cli"} <= modules
    order: list[str] = []
    while graph:
        ready = sorted(m for m, deps in graph.items() if deps <= set(order))
        assert ready, f"import cycle among {sorted(graph)}: {graph}"
        order += ready
        for m in ready:
            del graph[m]
    assert "runner" not in _intra_package_imports(EMULATOR / "ros2_link.py")  # composed, not subclassed


def test_the_cli_parsers_of_the_stand_ins_load_no_engine():
    code = (
        "import sys, trot.hil.gate, trot.hil.emulator\n"
        "bad = sorted(m for m in ('torch', 'mujoco', 'pybullet', 'matplotlib', 'cyclonedds') if m in sys.modules)\n"
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"the parsers of `trot gate` / `trot emulate` pulled in {out.stdout.strip()}"
