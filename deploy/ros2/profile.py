"""A robot's ROS 2 profile: how `trot deploy --transport ros2` plugs into that robot's own bring-up.

It lives in the robot's folder (`robots/<name>/ros2.toml`) and says which topics the robot uses, how the gains reach
its motors, which ros2_control controllers trot must activate and which it must deactivate first, the robot's own
e-stop topic, and the bound of `trot watchdog`. `load_ros2_profile(robot)` parses it into one frozen `Ros2Profile`
and raises `ProfileError` naming the file, the field, the value and what was expected. A robot without the file gets
`GENERIC` (today's topics, no controller switch, gains on `joint_gains`).

The tables, all optional:

    [middleware]   rmw = "rmw_fastrtps_cpp" | "rmw_cyclonedds_cpp"     (how the robot frames a service request)
    [topics]       any `Ros2Topics` name field or frame id = "ROS name"  (imu, joint_states, cmd_vel, ...)
    [imu]          linear_acceleration = true | false                  (false: the IMU does not measure it)
    [gains]        kp = "topic", kd = "topic"                          (forward command controllers of kp and kd)
    [controllers]  manager = "controller_manager", activate = [...], deactivate = [...], switch_timeout_s = 5.0
    [estop]        topic = "name", type = "std_msgs/msg/Empty" | "std_msgs/msg/Bool"
    [watchdog]     timeout_ms = 100.0

Standard library, `trot.robots` and `topics` only: the CLI's argument handling imports it without any middleware.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

from trot.deploy.ros2.topics import OPTIONAL_TOPIC_FIELDS, TOPIC_FIELDS, Ros2Topics, check_name, resolve_name
from trot.robots import ContractError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

PROFILE_FILE = "ros2.toml"
RMWS = ("rmw_cyclonedds_cpp", "rmw_fastrtps_cpp")
ESTOP_TYPES = ("std_msgs/msg/Empty", "std_msgs/msg/Bool")
# Ros2Topics fields a profile's [topics] may set; the optional topics come from [gains] and [estop].
PROFILE_TOPIC_FIELDS = tuple(f for f in TOPIC_FIELDS if f not in OPTIONAL_TOPIC_FIELDS) + (
    "imu_frame_id",
    "joint_frame_id",
)
WATCHDOG_TIMEOUT_MS = 100.0  # a robot without a profile: 5 periods of a 50 Hz loop
_TABLES = {
    "middleware": {"rmw"},
    "topics": set(PROFILE_TOPIC_FIELDS),
    "imu": {"linear_acceleration"},
    "gains": {"kp", "kd"},
    "controllers": {"manager", "activate", "deactivate", "switch_timeout_s"},
    "estop": {"topic", "type"},
    "watchdog": {"timeout_ms"},
}


class ProfileError(ContractError):
    """A ros2.toml with a missing, unknown or out-of-range field."""


@dataclass(frozen=True)
class ControllerSwitch:
    """The ros2_control controllers trot takes the motors through, and the ones that must let go of them first."""

    manager: str  # ROS name of the controller manager node ("controller_manager")
    activate: tuple[str, ...]
    deactivate: tuple[str, ...]
    switch_timeout_s: float = 5.0  # a switch not answered and seen done within this is a refusal

    def manager_name(self, namespace: str = "") -> str:
        """The manager's fully qualified name, e.g. /controller_manager."""
        return resolve_name(self.manager, namespace)


@dataclass(frozen=True)
class Ros2Profile:
    """One robot's ROS 2 bring-up, as `ros2.toml` declares it (see the module docstring)."""

    file: Path | None  # None: GENERIC, no file
    rmw: str = "rmw_cyclonedds_cpp"
    topics: dict = field(default_factory=dict)  # Ros2Topics field -> value, the optional topics included
    imu_linear_acceleration: bool = True
    controllers: ControllerSwitch | None = None
    watchdog_timeout_ms: float = WATCHDOG_TIMEOUT_MS

    @property
    def name(self) -> str:
        return str(self.file) if self.file else "generic (no ros2.toml)"

    @property
    def gains_topics(self) -> bool:
        """Whether the gains reach the motors through per-joint kp and kd topics (else only `joint_gains`)."""
        return bool(self.topics.get("kp_commands"))

    def ros2_topics(self, namespace: str = "", **overrides) -> Ros2Topics:
        """The topics of this robot under `namespace`, with `overrides` (Ros2Topics fields) on top."""
        return Ros2Topics(namespace=namespace, **{**self.topics, **overrides})


GENERIC = Ros2Profile(file=None)


def profile_path(robot_folder: str | Path) -> Path:
    return Path(robot_folder) / PROFILE_FILE


def load_ros2_profile(robot) -> Ros2Profile:
    """The profile in the robot's folder (a `Robot`, or a folder), GENERIC when it has none."""
    folder = getattr(robot, "folder", robot)
    path = profile_path(folder)
    return load_profile_file(path) if path.is_file() else GENERIC


def load_profile_file(path: str | Path) -> Ros2Profile:
    """Parse one ros2.toml; ProfileError naming the file, the field and what was expected."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            raw = tomllib.load(f)
    except FileNotFoundError:
        raise ProfileError(path, "<file>", str(path), "an existing ros2.toml") from None
    except tomllib.TOMLDecodeError as e:
        raise ProfileError(path, "<file>", str(e), "valid TOML") from e
    return _parse(raw, path)


def _parse(raw: dict, f: Path) -> Ros2Profile:
    for table, value in raw.items():
        if table not in _TABLES or not isinstance(value, dict):
            raise ProfileError(f, table, value, f"one of the tables [{'], ['.join(_TABLES)}]")
        unknown = sorted(set(value) - _TABLES[table])
        if unknown:
            raise ProfileError(f, f"{table}.{unknown[0]}", value[unknown[0]],
                               f"one of the fields {', '.join(sorted(_TABLES[table]))}")  # fmt: skip
    rmw = _string(raw, "middleware.rmw", f, default="rmw_cyclonedds_cpp")
    if rmw not in RMWS:
        raise ProfileError(f, "middleware.rmw", rmw, f"one of {', '.join(RMWS)}")

    topics = {key: _string(raw, f"topics.{key}", f) for key in raw.get("topics", {})}
    gains = raw.get("gains", {})
    if gains and set(gains) != {"kp", "kd"}:
        missing = sorted({"kp", "kd"} - set(gains))[0]
        raise ProfileError(f, f"gains.{missing}", None, "a topic name (kp and kd come together)")
    if gains:
        topics["kp_commands"] = _string(raw, "gains.kp", f)
        topics["kd_commands"] = _string(raw, "gains.kd", f)
    if "estop" in raw:
        estop_type = _string(raw, "estop.type", f)
        if estop_type not in ESTOP_TYPES:
            raise ProfileError(f, "estop.type", estop_type, f"one of {', '.join(ESTOP_TYPES)}")
        # A Bool e-stop is trot's own kind (true = stop): it renames trot's `estop` topic. An Empty one is the robot's.
        topics["estop" if estop_type.endswith("Bool") else "robot_estop"] = _string(raw, "estop.topic", f)
    for key, value in topics.items():
        if key.endswith("frame_id"):
            continue
        where = {"kp_commands": "gains.kp", "kd_commands": "gains.kd", "robot_estop": "estop.topic"}.get(
            key, "estop.topic" if key == "estop" and "estop" in raw else f"topics.{key}"
        )
        try:
            check_name(key, value)
        except ValueError as e:
            raise ProfileError(f, where, value, f"a ROS name ({e})") from None

    imu = raw.get("imu", {})
    accel = imu.get("linear_acceleration", True)
    if not isinstance(accel, bool):
        raise ProfileError(f, "imu.linear_acceleration", accel, "true or false")

    controllers = None
    if "controllers" in raw:
        controllers = _controllers(raw, f)
    timeout_ms = _number(raw, "watchdog.timeout_ms", f, default=WATCHDOG_TIMEOUT_MS)
    return Ros2Profile(f, rmw, topics, accel, controllers, timeout_ms)


def _controllers(raw: dict, f: Path) -> ControllerSwitch:
    manager = _string(raw, "controllers.manager", f, default="controller_manager")
    try:
        check_name("manager", manager)
    except ValueError as e:
        raise ProfileError(f, "controllers.manager", manager, f"a ROS name ({e})") from None
    lists = {}
    for key in ("activate", "deactivate"):
        value = raw["controllers"].get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise ProfileError(f, f"controllers.{key}", value, "a list of controller names")
        if len(set(value)) != len(value):
            raise ProfileError(f, f"controllers.{key}", value, "each controller once")
        lists[key] = tuple(value)
    if not lists["activate"]:
        raise ProfileError(f, "controllers.activate", [], "at least one controller (the ones trot commands through)")
    both = sorted(set(lists["activate"]) & set(lists["deactivate"]))
    if both:
        raise ProfileError(f, "controllers.deactivate", both, "no controller that is also in controllers.activate")
    timeout = _number(raw, "controllers.switch_timeout_s", f, default=5.0)
    return ControllerSwitch(manager, lists["activate"], lists["deactivate"], timeout)


def _string(raw: dict, dotted: str, f: Path, default: str | None = None) -> str:
    table, key = dotted.split(".")
    value = raw.get(table, {}).get(key, default)
    if value is None:
        raise ProfileError(f, dotted, None, "a value (field is missing)")
    if not isinstance(value, str) or not value:
        raise ProfileError(f, dotted, value, "a non-empty string")
    return value


def _number(raw: dict, dotted: str, f: Path, default: float) -> float:
    table, key = dotted.split(".")
    value = raw.get(table, {}).get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ProfileError(f, dotted, value, "a finite number > 0")
    return float(value)
