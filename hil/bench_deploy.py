"""`trot bench deploy BUNDLE`: the deploy loop's timing at the control rate, against the emulator.

Prints inference time p50/p99, loop period jitter p99 and overruns of a real run of the loop over the
serial protocol, next to a reference measured in the same run: the raw onnxruntime call on the same
bundle with no loop around it. Also prints the serial link budget (frame bytes × rate against the baud
rate at 10 bits per byte). The emulator (PyBullet) is imported only when this runs: a workstation tool.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from trot.deploy.bundle import check_contract, load_bundle
from trot.deploy.commands import ConstantCommand
from trot.deploy.loop import LoopConfig, percentile, run_loop, time_inference
from trot.deploy.protocol import MessageType, frame_size
from trot.deploy.runtime import PolicyRuntime
from trot.deploy.safety import SafetyLimits
from trot.deploy.transport import SerialTransport

BITS_PER_BYTE = 10  # UART 8N1: start + 8 data + stop
REFERENCE_CALLS = 500
LINK_LOAD_GUIDELINE = 0.5  # PROTOCOL.md: keep each direction under about 50 %
EMULATOR_SWITCH_INTERVAL_S = 0.0005


def link_budget(num_joints: int, state_hz: float, command_hz: float, baud: int) -> list[dict]:
    """Bytes per second and fraction of the link each direction carries."""
    capacity = baud / BITS_PER_BYTE
    rows = []
    for direction, kind, rate in (
        ("MCU -> host", MessageType.STATE, state_hz),
        ("host -> MCU", MessageType.COMMAND, command_hz),
    ):
        size = frame_size(kind, num_joints)
        rows.append(
            {
                "direction": direction,
                "frame": kind.name.title(),
                "bytes": size,
                "rate_hz": rate,
                "bytes_per_s": size * rate,
                "load": size * rate / capacity,
            }
        )
    return rows


def time_step(runtime: PolicyRuntime, robot, command, count: int) -> list[float]:
    """Seconds per runtime.step (observation + onnxruntime + targets) at the default pose, no loop around it."""
    quat, zeros = np.array([1.0, 0.0, 0.0, 0.0]), np.zeros(robot.num_joints)
    default = np.array(robot.default_joint_pos)
    times = []
    for _ in range(count):
        start = time.perf_counter()
        runtime.step(quat, zeros[:3], default, zeros, command)
        times.append(time.perf_counter() - start)
    runtime.reset()
    return times


def bench_deploy(
    bundle_path,
    seconds: float = 10.0,
    robot_name: str | None = None,
    port: str | None = None,
    baud: int = 1_000_000,
    command=(0.0, 0.0, 0.0),
    telemetry_path=None,
) -> dict:
    """Run the loop for `seconds` against an in-process emulator (or `port`); return every figure."""
    from trot.robots import load_robot

    bundle = load_bundle(bundle_path)
    robot = load_robot(robot_name or bundle.contract.name)
    check_contract(bundle, robot)
    runtime = PolicyRuntime(bundle, robot)
    reference = time_inference(runtime, REFERENCE_CALLS)
    reference_step = time_step(runtime, robot, command, REFERENCE_CALLS)
    emulator, thread, switch = None, None, sys.getswitchinterval()
    if port is None:
        from trot.hil.emulator import Emulator

        # The emulator shares this process: hand the GIL over sooner than the default 5 ms, or its physics
        # thread delays the loop's wake-ups by up to that much (a cost the robot, with no emulator, never pays).
        sys.setswitchinterval(EMULATOR_SWITCH_INTERVAL_S)
        emulator = Emulator(robot)
        port = emulator.start()
        thread = threading.Thread(target=emulator.run, name="emulator", daemon=True)
        thread.start()  # physics starts now: the loop connects before the emulated robot has sagged
    temp = None
    if telemetry_path is None:
        temp = tempfile.TemporaryDirectory(prefix="trot_bench_")
        telemetry_path = Path(temp.name) / "bench.jsonl"
    try:
        transport = SerialTransport(port, baud, robot.num_joints, bytes.fromhex(robot.contract_sha256()))
        result = run_loop(
            bundle,
            robot,
            transport,
            ConstantCommand(command),
            telemetry_path,
            SafetyLimits(),
            LoopConfig(duration_s=seconds),
            runtime,
        )
    finally:
        if emulator is not None:
            emulator.stop()
            thread.join(timeout=5.0)
            emulator.close()
            sys.setswitchinterval(switch)
        if temp is not None:
            temp.cleanup()
    s = result.summary
    figures = {
        "bundle": str(bundle_path),
        "robot": robot.name,
        "port": port,
        "emulated": emulator is not None,
        "emulator": emulator.stats.summary(robot.physics_dt) if emulator is not None else None,
        "seconds": seconds,
        "reference_p50_ms": 1e3 * percentile(reference, 50),
        "reference_p99_ms": 1e3 * percentile(reference, 99),
        "reference_step_p50_ms": 1e3 * percentile(reference_step, 50),
        "reference_step_p99_ms": 1e3 * percentile(reference_step, 99),
        "loop": s,
        "link": link_budget(robot.num_joints, s["state_rate_hz"], 1.0 / s["period_s"], baud),
        "baud": baud,
    }
    return figures


def format_bench(f: dict) -> str:
    s = f["loop"]
    where = f"the emulator (a thread of this process, pty {f['port']})" if f["emulated"] else f["port"]
    lines = [
        f"trot bench deploy: {f['bundle']} on {f['robot']}, {f['seconds']:g} s against {where}, "
        f"control {1 / s['period_s']:.0f} Hz",
        f"  {'figure':<30}{'this run':>22}   reference (same run)",
        f"  {'inference p50 / p99 (ms)':<30}{s['inference_p50_ms']:>10.3f} / {s['inference_p99_ms']:<9.3f}"
        f"   raw onnxruntime {f['reference_p50_ms']:.3f} / {f['reference_p99_ms']:.3f} "
        f"({REFERENCE_CALLS} calls, no loop)",
        f"  {'':<30}{'':22}   runtime.step {f['reference_step_p50_ms']:.3f} / {f['reference_step_p99_ms']:.3f} "
        "(observation + onnxruntime, no loop)",
        f"  {'loop period jitter p99 (ms)':<30}{s['jitter_p99_ms']:>10.3f}{'':12}   "
        f"period {1e3 * s['period_s']:.1f} ms",
        f"  {'start lateness p99 (ms)':<30}{s['late_p99_ms']:>10.3f}{'':12}   max {s['late_max_ms']:.3f} ms",
        f"  {'overruns':<30}{s['overruns']:>10d} of {s['ticks']:<7d}   {s['overrun_pct']:.2f} % "
        f"(tick > {s['overrun_ms']:.0f} ms late), missed ticks {s['missed_ticks']}",
        f"  {'end state':<30}{s['end_state']:>10}",
        f"  serial link at {f['baud']} baud = {f['baud'] / BITS_PER_BYTE:.0f} B/s each way (10 bits per byte):",
    ]
    for row in f["link"]:
        note = "  above the ~50 % guideline" if row["load"] > LINK_LOAD_GUIDELINE else ""
        lines.append(
            f"    {row['direction']}: {row['frame']} {row['bytes']} B x {row['rate_hz']:.1f} Hz = "
            f"{row['bytes_per_s']:.0f} B/s = {100 * row['load']:.1f} %{note}"
        )
    if f["emulator"]:
        lines.append("  " + f["emulator"])
    if s["faulted"]:  # the figures above then cover only part of the run
        lines.append("  the loop did not run to the end cleanly:")
        lines.extend(f"    t={t['t']:.3f} s  {t['line']}" for t in s["transitions"] if t["cause"] not in ("begin",))
    return "\n".join(lines)


# ---- command line -------------------------------------------------------------------------------


def add_bench_args(p: argparse.ArgumentParser) -> None:
    """Flags of `trot bench deploy`."""
    p.add_argument("bundle", help="policy bundle (.onnx)")
    p.add_argument("--seconds", type=float, default=10.0, help="seconds of loop (soft start and fade-in included)")
    p.add_argument("--robot", default=None, help="robot name or folder (default: the bundle's robot)")
    p.add_argument("--port", default=None, help="use this serial port instead of an in-process emulator")
    p.add_argument("--baud", type=int, default=1_000_000, help="baud rate for the link budget (default 1000000)")
    p.add_argument("--command", dest="velocity", default="0,0,0", metavar="VX,VY,YAW", help="constant velocity command")
    p.add_argument("--telemetry", default=None, help="keep the run's telemetry file here")


def run_bench(args: argparse.Namespace) -> int:
    """`trot bench deploy BUNDLE`."""
    from trot.deploy.bundle import BundleError
    from trot.deploy.cli import log_to_stderr
    from trot.deploy.commands import CommandError, parse_velocity

    log_to_stderr()
    try:
        command = parse_velocity(args.velocity)
        figures = bench_deploy(args.bundle, args.seconds, args.robot, args.port, args.baud, command, args.telemetry)
    except (BundleError, CommandError) as e:
        raise SystemExit(f"trot bench deploy: {e}") from None
    print(format_bench(figures), flush=True)
    return 0
