"""A robot's ROS 2 profile (robots/<name>/ros2.toml): the Pupper v3's is its authors' stack, a robot without one keeps
the generic topics, flags override it, and a bad file is refused naming the file, the field and what was expected."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from trot.deploy.ros2.args import add_deploy_ros2_args, profile_from_args, topics_from_args
from trot.deploy.ros2.profile import GENERIC, ProfileError, load_profile_file, load_ros2_profile
from trot.deploy.ros2.topics import Ros2Topics
from trot.robots import load_robot

PUPPER = load_robot("pupper_v3")


def test_the_pupper_profile_is_the_authors_bring_up():
    """Each value as Nate711/pupperv3-monorepo @ 11b6d52 has it (neural_controller/launch/config.yaml, launch.py,
    joy_utils/src/estop_controller.cpp)."""
    p = load_ros2_profile(PUPPER)
    assert p.file == PUPPER.folder / "ros2.toml" and p.rmw == "rmw_fastrtps_cpp"
    t = p.ros2_topics()
    names = {f: t.ros_name(f) for f in ("imu", "joint_states", "cmd_vel", "joint_commands", "kp_commands",
                                        "kd_commands", "robot_estop")}  # fmt: skip
    assert names == {
        "imu": "/imu_sensor_broadcaster/imu",
        "joint_states": "/joint_states",
        "cmd_vel": "/cmd_vel",
        "joint_commands": "/forward_position_controller/commands",
        "kp_commands": "/forward_kp_controller/commands",
        "kd_commands": "/forward_kd_controller/commands",
        "robot_estop": "/emergency_stop",
    }
    assert t.imu_frame_id == "base_link" and t.estop == "estop"  # trot's own Bool e-stop stays
    assert p.imu_linear_acceleration is False
    sw = p.controllers
    assert sw.manager_name() == "/controller_manager"
    assert sw.activate == ("forward_position_controller", "forward_kp_controller", "forward_kd_controller")
    assert sw.deactivate == ("neural_controller", "neural_controller_three_legged")
    assert (sw.switch_timeout_s, p.watchdog_timeout_ms) == (5.0, 100.0)
    # The profile's names resolve under a namespace like every other topic (tests run the stack under one).
    assert p.ros2_topics("x").ros_name("kp_commands") == "/x/forward_kp_controller/commands"


def test_a_robot_without_a_profile_keeps_the_generic_topics():
    go2 = load_robot("go2")
    assert not (go2.folder / "ros2.toml").exists() and load_ros2_profile(go2) is GENERIC
    t = GENERIC.ros2_topics()
    assert t == Ros2Topics() and t.ros_name("imu") == "/imu/data" and not t.has("kp_commands")
    assert GENERIC.controllers is None and not GENERIC.gains_topics


def args(*argv: str) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    add_deploy_ros2_args(p)
    return p.parse_args(list(argv))


def test_flags_override_the_profile_and_none_gives_the_generic_topics(tmp_path):
    a = args("--ros_topic", "imu=/other/imu", "--ros_namespace", "ns")
    profile = profile_from_args(a, PUPPER)
    t = topics_from_args(a.ros_namespace, a.ros_topic, a.ros_qos, profile.topics)
    assert t.ros_name("imu") == "/other/imu" and t.ros_name("kp_commands") == "/ns/forward_kp_controller/commands"
    assert profile_from_args(args("--ros_profile", "none"), PUPPER) is GENERIC
    mine = tmp_path / "mine.toml"
    mine.write_text('[topics]\nimu = "my/imu"\n')
    p = profile_from_args(args("--ros_profile", str(mine)), PUPPER)
    assert p.file == mine and p.topics == {"imu": "my/imu"} and p.controllers is None


def test_deploy_builds_the_profiled_transport_for_the_bundles_robot():
    pytest.importorskip("cyclonedds")
    from trot.deploy.ros2.args import transport_from_args
    from trot.deploy.ros2.bringup import DdsBringupTransport

    tr = transport_from_args(args("--ros2_backend", "dds"), PUPPER)
    assert isinstance(tr, DdsBringupTransport) and tr.profile.controllers is not None
    assert tr.describe.endswith("profile pupper_v3/ros2.toml")
    assert tr.topics.ros_name("imu") == "/imu_sensor_broadcaster/imu"
    plain = transport_from_args(args("--ros2_backend", "dds", "--ros_profile", "none"), PUPPER)
    assert plain.profile is GENERIC and plain.topics.ros_name("imu") == "/imu/data"


BAD = [
    ('[controller]\nmanager = "x"\n', "controller", "one of the tables"),
    ('[topics]\nimuu = "x"\n', "topics.imuu", "one of the fields"),
    ('[middleware]\nrmw = "rmw_zenoh_cpp"\n', "middleware.rmw", "one of rmw_cyclonedds_cpp, rmw_fastrtps_cpp"),
    ('[gains]\nkp = "a/commands"\n', "gains.kd", "a topic name (kp and kd come together)"),
    ('[estop]\ntopic = "e"\ntype = "std_msgs/msg/String"\n', "estop.type", "one of std_msgs/msg/Empty"),
    ('[topics]\nimu = "9imu"\n', "topics.imu", "a ROS name"),
    ('[estop]\ntopic = "a//b"\ntype = "std_msgs/msg/Empty"\n', "estop.topic", "a ROS name"),
    ("[imu]\nlinear_acceleration = 0\n", "imu.linear_acceleration", "true or false"),
    ('[controllers]\nactivate = []\n', "controllers.activate", "at least one controller"),
    ('[controllers]\nactivate = ["a", "b"]\ndeactivate = ["b"]\n', "controllers.deactivate",
     "no controller that is also in controllers.activate"),
    ('[controllers]\nactivate = ["a", "a"]\n', "controllers.activate", "each controller once"),
    ('[controllers]\nactivate = ["a"]\nswitch_timeout_s = -1\n', "controllers.switch_timeout_s", "> 0"),
    ("[watchdog]\ntimeout_ms = true\n", "watchdog.timeout_ms", "a finite number > 0"),
    ("[topics\n", "<file>", "valid TOML"),
]  # fmt: skip


@pytest.mark.parametrize("text, field, expected", BAD, ids=[b[1] + str(i) for i, b in enumerate(BAD)])
def test_a_bad_profile_is_refused_naming_file_field_and_expected(tmp_path, text, field, expected):
    path = tmp_path / "ros2.toml"
    path.write_text(text)
    with pytest.raises(ProfileError) as err:
        load_profile_file(path)
    message = str(err.value)
    assert message.startswith(f"{path}: field '{field}' = ") and expected in message, message
    assert isinstance(err.value, ValueError)  # the deploy CLI refuses ValueErrors from the transport's builder


def test_a_missing_profile_file_named_on_the_command_line_is_refused(tmp_path):
    with pytest.raises(ProfileError, match=r"nope\.toml: field '<file>'.*expected an existing ros2.toml"):
        load_profile_file(Path(tmp_path / "nope.toml"))
