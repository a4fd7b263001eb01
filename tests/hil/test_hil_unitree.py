"""Hardware in the loop over Unitree's low-level DDS topics: the deploy loop's unitree transport against the
emulator's unitree link (PyBullet), the counterpart of test_hil_serial.py and test_hil_ros2.py.

The transport is robot-agnostic: it needs the hardware map only. Until a Go2 policy exists, the walk runs the
shipped Pupper policy against an emulated Pupper whose motors are addressed by LowCmd slot (the Pupper's
folder with `hardware.motor_id` = 0..11 and no CAN bus; the contract, and so the bundle's hash, unchanged);
the Go2 itself soft-starts and stands under a random-weight Go2 bundle from a one-iteration training run.
The bytes on the wire are checked against the independent encoding of the IDL in tests/unitree_idl.py.
The robot's motion service: the emulator runs a mode and writes its own LowCmd where a test asks it to, and the
deploy side refuses to start beside it, or lies the robot down and releases it, and selects it again.

DDS stays on the loopback interface (the module's fixture sets CYCLONEDDS_URI to the loopback configuration;
`trot deploy` gets `--dds_loopback`), on a DDS domain of this process's own (hil_timing.private_domain_id). On a
busy machine the tests run at the onboard priority and a fault the loop's own timing figures put down to CPU
contention is rerun (hil_timing, docs/testing.md).
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import struct
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
from unitree_idl import build, default_fields, low_cmd_fields, request_fields, stamped, xcdr1_le  # noqa: E402

from trot.deploy.bundle import load_bundle  # noqa: E402
from trot.deploy.commands import ConstantCommand  # noqa: E402
from trot.deploy.link import ControlMode, TransportError  # noqa: E402
from trot.deploy.loop import LoopConfig, run_loop  # noqa: E402
from trot.deploy.ros2 import dds  # noqa: E402
from trot.deploy.safety import SafetyLimits, tilt_deg  # noqa: E402
from trot.deploy.telemetry import read_telemetry  # noqa: E402
from trot.deploy.unitree import convert, motion, msgs  # noqa: E402
from trot.deploy.unitree.api_msgs import (  # noqa: E402
    Request_,
    RequestIdentity_,
    Response_,
    ResponseHeader_,
    ResponseStatus_,
)
from trot.deploy.unitree.channels import UnitreeNode  # noqa: E402
from trot.deploy.unitree.motion import MotionPolicy, MotionSwitcher  # noqa: E402
from trot.deploy.unitree.rpc import ApiError  # noqa: E402
from trot.deploy.unitree.transport import UnitreeTransport, check_low_state  # noqa: E402
from trot.hil.emulator import Emulator, EmulatorOptions  # noqa: E402
from trot.hil.emulator.unitree_link import check_low_cmd, low_cmd_to_command, unitree_link  # noqa: E402
from trot.robots import load_robot  # noqa: E402

DOMAIN_ID = hil_timing.private_domain_id()  # not ROS's default 0, nor test_dds_loopback's 42, nor another run's
GO2 = load_robot("go2")
FAST = SafetyLimits(soft_start_s=0.3, fade_in_s=0.3, estop_damping_s=0.3, shutdown_damping_s=0.2)
STATE_RATE_HZ = 125  # LowStates per second: spares the shared CPUs (a Go2 sends more)
SLACK_S = 0.025  # scheduling on a shared 2-core machine
FAST_EXIT_S = 0.8  # the CLI's 0.5 s of shutdown damping, and the process's exit
LAST: dict = {}  # the latest run's telemetry and emulator stats, for hil_timing.tolerate_contention
contended = hil_timing.tolerate_contention(LAST, load_robot("pupper_v3").control_dt, FAST.stale_periods)


@pytest.fixture(scope="module", autouse=True)
def onboard_priority():
    with hil_timing.onboard_priority():
        yield


@pytest.fixture(scope="module", autouse=True)
def loopback():
    """CYCLONEDDS_URI = the loopback-only configuration for this module (and the processes it starts)."""
    previous = os.environ.get("CYCLONEDDS_URI")
    dds.use_config(dds.loopback_config_xml())
    assert dds.loopback_config_problems() == []
    yield
    if previous is None:
        os.environ.pop("CYCLONEDDS_URI", None)
    else:
        os.environ["CYCLONEDDS_URI"] = previous


@pytest.fixture(scope="module")
def pupper(tmp_path_factory) -> Path:
    """The Pupper with its motors on LowCmd slots 0-11: the same contract, another hardware map."""
    folder = tmp_path_factory.mktemp("robots") / "pupper_lowcmd"
    shutil.copytree(load_robot("pupper_v3").folder, folder, ignore=shutil.ignore_patterns("policies"))
    toml = folder / "robot.toml"
    text = toml.read_text()
    text, buses = re.subn(r"^can_bus = \[[\d, ]+\]\n", "", text, flags=re.M)  # the CAN channels go
    old = "motor_id = [1, 2, 3, 1, 2, 3, 1, 2, 3, 1, 2, 3]"
    assert buses == 1 and old in text, "test setup: the Pupper's robot.toml has no can_bus line or per-bus motor ids"
    text = text.replace(old, f"motor_id = {list(range(12))}")
    toml.write_text(text)
    robot = load_robot(folder)
    assert robot.contract_sha256() == load_robot("pupper_v3").contract_sha256()
    return folder


NO_SWITCHER = MotionPolicy(check=False)  # for a bare DDS peer standing in for the robot: nothing serves the calls


@contextmanager
def emulator(robot, start_physics: bool = True, motion_mode: str | None = None, **options):
    """An emulator on the unitree link, its physics in a thread, its motion service in `motion_mode`; always stopped
    and closed."""
    emu = Emulator(robot, EmulatorOptions(fault_clock="session", state_rate_hz=STATE_RATE_HZ, **options),
                   unitree_link(DOMAIN_ID, motion_mode))  # fmt: skip
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


def transport(robot, motion_policy: MotionPolicy | None = None) -> UnitreeTransport:
    return UnitreeTransport(convert.MotorMap.from_robot(robot), DOMAIN_ID, motion_policy)


def take_raw(reader, timeout_s: float = 2.0) -> list[bytes]:
    """The serialized samples a reader received (encapsulation header + CDR, as they came off the wire)."""
    from cyclonedds._clayer import ddspy_take
    from cyclonedds.core import InstanceState, SampleState, ViewState

    end = time.monotonic() + timeout_s
    while True:
        got = [data for data, info in ddspy_take(reader._ref, SampleState.Any | ViewState.Any | InstanceState.Any,
                                                 64) if info.valid_data]  # fmt: skip
        if got or time.monotonic() >= end:
            return got
        time.sleep(0.005)


@contextmanager
def publishing(writer, msg, period_s: float = 0.005):
    """`msg` written every `period_s` from a thread, as a robot streams its LowState, until the block ends."""
    stop = threading.Event()

    def stream():
        while not stop.is_set():
            writer.write(msg)
            time.sleep(period_s)

    thread = threading.Thread(target=stream, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def deploy(bundle, robot, tmp_path, duration=2.0, limits=FAST, link=None):
    """Run the loop in this thread over the unitree transport (`link`, default: a new one that checks the motion
    service); the result and the telemetry, checked complete."""
    path = tmp_path / "telemetry.jsonl"
    result = run_loop(bundle, robot, link or transport(robot), ConstantCommand((0.0, 0.0, 0.0)), path, limits,
                      LoopConfig(duration_s=duration))  # fmt: skip
    tel = LAST["tel"] = read_telemetry(path)
    assert tel.complete and len(tel.ticks) == result.summary["ticks"]
    return result, tel


def faults_of(tel) -> list[dict]:
    return [tr for tr in tel.transitions if tr["dst"] in ("DAMPING", "ESTOP_DAMPING")]


# ---- the transport on its own -------------------------------------------------------------------


def test_unitree_transport_imports_no_torch_mujoco_pybullet_or_cyclonedds_until_built():
    code = (
        "import sys, trot.deploy.unitree.args, trot.deploy.link, trot.deploy.cli\n"
        "bad = sorted(m for m in ('torch', 'mujoco', 'pybullet', 'cyclonedds') if m in sys.modules)\n"
        "import trot.deploy.unitree.transport\n"
        "bad += sorted(m for m in ('torch', 'mujoco', 'pybullet') if m in sys.modules)\n"
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"importing the unitree transport pulled in {out.stdout.strip()}"


def test_the_registrys_unitree_entry_builds_from_its_flags_or_says_why_not(pupper, monkeypatch):
    from trot.cli import build_parser
    from trot.deploy.link import TRANSPORTS, build_transport

    monkeypatch.setenv("CYCLONEDDS_URI", "")  # what --network_interface sets is checked below
    deploy_args = ["deploy", "--bundle", "x.onnx", "--transport", "unitree"]
    args = build_parser().parse_args(deploy_args)
    with pytest.raises(ValueError, match=r"pupper_v3/robot.toml: field 'hardware.motor_id' = \[1, 2, 3, 1, .*expected "
                                         r"12 distinct LowCmd motor slots in \[0, 20\)"):  # fmt: skip
        build_transport(args, load_robot("pupper_v3"))  # CAN ids, not LowCmd slots
    with pytest.raises(ValueError, match="--port is for --transport serial"):
        build_transport(build_parser().parse_args([*deploy_args, "--port", "/dev/x"]), GO2)
    with pytest.raises(ValueError, match="--network_interface eth0 and --dds_loopback: expected one of them"):
        build_transport(build_parser().parse_args([*deploy_args, "--network_interface", "eth0", "--dds_loopback"]), GO2)
    link = build_transport(build_parser().parse_args([*deploy_args, "--network_interface", "eth0"]), load_robot(pupper))
    assert (link.name, link.domain_id, link.motors.index.tolist()) == ("unitree", 0, list(range(12)))
    assert '<NetworkInterface name="eth0"/>' in os.environ["CYCLONEDDS_URI"]
    flash = build_parser().parse_args(["flash", "x.onnx", "--target", "t", "--transport", "unitree", "--domain_id",
                                       "3", "--network_interface", "eth0"])  # fmt: skip
    assert TRANSPORTS["unitree"].unit_args(flash) == ["--domain_id", "3", "--network_interface", "eth0"]


def test_no_lowstate_is_a_refusal_naming_the_topic_and_domain():
    link = transport(GO2, NO_SWITCHER)
    try:
        expected = rf"no sound LowState on rt/lowstate within 0\.3 s in DDS domain {DOMAIN_ID} "
        with pytest.raises(TransportError, match=expected):
            link.open(0.3)
    finally:
        link.close()


def test_lowcmd_wire_bytes_equal_the_independent_encoding_of_the_idl():
    """What `send` puts on rt/lowcmd, byte for byte, against the IDL encoded in tests/unitree_idl.py with the
    CRC computed bit by bit over the hand-written C layout: POSITION, DAMPING and OFF on the Go2."""
    rng = np.random.default_rng(0)
    target = np.array(GO2.default_joint_pos) + rng.uniform(-0.2, 0.2, 12)
    kp, kd, damping_kd = np.full(12, GO2.kp), np.full(12, GO2.kd), np.full(12, GO2.hardware["damping_kd"])
    cases = [  # what the loop sends, and each motor's gains (slot = joint on the Go2) the robot must receive
        (ControlMode.POSITION, kp, kd, (25.0, 0.5)),
        (ControlMode.DAMPING, 0 * kp, damping_kd, (0.0, 3.5)),
        (ControlMode.OFF, 0 * kp, damping_kd, (0.0, 0.0)),  # OFF: zero gains whatever the loop passes
    ]
    state = convert.arrays_to_low_state(convert.MotorMap.from_robot(GO2), GO2.default_joint_pos, np.zeros(12),
                                        np.zeros(12), [1, 0, 0, 0], [0] * 3, [0, 0, 9.81], tick=1)  # fmt: skip
    with UnitreeNode(DOMAIN_ID) as robot, publishing(robot.writer(msgs.LOWSTATE_TOPIC), state):
        lowcmd = robot.reader(msgs.LOWCMD_TOPIC)
        link = transport(GO2, NO_SWITCHER)
        try:
            link.open(3.0)
            for mode, gains_kp, gains_kd, (want_kp, want_kd) in cases:
                take_raw(lowcmd, 0.0)  # nothing older
                assert link.send(mode, target, gains_kp, gains_kd) is None
                (wire,) = take_raw(lowcmd)[-1:]
                motors = {j: dict(q=target[j], dq=0.0, kp=want_kp, kd=want_kd) for j in range(12)}
                assert wire == xcdr1_le("LowCmd_", low_cmd_fields(motors)), mode
                assert len(wire) == 4 + 808
        finally:
            link.close()


def test_lowstate_with_a_wrong_crc_or_size_is_refused_naming_the_field():
    motors = convert.MotorMap.from_robot(GO2)
    fields = stamped("LowState_", default_fields("LowState_"))
    sound = build("LowState_", fields)
    assert check_low_state(sound) is None
    bad = build("LowState_", {**fields, "crc": fields["crc"] ^ 1})
    assert check_low_state(bad) == ("crc", f"LowState refused: field 'crc' = {fields['crc'] ^ 1:#010x}; expected "
                                           f"{fields['crc']:#010x} (its contents')")  # fmt: skip
    short = msgs.LowState_(motor_state=[msgs.MotorState_() for _ in range(12)])
    assert check_low_state(short) == ("payload", "LowState refused: LowState_.motor_state: 12 values; expected 20 "
                                                 "(the IDL's size)")  # fmt: skip
    # Through the transport: the wrong-CRC State is dropped and counted as a link error, once logged.
    logged = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = lambda record: logged.append(record.getMessage())
    logging.getLogger("trot.deploy").addHandler(handler)
    with UnitreeNode(DOMAIN_ID) as robot:
        writer = robot.writer(msgs.LOWSTATE_TOPIC)
        link = transport(GO2, NO_SWITCHER)
        try:
            with publishing(writer, sound):
                link.open(3.0)
            link.poll()
            for _ in range(3):
                writer.write(bad)
            writer.write(sound)
            time.sleep(0.1)
            poll = link.poll()
        finally:
            link.close()
            logging.getLogger("trot.deploy").removeHandler(handler)
    assert poll.link_errors == 3 and poll.payload_errors == 0 and poll.received == 1
    assert poll.frames == {"LowState refused (crc)": 3, "LowState": 1}
    assert logged == [check_low_state(bad)[1]]  # a burst of the same refusal is logged once
    q, _, _ = convert.low_state_to_joints(sound, motors)
    np.testing.assert_array_equal(poll.sample.joint_pos, q)


# ---- the emulator's side ------------------------------------------------------------------------


def test_emulator_refuses_a_lowcmd_with_a_wrong_crc_or_mode_byte():
    motors = convert.MotorMap.from_robot(GO2)
    fields = low_cmd_fields({0: dict(q=0.1, kp=25.0, kd=0.5)})
    assert check_low_cmd(build("LowCmd_", fields), motors) is None
    assert check_low_cmd(build("LowCmd_", {**fields, "crc": 0}), motors).startswith(
        "LowCmd refused: field 'crc' = 0x00000000; expected 0x"
    )
    fields["motor_cmd"][4]["mode"] = 0x0A
    assert check_low_cmd(build("LowCmd_", stamped("LowCmd_", fields)), motors) == (
        "LowCmd refused: field 'motor_cmd[4].mode' = 0x0a; expected 0x01 (servo) or 0x00 (stop)"
    )


def test_emulator_applies_each_motors_gains_and_torque_through_the_firmware_clamps():
    """Per motor: kp, kd, tau and the dq target (as kd dq of feed-forward); a stopped motor (0x00) gets no torque;
    then the firmware's clamps: kp to kp_max, kd to kd_max, each joint's own torque limit, the soft limits."""
    motors = convert.MotorMap.from_robot(GO2)
    q = np.array(GO2.default_joint_pos)
    slots = {j: dict(q=q[j], kp=25.0, kd=0.5, tau=0.0) for j in range(12)}
    slots[0].update(kp=100.0, kd=9.0)  # over kp_max 60 and kd_max 5
    slots[1].update(tau=30.0)  # FR thigh: over its 23.7 N·m
    slots[2].update(tau=30.0, dq=2.0)  # FR calf: 30 + 0.5 x 2 = 31 N·m, within its 45.43 N·m
    slots[3].update(mode=0x00, kp=25.0, kd=0.5, tau=5.0)  # stopped: nothing
    slots[5].update(q=0.5)  # FL calf: above its soft upper limit, -0.83776 - 0.1
    with emulator(GO2, start_physics=False) as emu:
        command = low_cmd_to_command(build("LowCmd_", low_cmd_fields(slots)), motors, 1)
        emu.firmware.open_session(0.0)
        emu.firmware.on_command(command, 0.0)
        _, target, kp, kd, tau = emu.firmware.command
    assert (kp[0], kd[0], kp[3], kd[3], tau[3]) == (60.0, 5.0, 0.0, 0.0, 0.0)
    assert tau[1] == pytest.approx(23.7) and tau[2] == pytest.approx(31.0)
    assert target[5] == pytest.approx(-0.93776)
    np.testing.assert_allclose(kp[4:], 25.0)


# ---- the loop against the emulator --------------------------------------------------------------


@contended
def test_loop_runs_and_damps_over_unitree_with_the_robots_own_motor_law(tiny_bundle, pupper, tmp_path):
    """RUNNING with the contract's gains, then the shutdown's damping: kp 0 with the damping kd, as the robot
    applied them (the emulator's record of the LowCmds)."""
    robot = load_robot(pupper)
    with emulator(robot) as emu:
        result, tel = deploy(load_bundle(tiny_bundle), robot, tmp_path, duration=1.5)
        modes = [mode for _, mode in emu.link.command_modes]
        firmware_kd = emu.firmware.command[3].copy()
    assert result.exit_code == 0 and tel.summary["end_state"] == "DONE", tel.transitions
    assert "RUNNING" in [tr["dst"] for tr in tel.transitions]
    assert modes[-2:] == ["POSITION", "DAMPING"], modes
    np.testing.assert_allclose(firmware_kd, robot.hardware["damping_kd"])
    assert tel.ticks[-1]["kp"] == 0.0 and tel.ticks[-1]["kd"] == robot.hardware["damping_kd"]


@contended
def test_corrupted_lowstates_are_a_crc_burst(tiny_bundle, pupper, tmp_path):
    robot = load_robot(pupper)
    with emulator(robot, corrupt=0.5, seed=1) as emu:
        result, tel = deploy(load_bundle(tiny_bundle), robot, tmp_path, duration=1.0)
        corrupted = emu.stats.frames_corrupted
    (fault,) = faults_of(tel)
    assert fault["cause"] == "crc" and "CRC errors" in fault["reason"], fault
    assert corrupted > FAST.link_errors_max and tel.ticks[fault["tick"]]["link_errors"] > FAST.link_errors_max
    assert result.exit_code == 1


@contended
def test_a_nan_in_a_lowstate_damps_in_the_tick_it_arrives(tiny_bundle, pupper, tmp_path):
    robot = load_robot(pupper)
    with emulator(robot, nan_at=0.9) as emu:
        result, tel = deploy(load_bundle(tiny_bundle), robot, tmp_path, duration=1.5)
        damped = [mode for _, mode in emu.link.command_modes][-1]
    (fault,) = faults_of(tel)
    assert fault["cause"] == "nonfinite" and fault["src"] == "RUNNING", fault
    assert tel.ticks[fault["tick"]]["mode"] == "DAMPING" and damped == "DAMPING"


@contended
def test_a_silent_robot_is_stale_within_the_bound(tiny_bundle, pupper, tmp_path):
    """The robot leaves the domain (the disconnect fault): no LowState arrives, and the loop damps once the
    newest one is older than the stale limit, timed from its arrival."""
    robot = load_robot(pupper)
    with emulator(robot, disconnect_at=0.9):
        result, tel = deploy(load_bundle(tiny_bundle), robot, tmp_path, duration=1.5)
    (fault,) = faults_of(tel)
    assert fault["cause"] == "stale", fault
    bound_ms = 1e3 * FAST.stale_periods * robot.control_dt
    tick = tel.ticks[fault["tick"]]
    assert tick["age_ms"] > bound_ms and tel.ticks[fault["tick"] - 1]["age_ms"] <= bound_ms
    assert tick["age_ms"] <= bound_ms + 1e3 * (robot.control_dt + SLACK_S)


# ---- the motion service -------------------------------------------------------------------------


def sources(emu) -> list[str]:
    """Who wrote the LowCmds the emulated robot took, in turn: 'motion service' (its own) or 'host'."""
    return [source for _, source in emu.link.command_sources]


@contextmanager
def heights(emu):
    """The base height (emulator time, m) every 50 ms from a thread, for the length of the block."""
    out, stop = [], threading.Event()

    def sample():
        while not stop.is_set():
            out.append((time.monotonic() - emu.board.t0, emu.ground_truth()["base_pos"][2]))
            time.sleep(0.05)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield out
    finally:
        stop.set()
        thread.join()


def test_trot_emulate_runs_the_mode_its_flag_names_normal_by_default():
    from trot.cli import build_parser
    from trot.hil.emulator.unitree_link import link_from_args

    modes = {}
    for flags in ([], ["--motion_mode", "ai"], ["--motion_mode", "none"]):
        args = build_parser().parse_args(["emulate", "--transport", "unitree", *flags])
        modes[tuple(flags)] = link_from_args(args).keywords["motion_mode"]
    assert modes == {(): "normal", ("--motion_mode", "ai"): "ai", ("--motion_mode", "none"): None}
    bogus = link_from_args(build_parser().parse_args(["emulate", "--transport", "unitree", "--motion_mode", "sport"]))
    with pytest.raises(ValueError, match=r"^motion mode 'sport': expected one of normal, ai, advanced, or none$"):
        Emulator(GO2, EmulatorOptions(), bogus)


def test_a_call_takes_the_response_with_its_own_id_and_checks_it(monkeypatch):
    """Against a hand-made service: a response to another id is skipped, the one with the request's id is taken;
    a wrong api_id or a non-zero status is a refusal naming it. The request on the wire is the IDL's bytes."""
    monkeypatch.setattr(motion, "RPC_TIMEOUT_S", 2.0)
    answers = iter([
        [(1, 1001, 0, '{"form": "0", "name": "ai"}'), (0, 1001, 0, '{"form": "0", "name": "normal"}')],
        [(0, 1002, 0, "")],  # a CheckMode answered as SelectMode
        [(0, 1003, 7002, "")],  # ReleaseMode refused: switcher busy
    ])  # fmt: skip
    with UnitreeNode(DOMAIN_ID) as robot, UnitreeNode(DOMAIN_ID) as host:
        requests, responses = robot.server_endpoints(motion.MOTION_SWITCHER)
        raw = robot._rpc_reader("rt/api/motion_switcher/request", Request_)
        stop = threading.Event()

        def serve():
            while not stop.is_set():
                for request in requests.take(N=8):
                    for offset, api_id, code, data in next(answers, []):
                        header = ResponseHeader_(RequestIdentity_(request.header.identity.id + offset, api_id),
                                                 ResponseStatus_(code))  # fmt: skip
                        responses.write(Response_(header=header, data=data, binary=[]))
                time.sleep(0.002)

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        try:
            switcher = MotionSwitcher(host)
            assert switcher.check_mode() == motion.Mode("normal", "0")
            (wire,) = take_raw(raw)
            request_id = struct.unpack_from("<q", wire, 4)[0]
            assert wire == xcdr1_le("Request_", request_fields(request_id, 1001, "{}"))
            with pytest.raises(ApiError, match=r"^motion_switcher CheckMode \(api_id 1001\): the response to request "
                                               r"\d+ names api_id 1002$"):  # fmt: skip
                switcher.check_mode()
            with pytest.raises(ApiError, match=r"ReleaseMode \(api_id 1003\): refused with status 7002 \(switcher "
                                               r"is busy\)$") as refused:  # fmt: skip
                switcher.release_mode()
            assert refused.value.code == 7002
        finally:
            stop.set()
            thread.join()


def test_no_motion_switcher_is_a_refusal_naming_the_topics_and_the_flag(monkeypatch):
    """A peer that streams LowState but serves no motion switcher (unitree_mujoco): the check can't be made."""
    monkeypatch.setattr(motion, "RPC_TIMEOUT_S", 0.5)
    state = convert.arrays_to_low_state(convert.MotorMap.from_robot(GO2), GO2.default_joint_pos, np.zeros(12),
                                        np.zeros(12), [1, 0, 0, 0], [0] * 3, [0, 0, 9.81])  # fmt: skip
    with UnitreeNode(DOMAIN_ID) as robot, publishing(robot.writer(msgs.LOWSTATE_TOPIC), state):
        link = transport(GO2)
        try:
            with pytest.raises(TransportError) as refused:
                link.open(3.0)
        finally:
            link.close()
    assert str(refused.value) == (
        "motion service: motion_switcher CheckMode (api_id 1001): no reader of rt/api/motion_switcher/request and "
        f"no writer of rt/api/motion_switcher/response within 0.5 s in DDS domain {DOMAIN_ID}: nothing on this "
        "domain and network interface serves Unitree's 'motion_switcher' service (trot asks the robot's motion "
        "switcher before its first LowCmd; for a peer without one, such as unitree_mujoco, pass --no_motion_switcher)"
    )


@contended
def test_deploy_refuses_while_a_motion_mode_is_active_naming_it(tiny_bundle, pupper, tmp_path):
    """The robot boots in 'normal' and its service writes its own LowCmd: without --release_motion_service the
    deploy side refuses before its first LowCmd, naming the mode, and the robot's service goes on undisturbed."""
    robot = load_robot(pupper)
    with emulator(robot, motion_mode="normal") as emu:
        result, tel = deploy(load_bundle(tiny_bundle), robot, tmp_path)
        time.sleep(3 * robot.control_dt)  # the service's LowCmds go on after the refusal
        calls = [(c.service, c.api_id) for c in emu.link.motion.calls]
        mode, taken = emu.link.motion.mode, sources(emu)
    assert result.exit_code == 2 and tel.summary["ticks"] == 0
    (refusal,) = [tr for tr in tel.transitions if tr["cause"] == "refused"]
    assert refusal["line"] == (
        "HANDSHAKE -> DONE: refused: the robot's motion service is active: CheckMode names mode 'normal' (Unitree's "
        "sport_mode, form '0'), which writes its own rt/lowcmd; trot does not start beside it. Pass "
        "--release_motion_service to have trot lie the robot down (StandDown) and release the mode (ReleaseMode), or "
        "release it with Unitree's app or SDK"
    )
    assert calls == [("motion_switcher", 1001)] and mode == "normal"
    assert taken == ["motion service"]  # not one LowCmd from the host


@contended
def test_release_lies_the_robot_down_then_trots_lowcmd_takes_over(tiny_bundle, pupper, tmp_path):
    """With the release: StandDown, the robot lies down and is still, ReleaseMode; the service's own LowCmd stops
    and from then on the robot takes the host's alone. Restoring is refused after a fault, done after a clean run."""
    robot = load_robot(pupper)
    link = transport(robot, MotionPolicy(release=True, restore=True))
    with emulator(robot, motion_mode="normal") as emu, heights(emu) as height:
        result, tel = deploy(load_bundle(tiny_bundle), robot, tmp_path, duration=1.0, link=link)
        calls = list(emu.link.motion.calls)
        during, mode_after = list(emu.link.command_sources), emu.link.motion.mode
        after_fault = link.hand_back(clean=False)
        still_released = emu.link.motion.mode
        restored = link.hand_back(clean=True)
        time.sleep(3 * robot.control_dt)
        mode_restored, taken = emu.link.motion.mode, sources(emu)
    assert result.exit_code == 0 and tel.summary["end_state"] == "DONE", tel.transitions
    assert [(c.service, c.api_id, c.code) for c in calls] == [
        ("motion_switcher", 1001, 0), ("sport", 1005, 0), ("motion_switcher", 1003, 0), ("motion_switcher", 1001, 0)
    ]  # fmt: skip
    stand_down, release = calls[1].t, calls[2].t
    assert release - stand_down >= motion.STAND_DOWN_MIN_S + motion.STILL_S
    standing = [h for t, h in height if t < stand_down]
    lying = [h for t, h in height if t <= release][-1]
    print(f"Pupper base height: {min(standing):.3f} m standing, {lying:.3f} m when released "
          f"{release - stand_down:.2f} s after StandDown")  # fmt: skip
    assert lying < 0.5 * min(standing)
    (host_from,) = [t for t, source in during if source == "host"]
    assert [source for _, source in during] == ["motion service", "host"] and host_from > release
    assert mode_after == "" and still_released == ""
    assert after_fault == (
        "motion service: mode 'normal' stays released after a fault, an e-stop or a forced exit; give it back with "
        "Unitree's app or SDK (MotionSwitcherClient SelectMode 'normal'), or restart the robot"
    )
    assert restored == (
        "motion service: mode 'normal' (Unitree's sport_mode, form '0') selected again (SelectMode, then CheckMode)"
    )
    assert mode_restored == "normal" and taken == ["motion service", "host", "motion service"]


@contended
def test_trot_deploy_refuses_with_exit_2_then_releases_and_restores_with_the_flags(tiny_bundle, pupper, tmp_path):
    """`trot deploy --transport unitree` on the command line: refused beside an active mode (exit 2, the reason on
    stderr); with --release_motion_service --restore_motion_service it runs, and gives the mode back at exit."""
    base = [sys.executable, "-m", "trot.deploy.cli", "deploy", "--bundle", tiny_bundle, "--robot", pupper,
            "--transport", "unitree", "--domain_id", DOMAIN_ID, "--dds_loopback", "--duration", 1.0,
            "--soft_start_s", 0.3, "--fade_in_s", 0.3]  # fmt: skip
    with emulator(load_robot(pupper), motion_mode="normal") as emu:
        refused = subprocess.run(list(map(str, [*base, "--telemetry", tmp_path / "refused.jsonl"])),
                                 capture_output=True, text=True, timeout=120)  # fmt: skip
        run = subprocess.run(list(map(str, [*base, "--telemetry", tmp_path / "run.jsonl", "--release_motion_service",
                                            "--restore_motion_service"])),
                             capture_output=True, text=True, timeout=120)  # fmt: skip
        time.sleep(0.1)
        mode, taken = emu.link.motion.mode, sources(emu)
    LAST["tel"] = read_telemetry(tmp_path / "run.jsonl")
    assert refused.returncode == 2, refused.stderr[-2000:]
    assert "refused: the robot's motion service is active: CheckMode names mode 'normal'" in refused.stderr
    assert run.returncode == 0, run.stderr[-2000:]
    assert "trot deploy: motion service: mode 'normal' (Unitree's sport_mode, form '0') selected again" in run.stdout
    assert mode == "normal" and taken == ["motion service", "host", "motion service"]


# ---- walking and standing -----------------------------------------------------------------------


@pytest.mark.slow
@contended
def test_shipped_policy_walks_forward_over_unitree_for_20_s(pupper, tmp_path):
    policy = hil_walk.shipped_policy("Unitree's DDS topics")
    telemetry = tmp_path / "walk.jsonl"
    with emulator(load_robot(pupper)) as emu:
        walk = hil_walk.deploy_walk(emu, policy, telemetry, "--robot", pupper, "--transport", "unitree",
                                    "--domain_id", DOMAIN_ID, "--dds_loopback",
                                    "--command", ",".join(map(str, hil_walk.COMMAND)))  # fmt: skip
    print(emu.stats.summary(load_robot(pupper).physics_dt))
    LAST["tel"] = read_telemetry(telemetry)
    hil_walk.check_walk(walk, telemetry, "Unitree's DDS topics")


@pytest.fixture(scope="module")
def random_go2_bundle(tmp_path_factory) -> Path:
    """A Go2 bundle exported from a one-iteration training run: random-ish weights, a real normalizer."""
    root = tmp_path_factory.mktemp("go2_logs")
    out = subprocess.run(
        [sys.executable, "-m", "trot.cli", "train", "--robot", "go2", "--max_iterations", "1", "--num_envs", "8",
         "--log_root", str(root), "--set", "runner.num_steps_per_env=8"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    (ckpt,) = list(root.glob("go2/walk/*/model_0.pt"))
    bundle = root / "go2_random.onnx"
    export = subprocess.run([sys.executable, "-m", "trot.cli", "export", str(ckpt), "-o", str(bundle)],
                            capture_output=True, text=True, timeout=300)  # fmt: skip
    assert export.returncode == 0, export.stderr[-2000:]
    return bundle


@pytest.mark.slow
@contended
def test_go2_soft_starts_and_holds_its_default_pose_over_unitree(random_go2_bundle, tmp_path):
    """`trot deploy --robot go2 --transport unitree` with a random-weight Go2 policy: the soft start brings the
    joints to the default pose and the Go2 stands there; the policy, faded in, does not bring it down."""
    telemetry = tmp_path / "stand.jsonl"
    soft_start_s, fade_in_s, seconds = 1.5, 2.0, 6.0
    with emulator(GO2) as emu:
        cmd = [sys.executable, "-m", "trot.deploy.cli", "deploy", "--bundle", random_go2_bundle, "--robot", "go2",
               "--transport", "unitree", "--domain_id", DOMAIN_ID, "--dds_loopback", "--telemetry", telemetry,
               "--soft_start_s", soft_start_s, "--fade_in_s", fade_in_s, "--duration", seconds]  # fmt: skip
        proc = subprocess.Popen(list(map(str, cmd)), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        walk = hil_walk.follow(emu, proc)
    tel = LAST["tel"] = read_telemetry(telemetry)
    assert walk.returncode == 0, walk.err[-2000:]
    states = [tr["dst"] for tr in tel.transitions]
    assert states[:4] == ["HANDSHAKE", "SOFT_START", "FADE_IN", "RUNNING"] and tel.summary["end_state"] == "DONE"
    fade = next(tr for tr in tel.transitions if tr["dst"] == "FADE_IN")
    joint_err = np.abs(np.array(tel.ticks[fade["tick"]]["joint_pos"]) - np.array(GO2.default_joint_pos))
    # From the end of the soft start to the shutdown's damping (kp 0: the Go2 then sits down) and exit.
    start, stop = walk.end - (seconds + FAST_EXIT_S - soft_start_s), walk.end - FAST_EXIT_S
    held = [s for s in walk.samples if start <= s[0] <= stop]
    heights, tilts = np.array([s[3] for s in held]), np.array([tilt_deg(s[2]) for s in held])
    print(f"Go2 over unitree: at the end of the soft start |q - default| hip {joint_err[0::3].max():.3f}, thigh "
          f"{joint_err[1::3].max():.3f}, calf {joint_err[2::3].max():.3f} rad; from then to the shutdown base height "
          f"{heights.min():.3f}-{heights.max():.3f} m, tilt at most {tilts.max():.1f} deg")  # fmt: skip
    # Under kp 25 each calf bends ~0.24 rad under the 15 kg, and the base stands at 0.285 m in PyBullet
    # (robots/go2/README.md); hips and thighs hold their targets closely.
    assert len(held) > 40
    assert joint_err[0::3].max() < 0.05 and joint_err[1::3].max() < 0.05 and joint_err[2::3].max() < 0.3
    assert heights.min() > 0.27 and heights.max() < 0.30 and tilts.max() < 5
