"""The transport seam: one name -> transport registry behind `trot deploy`, `trot flash` and `trot emulate`."""

import argparse
import re

import pytest

from trot.cli import build_parser
from trot.deploy.link import TRANSPORTS, build_transport
from trot.robots import load_robot


def transport_choices(*argv) -> list[str]:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    action = next(a for a in sub.choices[argv[0]]._actions if "--transport" in a.option_strings)
    return list(action.choices)


def test_deploy_flash_and_emulate_take_the_registrys_names():
    assert list(TRANSPORTS) == ["serial", "ros2", "unitree"]
    for command in ("deploy", "flash", "emulate"):
        assert transport_choices(command) == list(TRANSPORTS), command


def test_each_transport_builds_from_its_flags_or_says_why_not(tmp_path):
    robot = load_robot("pupper_v3")
    args = build_parser().parse_args(["deploy", "--bundle", "x.onnx", "--port", str(tmp_path / "tty")])
    with pytest.raises(ValueError, match=f"serial port {tmp_path / 'tty'} does not exist"):
        build_transport(args, robot)
    args = build_parser().parse_args(["deploy", "--bundle", "x.onnx", "--transport", "ros2", "--port", "/dev/x"])
    with pytest.raises(ValueError, match="--port is for --transport serial"):
        build_transport(args, robot)
    args = build_parser().parse_args(["flash", "x.onnx", "--target", "t", "--transport", "serial"])
    assert TRANSPORTS["serial"].unit_args(args) == ["--port", "/dev/ttyACM0", "--baud", "1000000"]


def test_the_link_vocabulary_has_protocol_md_s_values():
    from trot.deploy.link import ControlMode, EStopReason, StatusFlags

    assert {m.name: m.value for m in ControlMode} == {"POSITION": 0, "DAMPING": 1, "OFF": 2}
    assert {f.name: f.value for f in StatusFlags} == {"WATCHDOG_DAMPING": 1, "ESTOP": 2, "MOTORS_OFF": 4,
                                                      "IMU_STALE": 8, "LOW_VOLTAGE": 16, "MOTOR_FAULT": 32}  # fmt: skip
    names = ["UNSPECIFIED", "BUTTON", "HOST", "WATCHDOG", "FALL", "LOW_VOLTAGE", "MOTOR_FAULT"]
    assert [r.name for r in EStopReason] == names and [int(r) for r in EStopReason] == list(range(7))


def test_a_poll_gives_its_newest_sample_or_none():
    from trot.deploy.link import Poll

    assert Poll().sample is None and Poll().received == 0 and Poll().frames == {} and Poll().raw == b""
    assert Poll(samples=["old", "new"]).sample == "new"


def test_serial_needs_a_port_and_its_unit_flags_carry_port_and_baud(tmp_path):
    robot = load_robot("pupper_v3")
    args = build_parser().parse_args(["deploy", "--bundle", "x.onnx"])
    assert args.transport == "serial" and args.baud == 1_000_000
    with pytest.raises(ValueError) as err:
        build_transport(args, robot)
    assert str(err.value) == ("--transport serial needs --port (e.g. /dev/ttyACM0, or the emulator's --link path)")
    args = build_parser().parse_args(["flash", "x.onnx", "--target", "t", "--port", "/dev/ttyUSB3", "--baud", "115200"])
    assert TRANSPORTS["serial"].unit_args(args) == ["--port", "/dev/ttyUSB3", "--baud", "115200"]
    args.transport = "can"
    with pytest.raises(ValueError, match=r"^unknown transport 'can'; expected one of: serial, ros2, unitree$"):
        build_transport(args, robot)
    pty = tmp_path / "tty"
    pty.write_text("")  # exists: a SerialTransport is built (not opened)
    args = build_parser().parse_args(["deploy", "--bundle", "x.onnx", "--port", str(pty), "--baud", "9600"])
    assert args.baud == 9600 and type(args.baud) is int
    transport = build_transport(args, robot)
    assert transport.name == "serial" and transport.describe == f"serial {pty} at 9600 baud"
    assert (transport.port, transport.baud, transport.num_joints) == (str(pty), 9600, 12)
    assert transport.robot_id == bytes.fromhex(robot.contract_sha256())
    assert build_parser().parse_args(["deploy", "--bundle", "x.onnx"]).port is None


def test_ros2_builds_from_its_flags_and_repeats_them_for_the_unit():
    pytest.importorskip("cyclonedds")
    robot = load_robot("pupper_v3")
    argv = ["--transport", "ros2", "--ros_namespace", "dog", "--domain_id", "7"]
    args = build_parser().parse_args(["deploy", "--bundle", "x.onnx", *argv])
    transport = build_transport(args, robot)
    try:
        assert transport.name == "ros2" and "domain 7 namespace /dog" in transport.describe
    finally:
        transport.close()
    unit = TRANSPORTS["ros2"].unit_args(build_parser().parse_args(["flash", "x.onnx", "--target", "t", *argv]))
    assert unit[:4] == ["--ros_namespace", "dog", "--domain_id", "7"]


def test_unitree_builds_from_its_flags_for_the_robot_and_repeats_them_for_the_unit():
    pytest.importorskip("cyclonedds")
    robot = load_robot("pupper_v3")  # its motor ids are per leg (1, 2, 3), not LowCmd slots: the robot is checked
    args = build_parser().parse_args(["deploy", "--bundle", "x.onnx", "--transport", "unitree", "--domain_id", "3"])
    with pytest.raises(ValueError) as err:
        build_transport(args, robot)
    assert str(err.value) == (f"{robot.folder / 'robot.toml'}: field 'hardware.motor_id' = {[1, 2, 3] * 4}; "
                              "expected 12 distinct LowCmd motor slots in [0, 20)")  # fmt: skip
    argv = ["flash", "x.onnx", "--target", "t", "--transport", "unitree", "--network_interface", "eth0"]
    unit = TRANSPORTS["unitree"].unit_args(build_parser().parse_args([*argv, "--domain_id", "3"]))
    assert unit == ["--domain_id", "3", "--network_interface", "eth0"]


def test_unitree_motion_service_flags_make_the_policy_refuse_what_does_not_go_together_and_reach_the_unit():
    pytest.importorskip("cyclonedds")
    from trot.deploy.unitree.motion import MotionPolicy

    go2 = load_robot("go2")
    base = ["deploy", "--bundle", "x.onnx", "--transport", "unitree"]
    cases = {
        (): MotionPolicy(check=True, release=False, restore=False),
        ("--release_motion_service",): MotionPolicy(release=True),
        ("--release_motion_service", "--restore_motion_service"): MotionPolicy(release=True, restore=True),
        ("--no_motion_switcher",): MotionPolicy(check=False),
    }
    for flags, policy in cases.items():
        assert build_transport(build_parser().parse_args([*base, *flags]), go2).motion == policy, flags
    with pytest.raises(ValueError, match=r"^--restore_motion_service: only a mode trot released can be restored; "
                                         r"expected --release_motion_service too$"):  # fmt: skip
        build_transport(build_parser().parse_args([*base, "--restore_motion_service"]), go2)
    with pytest.raises(ValueError, match=r"^--no_motion_switcher and --release_motion_service: expected one of them$"):
        build_transport(build_parser().parse_args([*base, "--no_motion_switcher", "--release_motion_service"]), go2)
    argv = ["flash", "x.onnx", "--target", "t", "--transport", "unitree", "--release_motion_service",
            "--restore_motion_service"]  # fmt: skip
    unit = TRANSPORTS["unitree"].unit_args(build_parser().parse_args(argv))
    assert unit == ["--release_motion_service", "--restore_motion_service"]


def test_the_help_lists_every_transport_and_its_flags(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["deploy", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    texts = ("link to the robot (serial: the serial protocol (deploy/PROTOCOL.md) to the motor/IMU microcontroller; "
             "ros2: ROS 2 topics", "--transport serial:", "--transport ros2:",
             "serial port, e.g. /dev/ttyACM0 or the emulator's --link", "serial baud rate (default 1000000)")
    for text in texts:
        assert re.search(rf"(^|[ (\[]){re.escape(text)}($|[ )\],])", out), text
