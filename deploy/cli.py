"""Command-line entry points of the deploy stage: `trot deploy`, `trot log`.

Argument builders use argparse only, so that the CLI's parser loads nothing heavy; each `run_*` imports
its stage when it runs. `python -m trot.deploy.cli {deploy,log} ...` runs them without trot's CLI.

Exit codes of `trot deploy`: 0 clean, 1 a fault or an e-stop happened, 2 refused before any motor command.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
import time
from pathlib import Path

EXIT_REFUSED = 2


def add_deploy_args(p: argparse.ArgumentParser) -> None:
    """Flags of `trot deploy`."""
    from trot.deploy.link import add_transport_args  # argparse only

    p.add_argument(
        "--bundle", required=True, help="policy bundle (.onnx), or a `trot flash` folder (runs its current policy)"
    )
    p.add_argument("--robot", default=None, help="robot name or folder (default: the bundle's robot)")
    add_transport_args(p)
    src = p.add_argument_group(
        "velocity command (one of; default: stand, 0,0,0; with --transport ros2 the cmd_vel topic)"
    ).add_mutually_exclusive_group()
    src.add_argument("--command", dest="velocity", default=None, metavar="VX,VY,YAW", help="constant: m/s, m/s, rad/s")
    src.add_argument(
        "--commands", default=None, metavar="FILE", help="scripted: lines 't vx vy yaw' (t from policy start)"
    )
    src.add_argument("--keyboard", action="store_true", help="keys on this terminal (w/s a/d q/e, space e-stop)")
    src.add_argument(
        "--gamepad",
        nargs="?",
        const="auto",
        default=None,
        metavar="DEVICE",
        help="joystick device (default: the first /dev/input/js*)",
    )
    p.add_argument("--duration", type=float, default=None, help="seconds, then damp and exit (default: until Ctrl-C)")
    p.add_argument("--telemetry", default=None, help="telemetry file (default: deploy_<time>.jsonl)")
    p.add_argument("--soft_start_s", type=float, default=None, help="seconds to move to the default pose (1.5)")
    p.add_argument(
        "--fade_in_s",
        "--fade_s",
        dest="fade_in_s",
        type=float,
        default=None,
        help="seconds to fade the policy in (2.0)",
    )
    p.add_argument("--max_tilt_deg", type=float, default=None, help="fall threshold (50)")


def add_log_args(p: argparse.ArgumentParser) -> None:
    """Flags of `trot log`."""
    p.add_argument("action", choices=["plot", "summary"], help="plot: PNGs; summary: timing and transitions")
    p.add_argument("telemetry", help="telemetry file written by trot deploy (.jsonl)")
    p.add_argument("-o", "--output", default=None, help="folder for the PNGs (default: <telemetry>_plots)")


def log_to_stderr() -> None:
    """'deploy: ...' lines on stderr for the loop's logger (its own handler: tests' root handlers stay)."""
    logger = logging.getLogger("trot.deploy")
    if not any(getattr(h, "_trot_deploy", False) for h in logger.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("deploy: %(message)s"))
        handler._trot_deploy = True
        logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False


def _refuse(message: str) -> int:
    print(f"trot deploy: refused: {message}", file=sys.stderr, flush=True)
    return EXIT_REFUSED


def _hand_back(transport, clean: bool) -> None:
    """What the transport gives back to the robot's own services after the run (the Go2's motion service), said."""
    hand_back = getattr(transport, "hand_back", None)
    line = hand_back(clean) if hand_back is not None else None
    if line:
        print(f"trot deploy: {line}", flush=True)


def _command_source(args: argparse.Namespace, bundle, transport=None):
    from trot.deploy.commands import ConstantCommand, GamepadCommand, KeyboardCommand, ScriptedCommand, parse_velocity

    if args.commands:
        return ScriptedCommand(args.commands)
    if args.keyboard:
        return KeyboardCommand()
    if args.gamepad:
        return GamepadCommand(None if args.gamepad == "auto" else args.gamepad, bundle.meta.commands)
    if args.velocity is None and transport is not None and transport.name == "ros2":
        from trot.deploy.ros2.transport import CmdVelCommand

        return CmdVelCommand(transport)
    return ConstantCommand(parse_velocity(args.velocity) if args.velocity else (0.0, 0.0, 0.0))


class _Signals:
    """SIGINT/SIGTERM: damp and exit (a second SIGINT forces it); SIGUSR1: e-stop. Main thread only."""

    def __init__(self):
        self.loop = None
        self.previous = {}
        self.interrupts = 0

    def install(self, loop) -> None:
        self.loop = loop
        if threading.current_thread() is not threading.main_thread():
            return
        for sig, handler in (
            (signal.SIGINT, self._interrupt),
            (signal.SIGTERM, self._terminate),
            (signal.SIGUSR1, self._estop),
        ):
            self.previous[sig] = signal.signal(sig, handler)

    def _interrupt(self, signum, frame) -> None:
        self.interrupts += 1
        if self.interrupts > 1:
            raise KeyboardInterrupt  # the loop's crash path still sends DAMPING and closes the telemetry
        self.loop.request_stop("SIGINT (Ctrl-C)")

    def _terminate(self, signum, frame) -> None:
        self.loop.request_stop("SIGTERM")

    def _estop(self, signum, frame) -> None:
        self.loop.request_estop("SIGUSR1")

    def restore(self) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
        self.previous.clear()


def run_deploy(args: argparse.Namespace) -> int:
    """`trot deploy`: check everything that can be checked before the port is touched, then run the loop."""
    log_to_stderr()
    from trot.deploy.bundle import BundleError, check_contract, load_bundle
    from trot.deploy.commands import CommandError
    from trot.deploy.flash import FlashError, resolve_flashed
    from trot.deploy.link import build_transport
    from trot.deploy.loop import EXIT_FAULT, LoopConfig, run_loop
    from trot.deploy.safety import SafetyLimits
    from trot.deploy.telemetry import format_summary
    from trot.robots import ContractError, load_robot

    try:
        path = resolve_flashed(args.bundle)  # a flash folder's current policy; its hash file checked
        bundle = load_bundle(path)  # integrity: graph, weights and every metadata field
        robot = load_robot(args.robot or bundle.contract.name)
        check_contract(bundle, robot)  # field by field, joint order included
    except (BundleError, ContractError, FlashError, FileNotFoundError) as e:
        return _refuse(str(e))
    try:
        transport = build_transport(args, robot)
    except ValueError as e:
        return _refuse(str(e))
    overrides = {
        k: getattr(args, k) for k in ("soft_start_s", "fade_in_s", "max_tilt_deg") if getattr(args, k) is not None
    }
    try:
        limits = SafetyLimits(**overrides)
        config = LoopConfig(duration_s=args.duration)
    except ValueError as e:
        return _refuse(str(e))
    try:
        commands = _command_source(args, bundle, transport)
    except CommandError as e:
        return _refuse(str(e))
    telemetry = args.telemetry or time.strftime("deploy_%Y%m%d_%H%M%S.jsonl")
    signals = _Signals()
    print(
        f"trot deploy: {bundle.path} on {robot.name} over {transport.describe}; command {commands.describe}; "
        f"telemetry {telemetry}",
        flush=True,
    )
    try:
        result = run_loop(bundle, robot, transport, commands, telemetry, limits, config, ready=signals.install)
    except KeyboardInterrupt:  # a second Ctrl-C (or one before the loop started): DAMPING sent, telemetry closed
        print(f"trot deploy: interrupted: exited without the shutdown damping; telemetry {telemetry}", flush=True)
        _hand_back(transport, clean=False)
        return 1
    finally:
        signals.restore()
    print(format_summary(result.summary), flush=True)
    _hand_back(transport, clean=result.exit_code != EXIT_FAULT)
    print(f"trot deploy: telemetry {telemetry}; exit code {result.exit_code}", flush=True)
    return result.exit_code


def run_log(args: argparse.Namespace) -> int:
    """`trot log plot|summary TELEMETRY`."""
    from trot.deploy.telemetry import format_summary, plot_telemetry, read_telemetry

    path = Path(args.telemetry)
    if not path.is_file():
        raise SystemExit(f"trot log: {path}: no such telemetry file")
    if args.action == "plot":
        out = Path(args.output) if args.output else path.with_name(path.stem + "_plots")
        for written in plot_telemetry(path, out):
            print(f"trot log: wrote {written}")
        return 0
    tel = read_telemetry(path)
    print(
        f"{path}: {len(tel.ticks)} ticks, {len(tel.transitions)} transitions"
        + (", truncated last line" if tel.truncated else "")
    )
    if tel.summary is not None:
        print(format_summary(tel.summary))
    else:
        print("no summary record: the run did not end normally")
        for tr in tel.transitions:
            print(f"  t={tr['t']:7.3f} s  {tr['line']}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trot.deploy.cli", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, build, run in (
        ("deploy", add_deploy_args, run_deploy),
        ("log", add_log_args, run_log),
    ):
        build(sub.add_parser(name))
        sub.choices[name].set_defaults(_run=run)
    args = parser.parse_args(argv)
    return int(args._run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
