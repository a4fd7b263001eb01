"""The gate's report: `gate.json`, `gate.md`, PNG plots and the summary table printed on stdout."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np

from trot.deploy.bundle import Bundle
from trot.hil.gate.commands import COMMANDS
from trot.hil.gate.judge import SATURATED, CellResult
from trot.hil.gate.perturbations import PERTURBATIONS
from trot.hil.gate.run import RATIO_FLOOR, GateRun
from trot.sim.backend import CONTACT_FORCE_N


def _fmt(x, digits: int = 2) -> str:
    return "—" if x is None else f"{x:.{digits}f}"


def _cell_text(cell: CellResult) -> str:
    return f"{_fmt(cell.lin_err)}/{_fmt(cell.yaw_err)}"


def _median(ratios: dict) -> float | None:
    return float(np.median(list(ratios.values()))) if ratios else None


def summary_table(run: GateRun) -> str:
    """Per engine, commands × perturbations: lin/yaw tracking error, FAIL on a failing cell."""
    lines = []
    width = max(15, *(len(p) + 1 for p in run.perturbations))
    n = len(run.commands) * len(run.perturbations)
    for engine in run.engines:
        lines.append(f"{engine}: lin err m/s / yaw err rad/s per cell; FAIL marks a failing cell")
        lines.append(f"{'':<16}" + "".join(f"{p:>{width}}" for p in run.perturbations))
        for c in run.commands:
            cells = (run.cell(engine, c, p) for p in run.perturbations)
            lines.append(
                f"{c:<16}" + "".join(f"{('' if x.passed else 'FAIL ') + _cell_text(x):>{width}}" for x in cells)
            )
        lines += [f"{engine}: {run.failed(engine)} of {n} cells fail", ""]
    for metric in ("lin_err", "yaw_err"):
        ratios = run.ratios(metric)
        if ratios:
            lines.append(f"PyBullet/MuJoCo {metric} ratio: median {_median(ratios):.2f} "
                         f"(min {min(ratios.values()):.2f}, max {max(ratios.values()):.2f})")  # fmt: skip
    lines.append(
        f"gate: {'PASS' if run.passed else 'FAIL'} ({len(run.cells)} cells, {run.wall_s:.0f} s, {run.jobs} jobs)"
    )
    return "\n".join(lines)


def bundle_summary(bundle: Bundle) -> dict:
    """What the report says about the bundle: path, robot, contract hash, sizes, rates, gains, training."""
    c = bundle.contract
    return {
        "path": str(bundle.path),
        "robot": c.name,
        "contract_sha256": c.sha256(),
        "obs_size": bundle.obs_size,
        "num_joints": bundle.num_joints,
        **{k: getattr(c, k) for k in ("control_dt", "physics_dt", "kp", "kd", "torque_limit", "action_scale")},
        "commands": {k: list(v) for k, v in asdict(bundle.meta.commands).items()},
        "training": asdict(bundle.meta.training),
    }


def outside_training_range(run: GateRun) -> list[str]:
    """Commands of the matrix that leave the bundle's trained command ranges."""
    ranges, out = asdict(run.bundle.meta.commands), []
    for name in run.commands:
        for _, cmd in COMMANDS[name]:
            for value, key in zip(cmd, ("vx", "vy", "yaw_rate")):
                if not ranges[key][0] <= value <= ranges[key][1]:
                    out.append(f"command {name}: {key} {value} is outside the trained range {list(ranges[key])}")
    return out


def gate_json(run: GateRun) -> dict:
    """Everything of the run as `gate.json` holds it: verdict, settings, definitions, every cell's metrics."""
    ratios = {m: run.ratios(m) for m in RATIO_FLOOR}
    return {
        "passed": run.passed,
        "bundle": bundle_summary(run.bundle),
        "settings": {"engines": list(run.engines), "seconds": run.seconds, "seed": run.seed, "jobs": run.jobs},
        "wall_s": run.wall_s,
        "thresholds": asdict(run.thresholds),
        "commands": {c: [[f, list(v)] for f, v in COMMANDS[c]] for c in run.commands},
        "perturbations": {p: asdict(PERTURBATIONS[p]) for p in run.perturbations},
        "engines": {e: {"passed": not run.failed(e), "failed_cells": run.failed(e)} for e in run.engines},
        "cells": [c.metrics() for c in run.cells],
        "pybullet_mujoco_ratio": {
            m: {
                "floor": RATIO_FLOOR[m],
                "median": _median(r),
                "cells": [{"command": c, "perturbation": p, "ratio": v} for (c, p), v in r.items()],
            }
            for m, r in ratios.items()
            if r
        },
        "warnings": outside_training_range(run),
    }


THRESHOLD_DOCS = {
    "max_tilt_deg": "fall: base tilt beyond this, degrees (also a fall: the base touching the floor)",
    "min_height_ratio": "fall: base height below this fraction of its standing height",
    "settle_s": "s; tracking, slip and saturation are averaged after this (at most half the cell)",
    "switch_settle_s": "s; the sequence also skips this long after each change (at most half a segment)",
    "max_lin_err": "m/s, mean |v_xy − command_xy|, body frame",
    "max_yaw_err": "rad/s, mean |yaw rate − command|",
    "max_err_fraction": "both errors also ≤ this × a non-zero commanded speed / yaw rate; a sequence is "
    "judged segment by segment",
    "max_torque_saturation": f"worst joint's fraction of physics steps at ≥ {SATURATED:.0%} of its torque limit",
    "min_joint_margin": "rad, closest approach of any joint to its URDF limit over the whole cell",
    "max_foot_slip": f"m/s, mean horizontal speed of the feet in contact (> {CONTACT_FORCE_N:g} N)",
}


def _md_matrix(run: GateRun, text: dict) -> list[str]:
    """A Markdown table commands × perturbations holding text[(command, perturbation)]."""
    lines = ["| command | " + " | ".join(run.perturbations) + " |", "|---|" + "---|" * len(run.perturbations)]
    for c in run.commands:
        lines.append(f"| {c} | " + " | ".join(text.get((c, p), "—") for p in run.perturbations) + " |")
    return lines


def gate_markdown(run: GateRun, plots: list[str]) -> str:
    """`gate.md`: verdict, thresholds, pass/fail and ratio tables, a metrics table per engine, the plots."""
    b = bundle_summary(run.bundle)
    tr, n = b["training"], len(run.commands) * len(run.perturbations)
    lines = [
        f"# Gate: `{run.bundle.path.name}`",
        "",
        f"**{'PASS' if run.passed else 'FAIL'}**: "
        + ", ".join(f"{e} {n - run.failed(e)} of {n} cells pass" for e in run.engines),
        "",
        f"- bundle `{b['path']}`: robot `{b['robot']}` (contract `{b['contract_sha256'][:12]}`), "
        f"run `{tr.get('run', '')}`, {tr.get('iterations', '?')} iterations, {tr.get('env_steps', '?')} env steps",
        f"- policy through `trot.deploy.runtime.PolicyRuntime`; control {b['control_dt'] * 1e3:g} ms, "
        f"physics {b['physics_dt'] * 1e3:g} ms, kp {b['kp']}, kd {b['kd']}, torque limit {b['torque_limit']} N·m",
        f"- {run.seconds:g} s per cell, seed {run.seed}; {len(run.cells)} cells in {run.wall_s:.0f} s "
        f"on {run.jobs} worker processes",
        *(f"- warning: {w}" for w in outside_training_range(run)),
        "",
        "## Thresholds",
        "",
        "Every cell, nominal or perturbed, is held to the same thresholds (`GateThresholds` in `hil/gate/judge.py`, "
        "reasoning in `docs/gate.md`).",
        "",
        "| threshold | value | meaning |",
        "|---|---|---|",
        *(f"| `{k}` | {v} | {THRESHOLD_DOCS[k]} |" for k, v in asdict(run.thresholds).items()),
    ]
    for engine in run.engines:
        lines += ["", f"## Pass/fail: {engine}", "", "Linear (m/s) / yaw-rate (rad/s) tracking error; ❌ fails.", ""]
        marks = {(x.command, x.perturbation): ("✅ " if x.passed else "❌ ") + _cell_text(x) for x in run.cells
                 if x.engine == engine}  # fmt: skip
        lines += _md_matrix(run, marks)
    for metric, unit in (("lin_err", "m/s"), ("yaw_err", "rad/s")):
        ratios = run.ratios(metric)
        if ratios:
            lines += [
                "",
                f"## PyBullet / MuJoCo ratio: {metric}",
                "",
                f"Each error floored at {RATIO_FLOOR[metric]} {unit}; median **{_median(ratios):.2f}**.",
                "",
            ]
            lines += _md_matrix(run, {k: _fmt(v) for k, v in ratios.items()})
    for engine in run.engines:
        lines += [
            "",
            f"## Metrics: {engine}",
            "",
            "| command | perturbation | fell | lin err m/s | yaw err rad/s | peak τ / limit N·m | saturation "
            "| joint margin rad | foot slip m/s | failures |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for x in (c for c in run.cells if c.engine == engine):
            lines.append(
                f"| {x.command} | {x.perturbation} | {'yes' if x.fell else 'no'} | {_fmt(x.lin_err, 3)} "
                f"| {_fmt(x.yaw_err, 3)} | {x.peak_torque:.2f} / {x.torque_limit:.2f} | {x.torque_saturation:.3f} "
                f"| {x.joint_margin:.3f} | {_fmt(x.foot_slip, 3)} | {'; '.join(x.failures)} |"
            )
    if plots:
        lines += ["", "## Plots", "", *(f"![{Path(p).stem}]({Path(p).name})" for p in plots)]
    return "\n".join(lines) + "\n"


TRACE_CELLS = (
    ("forward_0.4", "nominal"),
    ("turn_left_1.0", "nominal"),
    ("sequence", "nominal"),
    ("forward_0.2", "push_0.3"),
)


def save_plots(run: GateRun, out: Path) -> list[str]:
    """Heat maps of tracking error per engine (and the engines' ratio); velocity traces of a few cells."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = [str(out / "tracking_error.png")]
    metrics = (("lin_err", "lin err m/s", run.thresholds.max_lin_err), ("yaw_err", "yaw err rad/s",
               run.thresholds.max_yaw_err))  # fmt: skip
    cols = len(run.engines) + (1 if run.ratios("lin_err") else 0)
    size = (1.5 + 0.6 * len(run.perturbations), 1.5 + 0.4 * len(run.commands))
    fig, axes = plt.subplots(2, cols, figsize=(size[0] * cols, 2 * size[1]), squeeze=False)
    for row, (metric, label, limit) in enumerate(metrics):
        panels = [(e, [[getattr(run.cell(e, c, p), metric) for p in run.perturbations] for c in run.commands])
                  for e in run.engines]  # fmt: skip
        if cols > len(run.engines):
            r = run.ratios(metric)
            panels.append(("ratio", [[r.get((c, p)) for p in run.perturbations] for c in run.commands]))
        for ax, (name, values) in zip(axes[row], panels):
            ratio = name == "ratio"
            v = np.array([[np.nan if x is None else x for x in line] for line in values])
            im = ax.imshow(
                v, cmap="RdBu_r" if ratio else "viridis", vmin=0, vmax=2.0 if ratio else 2 * limit, aspect="auto"
            )
            ax.set_xticks(range(len(run.perturbations)), run.perturbations, rotation=45, ha="right", fontsize=8)
            ax.set_yticks(range(len(run.commands)), run.commands, fontsize=8)
            ax.set_title(f"PyBullet / MuJoCo {label.split(' ')[0]} err" if ratio else f"{name}: {label}", fontsize=9)
            for i, c in enumerate(run.commands):
                for j, p in enumerate(run.perturbations):
                    failed = not ratio and not run.cell(name, c, p).passed
                    text = "—" if np.isnan(v[i, j]) else f"{v[i, j]:.2f}"
                    ax.text(j, i, text + ("\n✗" if failed else ""), ha="center", va="center", fontsize=7,
                            color="red" if failed else ("black" if ratio else "white"))  # fmt: skip
            fig.colorbar(im, ax=ax, shrink=0.7)
    fig.suptitle("tracking error per cell (✗: the cell fails)", fontsize=10)
    fig.tight_layout()
    fig.savefig(written[0], dpi=100)
    plt.close(fig)

    cells = [(c, p) for c, p in TRACE_CELLS if c in run.commands and p in run.perturbations]
    if cells:
        fig, axes = plt.subplots(len(cells), 3, figsize=(13, 2.4 * len(cells)), squeeze=False, sharex=True)
        for row, (c, p) in enumerate(cells):
            for engine, style in zip(run.engines, ("-", "--")):
                tr = run.cell(engine, c, p).trace
                series = (tr["lin_vel"][:, 0], tr["lin_vel"][:, 1], tr["yaw_rate"]) if len(tr["t"]) else ()
                for k, (label, y) in enumerate(zip(("vx m/s", "vy m/s", "yaw rate rad/s"), series)):
                    ax = axes[row, k]
                    ax.plot(tr["t"], y, style, lw=1, label=engine)
                    if engine == run.engines[0]:
                        ax.plot(tr["t"], tr["command"][:, k], "k:", lw=1, label="command")
                    ax.set_ylabel(label, fontsize=8)
                    ax.set_title(f"{c} / {p}", fontsize=9)
        axes[0, 0].legend(fontsize=7)
        for ax in axes[-1]:
            ax.set_xlabel("time (s)")
        fig.tight_layout()
        written.append(str(out / "velocity_traces.png"))
        fig.savefig(written[-1], dpi=100)
        plt.close(fig)
    return written


def write_report(run: GateRun, out: Path, plots: bool = True) -> list[Path]:
    """gate.json, gate.md and the plots in `out`."""
    out.mkdir(parents=True, exist_ok=True)
    written_plots = save_plots(run, out) if plots else []
    (out / "gate.json").write_text(json.dumps(gate_json(run), indent=1))
    (out / "gate.md").write_text(gate_markdown(run, written_plots))
    return [out / "gate.json", out / "gate.md", *map(Path, written_plots)]


def default_output(bundle_path: Path) -> Path:
    """`walk.onnx` -> `walk_gate/` beside it."""
    return bundle_path.with_name(bundle_path.stem + "_gate")
