"""`trot export`: a checkpoint -> the one-file policy bundle (ONNX graph with the normalizer, and the
`trot` metadata JSON of `trot.bundle` in `metadata_props`); `trot export --upgrade` rewrites an older
bundle's metadata to the current format, graph and weights untouched."""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import warnings
from dataclasses import fields as dataclass_fields
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
    field_hashes,
    model_sections,
    parse_commands,
    parse_contract,
    parse_integrity,
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


def per_joint_limits(doc: dict) -> dict:
    """A copy of a format-1 or -2 contract dict with its one torque and velocity limit given to every joint."""
    n = len(doc.get("joint_names") or [])
    out = dict(doc)
    for key in ("torque_limit", "velocity_limit"):
        if key in out and not isinstance(out[key], list):
            out[key] = [out[key]] * n
    return out


def _format2_contract(old: dict, graph_sha256: str, where: str) -> dict:
    """The contract fields of format-2 metadata once its integrity hashes say nothing changed since export."""
    integrity = parse_integrity(old, where)
    fields = {k: v for k, v in old.items() if k != "integrity"}
    changed = sorted(k for k, h in field_hashes(fields).items() if integrity.fields_sha256.get(k) != h)
    if graph_sha256 != integrity.graph_sha256 or changed:
        what = f"metadata fields {changed}" if changed else "the ONNX graph or weights"
        raise BundleError(f"{where}: {what} changed since export (integrity hash differs); --upgrade rewrites "
                          "only an intact bundle: re-export from the checkpoint instead")  # fmt: skip
    names = [f.name for f in dataclass_fields(Contract) if f.name != "name"]
    contract = {"name": old["robot"]["name"], **{k: old[k] for k in names if k in old}}
    if contract_sha256(contract) != old["robot"].get("contract_sha256"):
        raise BundleError(f"{where}: metadata field 'robot.contract_sha256' does not match the contract fields; "
                          "re-export from the checkpoint instead")  # fmt: skip
    return contract


def _format1_contract(old: dict, where: str) -> dict:
    """The contract of format-1 metadata: its `robot.contract` copy, checked against its hash and the
    duplicated top-level fields."""
    robot = old.get("robot") if isinstance(old.get("robot"), dict) else {}
    stored = robot.get("contract")
    if not isinstance(stored, dict):
        raise BundleError(f"{where}: metadata field 'robot.contract' is missing; expected format 1's contract copy")
    if contract_sha256(stored) != robot.get("contract_sha256"):
        raise BundleError(f"{where}: metadata field 'robot.contract' does not hash to robot.contract_sha256; "
                          "the format-1 metadata was edited: re-export from the checkpoint instead")  # fmt: skip
    for key, value in stored.items():
        if key in old and old[key] != value:
            raise BundleError(f"{where}: metadata field '{key}' = {old[key]!r} differs from robot.contract's "
                              f"{value!r}; re-export from the checkpoint instead")  # fmt: skip
    return stored


def upgrade_metadata(old: dict, where: str, graph_sha256: str = "") -> BundleMeta:
    """Format-1 or -2 metadata -> the current format: the contract checked (format 1: against its hash and its
    duplicated fields; format 2: against its integrity hashes, with `graph_sha256` the file's), its one torque
    and velocity limit given to every joint; observation, commands and training record kept."""
    version = old.get("format_version")
    if version == 1:
        stored = _format1_contract(old, where)
    elif version == 2:
        stored = _format2_contract(old, graph_sha256, where)
    else:
        raise BundleError(f"{where}: format_version {version!r}; --upgrade reads formats 1 and 2 "
                          f"(format {FORMAT_VERSION} bundles need no upgrade)")  # fmt: skip
    contract = parse_contract(per_joint_limits(stored), where)
    observation = parse_observation(old, contract.num_joints, where)
    return BundleMeta(contract, observation, parse_commands(old, where), parse_training(old, where))


def upgrade_bundle(src: Path, out: Path) -> BundleMeta:
    """Rewrite a format-1 or -2 bundle's metadata to the current format; the graph and weights are not touched."""
    if not src.is_file():
        raise BundleError(f"{src}: no such bundle file")
    graph_sha256, text = model_sections(src.read_bytes(), str(src))
    if text is None:
        raise BundleError(f"{src}: no '{METADATA_KEY}' entry in metadata_props; export it with `trot export`")
    try:
        old = json.loads(text)
    except json.JSONDecodeError as e:
        raise BundleError(f"{src}: metadata '{METADATA_KEY}' is not valid JSON ({e})") from e
    if not isinstance(old, dict):
        raise BundleError(f"{src}: metadata '{METADATA_KEY}' is not a JSON object")
    return write_bundle(onnx.load(str(src)), upgrade_metadata(old, str(src), graph_sha256), out)


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
