"""`trot gate BUNDLE` and `python -m trot.hil.gate BUNDLE`: flags, the run, the report, the exit status.

The flags are argparse only: the engines, torch and matplotlib are imported when the gate runs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from trot.deploy.bundle import check_contract, load_bundle
from trot.hil.gate.commands import RANGE_ENDS
from trot.hil.gate.perturbations import PERTURBATIONS
from trot.robots import load_robot


def add_args(p: argparse.ArgumentParser) -> None:
    """Flags of `trot gate`."""
    p.add_argument("bundle", help="policy bundle (.onnx)")
    p.add_argument("-o", "--output", default=None, help="report folder (default: <bundle name>_gate/ beside it)")
    p.add_argument("--seconds", type=float, default=10.0,
                   help="length of each cell; under 10 s the run writes no gate record")  # fmt: skip
    p.add_argument("--jobs", type=int, default=None, help="worker processes (default: all cores)")
    p.add_argument("--seed", type=int, default=0, help="seed of the sensor noise")
    p.add_argument("--mujoco", action="store_true", help="also run the matrix in MuJoCo, side by side")
    p.add_argument(
        "--commands", default=None,
        help=f"comma-separated subset of: stand, {', '.join(RANGE_ENDS)} (the ends of the robot's trained command "
        "ranges) and the names in its task.toml [gate] (sequence, ...)",
    )  # fmt: skip
    names = ", ".join(PERTURBATIONS).replace("%", "%%")  # argparse %-formats help strings
    p.add_argument("--perturbations", default=None, help=f"comma-separated subset of: {names}")
    p.add_argument(
        "--pin", action="append", default=[], metavar="TERM=VALUE[,TERM=VALUE]",
        help="one more perturbation: training randomization terms pinned to values, in their units "
        "(docs/randomization.md); repeatable",
    )  # fmt: skip
    p.add_argument(
        "--quick", action="store_true",
        help="only the quick subset, in PyBullet: stand, forward_max, backward_max, left_max and turn_left_max "
        "nominal, forward_max under payload +20%% on friction 0.5 and at the declared latency (for gating while "
        "training; writes no gate record)",
    )  # fmt: skip
    p.add_argument("--robot", default=None, help="robot name or folder (default: the bundle's robot)")
    p.add_argument("--no-plots", dest="plots", action="store_false", help="skip the PNG plots")


def run_cli(args: argparse.Namespace) -> int:
    """`trot gate`: 0 when every cell passes, 1 when one fails, 2 on a bad bundle or matrix."""
    from trot.hil.gate.cell import ENGINES
    from trot.hil.gate.commands import gate_commands
    from trot.hil.gate.perturbations import resolve
    from trot.hil.gate.record import write_records
    from trot.hil.gate.report import default_output, outside_training_range, summary_table, write_report
    from trot.hil.gate.run import check_matrix, run_gate

    path = Path(args.bundle)
    commands = args.commands.split(",") if args.commands else None
    perturbations = args.perturbations.split(",") if args.perturbations else list(PERTURBATIONS)
    try:
        bundle = load_bundle(path)
        robot = load_robot(args.robot or bundle.contract.name)
        check_contract(bundle, robot)
        check_matrix(commands or [], gate_commands(robot))
        resolve(perturbations, args.pin, robot)
    except (ValueError, FileNotFoundError) as e:  # BundleError and ContractError are ValueErrors
        print(f"trot gate: {e}", file=sys.stderr)
        return 2
    engines = ENGINES if args.mujoco else ("pybullet",)
    run = run_gate(bundle, args.robot, engines, commands, perturbations, args.seconds, args.seed, args.jobs,
                   quick=args.quick, pins=args.pin)  # fmt: skip
    out = Path(args.output) if args.output else default_output(path)
    written = write_report(run, out, plots=args.plots)
    records = write_records(run, out)
    print(f"trot gate: {path}")
    print(summary_table(run))
    for w in outside_training_range(run):
        print(f"warning: {w}")
    for f in written + records:
        print(f"wrote {f}")
    if records:
        print(f"gate record: {'PASS' if run.passed else 'FAIL'} for {path} (sha256 {run.bundle_sha256[:16]}…): "
              f"{records[0]}; `trot flash` reads it")  # fmt: skip
    else:
        print(f"no gate record written for {path}: not the full matrix (a subset of commands or perturbations, "
              "--quick, or cells under 10 s); `trot flash` asks for a full run's")  # fmt: skip
    return 0 if run.passed else 1


def main(argv=None) -> int:
    """`python -m trot.hil.gate`."""
    from trot.hil import gate

    parser = argparse.ArgumentParser(prog="python -m trot.hil.gate", description=gate.__doc__.splitlines()[0])
    add_args(parser)
    return run_cli(parser.parse_args(argv))
