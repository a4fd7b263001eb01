"""`trot export`: a checkpoint -> the one-file policy bundle (ONNX graph with the normalizer, and the
`trot` metadata JSON of `trot.bundle` in `metadata_props`); `trot export --upgrade` rewrites an older
bundle's metadata to the current format, graph and weights untouched."""

from __future__ import annotations

import argparse
import json
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
    parse_commands,
    parse_contract,
    parse_observation,
    parse_training,
    read_bundle_meta,
)
from trot.robots import contract_sha256, load_robot


def bundle_metadata(cfg, ckpt: dict) -> BundleMeta:
    """The metadata of DESIGN contract 3 for a trained policy (integrity hashes come with the graph)."""
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
    return BundleMeta(contract, observation, commands, training)


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


def upgrade_metadata(old: dict, where: str) -> BundleMeta:
    """Format-1 metadata -> format 2: the contract from its `robot.contract` copy, checked against its hash
    and against the duplicated top-level fields; observation, commands and training record kept."""
    if old.get("format_version") != 1:
        raise BundleError(f"{where}: format_version {old.get('format_version')!r}; --upgrade reads format 1 "
                          f"(format {FORMAT_VERSION} bundles need no upgrade)")  # fmt: skip
    robot = old.get("robot") if isinstance(old.get("robot"), dict) else {}
    stored = robot.get("contract")
    if not isinstance(stored, dict):
        raise BundleError(f"{where}: metadata field 'robot.contract' is missing; expected format 1's contract copy")
    if contract_sha256(stored) != robot.get("contract_sha256"):
        raise BundleError(f"{where}: metadata field 'robot.contract' does not hash to robot.contract_sha256; "
                          "the format-1 metadata was edited: re-export from the checkpoint instead")  # fmt: skip
    contract = parse_contract(stored, where)
    for key, value in contract.to_dict().items():
        if key in old and old[key] != value:
            raise BundleError(f"{where}: metadata field '{key}' = {old[key]!r} differs from robot.contract's "
                              f"{value!r}; re-export from the checkpoint instead")  # fmt: skip
    observation = parse_observation(old, contract.num_joints, where)
    return BundleMeta(contract, observation, parse_commands(old, where), parse_training(old, where))


def upgrade_bundle(src: Path, out: Path) -> BundleMeta:
    """Rewrite a format-1 bundle's metadata to the current format; the graph and weights are not touched."""
    if not src.is_file():
        raise BundleError(f"{src}: no such bundle file")
    model = onnx.load(str(src))
    entries = [p.value for p in model.metadata_props if p.key == METADATA_KEY]
    if len(entries) != 1:
        raise BundleError(f"{src}: {len(entries)} '{METADATA_KEY}' entries in metadata_props; expected one")
    try:
        old = json.loads(entries[0])
    except json.JSONDecodeError as e:
        raise BundleError(f"{src}: metadata '{METADATA_KEY}' is not valid JSON ({e})") from e
    return write_bundle(model, upgrade_metadata(old, str(src)), out)


def run_export(args: argparse.Namespace) -> int:
    """`trot export RUN -o OUT`, or `trot export --upgrade OLD -o OUT`."""
    from trot.train.checkpoint import CheckpointError, find_checkpoint

    out = Path(args.output)
    try:
        if args.upgrade:
            if args.run:
                raise BundleError(f"--upgrade {args.upgrade} takes no RUN ({args.run!r})")
            source = Path(args.upgrade)
            meta = upgrade_bundle(source, out)
        else:
            if not args.run:
                raise BundleError("a RUN folder or checkpoint is needed (or --upgrade OLD.onnx)")
            target = Path(args.run)
            source = find_checkpoint(target, args.checkpoint) if target.is_dir() else target
            meta = export_bundle(source, out)
    except (CheckpointError, BundleError) as e:
        raise SystemExit(f"trot export: {e}") from None
    print(f"trot export: {source} -> {out} (format {FORMAT_VERSION})")
    print(f"  robot {meta.contract.name} contract {meta.contract_sha256[:12]}, obs {meta.observation.size}, "
          f"actions {meta.contract.num_joints}, graph sha256 {meta.integrity.graph_sha256[:12]}")  # fmt: skip
    return 0
