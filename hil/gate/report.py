"""The gate's report: `gate.json`, `gate.md`, PNG plots and the summary table printed on stdout."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np

from trot.deploy.bundle import Bundle
from trot.hil.gate.judge import RATIO_METRICS, SATURATED, CellResult
from trot.hil.gate.perturbations import STRESS
from trot.hil.gate.run import GateRun
from trot.sim.backend import CONTACT_FORCE_N


def _fmt(x, digits: int = 2) -> str:
    return "—" if x is None else f"{x:.{digits}f}"


def _cell_text(cell: CellResult | None) -> str:
    if cell is None:
        return "n/a"
    text = f"{_fmt(cell.lin_err)}/{_fmt(cell.yaw_err)}"
    return text + (f" d{cell.drift:.2f}" if cell.drift is not None else "")


def _median(ratios: dict) -> float | None:
    return float(np.median(list(ratios.values()))) if ratios else None


def _mark(cell: CellResult | None) -> str:
    """'' for a passing cell or one not run, 'FAIL ' for a failing judged cell, '(fail) ' for a failing stress cell."""
    if cell is None or cell.passed:
        return ""
    return "FAIL " if cell.judged else "(fail) "


def _column(p: str) -> str:
    return f"{p}*" if p in STRESS else p


def summary_table(run: GateRun) -> str:
    """Per engine, commands × perturbations: stride lin/yaw tracking error (and drift), FAIL on a failing cell."""
    lines = []
    for engine in run.engines:
        text = {(c, p): _mark(x) + _cell_text(x)
                for c in run.commands for p in run.perturbations for x in [run.cell(engine, c, p)]}  # fmt: skip
        width = 2 + max(len(t) for t in [*text.values(), *map(_column, run.perturbations)])
        lines.append(f"{engine}: lin err m/s / yaw err rad/s over whole strides (d: standing drift m) per cell; FAIL "
                     "marks a failing cell, n/a one not run; * a stress column, (fail) not judged")  # fmt: skip
        lines.append(f"{'':<16}" + "".join(f"{_column(p):>{width}}" for p in run.perturbations))
        for c in run.commands:
            lines.append(f"{c:<16}" + "".join(f"{text[(c, p)]:>{width}}" for p in run.perturbations))
        line = f"{engine}: {run.failed(engine)} of {run.run_count(engine)} judged cells fail"
        if run.run_count(engine, judged=False):
            line += f"; stress: {run.failed(engine, False)} of {run.run_count(engine, False)} fail (not judged)"
        lines += [line, ""]
    for metric in RATIO_METRICS:
        ratios = run.ratios(metric)
        if ratios:
            lines.append(f"PyBullet/MuJoCo {metric} ratio: median {_median(ratios):.2f} "
                         f"(min {min(ratios.values()):.2f}, max {max(ratios.values()):.2f})")  # fmt: skip
    lines += [f"FAIL {f}" for f in run.ratio_failures()]
    for why in sorted(set(run.skipped.values())):
        cells = [f"{e} {c}/{p}" for (e, c, p), w in run.skipped.items() if w == why]
        lines.append(f"not run ({why}): {len(cells)} cells, e.g. {cells[0]}")
    lines.append(f"gate{' --quick' if run.quick else ''}: {'PASS' if run.passed else 'FAIL'} ({len(run.cells)} cells, "
                 f"{run.wall_s:.0f} s wall, {run.cpu_s:.0f} s CPU in the cells, {run.jobs} jobs)")  # fmt: skip
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
    for name, segments in run.commands.items():
        for _, cmd in segments:
            for value, key in zip(cmd, ("vx", "vy", "yaw_rate")):
                if not ranges[key][0] - 1e-9 <= value <= ranges[key][1] + 1e-9:
                    out.append(f"command {name}: {key} {value} is outside the trained range {list(ranges[key])}")
    return out


def gate_json(run: GateRun) -> dict:
    """Everything of the run as `gate.json` holds it: verdict, settings, definitions, every cell's metrics."""
    ratios = {m: run.ratios(m, judged=None) for m in RATIO_METRICS}
    return {
        "passed": run.passed,
        "bundle": bundle_summary(run.bundle) | {"sha256": run.bundle_sha256},
        "settings": {"engines": list(run.engines), "seconds": run.seconds, "seed": run.seed, "jobs": run.jobs,
                     "quick": run.quick, "full": run.full},  # fmt: skip
        "latency": {"judged_s": run.robot.actuation_latency_s, "source": run.robot.actuation_latency_source,
                    "column": "latency_declared"},  # fmt: skip
        "stress": {p: STRESS[p] for p in run.stress},
        "wall_s": run.wall_s,
        "cpu_s": run.cpu_s,
        "thresholds": asdict(run.thresholds),
        "commands": {c: [[f, list(v)] for f, v in segments] for c, segments in run.commands.items()},
        "perturbations": {n: {"terms": dict(p.terms), "sensor_noise": p.sensor_noise, "judged": n not in STRESS}
                          for n, p in run.perturbations.items()},  # fmt: skip
        "engines": {e: {"passed": not run.failed(e), "failed_cells": run.failed(e),
                        "stress_failed_cells": run.failed(e, judged=False)} for e in run.engines},  # fmt: skip
        "cells": [c.metrics() for c in run.cells],
        "not_run": [{"engine": e, "command": c, "perturbation": p, "why": w} for (e, c, p), w in run.skipped.items()],
        "pybullet_mujoco_ratio": {
            m: {
                "floor": "an error below half its cell's bound counts as half the bound",
                "median": _median(run.ratios(m)),  # over the judged cells
                "cells": [{"command": c, "perturbation": p, "ratio": v, "judged": p not in STRESS}
                          for (c, p), v in r.items()],  # fmt: skip
            }
            for m, r in ratios.items()
            if r
        },
        "ratio_failures": run.ratio_failures(),
        "warnings": outside_training_range(run),
    }


THRESHOLD_DOCS = {
    "max_tilt_deg": "fall: base tilt beyond this, degrees (also a fall: the base touching the floor)",
    "min_height_ratio": "fall: base height below this fraction of its standing height",
    "settle_s": "s; tracking, swing, slip and saturation are measured after this (at most half the cell)",
    "switch_settle_s": "s; the sequence also skips this long after each change (at most half a segment)",
    "no_clock_stride_s": "s; the stride of a policy without a gait clock (with one: the clock's period)",
    "lin_err_floor": "m/s; |stride mean v_xy − command_xy| (body frame), mean over the strides, ≤ max(this, "
    "err_fraction × commanded speed)",
    "yaw_err_floor": "rad/s; |stride mean yaw rate − command|, mean over the strides, ≤ max(this, err_fraction × "
    "commanded rate)",
    "err_fraction": "of the commanded speed / yaw rate; a sequence is judged segment by segment",
    "max_heading_swing_deg": "°, peak-to-peak heading within a stride about its steady turn, mean over the strides",
    "max_roll_swing_deg": "°, peak-to-peak body roll within a stride, mean over the strides",
    "max_pitch_swing_deg": "°, peak-to-peak body pitch within a stride, mean over the strides",
    "max_stand_drift": "m, horizontal base displacement over a cell commanded to stand",
    "max_torque_saturation": f"worst joint's fraction of physics steps at ≥ {SATURATED:.0%} of its torque limit",
    "min_joint_margin": "rad, closest approach of any joint to its URDF limit over the whole cell",
    "max_foot_slip": f"m/s, mean horizontal speed of the feet in contact (> {CONTACT_FORCE_N:g} N)",
    "max_ratio_median": "with --mujoco: median over the judged cells of each PyBullet/MuJoCo tracking-error ratio "
    "(an error below half its cell's bound counts as half the bound)",
    "max_ratio_cell": "with --mujoco: every judged cell's PyBullet/MuJoCo tracking-error ratio",
}


def _md_matrix(run: GateRun, text: dict) -> list[str]:
    """A Markdown table commands × perturbations holding text[(command, perturbation)]."""
    header = " | ".join(map(_column, run.perturbations))
    lines = [f"| command | {header} |", "|---|" + "---|" * len(run.perturbations)]
    for c in run.commands:
        lines.append(f"| {c} | " + " | ".join(text.get((c, p), "—") for p in run.perturbations) + " |")
    return lines


def _definitions(run: GateRun) -> list[str]:
    """The commands and perturbations of the run, as tables."""
    lines = ["## Matrix", "", "| command | segments: (start s) vx m/s, vy m/s, yaw rate rad/s |", "|---|---|"]
    for c, segments in run.commands.items():
        lines.append(f"| {c} | " + " → ".join(f"({f * run.seconds:g} s) {tuple(v)}" if len(segments) > 1
                                              else str(tuple(v)) for f, v in segments) + " |")  # fmt: skip
    lines += ["", "| perturbation | pinned terms (training's units) |", "|---|---|"]
    lines += [f"| {n} | {p.describe()} |" for n, p in run.perturbations.items()]
    return lines


def gate_markdown(run: GateRun, plots: list[str]) -> str:
    """`gate.md`: verdict, thresholds, pass/fail and ratio tables, a metrics table per engine, the plots."""
    b = bundle_summary(run.bundle)
    tr = b["training"]
    lines = [
        f"# Gate{' (quick)' if run.quick else ''}: `{run.bundle.path.name}`",
        "",
        f"**{'PASS' if run.passed else 'FAIL'}**: "
        + ", ".join(f"{e} {run.run_count(e) - run.failed(e)} of {run.run_count(e)} judged cells pass"
                    for e in run.engines)  # fmt: skip
        + "".join(f"; {f}" for f in run.ratio_failures()),
        "",
        *(f"- stress (reported, not judged): {e} {run.run_count(e, False) - run.failed(e, False)} of "
          f"{run.run_count(e, False)} cells pass" for e in run.engines if run.run_count(e, False)),  # fmt: skip
        f"- bundle sha256 `{run.bundle_sha256}`; "
        + ("a full run: its verdict is the gate record beside the bundle (`trot flash` reads it)" if run.full else
           "not the full matrix (a subset, `--quick` or cells under 10 s): no gate record written"),  # fmt: skip
        f"- judged at the robot's declared actuation latency, {run.robot.actuation_latency_s * 1e3:g} ms "
        f"(`latency_declared`; robot.toml [latency]: {run.robot.actuation_latency_source})",
        f"- bundle `{b['path']}`: robot `{b['robot']}` (contract `{b['contract_sha256'][:12]}`), "
        f"run `{tr.get('run', '')}`, {tr.get('iterations', '?')} iterations, {tr.get('env_steps', '?')} env steps",
        f"- policy through `trot.deploy.runtime.PolicyRuntime`; control {b['control_dt'] * 1e3:g} ms, "
        f"physics {b['physics_dt'] * 1e3:g} ms, kp {b['kp']}, kd {b['kd']}, torque limit {b['torque_limit']} N·m",
        f"- {run.seconds:g} s per cell, seed {run.seed}; {len(run.cells)} cells in {run.wall_s:.0f} s on {run.jobs} "
        f"worker processes ({run.cpu_s:.0f} s of CPU in the cells)",
        *(f"- not run in {e}: {p} ({w})" for (e, p), w in {(e, p): w for (e, _, p), w in run.skipped.items()}.items()),
        *(f"- warning: {w}" for w in outside_training_range(run)),
        "",
        *_definitions(run),
        "",
        "## Thresholds",
        "",
        "Every judged cell, nominal or perturbed, is held to the same thresholds (`GateThresholds` in "
        "`hil/gate/judge.py`, reasoning in `docs/gate.md`). Tracking is judged on the velocity averaged over each "
        "stride (the bundle's gait clock period); a stress column (`*`) is run and reported, not judged.",
        "",
        "| threshold | value | meaning |",
        "|---|---|---|",
        *(f"| `{k}` | {v} | {THRESHOLD_DOCS[k]} |" for k, v in asdict(run.thresholds).items()),
    ]
    for engine in run.engines:
        lines += ["", f"## Pass/fail: {engine}", "",
                  "Linear (m/s) / yaw-rate (rad/s) tracking error over whole strides, d: standing drift (m); ❌ fails, "
                  "⚠️ a stress cell fails (not judged), n/a: not run; `*` a stress column.", ""]  # fmt: skip
        marks = {}
        for c in run.commands:
            for p in run.perturbations:
                x = run.cell(engine, c, p)
                mark = "" if x is None else "✅ " if x.passed else "❌ " if x.judged else "⚠️ "
                marks[(c, p)] = mark + _cell_text(x)
        lines += _md_matrix(run, marks)
    for metric, unit in (("lin_err", "m/s"), ("yaw_err", "rad/s")):
        ratios = run.ratios(metric, judged=None)
        if ratios:
            lines += [
                "",
                f"## PyBullet / MuJoCo ratio: {metric}",
                "",
                f"An error ({unit}) below half its cell's bound counts as half the bound; median over the judged cells "
                f"**{_median(run.ratios(metric)):.2f}** (at most {run.thresholds.max_ratio_median}; each judged cell "
                f"at most {run.thresholds.max_ratio_cell}; stress columns reported only).",
                "",
            ]
            lines += _md_matrix(run, {k: _fmt(v) for k, v in ratios.items()})
    for engine in run.engines:
        lines += [
            "",
            f"## Metrics: {engine}",
            "",
            "Stride: errors of the velocity averaged over each stride (judged); per step: mean |error| of each "
            "control step (reported, the judgement until 2026-12); swing: peak-to-peak within a stride, degrees.",
            "",
            "| command | perturbation | fell | strides | lin err m/s stride / per step "
            "| yaw err rad/s stride / per step | heading / roll / pitch swing ° | drift m | peak τ / limit N·m "
            "| saturation | joint margin rad "
            "| foot slip m/s | failures |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for x in (c for c in run.cells if c.engine == engine):
            lines.append(
                f"| {x.command} | {_column(x.perturbation)} | {'yes' if x.fell else 'no'} | {x.strides} "
                f"| {_fmt(x.lin_err, 3)} / {_fmt(x.lin_err_per_step, 3)} "
                f"| {_fmt(x.yaw_err, 3)} / {_fmt(x.yaw_err_per_step, 3)} "
                f"| {_fmt(x.heading_swing_deg, 1)} / {_fmt(x.roll_swing_deg, 1)} / {_fmt(x.pitch_swing_deg, 1)} "
                f"| {_fmt(x.drift, 3)} | {x.peak_torque:.2f} / {x.torque_limit:.2f} "
                f"| {x.torque_saturation:.3f} | {x.joint_margin:.3f} | {_fmt(x.foot_slip, 3)} "
                f"| {'; '.join(x.failures)} |"
            )
    if plots:
        lines += ["", "## Plots", "", *(f"![{Path(p).stem}]({Path(p).name})" for p in plots)]
    return "\n".join(lines) + "\n"


TRACE_CELLS = (
    ("forward_max", "nominal"),
    ("turn_left_max", "nominal"),
    ("sequence", "nominal"),
    ("forward_0.3", "push_0.3"),
)


def _value(run: GateRun, name: str, c: str, p: str, metric: str) -> float | None:
    if name == "ratio":
        return run.ratios(metric, judged=None).get((c, p))
    cell = run.cell(name, c, p)
    return None if cell is None else getattr(cell, metric)


def save_plots(run: GateRun, out: Path) -> list[str]:
    """Heat maps of tracking error per engine (and the engines' ratio); velocity traces of a few cells."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = [str(out / "tracking_error.png")]
    th = run.thresholds
    metrics = (("lin_err", "lin err m/s", th.lin_err_floor), ("yaw_err", "yaw err rad/s", th.yaw_err_floor))
    names = [*run.engines, *(["ratio"] if run.ratios("lin_err", judged=None) else [])]
    size = (1.5 + 0.6 * len(run.perturbations), 1.5 + 0.4 * len(run.commands))
    fig, axes = plt.subplots(2, len(names), figsize=(size[0] * len(names), 2 * size[1]), squeeze=False)
    for row, (metric, label, limit) in enumerate(metrics):
        for ax, name in zip(axes[row], names):
            ratio = name == "ratio"
            v = np.array([[np.nan if (x := _value(run, name, c, p, metric)) is None else x for p in run.perturbations]
                          for c in run.commands])  # fmt: skip
            im = ax.imshow(
                v, cmap="RdBu_r" if ratio else "viridis", vmin=0, vmax=2.0 if ratio else 2 * limit, aspect="auto"
            )
            labels = [f"{p} (stress)" if p in STRESS else p for p in run.perturbations]
            ax.set_xticks(range(len(run.perturbations)), labels, rotation=45, ha="right", fontsize=8)
            ax.set_yticks(range(len(run.commands)), run.commands, fontsize=8)
            ax.set_title(f"PyBullet / MuJoCo {label.split(' ')[0]} err" if ratio else f"{name}: {label}", fontsize=9)
            for i, c in enumerate(run.commands):
                for j, p in enumerate(run.perturbations):
                    cell = None if ratio else run.cell(name, c, p)
                    failed = cell is not None and not cell.passed
                    text = "—" if np.isnan(v[i, j]) else f"{v[i, j]:.2f}"
                    mark = ("\n✗" if cell.judged else "\n(✗)") if failed else ""
                    ax.text(j, i, text + mark, ha="center", va="center", fontsize=7,
                            color="red" if failed else ("black" if ratio else "white"))  # fmt: skip
            fig.colorbar(im, ax=ax, shrink=0.7)
    fig.suptitle("tracking error over whole strides per cell (✗: the cell fails; (✗) a stress cell, not judged)",
                 fontsize=10)  # fmt: skip
    fig.tight_layout()
    fig.savefig(written[0], dpi=100)
    plt.close(fig)

    cells = [(c, p) for c, p in TRACE_CELLS if any(run.cell(e, c, p) for e in run.engines)]
    if cells:
        fig, axes = plt.subplots(len(cells), 3, figsize=(13, 2.4 * len(cells)), squeeze=False, sharex=True)
        for row, (c, p) in enumerate(cells):
            for engine, style in zip(run.engines, ("-", "--")):
                cell = run.cell(engine, c, p)
                tr = cell.trace if cell else {"t": []}
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
