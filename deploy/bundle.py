"""The policy bundle: one ONNX file with the normalizer in its graph and the robot contract in its
metadata (DESIGN contract 3). Loading needs only onnxruntime and the standard library.
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import dataclass
from pathlib import Path

FORMAT_VERSION = 1
METADATA_KEY = "trot"

# field -> (type check, description of what is expected)
_REQUIRED = {
    "format_version": (lambda v: v == FORMAT_VERSION, f"the integer {FORMAT_VERSION}"),
    "robot": (
        lambda v: (
            isinstance(v, dict)
            and isinstance(v.get("name"), str)
            and isinstance(v.get("contract_sha256"), str)
            and len(v["contract_sha256"]) == 64
        ),
        "an object with 'name' and a 64-character 'contract_sha256'",
    ),
    "joint_names": (
        lambda v: isinstance(v, list) and v and all(isinstance(n, str) for n in v),
        "a list of names",
    ),
    "default_joint_pos": (lambda v: _numbers(v), "a list of numbers, one per joint"),
    "action_scale": (lambda v: _positive(v), "a positive number"),
    "action_clip": (lambda v: _positive(v), "a positive number"),
    "kp": (lambda v: _positive(v), "a positive number"),
    "kd": (lambda v: _number(v) and v >= 0, "a non-negative number"),
    "torque_limit": (lambda v: _positive(v), "a positive number"),
    "control_dt": (lambda v: _positive(v), "a positive number of seconds"),
    "physics_dt": (lambda v: _positive(v), "a positive number of seconds"),
    "observation": (
        lambda v: (
            isinstance(v, dict)
            and isinstance(v.get("terms"), list)
            and isinstance(v.get("history"), int)
            and v["history"] >= 1
            and v.get("order") == "newest_first"
            and all(isinstance(t, dict) and {"name", "size", "scale"} <= set(t) for t in v["terms"])
        ),
        "{'terms': [{'name', 'size', 'scale'}...], 'history': int >= 1, 'order': 'newest_first'}",
    ),
    "commands": (
        lambda v: (
            isinstance(v, dict)
            and all(isinstance(v.get(k), list) and len(v[k]) == 2 for k in ("vx", "vy", "yaw_rate"))
        ),
        "{'vx': [min, max], 'vy': [min, max], 'yaw_rate': [min, max]}",
    ),
    "training": (
        lambda v: isinstance(v, dict),
        "an object with run, iterations, env_steps, code_revision, created",
    ),
}


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _positive(v) -> bool:
    return _number(v) and v > 0


def _numbers(v) -> bool:
    return isinstance(v, list) and all(_number(x) for x in v)


class BundleError(ValueError):
    """A bundle that can't be run: unreadable, incomplete metadata, or made for another robot."""


@dataclass(frozen=True)
class Bundle:
    path: Path
    meta: dict

    @property
    def num_joints(self) -> int:
        return len(self.meta["joint_names"])

    @property
    def obs_size(self) -> int:
        frame = sum(t["size"] for t in self.meta["observation"]["terms"])
        return frame * self.meta["observation"]["history"]

    def session(self):
        """An onnxruntime session on the CPU, single-threaded (predictable latency on a Pi)."""
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        return ort.InferenceSession(str(self.path), opts, providers=["CPUExecutionProvider"])


def validate_metadata(meta: object, source: str) -> dict:
    """Refuse metadata with a missing or malformed field, naming the field and what was expected."""
    if not isinstance(meta, dict):
        raise BundleError(f"{source}: metadata '{METADATA_KEY}' is not a JSON object")
    for name, (ok, expected) in _REQUIRED.items():
        if name not in meta:
            raise BundleError(f"{source}: metadata field '{name}' is missing; expected {expected}")
        if not ok(meta[name]):
            raise BundleError(f"{source}: metadata field '{name}' = {meta[name]!r}; expected {expected}")
    n = len(meta["joint_names"])
    if len(meta["default_joint_pos"]) != n:
        raise BundleError(
            f"{source}: metadata field 'default_joint_pos' has {len(meta['default_joint_pos'])} "
            f"values; expected {n}, one per joint"
        )
    return meta


def read_metadata(path: str | Path) -> dict:
    """The `trot` metadata JSON of an ONNX file, validated (no onnx package needed)."""
    import onnxruntime as ort

    path = Path(path)
    if not path.is_file():
        raise BundleError(f"{path}: no such bundle file")
    try:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own exception types for bad files
        raise BundleError(f"{path}: not a readable ONNX model ({type(e).__name__}: {e})") from e
    props = session.get_modelmeta().custom_metadata_map
    if METADATA_KEY not in props:
        raise BundleError(
            f"{path}: no '{METADATA_KEY}' entry in metadata_props; export it with `trot export`"
        )
    try:
        meta = json.loads(props[METADATA_KEY])
    except json.JSONDecodeError as e:
        raise BundleError(f"{path}: metadata '{METADATA_KEY}' is not valid JSON ({e})") from e
    meta = validate_metadata(meta, str(path))
    inputs, outputs = session.get_inputs(), session.get_outputs()
    if [i.name for i in inputs] != ["obs"] or [o.name for o in outputs] != ["actions"]:
        raise BundleError(f"{path}: graph has inputs {[i.name for i in inputs]} and outputs "
                          f"{[o.name for o in outputs]}; expected ['obs'] and ['actions']")  # fmt: skip
    return meta


def load_bundle(path: str | Path) -> Bundle:
    path = Path(path)
    return Bundle(path, read_metadata(path))


def contract_differences(meta: dict, contract: dict) -> list[str]:
    """Fields where the bundle's contract differs from the robot's, as 'field: bundle X, robot Y'."""
    theirs = meta["robot"].get("contract", {})
    diffs = []
    for key in sorted(set(contract) | set(theirs)):
        if theirs.get(key) != contract.get(key):
            diffs.append(f"{key}: bundle {theirs.get(key)!r}, robot {contract.get(key)!r}")
    return diffs


def check_contract(bundle: Bundle, robot) -> None:
    """Refuse a bundle whose contract hash differs from `robot`'s, naming the fields that differ."""
    mine = robot.contract_sha256()
    theirs = bundle.meta["robot"]["contract_sha256"]
    if mine == theirs:
        return
    diffs = contract_differences(bundle.meta, robot.contract()) or ["(no field list in the bundle)"]
    raise BundleError(
        f"{bundle.path}: made for robot '{bundle.meta['robot']['name']}' (contract {theirs[:12]}), "
        f"not for '{robot.name}' (contract {mine[:12]}); differing fields: " + "; ".join(diffs)
    )


def format_metadata(meta: dict) -> str:
    """Human-readable metadata, for `trot inspect`."""
    obs, c, t = meta["observation"], meta["commands"], meta["training"]
    joints = zip(meta["joint_names"], meta["default_joint_pos"])
    rows = [
        ("robot", f"{meta['robot']['name']}  contract sha256 {meta['robot']['contract_sha256']}"),
        ("format version", meta["format_version"]),
        ("rates", f"control {meta['control_dt'] * 1e3:.1f} ms, physics {meta['physics_dt'] * 1e3:.1f} ms"),
        ("gains", f"kp {meta['kp']}  kd {meta['kd']}  torque limit {meta['torque_limit']} N·m"),
        ("actions", f"target = default + {meta['action_scale']} * clip(action, ±{meta['action_clip']})"),
        ("joints", ", ".join(f"{n} ({q:+.2f})" for n, q in joints)),
        ("observation", f"history {obs['history']} ({obs['order']}), clip ±{obs.get('clip', 'none')}"),
        *((f"  {term['name']}", f"size {term['size']:>3}  scale {term['scale']}") for term in obs["terms"]),
        ("commands", f"vx {c['vx']} m/s, vy {c['vy']} m/s, yaw rate {c['yaw_rate']} rad/s"),
        ("training", f"run {t.get('run')}, {t.get('iterations')} iterations, {t.get('env_steps')} env steps"),
        ("", f"code {t.get('code_revision')}, created {t.get('created')}"),
    ]
    return "\n".join(f"{label:<20}{value}" for label, value in rows)


def run_inspect(args: argparse.Namespace) -> int:
    try:
        meta = read_metadata(args.bundle)
    except BundleError as e:
        raise SystemExit(f"trot inspect: {e}") from None
    print(json.dumps(meta, indent=2) if args.json else format_metadata(meta))
    return 0
