"""`trot export`: a checkpoint -> the one-file policy bundle (ONNX graph with the normalizer, and the
`trot` metadata JSON of `trot.bundle` in `metadata_props`), bound to the robot model the run trained on."""

from __future__ import annotations

import argparse
import os
import tempfile
import warnings
from pathlib import Path

import onnx

from trot.bundle import (
    FORMAT_VERSION,
    METADATA_KEY,
    BundleError,
    BundleMeta,
    Commands,
    Contract,
    Training,
    model_sections,
    parse_observation,
    read_bundle_meta,
)
from trot.robots import load_robot


def bundle_metadata(cfg, ckpt: dict) -> BundleMeta:
    """The metadata of DESIGN contract 3 for a trained policy (integrity hashes come with the graph).

    The checkpoint was checked against this robot's contract, model digest included, when it was loaded."""
    robot = load_robot(cfg.env.robot)
    contract = Contract.from_robot(robot)
    obs_doc = cfg.env.observations.policy.metadata(robot.num_joints)
    obs_doc["clip"] = cfg.env.observations.clip
    c = cfg.env.commands
    trot = ckpt["trot"]
    training = Training(
        run=trot.get("run", ""),
        iterations=int(ckpt["iter"]) + 1,
        env_steps=int(trot.get("env_steps", 0)),
        code_revision=trot.get("code_revision", "unknown"),
        created=trot.get("created", ""),
        task=trot.get("task", ""),
    )
    where = "trot export"
    observation = parse_observation({"observation": obs_doc}, robot.num_joints, where)
    commands = Commands(*(tuple(float(v) for v in r) for r in (c.vx, c.vy, c.yaw_rate)))
    return BundleMeta(contract, observation, commands, training, robot.model)


def write_bundle(model: onnx.ModelProto, meta: BundleMeta, out: Path) -> BundleMeta:
    """Put `meta` (with the integrity hashes of `model`) into `model` and save it to `out` atomically.

    Any earlier `trot` entry is replaced; the graph and weights are written as they are.
    """
    others = [(p.key, p.value) for p in model.metadata_props if p.key != METADATA_KEY]
    del model.metadata_props[:]
    for key, value in others:
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    graph_sha256, _ = model_sections(model.SerializeToString(), str(out))
    meta = meta.with_graph(graph_sha256)
    entry = model.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, meta.to_json()
    onnx.checker.check_model(model)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        staged = Path(tmp) / "bundle.onnx"
        onnx.save(model, str(staged))
        with open(staged, "rb") as f:
            os.fsync(f.fileno())
        os.replace(staged, out)
    _fsync_dir(out.parent)
    read_bundle_meta(out)  # what every loader will do: refuse now rather than on the robot
    return meta


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def policy_graph(policy) -> onnx.ModelProto:
    """The ONNX graph (input `obs`, output `actions`, normalizer included) of an rsl-rl `MLPModel`."""
    import torch

    module = policy.as_onnx(verbose=False).to("cpu").eval()
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "policy.onnx"
        with warnings.catch_warnings():  # the TorchScript exporter is deprecated but exact for an MLP
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.onnx.export(
                module, module.get_dummy_inputs(), str(raw), input_names=["obs"], output_names=["actions"],
                dynamic_axes={"obs": {0: "batch"}, "actions": {0: "batch"}}, opset_version=17, dynamo=False,
            )  # fmt: skip
        return onnx.load(str(raw))


def export_bundle(checkpoint: Path, out: Path) -> BundleMeta:
    """Write the bundle for `checkpoint` to `out` atomically; return its metadata."""
    from trot.train.evaluate import load_policy

    policy, cfg, ckpt = load_policy(checkpoint)
    meta = bundle_metadata(cfg, ckpt)
    model = policy_graph(policy)
    model.doc_string = f"trot policy for {meta.contract.name} ({meta.training.run})"
    return write_bundle(model, meta, out)


def run_export(args: argparse.Namespace) -> int:
    """`trot export RUN -o OUT`."""
    from trot.train.checkpoint import CheckpointError, find_checkpoint

    out = Path(args.output)
    try:
        target = Path(args.run)
        source = find_checkpoint(target, args.checkpoint) if target.is_dir() else target
        meta = export_bundle(source, out)
    except (CheckpointError, BundleError) as e:
        raise SystemExit(f"trot export: {e}") from None
    print(f"trot export: {source} -> {out} (format {FORMAT_VERSION})")
    print(f"  robot {meta.contract.name} contract {meta.contract_sha256[:12]}, obs {meta.observation.size}, "
          f"actions {meta.contract.num_joints}, graph sha256 {meta.integrity.graph_sha256[:12]}")  # fmt: skip
    return 0
