"""ROS 2 messages <-> numpy arrays, shared by the rclpy path and the raw Cyclone DDS path.

Readers take any object with the ROS field names (an rclpy message or an IDL struct from `msgs`).
Builders take the message classes to build, a `MessageTypes`: `msgs.IDL_TYPES` for raw DDS,
`rclpy_msgs.rclpy_message_types()` for rclpy. Sizes and joint names are checked against the
policy bundle's; a mismatch raises ValueError naming the fields, the joints and the sizes.
Arrays come back as float64 (ROS's type); "not reported" comes back as NaN.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from dataclasses import field as dataclass_field
from typing import Any

import numpy as np

# diagnostic_msgs/DiagnosticStatus levels.
OK, WARN, ERROR, STALE = 0, 1, 2, 3
LEVEL_NAMES = {OK: "OK", WARN: "WARN", ERROR: "ERROR", STALE: "STALE"}
# sensor_msgs/Imu: covariance[0] = -1 marks a quantity the IMU does not provide.
COVARIANCE_NOT_PROVIDED = -1.0
COMMAND_LABEL = "joints"  # Float64MultiArray dimension label of per-joint arrays
GAINS_LABEL = "gains"  # Float64MultiArray dimension label of the (kp, kd) rows
_INT32 = (-(2**31), 2**31 - 1)


def _in(package: str):
    return dataclass_field(metadata={"package": package})


@dataclass(frozen=True)
class MessageTypes:
    """The message classes a builder instantiates, named as in ROS 2, each with its ROS 2 package: the one list
    of message types trot uses (`msgs` and `rclpy_msgs` fill it through `collect`)."""

    Time: type = _in("builtin_interfaces")
    Header: type = _in("std_msgs")
    Bool: type = _in("std_msgs")
    Empty: type = _in("std_msgs")
    MultiArrayDimension: type = _in("std_msgs")
    MultiArrayLayout: type = _in("std_msgs")
    Float64MultiArray: type = _in("std_msgs")
    Vector3: type = _in("geometry_msgs")
    Quaternion: type = _in("geometry_msgs")
    Twist: type = _in("geometry_msgs")
    Imu: type = _in("sensor_msgs")
    JointState: type = _in("sensor_msgs")
    KeyValue: type = _in("diagnostic_msgs")
    DiagnosticStatus: type = _in("diagnostic_msgs")
    DiagnosticArray: type = _in("diagnostic_msgs")

    @staticmethod
    def collect(find: Callable[[str, str], type]) -> MessageTypes:
        """Every type, each the class `find(package, name)` returns."""
        return MessageTypes(**{f.name: find(f.metadata["package"], f.name) for f in fields(MessageTypes)})


# --- time -----------------------------------------------------------------------------------------


def stamp_from_seconds(types: MessageTypes, seconds: float) -> Any:
    """A builtin_interfaces/Time from seconds (e.g. `time.time()`), nanoseconds rounded."""
    if not math.isfinite(seconds):
        raise ValueError(f"stamp: seconds = {seconds!r}; expected a finite number")
    sec = math.floor(seconds)
    nanosec = round((seconds - sec) * 1e9)
    if nanosec >= 1_000_000_000:  # rounding carried into the next second
        sec, nanosec = sec + 1, nanosec - 1_000_000_000
    if not _INT32[0] <= sec <= _INT32[1]:
        raise ValueError(f"stamp: seconds = {seconds!r}; expected a value that fits int32 sec")
    return types.Time(sec=int(sec), nanosec=int(nanosec))


def seconds_from_stamp(stamp: Any) -> float:
    """Seconds from a builtin_interfaces/Time."""
    return stamp.sec + stamp.nanosec * 1e-9


def make_header(types: MessageTypes, stamp: float, frame_id: str) -> Any:
    """A std_msgs/Header stamped `stamp` seconds."""
    return types.Header(stamp=stamp_from_seconds(types, stamp), frame_id=frame_id)


# --- sensor_msgs/Imu ------------------------------------------------------------------------------


def imu_to_arrays(msg: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(quat_wxyz (4,), gyro (3,) rad/s, accel (3,) m/s²) from a sensor_msgs/Imu; a quantity
    whose covariance[0] is -1 (not provided, per the message definition) comes back as NaN."""
    q = msg.orientation
    quat = np.array([q.w, q.x, q.y, q.z], dtype=np.float64)
    gyro = _vector3(msg.angular_velocity)
    accel = _vector3(msg.linear_acceleration)
    for values, covariance in (
        (quat, msg.orientation_covariance),
        (gyro, msg.angular_velocity_covariance),
        (accel, msg.linear_acceleration_covariance),
    ):
        if covariance[0] == COVARIANCE_NOT_PROVIDED:
            values[:] = np.nan
    return quat, gyro, accel


def arrays_to_imu(
    types: MessageTypes,
    quat_wxyz: Sequence[float],
    gyro: Sequence[float],
    accel: Sequence[float],
    stamp: float,
    frame_id: str = "imu_link",
) -> Any:
    """A sensor_msgs/Imu; covariances are zero (unknown), or -1 in [0] where the input is NaN."""
    quat = _checked("Imu", "quat_wxyz", quat_wxyz, 4)
    gyro = _checked("Imu", "gyro", gyro, 3)
    accel = _checked("Imu", "accel", accel, 3)

    def covariance(values: np.ndarray) -> list[float]:
        return [COVARIANCE_NOT_PROVIDED if np.isnan(values).any() else 0.0] + [0.0] * 8

    w, x, y, z = (0.0, 0.0, 0.0, 1.0) if np.isnan(quat).any() else quat.tolist()
    return types.Imu(
        header=make_header(types, stamp, frame_id),
        orientation=types.Quaternion(x=x, y=y, z=z, w=w),
        orientation_covariance=covariance(quat),
        angular_velocity=_to_vector3(types, np.nan_to_num(gyro)),
        angular_velocity_covariance=covariance(gyro),
        linear_acceleration=_to_vector3(types, np.nan_to_num(accel)),
        linear_acceleration_covariance=covariance(accel),
    )


# --- sensor_msgs/JointState -----------------------------------------------------------------------


def joint_state_to_arrays(msg: Any, joint_names: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(position, velocity, effort), each (joints,) in `joint_names` order (the bundle's); an
    empty velocity or effort (allowed by the message) comes back as NaN. Refuses other names."""
    names = list(msg.name)
    order = joint_order(names, joint_names)
    arrays = []
    for field in ("position", "velocity", "effort"):
        values = np.asarray(getattr(msg, field), dtype=np.float64)
        if field != "position" and values.size == 0:
            arrays.append(np.full(len(joint_names), np.nan))
            continue
        if values.shape != (len(names),):
            raise ValueError(
                f"JointState.{field} has {values.size} values for {len(names)} names; "
                f"expected one per name (or none for velocity and effort)"
            )
        arrays.append(values[order])
    return arrays[0], arrays[1], arrays[2]


def joint_order(names: Sequence[str], joint_names: Sequence[str]) -> np.ndarray:
    """Indices that reorder arrays given in `names` order into `joint_names` order; raises
    ValueError naming the missing and unexpected joints when the two sets differ."""
    names = list(names)
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"JointState.name lists {duplicates} more than once")
    index = {name: i for i, name in enumerate(names)}
    missing = [n for n in joint_names if n not in index]
    expected = set(joint_names)
    unexpected = [n for n in names if n not in expected]
    if missing or unexpected:
        raise ValueError(
            f"JointState.name does not match the bundle's joint_names: missing {missing}, "
            f"unexpected {unexpected} (message has {len(names)} joints, bundle {len(joint_names)})"
        )
    return np.array([index[n] for n in joint_names], dtype=np.intp)


def arrays_to_joint_state(
    types: MessageTypes,
    names: Sequence[str],
    position: Sequence[float],
    velocity: Sequence[float] | None = None,
    effort: Sequence[float] | None = None,
    stamp: float = 0.0,
    frame_id: str = "",
) -> Any:
    """A sensor_msgs/JointState; a velocity or effort of None is sent empty (not reported)."""
    n = len(names)
    fields = {"position": position, "velocity": velocity, "effort": effort}
    values = {f: [] if v is None else _checked("JointState", f, v, n).tolist() for f, v in fields.items()}
    return types.JointState(header=make_header(types, stamp, frame_id), name=list(names), **values)


def targets_to_joint_state(
    types: MessageTypes, names: Sequence[str], targets: Sequence[float], stamp: float, frame_id: str = ""
) -> Any:
    """Position targets as a sensor_msgs/JointState: `position` = target (rad), `velocity` = 0
    (target velocity: the PD law damps towards rest), `effort` = 0 (no feed-forward torque).
    The gains travel on their own topic (`gains_to_float64_multiarray`); see ROS2.md."""
    zeros = np.zeros(len(names))
    return arrays_to_joint_state(types, names, targets, zeros, zeros, stamp, frame_id)


def joint_state_to_targets(msg: Any, joint_names: Sequence[str]) -> np.ndarray:
    """Position targets (joints,) in `joint_names` order from a `targets_to_joint_state` message."""
    return joint_state_to_arrays(msg, joint_names)[0]


# --- std_msgs/Float64MultiArray -------------------------------------------------------------------


def command_to_float64_multiarray(types: MessageTypes, targets: Sequence[float]) -> Any:
    """Per-joint targets (joints,) as the std_msgs/Float64MultiArray a ros2_control forward
    command controller takes: one dimension labelled "joints", data in the bundle's joint order."""
    values = np.asarray(targets, dtype=np.float64)
    if values.ndim != 1:
        raise ValueError(f"Float64MultiArray: targets have shape {values.shape}; expected (joints,)")
    n = values.size
    layout = types.MultiArrayLayout(
        dim=[types.MultiArrayDimension(label=COMMAND_LABEL, size=n, stride=n)], data_offset=0
    )
    return types.Float64MultiArray(layout=layout, data=values.tolist())


def float64_multiarray_to_command(msg: Any, num_joints: int) -> np.ndarray:
    """Per-joint values (joints,) from a std_msgs/Float64MultiArray; refuses a size other than
    `num_joints` (an empty layout is accepted, as forward command controllers ignore it)."""
    data = _multiarray_data(msg)
    dims = [(d.label, d.size) for d in msg.layout.dim]
    if data.size != num_joints or (dims and [size for _, size in dims] != [num_joints]):
        raise ValueError(
            f"Float64MultiArray has {data.size} values, layout {dims}; expected {num_joints} "
            f"(one per joint of the bundle)"
        )
    return data


def gains_to_float64_multiarray(types: MessageTypes, kp: Sequence[float], kd: Sequence[float]) -> Any:
    """Per-joint PD gains as a 2 x joints std_msgs/Float64MultiArray: row 0 kp (N·m/rad), row 1 kd
    (N·m·s/rad), columns in the bundle's joint order (the order of the joint_targets names)."""
    kp = np.asarray(kp, dtype=np.float64)
    kd = np.asarray(kd, dtype=np.float64)
    if kp.ndim != 1 or kp.shape != kd.shape:
        raise ValueError(f"gains: kp has shape {kp.shape}, kd {kd.shape}; expected the same (joints,)")
    n = kp.size
    layout = types.MultiArrayLayout(
        dim=[
            types.MultiArrayDimension(label=GAINS_LABEL, size=2, stride=2 * n),
            types.MultiArrayDimension(label=COMMAND_LABEL, size=n, stride=n),
        ],
        data_offset=0,
    )
    return types.Float64MultiArray(layout=layout, data=np.concatenate([kp, kd]).tolist())


def float64_multiarray_to_gains(msg: Any, num_joints: int) -> tuple[np.ndarray, np.ndarray]:
    """(kp, kd), each (joints,), from a `gains_to_float64_multiarray` message."""
    data = _multiarray_data(msg)
    dims = [(d.label, d.size) for d in msg.layout.dim]
    if data.size != 2 * num_joints or dims != [(GAINS_LABEL, 2), (COMMAND_LABEL, num_joints)]:
        raise ValueError(
            f"gains Float64MultiArray has {data.size} values, layout {dims}; expected "
            f"{2 * num_joints} values, layout [('{GAINS_LABEL}', 2), ('{COMMAND_LABEL}', {num_joints})]"
        )
    return data[:num_joints].copy(), data[num_joints:].copy()


# --- geometry_msgs/Twist, std_msgs/Bool -----------------------------------------------------------


def twist_to_command(msg: Any) -> np.ndarray:
    """The policy's velocity command [vx m/s, vy m/s, yaw_rate rad/s] from a geometry_msgs/Twist
    (body frame, REP 103); linear.z, angular.x and angular.y are ignored."""
    return np.array([msg.linear.x, msg.linear.y, msg.angular.z], dtype=np.float64)


def command_to_twist(types: MessageTypes, command: Sequence[float]) -> Any:
    """A geometry_msgs/Twist from [vx, vy, yaw_rate]."""
    vx, vy, yaw_rate = _checked("Twist", "command", command, 3).tolist()
    linear = types.Vector3(x=vx, y=vy, z=0.0)
    return types.Twist(linear=linear, angular=types.Vector3(x=0.0, y=0.0, z=yaw_rate))


def make_bool(types: MessageTypes, value: bool) -> Any:
    """A std_msgs/Bool."""
    return types.Bool(data=bool(value))


def per_joint_float64_multiarray(types: MessageTypes, values: Sequence[float]) -> Any:
    """One value per joint (a kp or kd row) as the Float64MultiArray a forward command controller of the `kp` or `kd`
    command interface takes: the same layout as the position commands."""
    return command_to_float64_multiarray(types, values)


# --- diagnostic_msgs/DiagnosticArray --------------------------------------------------------------


def diagnostics(
    types: MessageTypes,
    name: str,
    level: int,
    message: str,
    values: Mapping[str, Any],
    hardware_id: str = "",
    stamp: float = 0.0,
) -> Any:
    """A diagnostic_msgs/DiagnosticArray holding one status (e.g. the deploy loop's state machine
    and timing); numbers are formatted to 6 significant digits, booleans as true/false."""
    if level not in LEVEL_NAMES:
        raise ValueError(f"DiagnosticStatus.level = {level!r}; expected one of {LEVEL_NAMES}")
    pairs = [types.KeyValue(key=str(k), value=_format_value(v)) for k, v in values.items()]
    # rclpy types a `byte` field as bytes of length 1; the IDL struct as int.
    level_value = bytes([level]) if isinstance(types.DiagnosticStatus.OK, bytes) else level
    status = types.DiagnosticStatus(
        level=level_value, name=name, message=message, hardware_id=hardware_id, values=pairs
    )
    return types.DiagnosticArray(header=make_header(types, stamp, ""), status=[status])


def status_level(status: Any) -> int:
    """A DiagnosticStatus level as an int (rclpy gives bytes, the IDL struct an int)."""
    level = status.level
    return level[0] if isinstance(level, bytes | bytearray) else int(level)


def status_values(status: Any) -> dict[str, str]:
    """A DiagnosticStatus's key/value pairs as a dict."""
    return {kv.key: kv.value for kv in status.values}


# --- helpers --------------------------------------------------------------------------------------


def _vector3(v: Any) -> np.ndarray:
    return np.array([v.x, v.y, v.z], dtype=np.float64)


def _to_vector3(types: MessageTypes, values: np.ndarray) -> Any:
    x, y, z = values.tolist()
    return types.Vector3(x=x, y=y, z=z)


def _checked(message: str, field: str, values: Sequence[float], size: int) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.shape != (size,):
        raise ValueError(f"{message}: {field} has shape {array.shape}; expected ({size},)")
    return array


def _multiarray_data(msg: Any) -> np.ndarray:
    data = np.asarray(msg.data, dtype=np.float64)
    return data[msg.layout.data_offset :]


def _format_value(value: Any) -> str:
    if isinstance(value, bool | np.bool_):
        return "true" if value else "false"
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, numbers.Real):
        return f"{float(value):.6g}"
    return str(value)
