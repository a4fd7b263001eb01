"""`trot bench train`: time to a gate-passing policy, over seeds.

Each seed is a fresh `trot train --until_gate` process (the CPU preset unless `--set` says otherwise), one after
another; the figures come from its `until_gate.json`: wall time and env steps to the first quick-gate pass
(the checkpoint that passed, and when its result was known), and to the full gate's pass. Printed with the
machine's core count and load, since the wall time depends on both.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

SUMMARY = "until_gate.json"  # train/until_gate.py writes it (imported only when it runs: it brings torch)


def add_bench_train_args(p: argparse.ArgumentParser) -> None:
    """Flags of `trot bench train`."""
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3], help="one training run per seed")
    p.add_argument("--gate_every", type=int, default=None, help="as trot train --gate_every")
    p.add_argument("--max_minutes", type=float, default=15.0, help="cap of each run (a capped run counts as failed)")
    p.add_argument("--robot", default="pupper_v3")
    p.add_argument("--log_root", default=None, help="where the runs go (default: a temporary folder)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="as trot train --set")


def run_seed(seed: int, args: argparse.Namespace, log_root: Path) -> dict:
    """Train one seed until the gate; its until_gate.json."""
    cmd = [sys.executable, "-m", "trot.cli", "train", "--robot", args.robot, "--seed", str(seed), "--until_gate",
           "--max_minutes", str(args.max_minutes), "--max_iterations", "100000", "--run_name", f"bench_{seed}",
           "--log_root", str(log_root)]  # fmt: skip
    if args.gate_every:
        cmd += ["--gate_every", str(args.gate_every)]
    for item in args.set:
        cmd += ["--set", item]
    print(f"seed {seed}: {' '.join(cmd[2:])}", flush=True)
    subprocess.run(cmd, check=False, stdout=subprocess.DEVNULL)
    runs = sorted(log_root.glob(f"*/*/*_bench_{seed}"))
    if not runs or not (runs[-1] / SUMMARY).exists():
        raise SystemExit(f"trot bench train: seed {seed}: the run wrote no {SUMMARY} (see {log_root})")
    return json.loads((runs[-1] / SUMMARY).read_text())


def seed_row(seed: int, s: dict) -> dict:
    """The figures of one seed's run: None where it did not get there."""
    quick, full = s["first_quick_pass"], s["passed"]
    return {
        "seed": seed,
        "quick_s": quick["known_at_s"] if quick else None,
        "quick_steps": quick["env_steps"] if quick else None,
        "passed_s": s["wall_s"] if full else None,
        "passed_steps": full["env_steps"] if full else None,
        "reason": s["reason"],
    }


def spread(values: list) -> str:
    """'median (min-max)' of the values that exist, with how many of all."""
    got = [v for v in values if v is not None]
    if not got:
        return f"none of {len(values)}"
    return f"{statistics.median(got):,.0f} ({min(got):,.0f}-{max(got):,.0f}), {len(got)} of {len(values)}"


def run_bench_train(args: argparse.Namespace) -> int:
    load = os.getloadavg()[0]
    print(f"trot bench train: {len(args.seeds)} seeds, os.cpu_count() {os.cpu_count()}, load average {load:.1f} "
          f"at the start; each run `trot train --until_gate`, capped at {args.max_minutes:g} min")  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.log_root or tmp)
        rows = [seed_row(seed, run_seed(seed, args, root)) for seed in args.seeds]
    print(f"{'seed':>6}{'quick pass s':>14}{'env steps':>12}{'full pass s':>13}{'env steps':>12}  ended")
    for r in rows:
        cells = [r["quick_s"], r["quick_steps"], r["passed_s"], r["passed_steps"]]
        q_s, q_n, f_s, f_n = ("-" if v is None else f"{v:,.0f}" for v in cells)
        print(f"{r['seed']:>6}{q_s:>14}{q_n:>12}{f_s:>13}{f_n:>12}  {r['reason']}")
    print(f"to the first quick-gate pass: wall s {spread([r['quick_s'] for r in rows])}; "
          f"env steps {spread([r['quick_steps'] for r in rows])}")  # fmt: skip
    print(f"to a policy that passed the full gate: wall s {spread([r['passed_s'] for r in rows])}; "
          f"env steps {spread([r['passed_steps'] for r in rows])}")  # fmt: skip
    print(f"load average {os.getloadavg()[0]:.1f} at the end (os.cpu_count() {os.cpu_count()})")
    return 0 if all(r["passed_s"] is not None for r in rows) else 1
