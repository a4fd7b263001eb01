"""`trot emulate` and `python -m trot.hil.emulator`: flags, the link chosen by `--transport`, the run.

The flags are argparse only: PyBullet and DDS are loaded when the emulator runs.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, fields

from trot.hil.emulator import ros2_link
from trot.hil.emulator.link import LinkFactory
from trot.hil.emulator.options import EmulatorOptions
from trot.hil.emulator.runner import Emulator
from trot.hil.emulator.serial_link import SerialLink
from trot.robots import load_robot


@dataclass(frozen=True)
class LinkKind:
    """One `--transport` choice: what it is, its link from the flags, and its own flags."""

    help: str
    from_args: Callable[[argparse.Namespace], LinkFactory]
    add_args: Callable[[argparse._ArgumentGroup], None] | None = None
    group: str = ""  # title of its flags' group in --help


def _ros2_link(args: argparse.Namespace) -> LinkFactory:
    from trot.hil.emulator.ros2_controllers import link_from_args  # imports cyclonedds: only when it runs

    return link_from_args(args)


def _unitree_link(args: argparse.Namespace) -> LinkFactory:
    from trot.hil.emulator.unitree_link import link_from_args  # imports cyclonedds: only when it runs

    return link_from_args(args)


def _unitree_args(p: argparse._ArgumentGroup) -> None:
    p.add_argument(
        "--motion_mode", default="normal", metavar="NAME",
        help="the mode the robot's motion service runs at start (normal, ai or advanced), writing its own "
        "rt/lowcmd until `trot deploy --release_motion_service` releases it (default normal, as a Go2 boots; "
        "none: no mode)",
    )  # fmt: skip


LINKS: dict[str, LinkKind] = {
    "serial": LinkKind("the protocol behind a pty (default)", lambda args: SerialLink),
    "ros2": LinkKind(
        "Imu and JointState topics over DDS on loopback (a robot with a ROS 2 profile: its controller stack)",
        _ros2_link,
        ros2_link.add_args,
        "ROS 2 (--transport ros2; see docs/emulator.md)",
    ),
    "unitree": LinkKind(
        "Unitree's LowState/LowCmd topics and the motion service's calls over DDS on loopback (the domain: "
        "--domain_id, default 0)",
        _unitree_link,
        _unitree_args,
        "Unitree (--transport unitree; see deploy/UNITREE.md)",
    ),
}

_DEFAULTS = EmulatorOptions()


def add_args(parser: argparse.ArgumentParser) -> None:
    """Flags of `trot emulate`; names match EmulatorOptions fields."""
    p, d = parser, _DEFAULTS
    p.add_argument("--robot", default="pupper_v3", help="robot name or folder (default: pupper_v3)")
    from trot.deploy.link import TRANSPORTS  # the names `trot deploy` and `trot flash` take

    p.add_argument(
        "--transport",
        choices=list(TRANSPORTS),
        default="serial",
        help="; ".join(f"{name}: {kind.help}" for name, kind in LINKS.items()),
    )
    p.add_argument("--duration", type=float, default=None, help="seconds to run (default: until Ctrl-C)")
    p.add_argument("--link", default=None, help="create a symlink at this path to the pty slave")
    p.add_argument(
        "--state_rate_hz",
        type=float,
        default=d.state_rate_hz,
        help="State frames per second (default: physics rate)",
    )
    p.add_argument("--watchdog_ms", type=float, default=d.watchdog_ms, help="no Command this long -> damping")
    p.add_argument("--estop_damping_s", type=float, default=d.estop_damping_s, help="damping after an e-stop")
    p.add_argument(
        "--torque_constant",
        type=float,
        default=d.torque_constant,
        help="N·m per A for joint_current (1: N·m)",
    )
    p.add_argument("--ignore_robot_id", dest="check_robot_id", action="store_false", help="accept any Hello.robot_id")
    p.add_argument("--firmware", default=d.firmware, help="firmware name in HelloAck")
    p.add_argument(
        "--start_limp", dest="wait_for_host", action="store_false",
        help="run physics from start-up (the limp robot collapses) instead of waiting for the first session",
    )  # fmt: skip
    p.add_argument("--seed", type=int, default=d.seed, help="seed of the fault generator")
    f = p.add_argument_group("fault injection (times in s on the fault clock)")
    f.add_argument(
        "--fault_clock",
        choices=["start", "session"],
        default=d.fault_clock,
        help="time zero of the *_at flags",
    )
    f.add_argument("--drop", type=float, default=d.drop, help="drop each State with this probability")
    f.add_argument("--delay_ms", type=float, default=d.delay_ms, help="delay every outgoing frame")
    f.add_argument("--corrupt", type=float, default=d.corrupt, help="corrupt one byte of a frame with this probability")
    f.add_argument("--freeze_imu_at", type=float, default=None, help="IMU readings stop updating (IMU_STALE set)")
    f.add_argument("--freeze_imu_silent", action="store_true", help="freeze the IMU without setting IMU_STALE")
    f.add_argument("--nan_at", type=float, default=None, help="one joint position reads NaN from then on")
    f.add_argument("--disconnect_at", type=float, default=None, help="close the pty and stop")
    f.add_argument("--push_at", type=float, default=None, help="kick the base sideways")
    f.add_argument("--push_velocity", type=float, default=d.push_velocity, help="m/s of the push, base y axis")
    f.add_argument("--tip_at", type=float, default=None, help="roll the robot onto its side")
    f.add_argument("--estop_at", type=float, default=None, help="press the e-stop button (EStop frame sent)")
    for kind in LINKS.values():
        if kind.add_args is not None:
            kind.add_args(p.add_argument_group(kind.group))


def options_from_args(args: argparse.Namespace) -> EmulatorOptions:
    """EmulatorOptions with every field that args carries."""
    return EmulatorOptions(**{f.name: getattr(args, f.name) for f in fields(EmulatorOptions) if hasattr(args, f.name)})


def run_cli(args: argparse.Namespace) -> int:
    """`trot emulate`: print the port, run until --duration or Ctrl-C, print the figures."""
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="emulator: %(message)s", stream=sys.stderr)
    robot = load_robot(args.robot)
    link = LINKS[getattr(args, "transport", "serial")].from_args(args)
    with Emulator(robot, options_from_args(args), link) as emulator:
        port = emulator.start()
        print(f"emulator: {emulator.link.label}{port}", flush=True)
        previous = None
        if threading.current_thread() is threading.main_thread():
            previous = signal.signal(signal.SIGTERM, lambda *_: emulator.stop())
        try:
            emulator.run(args.duration)
        except KeyboardInterrupt:
            pass
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)
        print(emulator.stats.summary(robot.physics_dt), flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    """`python -m trot.hil.emulator`."""
    parser = argparse.ArgumentParser(
        prog="python -m trot.hil.emulator", description="Emulate the robot's microcontroller behind a pty."
    )
    add_args(parser)
    return run_cli(parser.parse_args(argv))
