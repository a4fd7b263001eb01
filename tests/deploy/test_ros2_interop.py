"""trot's ROS 2 transport against ROS 2 nodes on the other middleware: raw Cyclone DDS and rclpy on Fast DDS (the
default RMW, a stock Pupper v3's), each side in a process of its own, every topic of deploy/ROS2.md both ways.

The matrix: trot's transport (raw DDS, rclpy) x the robot's nodes (raw DDS, rclpy). The robot side publishes with
the QoS stock drivers use (best-effort sensor streams: trot's JointState and Imu subscriptions must be best effort
to hear them) and subscribes as stock consumers do. Everything stays on loopback: Cyclone DDS with the loopback
configuration, checked in its trace; Fast DDS with the loopback profile, and every Fast DDS participant's announced
addresses (seen in a Cyclone DDS observer's trace) 127.0.0.1 only. rclpy cases skip, saying why, without the
`ros2-rclpy` extra.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("cyclonedds")

import ros2_rclpy  # noqa: E402  (tests/ros2_rclpy.py)

from trot.deploy.ros2 import dds, xtypes  # noqa: E402
from trot.robots import load_robot  # noqa: E402

PEERS = Path(__file__).with_name("ros2_interop_peers.py")
TIMEOUT_S = 30.0  # each process's own deadline; a busy machine starts rclpy slowly
ROBOT = load_robot("pupper_v3")
BACKENDS = ["dds", "rclpy"]


@pytest.fixture
def loopback_dds(tmp_path, monkeypatch):
    """CYCLONEDDS_URI = the loopback configuration, each process tracing to tmp_path; no inherited xtypes fragment."""
    monkeypatch.setenv("CYCLONEDDS_URI", dds.loopback_config_xml(str(tmp_path / "dds-${CYCLONEDDS_PID}.log")))
    assert dds.loopback_config_problems() == []
    return tmp_path


def domain_id(trot_backend: str, robot_backend: str) -> int:
    """A domain of this test process and case: apart from other runs on this host and from the other DDS tests."""
    return 150 + (os.getpid() % 16) * 4 + 2 * BACKENDS.index(trot_backend) + BACKENDS.index(robot_backend)


def spawn(role: str, spec: dict) -> subprocess.Popen:
    env = ros2_rclpy.rclpy_env(spec["domain_id"]) if spec["backend"] == "rclpy" else dict(os.environ)
    return subprocess.Popen([sys.executable, str(PEERS), role, json.dumps(spec)], env=env, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip


def finish(proc: subprocess.Popen, timeout: float) -> tuple[dict, str]:
    """The process's JSON line and stderr, once it exits: its stdin closed (which ends trot's side)."""
    try:
        out, err = proc.communicate(input="", timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err[-3000:]
    return json.loads(out.strip().splitlines()[-1]), err


@pytest.mark.parametrize("robot_backend", BACKENDS)
@pytest.mark.parametrize("trot_backend", BACKENDS)
def test_every_topic_crosses_between_trot_and_a_robot_on_either_middleware(
    trot_backend, robot_backend, loopback_dds, request
):
    if "rclpy" in (trot_backend, robot_backend):
        ros2_rclpy.require_rclpy()
    rng = np.random.default_rng(7)
    n, quat = ROBOT.num_joints, rng.standard_normal(4)
    common = {"joints": list(ROBOT.joint_names), "namespace": f"trot_interop_{os.getpid()}",
              "domain_id": domain_id(trot_backend, robot_backend), "timeout_s": TIMEOUT_S}  # fmt: skip
    robot_spec = {**common, "backend": robot_backend, "order": rng.permutation(n).tolist(),
                  "quat": (quat / np.linalg.norm(quat)).tolist(), "gyro": rng.standard_normal(3).tolist(),
                  "accel": rng.standard_normal(3).tolist(), "pos": rng.uniform(-1, 1, n).tolist(),
                  "vel": rng.standard_normal(n).tolist(), "eff": rng.standard_normal(n).tolist(),
                  "command": [0.3, -0.2, 0.5]}  # fmt: skip
    trot_spec = {**common, "backend": trot_backend, "target": rng.uniform(-1, 1, n).tolist(),
                 "kp": np.full(n, 5.0).tolist(), "kd": np.full(n, 0.25).tolist()}  # fmt: skip

    # A Cyclone DDS participant in the domain whatever the pair: its trace shows every participant's addresses.
    with dds.DdsNode(domain_id=common["domain_id"]):
        robot = spawn("robot", robot_spec)
        trot = spawn("trot", trot_spec)
        try:
            robot_out, robot_err = finish(robot, 2 * TIMEOUT_S)
        finally:
            trot_out, trot_err = finish(trot, 2 * TIMEOUT_S)
    pair = f"trot {trot_backend} <-> robot {robot_backend}"

    # What the robot published reached trot's loop: joint states reordered by name, the Twist, the latched e-stop.
    assert trot_out["class"] == {"dds": "Ros2Transport", "rclpy": "RclpyTransport"}[trot_backend]
    assert trot_out["lost"] is None and trot_out["samples"] > 0, (pair, trot_out)
    pos, vel, eff, quat_r, gyro, accel = trot_out["state"]
    np.testing.assert_array_equal(pos, robot_spec["pos"])
    np.testing.assert_array_equal(vel, robot_spec["vel"])
    np.testing.assert_array_equal(eff, robot_spec["eff"])
    np.testing.assert_array_equal(quat_r, robot_spec["quat"])
    np.testing.assert_array_equal(gyro, robot_spec["gyro"])
    np.testing.assert_array_equal(accel, robot_spec["accel"])
    np.testing.assert_array_equal(trot_out["velocity"], robot_spec["command"])
    assert trot_out["estop_from"] == f"/{common['namespace']}/estop is true"
    assert trot_out["frames"]["Imu"] > 0 and trot_out["frames"]["JointState"] > 0 and trot_out["frames"]["Bool"] >= 1

    # ... and what trot published reached the robot: targets, the latched gains, diagnostics, the host e-stop.
    assert robot_out["missing"] == [], (pair, robot_out, robot_err[-2000:])
    np.testing.assert_array_equal(robot_out["joint_commands"], trot_spec["target"])
    np.testing.assert_array_equal(robot_out["joint_targets"], trot_spec["target"])
    assert robot_out["target_names"] == list(ROBOT.joint_names)
    np.testing.assert_array_equal(robot_out["joint_gains"], [trot_spec["kp"], trot_spec["kd"]])
    name, level, hardware_id, values = robot_out["diagnostics"]
    assert (name, level, hardware_id) == ("trot: deploy", 0, "pupper_v3")
    assert values["state"] == "RUNNING" and values["backend"] == trot_backend
    assert robot_out["estop"] == [True, True]  # its own latched true, then trot's host e-stop

    # Cyclone DDS no longer fails on Fast DDS's type objects: it ignores them (xtypes.INTEROP_XML).
    for err in (trot_err, robot_err):
        assert "invalid type object" not in err, err[-2000:]
    check_loopback(loopback_dds, expected_fastdds=[trot_backend, robot_backend].count("rclpy"))


def check_loopback(traces: Path, expected_fastdds: int) -> None:
    """Every Cyclone DDS process applied the loopback configuration and used 127.0.0.1 only; every Fast DDS
    participant it saw announced 127.0.0.1 only, and there were as many as expected."""
    files = sorted(traces.glob("dds-*.log"))
    assert files, "no Cyclone DDS trace"
    fastdds_seen: dict[int, set[str]] = {}
    for trace in files:
        text = trace.read_text()
        assert dds.loopback_trace_problems(text) == [], trace
        for pid, addresses in ros2_rclpy.fastdds_participants(text).items():
            fastdds_seen.setdefault(pid, set()).update(addresses)
    assert len(fastdds_seen) == expected_fastdds, fastdds_seen
    assert all(addresses == {"127.0.0.1"} for addresses in fastdds_seen.values()), fastdds_seen


def test_the_interop_fragment_joins_any_cyclonedds_uri_and_cyclone_applies_it(tmp_path, monkeypatch):
    loopback = dds.loopback_config_xml(str(tmp_path / "dds.log"))
    combined = xtypes.with_interop(loopback)
    assert dds.uri_items(combined) == [loopback, xtypes.INTEROP_XML]
    assert dds.loopback_config_problems(combined) == []  # the fragment changes nothing about the network
    assert xtypes.with_interop("") == xtypes.INTEROP_XML
    own = loopback.replace("</Domain>", "<Compatibility><IgnoreTypeInformation>1.1</IgnoreTypeInformation>"
                                        "</Compatibility></Domain>")  # fmt: skip
    assert xtypes.with_interop(own) == own  # the user's own choice of vendors stands
    assert dds.uri_items("file:///a.xml, <X a='1,2'/>,b.xml") == ["file:///a.xml", "<X a='1,2'/>", "b.xml"]

    monkeypatch.setenv("CYCLONEDDS_URI", loopback)
    code = "from trot.deploy.ros2 import dds; dds.DdsNode(domain_id=int(__import__('sys').argv[1])).close()"
    subprocess.run([sys.executable, "-c", code, "149"], check=True, timeout=60)
    applied = (tmp_path / "dds.log").read_text()
    assert f"Domain/Compatibility/IgnoreTypeInformation/#text: {xtypes.EPROSIMA_VENDOR_ID}" in applied
    assert dds.loopback_trace_problems(applied) == []


def test_auto_takes_rclpy_only_where_it_imports_and_rclpy_asked_for_names_why_not(monkeypatch):
    """An rclpy that is installed but whose libraries do not load (a ROS 2 not sourced, wheels seen from another
    environment) must not be picked by `auto`: the transport would fail at open, on a robot, for nothing."""
    from trot.deploy.ros2 import rclpy_node
    from trot.deploy.ros2.transport import RclpyTransport, Ros2Transport, make_ros2_transport

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object() if name == "rclpy" else find_spec(name))
    problem = "ImportError: librcl_action.so: cannot open shared object file"
    monkeypatch.setattr(rclpy_node, "import_problem", lambda: problem)
    assert type(make_ros2_transport("auto", joint_names=["a"], domain_id=1)) is Ros2Transport
    with pytest.raises(ValueError, match=r"--ros2_backend rclpy: rclpy does not import \(ImportError: librcl_action"):
        make_ros2_transport("rclpy", joint_names=["a"], domain_id=1)
    monkeypatch.setattr(rclpy_node, "import_problem", lambda: None)
    assert type(make_ros2_transport("auto", joint_names=["a"], domain_id=1)) is RclpyTransport  # not connected yet
    assert type(make_ros2_transport("dds", joint_names=["a"], domain_id=1)) is Ros2Transport
