"""Loading a policy bundle on the robot: the typed, integrity-checked metadata of `trot.bundle` plus an
onnxruntime session on its graph (DESIGN contract 3). `trot inspect` prints what a bundle says.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

from trot.bundle import BundleError, BundleMeta, Contract, per_joint_text, read_bundle_meta
from trot.bundle import check_contract as _check_contract
from trot.gate_record import GateRecordError, find_record

__all__ = ["Bundle", "BundleError", "check_contract", "load_bundle", "run_inspect"]


@dataclass(frozen=True)
class Bundle:
    """A bundle file whose metadata parsed and whose integrity hashes matched when it was loaded."""

    path: Path
    meta: BundleMeta

    @property
    def contract(self) -> Contract:
        return self.meta.contract

    @property
    def num_joints(self) -> int:
        return self.meta.contract.num_joints

    @property
    def obs_size(self) -> int:
        return self.meta.observation.size

    def session(self):
        """An onnxruntime session on the CPU, single-threaded (predictable latency on a Pi)."""
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        return ort.InferenceSession(str(self.path), opts, providers=["CPUExecutionProvider"])


def load_bundle(path: str | Path) -> Bundle:
    """Parse and verify the metadata, then check that onnxruntime reads the graph with input `obs`, output `actions`."""
    path = Path(path)
    bundle = Bundle(path, read_bundle_meta(path))
    try:
        session = bundle.session()
    except Exception as e:  # onnxruntime raises its own exception types for bad files
        raise BundleError(f"{path}: not a readable ONNX model ({type(e).__name__}: {e})") from e
    inputs, outputs = session.get_inputs(), session.get_outputs()
    if [i.name for i in inputs] != ["obs"] or [o.name for o in outputs] != ["actions"]:
        raise BundleError(f"{path}: graph has inputs {[i.name for i in inputs]} and outputs "
                          f"{[o.name for o in outputs]}; expected ['obs'] and ['actions']")  # fmt: skip
    return bundle


def check_contract(bundle: Bundle, robot) -> Contract:
    """The verified contract: the bundle's, once it equals `robot`'s field by field (joint order included)."""
    return _check_contract(bundle.meta, robot, str(bundle.path))


def format_metadata(meta: BundleMeta) -> str:
    """Human-readable metadata, for `trot inspect`."""
    c, obs, cmd, t = meta.contract, meta.observation, meta.commands, meta.training
    rows = [
        ("robot", f"{c.name}  contract sha256 {c.sha256()}"),
        ("integrity", f"graph sha256 {meta.integrity.graph_sha256} (verified, and every metadata field)"),
        ("rates", f"control {c.control_dt * 1e3:.1f} ms, physics {c.physics_dt * 1e3:.1f} ms"),
        ("gains", f"kp {c.kp}  kd {c.kd}"),
        ("limits", f"torque {per_joint_text(c.torque_limit)} N·m, velocity {per_joint_text(c.velocity_limit)} rad/s"),
        ("actions", f"target = default + {c.action_scale} * clip(action, ±{c.action_clip})"),
        ("joints", ", ".join(f"{n} ({q:+.2f})" for n, q in zip(c.joint_names, c.default_joint_pos))),
        ("observation", f"history {obs.history} ({obs.order}), clip ±{obs.clip}, size {obs.size}"),
        *((f"  {term.name}", f"size {term.size:>3}  scale {term.scale}") for term in obs.terms),
        ("commands", f"vx {list(cmd.vx)} m/s, vy {list(cmd.vy)} m/s, yaw rate {list(cmd.yaw_rate)} rad/s"),
        ("training", f"run {t.run}, {t.iterations} iterations, {t.env_steps} env steps"),
        ("", f"code {t.code_revision}, created {t.created}"),
    ]
    return "\n".join(f"{label:<20}{value}" for label, value in rows)


def gate_text(path: str | Path) -> str:
    """What the gate said about this exact file, for `trot inspect`: the record's verdict, counts, date and trot
    revision, and whether it is for these bytes (or that there is none, or it is another file's, or unreadable)."""
    try:
        return find_record(path)[1]
    except GateRecordError as e:
        return f"unreadable gate record: {e}"


def run_inspect(args: argparse.Namespace) -> int:
    """`trot inspect BUNDLE`: the same checks as `trot deploy`'s loader, then the metadata and the gate's verdict."""
    try:
        bundle = load_bundle(args.bundle)
    except BundleError as e:
        raise SystemExit(f"trot inspect: {e}") from None
    meta = bundle.meta
    if args.json:
        print(json.dumps(json.loads(meta.to_json()), indent=2))
    else:
        print(format_metadata(meta))
        print(f"{'gate':<20}{gate_text(bundle.path)}")
    return 0
