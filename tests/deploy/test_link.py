"""The transport seam: one name -> transport registry behind `trot deploy`, `trot flash` and `trot emulate`."""

import argparse

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
