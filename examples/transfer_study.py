"""Transfer study: why a policy bundle walks faster in PyBullet than in MuJoCo, one engine setting at a time.

Each cell runs the bundle through `trot.deploy.runtime.PolicyRuntime` (the code that runs on the robot)
on the gate's engines (`trot.hil.gate.cell.make_engine`, `CellSim`): a command held for the whole cell, on a
floor of a given friction. A *variant* is one of the two engines as the gate builds it with ONE setting
changed on the built object (or a named combination of settings). The table gives, per variant and
cell, the mean body-frame forward speed after the settle time, its error and overshoot against the
command, the same speed measured two more ways (base displacement along the heading, whole-robot
centre-of-mass displacement along the heading), torque saturation, foot slip, the standing drift, and
the gap to the other engine's unchanged baseline.

    nice -n 10 python examples/transfer_study.py --jobs 2                    # every variant
    python examples/transfer_study.py --variants pb.base,mj.base --cells forward_0.3 --seconds 10
    python examples/transfer_study.py --list                                 # variants and cells
"""

from __future__ import annotations

import argparse
import json
import math
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from multiprocessing import get_context
from pathlib import Path

import mujoco
import numpy as np
from transfer_variants import LEG_JOINTS, PAIRS, VARIANTS, foot_geoms, pb_links

from trot.deploy.bundle import load_bundle
from trot.deploy.runtime import PolicyRuntime
from trot.hil.gate.cell import CellSim
from trot.hil.gate.judge import RATIO_FLOOR
from trot.hil.gate.perturbations import Perturbation
from trot.hil.mujoco_robot import MujocoRobot
from trot.robots import load_robot

DEFAULT_BUNDLE = Path(__file__).resolve().parents[1] / "robots/pupper_v3/policies/walk.onnx"
SETTLE_S = 2.0  # the gate's settle time: speeds are averaged after it
DRIFT_AT_S = 8.0  # the independent check measured standing drift over 8 s
MAX_TILT_DEG = 60.0  # a fall, as in the gate and in training


@dataclass(frozen=True)
class Cell:
    command: tuple[float, float, float]  # vx m/s, vy m/s, yaw rate rad/s (body frame)
    friction: float = 1.0  # floor-foot sliding friction


CELLS: dict[str, Cell] = {
    "forward_0.2": Cell((0.2, 0.0, 0.0)),
    "forward_0.3": Cell((0.3, 0.0, 0.0)),
    "forward_0.4": Cell((0.4, 0.0, 0.0)),
    "backward_0.2": Cell((-0.2, 0.0, 0.0)),
    "stand": Cell((0.0, 0.0, 0.0)),
    "stand_mu0.4": Cell((0.0, 0.0, 0.0), friction=0.4),
}
DEFAULT_CELLS = ("forward_0.2", "forward_0.3", "forward_0.4", "backward_0.2", "stand", "stand_mu0.4")


# -- one cell -------------------------------------------------------------------------------------------


def _rot(quat_wxyz) -> np.ndarray:
    out = np.zeros(9)
    mujoco.mju_quat2Mat(out, np.asarray(quat_wxyz, dtype=float))
    return out.reshape(3, 3)


def robot_com(engine) -> np.ndarray:
    """Whole-robot centre of mass, world frame."""
    if isinstance(engine, MujocoRobot):
        mujoco.mj_kinematics(engine.model, engine.data)
        mujoco.mj_comPos(engine.model, engine.data)
        return engine.data.subtree_com[engine.model.body(engine.robot.base_link).id].copy()
    c, body = engine.client, engine.body
    total, acc = 0.0, np.zeros(3)
    for link in pb_links(engine):
        mass = c.getDynamicsInfo(body, link)[0]
        pos = c.getBasePositionAndOrientation(body)[0] if link < 0 else c.getLinkState(body, link)[0]
        total += mass
        acc += mass * np.asarray(pos)
    return acc / total


def foot_contacts(engine) -> tuple[list[float], list[float]]:
    """Penetration depths (m, positive into the floor) and combined sliding friction of the feet's contacts."""
    if isinstance(engine, MujocoRobot):
        m, d = engine.model, engine.data
        feet = set(foot_geoms(m))
        con = [d.contact[i] for i in range(d.ncon) if {d.contact.geom1[i], d.contact.geom2[i]} & feet]
        return [-c.dist for c in con], [c.friction[0] for c in con]
    c, depth, mu = engine.client, [], []
    floor_mu = c.getDynamicsInfo(engine.floor, -1)[1]
    for link in engine.foot_ids:
        for cp in c.getContactPoints(engine.body, engine.floor, link, -1):
            depth.append(-cp[8])
            mu.append(floor_mu * c.getDynamicsInfo(engine.body, link)[1])  # Bullet multiplies the two
    return depth, mu


@dataclass(frozen=True)
class CellResult:
    variant: str
    engine: str
    cell: str
    command_vx: float
    fell: bool
    vx: float  # m/s, mean body-frame base velocity after the settle (the gate's measurement)
    vx_disp: float  # m/s, base origin displacement along the heading / time, after the settle
    vx_com: float  # m/s, whole-robot CoM displacement along the heading / time, after the settle
    lin_err: float  # m/s, mean |v_xy - command_xy| after the settle (the gate's lin err)
    yaw_rate: float  # rad/s, mean after the settle
    roll_rate_rms: float  # rad/s, body x angular velocity after the settle
    pitch_rate_rms: float  # rad/s, body y
    drift: float  # m, horizontal base displacement over the whole cell
    drift_8s: float  # m, ... over the first 8 s
    saturation: float  # worst joint's fraction of physics steps at >= 99 % of the torque limit, after settle
    slip: float  # m/s, mean horizontal speed of feet in contact, after the settle
    hip_amp: float  # rad, std of the hip angles over time (mean of the four legs): the stride
    hip_target_amp: float  # rad, ... of the policy's hip targets
    penetration_mm: float  # mean depth of the feet's floor contacts, sampled each control step
    friction: float  # combined sliding friction of the feet's contacts, as the engine computes it
    wall_s: float


def run_cell(variant_name: str, cell_name: str, bundle_path: str, seconds: float) -> CellResult:
    """Run one cell through the deploy runtime (worker-process entry point)."""
    started = time.perf_counter()
    bundle = load_bundle(Path(bundle_path))
    robot = load_robot(bundle.contract.name)
    runtime = PolicyRuntime(bundle, robot)
    variant, cell = VARIANTS[variant_name], CELLS[cell_name]
    engine = variant.build(robot)
    try:
        sim = CellSim(engine, robot, Perturbation.of(friction=cell.friction), seconds, np.random.default_rng(0))
        variant.apply(engine)  # after the cell has written the parameters the variant changes
        dt, cmd = robot.control_dt, np.asarray(cell.command)
        settle_k = round(SETTLE_S / dt)
        start_pos = prev_pos = engine.base_pose()[0]
        prev_com = robot_com(engine)
        vel, ang, samples, depth, mu, hip, hip_target = [], [], [], [], [], [], []
        hips = [i for i in range(robot.num_joints) if i % 3 == LEG_JOINTS["hip"]]
        disp_base = disp_com = 0.0
        fell, drift_8s = False, math.nan
        for k in range(round(seconds / dt)):
            target = runtime.step(*sim.sensors(), cmd).target
            s = sim.act(target)
            pos, quat = engine.base_pose()
            lin_world, ang_world = engine.base_velocity()
            rot = _rot(quat)
            com = robot_com(engine)
            d, f = foot_contacts(engine)
            mu += f
            if k >= settle_k:
                heading = rot[:2, 0] / max(np.linalg.norm(rot[:2, 0]), 1e-9)
                disp_base += float(heading @ (pos - prev_pos)[:2])
                disp_com += float(heading @ (com - prev_com)[:2])
                vel.append((rot.T @ lin_world)[:2])
                ang.append(rot.T @ ang_world)
                samples.append(s)
                depth += d
                hip.append(engine.joint_state()[0][hips])
                hip_target.append(np.clip(target, sim.lower, sim.upper)[hips])
            prev_pos, prev_com = pos, com
            if abs((k + 1) * dt - DRIFT_AT_S) < 1e-9:
                drift_8s = float(np.linalg.norm((pos - start_pos)[:2]))
            if math.degrees(math.acos(np.clip(rot[2, 2], -1, 1))) > MAX_TILT_DEG or s["base_contact"]:
                fell = True
                break
        end_pos = engine.base_pose()[0]
    finally:
        engine.close()
    n = len(samples)
    t = max(n, 1) * dt
    vel, ang = np.reshape(vel, (-1, 2)), np.reshape(ang, (-1, 3))
    sat = np.sum([s["saturated_steps"] for s in samples], axis=0) / max(n * robot.decimation, 1)
    slips = np.concatenate([s["slip"] for s in samples] + [np.zeros(0)])
    nan = math.nan
    return CellResult(
        variant=variant_name,
        engine=variant.engine,
        cell=cell_name,
        command_vx=float(cmd[0]),
        fell=fell,
        vx=float(vel[:, 0].mean()) if n else nan,
        vx_disp=disp_base / t if n else nan,
        vx_com=disp_com / t if n else nan,
        lin_err=float(np.linalg.norm(vel - cmd[:2], axis=1).mean()) if n else nan,
        yaw_rate=float(ang[:, 2].mean()) if n else nan,
        roll_rate_rms=float(np.sqrt(np.mean(ang[:, 0] ** 2))) if n else nan,
        pitch_rate_rms=float(np.sqrt(np.mean(ang[:, 1] ** 2))) if n else nan,
        drift=float(np.linalg.norm((end_pos - start_pos)[:2])),
        drift_8s=drift_8s,
        saturation=float(sat.max()) if n else nan,
        slip=float(slips.mean()) if len(slips) else nan,
        hip_amp=float(np.std(hip, axis=0).mean()) if n else nan,
        hip_target_amp=float(np.std(hip_target, axis=0).mean()) if n else nan,
        penetration_mm=1e3 * float(np.mean(depth)) if depth else nan,
        friction=float(np.mean(mu)) if mu else nan,
        wall_s=time.perf_counter() - started,
    )


def _run(args: tuple) -> CellResult:
    return run_cell(*args)


# -- the tables -----------------------------------------------------------------------------------------


def baseline_of(engine: str) -> str:
    return "pb.base" if engine == "pybullet" else "mj.base"  # the gate's engines now


def other_engine(engine: str) -> str:
    return "mujoco" if engine == "pybullet" else "pybullet"


def _gap(r: CellResult, other: CellResult) -> float:
    """PyBullet minus MuJoCo forward speed, whichever engine `r` ran in."""
    return r.vx - other.vx if r.engine == "pybullet" else other.vx - r.vx


def _overshoot(r: CellResult) -> float:
    """Percent faster than commanded, along the command (positive: too fast)."""
    return 100 * (r.vx - r.command_vx) / r.command_vx


def table(results: list[CellResult]) -> str:
    """One line per variant and cell, with the gap to the other engine's baseline on the same cell."""
    by = {(r.variant, r.cell): r for r in results}
    head = (f"{'engine':<9}{'variant':<29}{'cell':<13}{'vx':>7}{'err':>7}{'over%':>6}{'vx_disp':>8}{'vx_com':>7}"
            f"{'yaw':>6}{'roll':>6}{'pitch':>6}{'drift':>6}{'d@8s':>6}{'sat':>6}{'slip':>6}{'pen':>5}{'μ':>5}"
            f"{'hip':>6}{'hip*':>6}{'gap':>7}")  # fmt: skip
    lines = [head, "-" * len(head)]
    for r in results:
        other = by.get((baseline_of(other_engine(r.engine)), r.cell))
        gap = "" if other is None else f"{_gap(r, other):+.3f}"
        moving = r.command_vx != 0.0
        over = f"{_overshoot(r):+.0f}" if moving else ""
        drift = "" if moving else f"{r.drift:.3f}"
        d8 = "" if moving or math.isnan(r.drift_8s) else f"{r.drift_8s:.3f}"
        lines.append(
            f"{r.engine:<9}{r.variant + (' FELL' if r.fell else ''):<29}{r.cell:<13}{r.vx:>7.3f}"
            f"{r.vx - r.command_vx:>+7.3f}{over:>6}{r.vx_disp:>8.3f}{r.vx_com:>7.3f}{r.yaw_rate:>+6.2f}"
            f"{r.roll_rate_rms:>6.2f}{r.pitch_rate_rms:>6.2f}{drift:>6}{d8:>6}{r.saturation:>6.3f}{r.slip:>6.3f}"
            f"{r.penetration_mm:>5.1f}{r.friction:>5.2f}{r.hip_amp:>6.3f}{r.hip_target_amp:>6.3f}{gap:>7}"
        )
    return "\n".join(lines)


def _forward_stats(by: dict, rs: list[CellResult]) -> tuple[list[CellResult], float, list[float]]:
    """The forward cells of one variant, their mean overshoot (%) and their gaps to the other engine's baseline."""
    fwd = [r for r in rs if r.command_vx > 0]
    others = [(r, by.get((baseline_of(other_engine(r.engine)), r.cell))) for r in fwd]
    over = float(np.mean([_overshoot(r) for r in fwd])) if fwd else math.nan
    return fwd, over, [_gap(r, o) for r, o in others if o is not None]


def markdown(results: list[CellResult]) -> str:
    """Per variant: speeds, drifts, mean overshoot and gap; then per pair of setups (PAIRS): gap and the gate's
    lin-err ratio per moving cell. The tables of docs/transfer_study.md."""
    by = {(r.variant, r.cell): r for r in results}
    cells = list(dict.fromkeys(r.cell for r in results))
    heads = [f"{c} {'vx m/s' if CELLS[c].command[0] else 'drift 8 s m'}" for c in cells]
    lines = [
        "| variant | what changed | " + " | ".join(heads) + " | mean overshoot | mean gap m/s | hip swing / target"
        " | max saturation |",
        "|---|---|" + "---|" * (len(cells) + 4),
    ]
    for v in dict.fromkeys(r.variant for r in results):
        rs = [by[(v, c)] for c in cells if (v, c) in by]
        if any(r.fell for r in rs):
            lines.append(f"| `{v}` | {VARIANTS[v].help} | " + " | ".join("fell" for _ in rs) + " | | | | |")
            continue
        fwd, over, gaps = _forward_stats(by, rs)
        vals = [f"{r.vx:+.3f}" if r.command_vx else f"{r.drift_8s:.3f}" for r in rs]
        gap = f"{np.mean(gaps):+.3f}" if gaps else ""
        swing = " / ".join(f"{r.hip_amp / r.hip_target_amp:.2f}" for r in fwd)
        lines.append(
            f"| `{v}` | {VARIANTS[v].help} | "
            + " | ".join(vals)
            + f" | {'' if math.isnan(over) else f'{over:+.0f} %'} | {gap} | {swing}"
            + f" | {max(r.saturation for r in rs):.3f} |"
        )
    moving = [c for c in cells if CELLS[c].command[0]]
    lines += [
        "",
        "| PyBullet | MuJoCo | " + " | ".join(f"{c}: gap m/s, err ratio" for c in moving) + " | mean \\|gap\\| |",
        "|---|---|" + "---|" * (len(moving) + 1),
    ]
    floor = RATIO_FLOOR["lin_err"]
    for pb, mj in PAIRS:
        pairs = [(by.get((pb, c)), by.get((mj, c))) for c in moving]
        if any(a is None or b is None or a.fell or b.fell for a, b in pairs):
            continue
        text = [f"{a.vx - b.vx:+.3f}, {max(a.lin_err, floor) / max(b.lin_err, floor):.2f}" for a, b in pairs]
        mean = np.mean([abs(a.vx - b.vx) for a, b in pairs])
        lines.append(f"| `{pb}` | `{mj}` | " + " | ".join(text) + f" | {mean:.3f} |")
    return "\n".join(lines) + "\n"


# -- the models behind the figures ----------------------------------------------------------------------

INERTIA_VARIANTS = ("mj.base", "mj.armature_in_link", "mj.armature_x0")


def _mass_matrix(engine) -> np.ndarray:
    engine.reset()
    m, d = engine.model, engine.data
    mujoco.mj_forward(m, d)
    out = np.zeros((m.nv, m.nv))
    mujoco.mj_fullM(m, d, out)
    return out


def inertia_report(robot) -> str:
    """Mass-matrix figures at the default pose, per model: the whole robot's rotational inertia about the
    base origin (body roll, pitch, yaw), the joint-space inertia of one leg's joints, the hip's damping ratio
    under the PD alone, and the longest step at which an explicit kd is stable, 2 / (kd λmax(M⁻¹)_joints)."""
    kp, kd = robot.kp, robot.kd
    pybullet_line = _pybullet_inertia(robot)  # first: Bullet logs its refusal to stdout, without a newline
    head = f"{'model':<24}{'roll':>8}{'pitch':>8}{'yaw':>8}  kg·m² body | {'abd':>8}{'hip':>8}{'knee':>8}"
    lines = ["", head + "  kg·m² joint | hip ζ | explicit-kd dt max"]
    for name in INERTIA_VARIANTS:
        engine = VARIANTS[name].build(robot)
        VARIANTS[name].apply(engine)
        M = _mass_matrix(engine)
        joints = engine.idx.joint_qvel
        body = np.diag(M)[3:6]  # free joint: angular velocity in the body frame, about the base origin
        leg = np.diag(M)[joints[:3]]
        lam = np.linalg.eigvals(np.linalg.inv(M)[np.ix_(joints, joints)]).real.max()
        zeta = kd / (2 * math.sqrt(kp * leg[LEG_JOINTS["hip"]]))
        lines.append(f"{name:<24}{body[0]:>8.4f}{body[1]:>8.4f}{body[2]:>8.4f}{'':>12}| {leg[0]:>8.5f}{leg[1]:>8.5f}"
                     f"{leg[2]:>8.5f}{'':>14}| {zeta:>5.2f} | {2e3 / (kd * lam):.2f} ms")  # fmt: skip
    lines.append(pybullet_line)
    return "\n".join(lines)


def _pybullet_inertia(robot) -> str:
    """PyBullet's own mass matrix, as a cross-check (its base block is angular first, in the body frame)."""
    import pybullet

    out = []
    for name in ("old.base", "pb.base"):  # one engine each: Bullet caches the tree it builds
        engine = VARIANTS[name].build(robot)
        try:
            M = engine.mass_matrix()
            out.append(f"{name}: body roll {M[0, 0]:.4f}, pitch {M[1, 1]:.4f}, yaw {M[2, 2]:.4f} kg·m²")
        except (pybullet.error, SystemError) as e:  # pybullet raises its error as the cause of a SystemError
            out.append(f"{name}: refused ({e.__cause__ or e}; Bullet logs Ixx > Iyy + Izz on the abduction link)")
        finally:
            engine.close()
    return "PyBullet's mass matrix: " + "; ".join(out)


BENCH_VARIANTS = ("old.base", "pb.base", "pb.substeps_4", "pb.substeps_8", "pb.explicit_sub16", "mj.base")


def bench(robot, steps: int = 1000) -> str:
    """CPU time per physics_dt of the standing robot under PD, per variant, against old.base in the same run."""
    times = {}
    for name in BENCH_VARIANTS:
        engine = VARIANTS[name].build(robot)
        CellSim(engine, robot, Perturbation(), 1.0, np.random.default_rng(0))  # the cell's parameters
        VARIANTS[name].apply(engine)
        target = np.asarray(robot.default_joint_pos)
        for _ in range(50):
            engine.step(target)
        started = time.process_time()
        for _ in range(steps):
            engine.step(target)
        times[name] = (time.process_time() - started) / steps
        engine.close()
    ref = times["old.base"]
    return "\n".join(f"{n:<28}{1e3 * t:>7.3f} ms per physics_dt  x{t / ref:.2f} of old.base" for n, t in times.items())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", default=str(DEFAULT_BUNDLE), help="policy bundle (.onnx)")
    parser.add_argument("--variants", default=None, help="comma-separated variant names (default: all)")
    parser.add_argument("--cells", default=",".join(DEFAULT_CELLS), help=f"comma-separated, of: {', '.join(CELLS)}")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each cell")
    parser.add_argument("--jobs", type=int, default=2, help="worker processes")
    parser.add_argument("--json", default=None, help="also write every cell's figures to this file")
    parser.add_argument("--from-json", default=None, help="print the tables of a --json file instead of running")
    parser.add_argument("--markdown", default=None, help="also write the per-variant and pairs tables here")
    parser.add_argument("--list", action="store_true", help="list variants and cells, run nothing")
    parser.add_argument("--inertia", action="store_true", help="print the models' mass-matrix figures, run nothing")
    parser.add_argument("--bench", action="store_true", help="time each engine's physics step, run nothing")
    args = parser.parse_args(argv)
    if args.inertia or args.bench:
        robot = load_robot(load_bundle(Path(args.bundle)).contract.name)
        print(inertia_report(robot) if args.inertia else bench(robot))
        return 0
    if args.list:
        for name, v in VARIANTS.items():
            print(f"{name:<29}{v.engine:<9}{v.help}")
        for name, c in CELLS.items():
            print(f"{name:<29}command {c.command}, friction {c.friction}")
        return 0
    variants = args.variants.split(",") if args.variants else list(VARIANTS)
    cells = args.cells.split(",")
    for kind, names, known in (("variant", variants, VARIANTS), ("cell", cells, CELLS)):
        unknown = [n for n in names if n not in known]
        if unknown:
            parser.error(f"unknown {kind}(s) {unknown}; known: {list(known)}")
    if args.from_json:
        results = [CellResult(**d) for d in json.loads(Path(args.from_json).read_text())]
        print(f"cells read from {args.from_json}")
    else:
        jobs = [(v, c, args.bundle, args.seconds) for v in variants for c in cells]
        started = time.perf_counter()
        # spawn: fresh workers without inherited onnxruntime threads, as the gate does
        with ProcessPoolExecutor(max(1, args.jobs), mp_context=get_context("spawn")) as pool:
            results = list(pool.map(_run, jobs))
        print(f"bundle {args.bundle}; {args.seconds:g} s per cell, averaged after {SETTLE_S:g} s; "
              f"{len(jobs)} cells in {time.perf_counter() - started:.0f} s on {args.jobs} workers")  # fmt: skip
    print(LEGEND)
    print(table(results), markdown(results), sep="\n\n")
    if args.json:
        Path(args.json).write_text(json.dumps([asdict(r) for r in results], indent=1))
    if args.markdown:
        Path(args.markdown).write_text(markdown(results))
    return 0


LEGEND = """\
vx: mean body-frame base velocity, m/s (the gate's measurement); err: vx - command; over%: err / command;
vx_disp / vx_com: base origin / whole-robot CoM displacement along the heading / time; yaw: mean yaw rate;
roll / pitch: RMS body angular rates, rad/s; drift: m over the cell (d@8s: over its first 8 s; standing cells);
sat: worst joint's fraction of steps at the torque limit; slip: m/s of feet in contact; pen: mean foot
penetration, mm; μ: combined foot-floor friction as the engine computes it; hip / hip*: std over time of
the hip angles / of the policy's hip targets, rad (mean of 4 legs); gap: PyBullet minus MuJoCo vx,
this variant against the other engine's unchanged baseline. Everything after the settle time unless stated.
"""


if __name__ == "__main__":
    raise SystemExit(main())
