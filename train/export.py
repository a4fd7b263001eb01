"""`trot export`: a checkpoint -> the one-file policy bundle (ONNX graph with the normalizer, and the
`trot` metadata JSON in `metadata_props`); `trot inspect` prints that metadata."""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import warnings
from pathlib import Path

import onnx
import torch

from trot.deploy.bundle import FORMAT_VERSION, METADATA_KEY, BundleError, read_metadata
from trot.robots import load_robot
from trot.train.checkpoint import CheckpointError, find_checkpoint
from trot.train.evaluate import load_policy


def bundle_metadata(cfg, ckpt: dict) -> dict:
    """The metadata object of DESIGN contract 3 for a trained policy."""
    robot = load_robot(cfg.env.robot)
    obs = cfg.env.observations
    c = cfg.env.commands
    meta_obs = obs.policy.metadata(robot.num_joints)
    meta_obs["clip"] = obs.clip
    trot = ckpt["trot"]
    return {
        "format_version": FORMAT_VERSION,
        "robot": {
            "name": robot.name,
            "contract_sha256": robot.contract_sha256(),
            "contract": robot.contract(),
        },
        "joint_names": list(robot.joint_names),
        "default_joint_pos": list(robot.default_joint_pos),
        "action_scale": robot.action_scale,
        "action_clip": robot.action_clip,
        "kp": robot.kp,
        "kd": robot.kd,
        "torque_limit": robot.torque_limit,
        "control_dt": robot.control_dt,
        "physics_dt": robot.physics_dt,
        "observation": meta_obs,
        "commands": {"vx": list(c.vx), "vy": list(c.vy), "yaw_rate": list(c.yaw_rate)},
        "training": {
            "run": trot.get("run", ""),
            "iterations": int(ckpt["iter"]) + 1,
            "env_steps": int(trot.get("env_steps", 0)),
            "code_revision": trot.get("code_revision", "unknown"),
            "created": trot.get("created", ""),
            "task": trot.get("task", ""),
        },
    }


def export_bundle(checkpoint: Path, out: Path) -> dict:
    """Write the bundle for `checkpoint` to `out` atomically; return its metadata."""
    policy, cfg, ckpt = load_policy(checkpoint)
    module = policy.as_onnx(verbose=False).to("cpu").eval()
    meta = bundle_metadata(cfg, ckpt)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        raw = Path(tmp) / "policy.onnx"
        with warnings.catch_warnings():  # the TorchScript exporter is deprecated but exact for an MLP
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.onnx.export(
                module, module.get_dummy_inputs(), str(raw), input_names=["obs"], output_names=["actions"],
                dynamic_axes={"obs": {0: "batch"}, "actions": {0: "batch"}}, opset_version=17, dynamo=False,
            )  # fmt: skip
        model = onnx.load(str(raw))
        model.doc_string = f"trot policy for {meta['robot']['name']} ({meta['training']['run']})"
        del model.metadata_props[:]
        entry = model.metadata_props.add()
        entry.key, entry.value = METADATA_KEY, json.dumps(meta, separators=(",", ":"))
        onnx.checker.check_model(model)
        staged = Path(tmp) / "bundle.onnx"
        onnx.save(model, str(staged))
        os.replace(staged, out)
    read_metadata(out)  # what deploy will do: refuse now rather than on the robot
    return meta


def run_export(args: argparse.Namespace) -> int:
    target = Path(args.run)
    try:
        checkpoint = find_checkpoint(target, args.checkpoint) if target.is_dir() else target
        meta = export_bundle(checkpoint, Path(args.output))
    except (CheckpointError, BundleError) as e:
        raise SystemExit(f"trot export: {e}") from None
    print(f"trot export: {checkpoint} -> {args.output}")
    print(f"  robot {meta['robot']['name']} contract {meta['robot']['contract_sha256'][:12]}, "
          f"obs {sum(t['size'] for t in meta['observation']['terms']) * meta['observation']['history']}, "
          f"actions {len(meta['joint_names'])}")  # fmt: skip
    return 0
