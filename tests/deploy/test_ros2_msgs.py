"""ROS 2 message layer: wire types and names, CDR encoding, conversion round trips, bundle checks."""

import sys
import types as pytypes

import numpy as np
import pytest

pytest.importorskip("cyclonedds")

from trot.deploy.ros2 import convert, msgs  # noqa: E402
from trot.deploy.ros2.msgs import IDL_TYPES as T  # noqa: E402
from trot.deploy.ros2.rclpy_msgs import rclpy_message_types  # noqa: E402
from trot.deploy.ros2.topics import COMMAND_QOS, LATCHED_QOS, SENSOR_QOS, QosProfile, Ros2Topics  # noqa: E402
from trot.robots import load_robot  # noqa: E402

JOINTS = load_robot("pupper_v3").joint_names
N = len(JOINTS)


def wire(msg):
    """The message after a trip through its CDR encoding, as a DDS reader would get it."""
    return type(msg).deserialize(msg.serialize())


def test_types_carry_ros2_dds_type_names():
    expected = {
        msgs.Time: "builtin_interfaces::msg::dds_::Time_",
        msgs.Header: "std_msgs::msg::dds_::Header_",
        msgs.Bool: "std_msgs::msg::dds_::Bool_",
        msgs.MultiArrayDimension: "std_msgs::msg::dds_::MultiArrayDimension_",
        msgs.MultiArrayLayout: "std_msgs::msg::dds_::MultiArrayLayout_",
        msgs.Float64MultiArray: "std_msgs::msg::dds_::Float64MultiArray_",
        msgs.Vector3: "geometry_msgs::msg::dds_::Vector3_",
        msgs.Quaternion: "geometry_msgs::msg::dds_::Quaternion_",
        msgs.Twist: "geometry_msgs::msg::dds_::Twist_",
        msgs.Imu: "sensor_msgs::msg::dds_::Imu_",
        msgs.JointState: "sensor_msgs::msg::dds_::JointState_",
        msgs.KeyValue: "diagnostic_msgs::msg::dds_::KeyValue_",
        msgs.DiagnosticStatus: "diagnostic_msgs::msg::dds_::DiagnosticStatus_",
        msgs.DiagnosticArray: "diagnostic_msgs::msg::dds_::DiagnosticArray_",
    }
    assert {cls: cls.__idl_typename__ for cls in expected} == expected


def test_field_order_matches_the_ros2_msg_definitions():
    order = lambda cls: list(cls.__dataclass_fields__)  # noqa: E731
    assert order(msgs.Time) == ["sec", "nanosec"]
    assert order(msgs.Quaternion) == ["x", "y", "z", "w"]
    assert order(msgs.Imu) == [
        "header",
        "orientation",
        "orientation_covariance",
        "angular_velocity",
        "angular_velocity_covariance",
        "linear_acceleration",
        "linear_acceleration_covariance",
    ]
    assert order(msgs.JointState) == ["header", "name", "position", "velocity", "effort"]
    assert order(msgs.MultiArrayLayout) == ["dim", "data_offset"]
    assert order(msgs.DiagnosticStatus) == ["level", "name", "message", "hardware_id", "values"]


def test_encoding_is_classic_little_endian_cdr_as_ros2_sends():
    # Header{stamp{sec=1, nanosec=2}, frame_id="a"} as rmw_cyclonedds_cpp serializes it: CDR_LE
    # encapsulation, int32, uint32, string length including the NUL.
    header = msgs.Header(stamp=msgs.Time(sec=1, nanosec=2), frame_id="a")
    assert header.serialize() == bytes.fromhex("000100000100000002000000020000006100")
    # A float64 after the header aligns to 8 bytes counted from the end of the encapsulation.
    twist_bytes = msgs.Twist(linear=msgs.Vector3(x=1.0)).serialize()
    assert len(twist_bytes) == 4 + 6 * 8 and twist_bytes[4:12] == np.float64(1.0).tobytes()
    imu_bytes = msgs.Imu(header=header).serialize()
    # 14 header bytes padded to 16, then quaternion, 3 covariances and 2 vectors of float64.
    assert len(imu_bytes) == 4 + 16 + (4 + 3 * 9 + 2 * 3) * 8
    assert msgs.Bool(data=True).serialize() == bytes.fromhex("0001000001")


def test_stamp_round_trips_seconds_and_carries_rounding():
    for seconds in (0.0, 1.5, 1_700_000_000.123456789, -2.25):
        stamp = convert.stamp_from_seconds(T, seconds)
        assert 0 <= stamp.nanosec < 1_000_000_000
        assert convert.seconds_from_stamp(wire(msgs.Header(stamp=stamp)).stamp) == pytest.approx(
            seconds, abs=1e-9
        )
    stamp = convert.stamp_from_seconds(T, 2.9999999999)
    assert (stamp.sec, stamp.nanosec) == (3, 0)
    with pytest.raises(ValueError, match="int32"):
        convert.stamp_from_seconds(T, 2.0**40)


def test_imu_round_trips_quaternion_gyro_accel_and_frame():
    rng = np.random.default_rng(0)
    quat = rng.standard_normal(4)
    quat /= np.linalg.norm(quat)
    gyro, accel = rng.standard_normal(3), rng.standard_normal(3)
    msg = wire(convert.arrays_to_imu(T, quat, gyro, accel, stamp=12.5, frame_id="imu_link"))
    assert (msg.orientation.w, msg.orientation.x) == (quat[0], quat[1])  # ROS order is x y z w
    assert msg.header.frame_id == "imu_link" and convert.seconds_from_stamp(msg.header.stamp) == 12.5
    back = convert.imu_to_arrays(msg)
    for sent, received in zip((quat, gyro, accel), back, strict=True):
        np.testing.assert_array_equal(received, sent)


def test_imu_quantity_not_provided_travels_as_covariance_minus_one_and_returns_nan():
    msg = wire(convert.arrays_to_imu(T, [np.nan] * 4, [0.1, 0.2, 0.3], [0.0, 0.0, 9.81], stamp=0.0))
    assert msg.orientation_covariance[0] == -1.0 and msg.angular_velocity_covariance[0] == 0.0
    quat, gyro, _ = convert.imu_to_arrays(msg)
    assert np.isnan(quat).all() and not np.isnan(gyro).any()


def test_imu_wrong_sizes_are_refused():
    with pytest.raises(ValueError, match=r"quat_wxyz has shape \(3,\); expected \(4,\)"):
        convert.arrays_to_imu(T, [1, 0, 0], [0, 0, 0], [0, 0, 0], stamp=0.0)


def test_joint_state_round_trips_and_reorders_into_bundle_order():
    rng = np.random.default_rng(1)
    pos, vel, eff = rng.standard_normal((3, N))
    shuffled = rng.permutation(N)
    msg = convert.arrays_to_joint_state(
        T, [JOINTS[i] for i in shuffled], pos[shuffled], vel[shuffled], eff[shuffled], stamp=3.0
    )
    back = convert.joint_state_to_arrays(wire(msg), JOINTS)
    for sent, received in zip((pos, vel, eff), back, strict=True):
        np.testing.assert_array_equal(received, sent)


def test_joint_state_without_velocity_or_effort_returns_nan_for_them():
    msg = wire(convert.arrays_to_joint_state(T, JOINTS, np.arange(N, dtype=float)))
    assert list(msg.velocity) == [] and list(msg.effort) == []
    pos, vel, eff = convert.joint_state_to_arrays(msg, JOINTS)
    np.testing.assert_array_equal(pos, np.arange(N))
    assert np.isnan(vel).all() and np.isnan(eff).all()


def test_joint_state_with_other_joint_names_is_refused_naming_them():
    names = list(JOINTS[:-1]) + ["tail_joint"]
    msg = convert.arrays_to_joint_state(T, names, np.zeros(N))
    with pytest.raises(ValueError) as error:
        convert.joint_state_to_arrays(msg, JOINTS)
    text = str(error.value)
    assert JOINTS[-1] in text and "tail_joint" in text and "missing" in text and "unexpected" in text


def test_joint_state_with_missing_joints_is_refused_with_sizes():
    msg = convert.arrays_to_joint_state(T, JOINTS[:10], np.zeros(10))
    with pytest.raises(ValueError, match=rf"message has 10 joints, bundle {N}"):
        convert.joint_state_to_arrays(msg, JOINTS)


def test_joint_state_with_arrays_not_matching_names_is_refused():
    msg = msgs.JointState(name=list(JOINTS), position=[0.0] * N, velocity=[0.0] * (N - 1))
    with pytest.raises(ValueError, match=rf"velocity has {N - 1} values for {N} names"):
        convert.joint_state_to_arrays(msg, JOINTS)
    msg = msgs.JointState(name=list(JOINTS) + [JOINTS[0]], position=[0.0] * (N + 1))
    with pytest.raises(ValueError, match="more than once"):
        convert.joint_state_to_arrays(msg, JOINTS)
    with pytest.raises(ValueError, match=r"effort has shape \(3,\)"):
        convert.arrays_to_joint_state(T, JOINTS, np.zeros(N), None, np.zeros(3))


def test_twist_round_trips_the_velocity_command():
    msg = wire(convert.command_to_twist(T, [0.4, -0.1, 0.7]))
    assert (msg.linear.x, msg.linear.y, msg.angular.z) == (0.4, -0.1, 0.7)
    np.testing.assert_array_equal(convert.twist_to_command(msg), [0.4, -0.1, 0.7])


def test_forward_command_array_round_trips_with_a_labelled_dimension():
    targets = np.linspace(-1.0, 1.0, N)
    msg = wire(convert.command_to_float64_multiarray(T, targets))
    assert [(d.label, d.size, d.stride) for d in msg.layout.dim] == [("joints", N, N)]
    assert msg.layout.data_offset == 0
    np.testing.assert_array_equal(convert.float64_multiarray_to_command(msg, N), targets)


def test_forward_command_array_of_the_wrong_size_is_refused():
    msg = convert.command_to_float64_multiarray(T, np.zeros(N - 2))
    with pytest.raises(ValueError, match=rf"has {N - 2} values.*expected {N}"):
        convert.float64_multiarray_to_command(msg, N)
    bare = msgs.Float64MultiArray(data=[0.0] * N)  # forward command controllers ignore the layout
    assert convert.float64_multiarray_to_command(bare, N).shape == (N,)


def test_targets_travel_as_joint_state_positions_and_gains_as_a_two_row_array():
    rng = np.random.default_rng(2)
    targets, kp, kd = rng.standard_normal(N), np.full(N, 5.0), np.full(N, 0.25)
    state = wire(convert.targets_to_joint_state(T, JOINTS, targets, stamp=1.0))
    assert list(state.name) == list(JOINTS) and list(state.velocity) == [0.0] * N
    np.testing.assert_array_equal(convert.joint_state_to_targets(state, JOINTS), targets)
    gains = wire(convert.gains_to_float64_multiarray(T, kp, kd))
    assert [(d.label, d.size, d.stride) for d in gains.layout.dim] == [("gains", 2, 2 * N), ("joints", N, N)]
    kp_back, kd_back = convert.float64_multiarray_to_gains(gains, N)
    np.testing.assert_array_equal(kp_back, kp)
    np.testing.assert_array_equal(kd_back, kd)
    with pytest.raises(ValueError, match="gains Float64MultiArray"):
        convert.float64_multiarray_to_gains(gains, N - 1)


def test_bool_round_trips():
    assert wire(convert.make_bool(T, True)).data is True
    assert wire(convert.make_bool(T, False)).data is False


def test_diagnostics_carry_state_and_timing_as_key_values():
    values = {"state": "running", "period_ms": 20.0012345, "overruns": np.int64(3), "estop": False}
    msg = wire(convert.diagnostics(T, "trot: deploy", convert.WARN, "running", values, "pupper_v3", 5.0))
    (status,) = msg.status
    assert (status.name, status.message, status.hardware_id) == ("trot: deploy", "running", "pupper_v3")
    assert convert.status_level(status) == convert.WARN
    assert convert.status_values(status) == {
        "state": "running",
        "period_ms": "20.0012",
        "overruns": "3",
        "estop": "false",
    }
    with pytest.raises(ValueError, match="level"):
        convert.diagnostics(T, "x", 7, "", {})


def test_readers_work_on_rclpy_style_messages():
    # rclpy gives float64[] as array.array, float64[9] as numpy arrays and byte as bytes.
    import array

    imu = pytypes.SimpleNamespace(
        orientation=pytypes.SimpleNamespace(x=0.0, y=0.0, z=0.0, w=1.0),
        orientation_covariance=np.zeros(9),
        angular_velocity=pytypes.SimpleNamespace(x=1.0, y=2.0, z=3.0),
        angular_velocity_covariance=np.zeros(9),
        linear_acceleration=pytypes.SimpleNamespace(x=0.0, y=0.0, z=9.8),
        linear_acceleration_covariance=np.zeros(9),
    )
    np.testing.assert_array_equal(convert.imu_to_arrays(imu)[1], [1.0, 2.0, 3.0])
    state = pytypes.SimpleNamespace(
        name=list(reversed(JOINTS)),
        position=array.array("d", range(N)),
        velocity=array.array("d"),
        effort=array.array("d"),
    )
    np.testing.assert_array_equal(convert.joint_state_to_arrays(state, JOINTS)[0], np.arange(N)[::-1])
    assert convert.status_level(pytypes.SimpleNamespace(level=b"\x02")) == convert.ERROR


def test_builders_give_byte_fields_as_bytes_to_rclpy_types(monkeypatch):
    # Stand-ins for the ROS 2 Python packages, shaped like rclpy's (byte constants are bytes).
    class RclpyStatus(msgs.DiagnosticStatus):
        OK = b"\x00"

    packages = {
        "builtin_interfaces": {"Time": msgs.Time},
        "diagnostic_msgs": {"DiagnosticArray": msgs.DiagnosticArray, "DiagnosticStatus": RclpyStatus},
        "geometry_msgs": {"Quaternion": msgs.Quaternion, "Twist": msgs.Twist, "Vector3": msgs.Vector3},
        "sensor_msgs": {"Imu": msgs.Imu, "JointState": msgs.JointState},
        "std_msgs": {
            "Bool": msgs.Bool,
            "Empty": msgs.Empty,
            "Float64MultiArray": msgs.Float64MultiArray,
            "Header": msgs.Header,
            "MultiArrayDimension": msgs.MultiArrayDimension,
            "MultiArrayLayout": msgs.MultiArrayLayout,
        },
    }
    packages["diagnostic_msgs"]["KeyValue"] = msgs.KeyValue
    for package, classes in packages.items():
        monkeypatch.setitem(sys.modules, package, pytypes.ModuleType(package))
        monkeypatch.setitem(sys.modules, f"{package}.msg", pytypes.SimpleNamespace(**classes))
    rclpy_types = rclpy_message_types()
    assert rclpy_types.DiagnosticStatus is RclpyStatus and rclpy_types.Imu is msgs.Imu
    msg = convert.diagnostics(rclpy_types, "x", convert.ERROR, "", {})
    assert msg.status[0].level == b"\x02"


def test_topics_default_to_ros_names_with_the_rt_prefix_on_the_wire():
    topics = Ros2Topics()
    assert topics.ros_name("imu") == "/imu/data" and topics.dds_name("imu") == "rt/imu/data"
    assert topics.dds_name("joint_commands") == "rt/forward_position_controller/commands"
    assert topics.dds_name("cmd_vel") == "rt/cmd_vel" and topics.dds_name("estop") == "rt/estop"
    spaced = Ros2Topics(namespace="/pupper", diagnostics="/diagnostics")
    assert spaced.dds_name("joint_states") == "rt/pupper/joint_states"
    assert spaced.dds_name("diagnostics") == "rt/diagnostics"  # absolute names ignore the namespace
    assert (topics.qos("imu"), topics.qos("cmd_vel"), topics.qos("estop")) == (
        SENSOR_QOS,
        COMMAND_QOS,
        LATCHED_QOS,
    )
    assert SENSOR_QOS.reliability == "best_effort" and LATCHED_QOS.durability == "transient_local"


def test_topics_refuse_names_ros_would_refuse():
    for bad in ("imu data", "imu//data", "1imu", "imu/", ""):
        with pytest.raises(ValueError, match="Ros2Topics.imu"):
            Ros2Topics(imu=bad)
    with pytest.raises(ValueError, match="unknown topic"):
        Ros2Topics().dds_name("odom")
    with pytest.raises(ValueError, match="depth"):
        QosProfile("reliable", "volatile", 0)
