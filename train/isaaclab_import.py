"""`trot import-isaaclab RUN_DIR -o bundle.onnx`: an Isaac Lab rsl-rl run written as a trot policy bundle.

The run is read and checked against the robot contract by `trot.train.isaaclab.read_run` (everything it refuses is
refused before a file is written), the actor is reordered into trot's observation layout and contract joint order
(`trot_policy`), and the bundle is written by the same ONNX export and writer as `trot export`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from trot.bundle import BundleError, BundleMeta, Commands, Contract, Observation, Training
from trot.bundle import ObsTerm as BundleTerm
from trot.robots import ContractError, load_robot
from trot.sim.task import task_cfg
from trot.train.export import policy_graph, write_bundle
from trot.train.isaaclab import IsaacLabImportError, IsaacLabRun, read_run, trot_policy


def observation_clip(run: IsaacLabRun) -> float:
    """The bound the robot clips the scaled observation at: Isaac Lab's, or trot's task clip when it clipped none.

    trot's deploy loop always clips; an unclipped Isaac Lab policy gets the clip trot's own policies are trained and
    deployed with (the robot's task config, 100 for the Pupper), far beyond what its sensors read at the run's scales.
    """
    if run.obs_clip is not None:
        return run.obs_clip
    return float(task_cfg(run.robot).observations.clip)


def bundle_meta(run: IsaacLabRun) -> BundleMeta:
    """The bundle metadata of an imported run: the robot's contract, the run's observation, commands, provenance."""
    robot = load_robot(run.robot)
    if not run.commands:
        raise IsaacLabImportError(
            run.run_dir / "params" / "env.yaml",
            "observations.<policy>.<term>.func",
            "no generated_commands term",
            "a velocity command term (the bundle says which commands the policy was trained on)",
        )
    sizes = run.observation.sizes(robot.num_joints)
    observation = Observation(
        tuple(BundleTerm(t.name, size, t.scale) for t, size in zip(run.observation.terms, sizes)),
        run.observation.history,
        run.observation.gait_frequency_hz,
        observation_clip(run),
    )
    training = Training(
        run=f"isaaclab:{run.run_dir.parent.name}/{run.run_dir.name}",
        iterations=run.iteration + 1,  # rsl-rl saves model_<N>.pt after iterations 0..N
        env_steps=run.env_steps,
        code_revision="unknown (Isaac Lab run)",
        created=run.created,
        task=run.task,
    )
    commands = Commands(*(run.commands[axis] for axis in ("vx", "vy", "yaw_rate")))
    # Isaac Lab trains on this robot's URDF (trot.isaaclab imports it), so the run's body is the one here.
    return BundleMeta(Contract.from_robot(robot), observation, commands, training, robot.model)


def import_run(
    run_dir: str | Path,
    out: str | Path,
    robot: str = "pupper_v3",
    checkpoint: str | None = None,
    joint_order: list[str] | None = None,
) -> tuple[IsaacLabRun, BundleMeta]:
    """Read, check and map the run, then write its bundle to `out` atomically; nothing is written on a refusal."""
    run = read_run(run_dir, load_robot(robot), checkpoint=checkpoint, joint_order=joint_order)
    meta = bundle_meta(run)
    model = policy_graph(trot_policy(run))
    model.doc_string = f"trot policy for {robot}, imported from Isaac Lab run {run.run_dir} ({run.checkpoint.name})"
    return run, write_bundle(model, meta, Path(out))


def run_import_isaaclab(args: argparse.Namespace) -> int:
    """`trot import-isaaclab RUN_DIR [--checkpoint N] [--robot R] [--joint_order ...] -o OUT`."""
    checkpoint = args.checkpoint
    if checkpoint is not None and checkpoint.isdigit():
        checkpoint = f"model_{checkpoint}.pt"
    try:
        run, meta = import_run(args.run, args.output, args.robot, checkpoint, args.joint_order)
    except (IsaacLabImportError, ContractError, BundleError, FileNotFoundError) as e:
        raise SystemExit(f"trot import-isaaclab: {e}") from None
    print(f"trot import-isaaclab: {run.checkpoint} -> {args.output}")
    print(f"  task {run.task or '?'}, {meta.training.iterations} iterations, joint order from {run.joint_order_source}")
    print(f"  robot {meta.contract.name} contract {meta.contract_sha256[:12]}, obs {meta.observation.size} "
          f"(history {meta.observation.history}, clip {meta.observation.clip:g}), "
          f"graph sha256 {meta.integrity.graph_sha256[:12]}")  # fmt: skip
    return 0
