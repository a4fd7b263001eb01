"""Robot descriptions: one folder per robot with its URDF and control contract (`robot.toml`).

`load_robot("pupper_v3")` or `load_robot("path/to/folder")` returns a validated, frozen `Robot`.
Nothing else in trot hard-codes a robot number: everything reads it from here.
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROBOTS_DIR = Path(__file__).resolve().parent

# What a user holding a bundle for a robot whose model was corrected must know (shown when such a bundle is refused).
MODEL_NOTICES = {
    "pupper_v3": (
        "trot's Pupper v3 model was corrected on 2026-12-07 to its authors' published description (the joint roles "
        "and directions had been invented); a bundle made before was trained on a body that is not the Pupper v3 and "
        "must not run on one: use the shipped robots/pupper_v3/policies/walk.onnx, or retrain "
        "(`trot train --robot pupper_v3`) and export the new run"
    ),
}


class ContractError(ValueError):
    """A robot folder whose contract is missing a field or holds a value out of range."""

    def __init__(self, file: Path | str, field: str, value: object, expected: str):
        self.file, self.field, self.value, self.expected = str(file), field, value, expected
        super().__init__(f"{file}: field '{field}' = {value!r}; expected {expected}")


@dataclass(frozen=True)
class JointLimits:
    lower: tuple[float, ...]
    upper: tuple[float, ...]


@dataclass(frozen=True)
class Robot:
    """A validated robot: paths, joint order, control contract and hardware mapping."""

    name: str
    folder: Path
    urdf_path: Path
    base_link: str
    foot_links: tuple[str, ...]
    foot_radius: float
    imu_pos: tuple[float, float, float]
    joint_names: tuple[str, ...]
    default_joint_pos: tuple[float, ...]
    joint_limits: JointLimits  # from the URDF, in policy order
    control_dt: float
    physics_dt: float
    kp: float
    kd: float
    action_scale: float
    action_clip: float
    torque_limit: tuple[float, ...]  # N·m, per joint in policy order
    velocity_limit: tuple[float, ...]  # rad/s, per joint in policy order
    armature: float
    damping: float
    frictionloss: float
    hardware: dict = field(hash=False, compare=False)
    link_masses: dict = field(hash=False, compare=False)  # from the URDF
    # the kinematic and inertial numbers of the URDF and the motor model (`robot_model`): what an action does
    model: dict = field(hash=False, compare=False, default_factory=dict)
    # MuJoCo mjOption fields the URDF cannot hold ([mujoco.option] of robot.toml), e.g. (("impratio", 100.0),)
    mujoco_option: tuple[tuple[str, float], ...] = ()
    # [latency]: the worst actuation latency (s, sensor reading to motor command) the robot is promised to meet, and
    # where the figure comes from. The gate judges at it; `trot deploy` warns when its loop alone takes longer. Not
    # part of the contract: a policy does not depend on it, and changing the promise does not change the policy.
    actuation_latency_s: float = field(default=0.0, compare=False)
    actuation_latency_source: str = field(default="", compare=False)

    @property
    def num_joints(self) -> int:
        return len(self.joint_names)

    @property
    def decimation(self) -> int:
        return round(self.control_dt / self.physics_dt)

    @property
    def soft_joint_limits(self) -> JointLimits:
        """URDF limits less `hardware.soft_limit_margin`: where training, the gate and the robot clamp targets."""
        m = self.hardware["soft_limit_margin"]
        return JointLimits(
            tuple(lo + m for lo in self.joint_limits.lower), tuple(hi - m for hi in self.joint_limits.upper)
        )

    @property
    def total_mass(self) -> float:
        return float(sum(self.link_masses.values()))

    def contract(self) -> dict:
        """The fields a policy depends on, as plain JSON values (hashed into the bundle)."""
        return {
            "name": self.name,
            "joint_names": list(self.joint_names),
            "default_joint_pos": list(self.default_joint_pos),
            "joint_lower": list(self.joint_limits.lower),
            "joint_upper": list(self.joint_limits.upper),
            "kp": self.kp,
            "kd": self.kd,
            "action_scale": self.action_scale,
            "action_clip": self.action_clip,
            "torque_limit": list(self.torque_limit),
            "velocity_limit": list(self.velocity_limit),
            "control_dt": self.control_dt,
            "physics_dt": self.physics_dt,
            "model_sha256": self.model_sha256(),
        }

    def contract_sha256(self) -> str:
        return contract_sha256(self.contract())

    def model_sha256(self) -> str:
        """Digest of `model`: the body a policy is trained on. A policy never runs on another one."""
        return contract_sha256(self.model)


def contract_sha256(contract: dict) -> str:
    """Hash of a contract dict in canonical JSON (sorted keys, no whitespace)."""
    text = json.dumps(contract, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def model_differences(trained: dict, here: dict, limit: int = 8) -> list[str]:
    """'path: trained X, here Y' wherever two `robot_model` dicts differ (at most `limit`, then a count)."""

    def flat(node, prefix=""):
        if isinstance(node, dict):
            for k, v in node.items():
                yield from flat(v, f"{prefix}.{k}" if prefix else str(k))
        else:
            yield prefix, node

    a, b = dict(flat(trained)), dict(flat(here))
    out = [f"{k}: trained {a.get(k, '(absent)')!r}, here {b.get(k, '(absent)')!r}"
           for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]  # fmt: skip
    return out if len(out) <= limit else [*out[:limit], f"... and {len(out) - limit} more"]


def available_robots() -> list[str]:
    """Names of the robot folders shipped with trot."""
    return sorted(p.parent.name for p in ROBOTS_DIR.glob("*/robot.toml"))


def resolve_robot_dir(name_or_path: str | Path) -> Path:
    """A robot name shipped with trot, or a folder holding a robot.toml."""
    path = Path(name_or_path)
    if (path / "robot.toml").is_file():
        return path.resolve()
    if (ROBOTS_DIR / str(name_or_path) / "robot.toml").is_file():
        return ROBOTS_DIR / str(name_or_path)
    raise FileNotFoundError(
        f"robot '{name_or_path}': no robot.toml there nor in {ROBOTS_DIR}; known robots: {available_robots()}"
    )


def load_robot(name_or_path: str | Path) -> Robot:
    """Load and validate a robot folder; raise ContractError naming the file and field on bad input."""
    folder = resolve_robot_dir(name_or_path)
    toml_path = folder / "robot.toml"
    try:
        with open(toml_path, "rb") as f:
            raw = tomllib.load(f)
    except tomllib.TOMLDecodeError as e:
        raise ContractError(toml_path, "<file>", str(e), "valid TOML") from e
    return _validate(raw, folder, toml_path)


def _get(raw: dict, dotted: str, file: Path):
    node = raw
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            raise ContractError(file, dotted, None, "a value (field is missing)")
        node = node[part]
    return node


def _number(raw: dict, dotted: str, file: Path, lo: float, hi: float, lo_open: bool = False) -> float:
    value = _get(raw, dotted, file)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ContractError(file, dotted, value, "a finite number")
    below = value <= lo if lo_open else value < lo
    if below or value > hi:
        bracket = "(" if lo_open else "["
        raise ContractError(file, dotted, value, f"a number in {bracket}{lo}, {hi}]")
    return float(value)


def _text(raw: dict, dotted: str, file: Path) -> str:
    value = _get(raw, dotted, file)
    if not isinstance(value, str) or not value.strip():
        raise ContractError(file, dotted, value, "a non-empty string")
    return value


def _vector(raw: dict, dotted: str, file: Path, length: int, kind: type = float) -> list:
    value = _get(raw, dotted, file)
    if not isinstance(value, list) or len(value) != length:
        n = len(value) if isinstance(value, list) else "not a list"
        raise ContractError(file, dotted, value, f"a list of {length} values (got {n})")
    ok = (int,) if kind is int else (int, float)
    if any(isinstance(v, bool) or not isinstance(v, ok) for v in value):
        raise ContractError(file, dotted, value, f"a list of {length} {kind.__name__}s")
    return [kind(v) for v in value]


def _per_joint(raw: dict, dotted: str, file: Path, n: int) -> tuple[float, ...]:
    """A positive limit: one number for every joint, or a list of n (policy order)."""
    if not isinstance(_get(raw, dotted, file), list):
        return (_number(raw, dotted, file, 0.0, 1e4, lo_open=True),) * n
    values = _vector(raw, dotted, file, n)
    for i, v in enumerate(values):
        if not (math.isfinite(v) and 0.0 < v <= 1e4):
            raise ContractError(file, f"{dotted}[{i}]", v, "a number in (0.0, 10000.0]")
    return tuple(values)


def _mujoco_option(raw: dict, file: Path) -> tuple[tuple[str, float], ...]:
    """[mujoco.option]: name = number pairs (checked against MuJoCo's mjOption by trot.sim.mujoco_model)."""
    table = raw.get("mujoco", {})
    option = table.get("option", {}) if isinstance(table, dict) else None
    if not isinstance(table, dict) or set(table) - {"option"} or not isinstance(option, dict):
        raise ContractError(file, "mujoco", table, "a table holding only [mujoco.option] (name = number)")
    for name, value in option.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ContractError(file, f"mujoco.option.{name}", value, "a finite number")
    return tuple((name, float(value)) for name, value in sorted(option.items()))


def _floats(element, attribute: str, default: str) -> list[float]:
    return [float(v) for v in (element.get(attribute, default) if element is not None else default).split()]


def _urdf_model(root: ET.Element) -> dict:
    """The URDF's numbers that change what an action does: every joint's frame, axis and limits, every link's
    inertial and collision geometry (visuals, names of meshes and comments left out)."""
    joints, links = {}, {}
    for j in root.iter("joint"):
        lim = j.find("limit")
        joints[j.get("name")] = {
            "type": j.get("type"),
            "parent": j.find("parent").get("link"),
            "child": j.find("child").get("link"),
            "xyz": _floats(j.find("origin"), "xyz", "0 0 0"),
            "rpy": _floats(j.find("origin"), "rpy", "0 0 0"),
            "axis": _floats(j.find("axis"), "xyz", "1 0 0"),
            "limit": [float(lim.get(k, "nan")) for k in ("lower", "upper", "effort", "velocity")] if lim is not None
            else [],
        }  # fmt: skip
    for link in root.iter("link"):
        inertial, entry = link.find("inertial"), {}
        if inertial is not None:
            inertia = inertial.find("inertia")
            entry = {
                "mass": float(inertial.find("mass").get("value")),
                "com_xyz": _floats(inertial.find("origin"), "xyz", "0 0 0"),
                "com_rpy": _floats(inertial.find("origin"), "rpy", "0 0 0"),
                "inertia": [float(inertia.get(k, "0")) for k in ("ixx", "ixy", "ixz", "iyy", "iyz", "izz")],
            }
        shapes = []
        for c in link.findall("collision"):
            geometry = next(iter(c.find("geometry")))
            shapes.append({"shape": geometry.tag, **{k: _floats(geometry, k, "") for k in sorted(geometry.attrib)
                                                      if k != "filename"},
                           "xyz": _floats(c.find("origin"), "xyz", "0 0 0"),
                           "rpy": _floats(c.find("origin"), "rpy", "0 0 0")})  # fmt: skip
        links[link.get("name")] = {**entry, "collision": shapes}
    return {"joints": joints, "links": links}


def _parse_urdf(urdf_path: Path) -> tuple[dict, dict, dict]:
    """Joint limits {name: (lower, upper, effort, velocity)}, link masses {name: kg} and the model numbers."""
    try:
        root = ET.parse(urdf_path).getroot()
        model = _urdf_model(root)
    except (ET.ParseError, OSError) as e:
        raise ContractError(urdf_path, "<file>", str(e), "a readable URDF") from e
    except (AttributeError, StopIteration, TypeError, ValueError) as e:
        raise ContractError(urdf_path, "<file>", str(e), "a URDF whose joints name a parent and a child, whose "
                            "numbers are numbers and whose collisions hold a geometry") from e  # fmt: skip
    joints = {}
    for j in root.iter("joint"):
        lim = j.find("limit")
        if j.get("type") == "revolute" and lim is not None:
            joints[j.get("name")] = tuple(float(lim.get(k, "nan")) for k in ("lower", "upper", "effort", "velocity"))
    masses = {}
    for link in root.iter("link"):
        m = link.find("inertial/mass")
        masses[link.get("name")] = float(m.get("value")) if m is not None else 0.0
    return joints, masses, model


def _validate(raw: dict, folder: Path, f: Path) -> Robot:
    name = _get(raw, "robot.name", f)
    if not isinstance(name, str) or not name:
        raise ContractError(f, "robot.name", name, "a non-empty string")
    urdf_path = folder / str(_get(raw, "robot.urdf", f))
    if not urdf_path.is_file():
        raise ContractError(f, "robot.urdf", str(urdf_path), "an existing URDF file in the robot folder")
    urdf_joints, masses, urdf_model = _parse_urdf(urdf_path)

    names = _get(raw, "joints.names", f)
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise ContractError(f, "joints.names", names, "a non-empty list of joint names")
    if len(set(names)) != len(names):
        raise ContractError(f, "joints.names", names, "unique joint names")
    missing = [n for n in names if n not in urdf_joints]
    if missing:
        raise ContractError(f, "joints.names", missing, f"revolute joints of {urdf_path.name}: {sorted(urdf_joints)}")
    if len(names) != len(urdf_joints):
        raise ContractError(
            f, "joints.names", len(names), f"all {len(urdf_joints)} revolute joints of {urdf_path.name}"
        )
    n = len(names)
    default = _vector(raw, "joints.default_pos", f, n)
    lower = tuple(urdf_joints[j][0] for j in names)
    upper = tuple(urdf_joints[j][1] for j in names)
    for i, (q, lo, hi) in enumerate(zip(default, lower, upper)):
        if not lo <= q <= hi:
            raise ContractError(f, f"joints.default_pos[{i}]", q, f"within {names[i]}'s URDF limits [{lo}, {hi}]")

    control_dt = _number(raw, "control.control_dt", f, 0.0, 1.0, lo_open=True)
    physics_dt = _number(raw, "control.physics_dt", f, 0.0, control_dt, lo_open=True)
    ratio = control_dt / physics_dt
    if abs(ratio - round(ratio)) > 1e-6:
        raise ContractError(f, "control.physics_dt", physics_dt, f"a whole fraction of control_dt={control_dt}")
    torque_limit = _per_joint(raw, "motor.torque_limit", f, n)
    velocity_limit = _per_joint(raw, "motor.velocity_limit", f, n)
    for i, j in enumerate(names):
        effort, vel = urdf_joints[j][2], urdf_joints[j][3]
        for key, mine, urdf, what in (("torque_limit", torque_limit, effort, "effort"),
                                      ("velocity_limit", velocity_limit, vel, "velocity")):  # fmt: skip
            if not math.isclose(urdf, mine[i]):
                raise ContractError(f, f"motor.{key}[{i}]", mine[i],
                                    f"{j}'s URDF <limit {what}> ({urdf}) to equal the contract's")  # fmt: skip

    foot_links = _get(raw, "robot.foot_links", f)
    if not isinstance(foot_links, list) or any(link not in masses for link in foot_links):
        raise ContractError(f, "robot.foot_links", foot_links, f"link names of {urdf_path.name}")
    base_link = _get(raw, "robot.base_link", f)
    if base_link not in masses:
        raise ContractError(f, "robot.base_link", base_link, f"a link of {urdf_path.name}")

    hw = raw.get("hardware")
    if not isinstance(hw, dict):
        raise ContractError(f, "hardware", hw, "a [hardware] table")
    hardware = {
        # Optional: a robot whose motors are addressed by index alone (a Go2's LowCmd slots) has no CAN bus.
        "can_bus": _vector(raw, "hardware.can_bus", f, n, int) if "can_bus" in hw else None,
        "motor_id": _vector(raw, "hardware.motor_id", f, n, int),
        "joint_sign": _vector(raw, "hardware.joint_sign", f, n, int),
        "zero_offset": _vector(raw, "hardware.zero_offset", f, n),
        "kp_max": _number(raw, "hardware.kp_max", f, 0.0, 1e4, lo_open=True),
        "kd_max": _number(raw, "hardware.kd_max", f, 0.0, 1e4, lo_open=True),
        "damping_kd": _number(raw, "hardware.damping_kd", f, 0.0, 1e4),
        "soft_limit_margin": _number(raw, "hardware.soft_limit_margin", f, 0.0, 1.0),
    }
    buses = hardware["can_bus"] or [0] * n
    addresses = list(zip(buses, hardware["motor_id"]))
    if len(set(addresses)) != n:
        expected = "ids unique on each CAN bus" if hardware["can_bus"] else "unique ids (no can_bus: one id space)"
        raise ContractError(f, "hardware.motor_id", hardware["motor_id"], expected)
    if any(s not in (-1, 1) for s in hardware["joint_sign"]):
        raise ContractError(f, "hardware.joint_sign", hardware["joint_sign"], "each entry +1 or -1")
    kp = _number(raw, "control.kp", f, 0.0, hardware["kp_max"], lo_open=True)
    kd = _number(raw, "control.kd", f, 0.0, hardware["kd_max"])
    motor = {k: _number(raw, f"motor.{k}", f, 0.0, hi) for k, hi in (("armature", 1.0), ("damping", 100.0),
                                                                     ("frictionloss", 100.0))}  # fmt: skip
    foot_radius = _number(raw, "robot.foot_radius", f, 0.0, 1.0, lo_open=True)
    model = {**urdf_model, "motor": motor, "foot_radius": foot_radius}

    return Robot(
        name=name,
        folder=folder,
        urdf_path=urdf_path,
        base_link=base_link,
        foot_links=tuple(foot_links),
        foot_radius=foot_radius,
        imu_pos=tuple(_vector(raw, "robot.imu_pos", f, 3)),
        joint_names=tuple(names),
        default_joint_pos=tuple(default),
        joint_limits=JointLimits(lower, upper),
        control_dt=control_dt,
        physics_dt=physics_dt,
        kp=kp,
        kd=kd,
        action_scale=_number(raw, "control.action_scale", f, 0.0, 10.0, lo_open=True),
        action_clip=_number(raw, "control.action_clip", f, 0.0, 1e3, lo_open=True),
        torque_limit=torque_limit,
        velocity_limit=velocity_limit,
        hardware=hardware,
        link_masses=masses,
        model=model,
        **motor,
        mujoco_option=_mujoco_option(raw, f),
        actuation_latency_s=_number(raw, "latency.actuation_s", f, 0.0, control_dt * 10),
        actuation_latency_source=_text(raw, "latency.source", f),
    )
