"""ROS 2 over raw Cyclone DDS, end to end between two processes, kept on the loopback interface.

The fixture points CYCLONEDDS_URI at the loopback configuration (interface lo, no multicast, peer
127.0.0.1) and asserts it is in force: in the variable, in what Cyclone DDS applied (its trace),
and in every address either process used.
"""

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest

pytest.importorskip("cyclonedds")

from trot.deploy.ros2 import convert, dds, msgs  # noqa: E402
from trot.deploy.ros2.msgs import IDL_TYPES as T  # noqa: E402
from trot.deploy.ros2.topics import Ros2Topics  # noqa: E402
from trot.robots import load_robot  # noqa: E402

DOMAIN_ID = 42
TIMEOUT_S = 8.0
SENSORS = {"imu": msgs.Imu, "joint_states": msgs.JointState, "cmd_vel": msgs.Twist, "estop": msgs.Bool}
COMMANDS = {
    "joint_commands": msgs.Float64MultiArray,
    "joint_targets": msgs.JointState,
    "joint_gains": msgs.Float64MultiArray,
    "diagnostics": msgs.DiagnosticArray,
}

# The other end (a stand-in for the robot's ROS 2 drivers): publishes the sensor topics (the
# e-stop once, latched, before anyone listens), takes the commands, prints them, exits.
PEER = r"""
import json, sys, time
from trot.deploy.ros2 import convert, dds, msgs
from trot.deploy.ros2.msgs import IDL_TYPES as T
from trot.deploy.ros2.topics import Ros2Topics

spec = json.loads(sys.argv[1])
joints, n = spec["joints"], len(spec["joints"])
node = dds.DdsNode(Ros2Topics(namespace=spec["namespace"]), domain_id=spec["domain_id"])
estop = node.writer("estop", msgs.Bool)  # kept: a deleted writer takes its latched sample along
estop.write(convert.make_bool(T, True))
shuffled = lambda values: [values[i] for i in spec["order"]]
sensors = {
    "imu": convert.arrays_to_imu(T, spec["quat"], spec["gyro"], spec["accel"], stamp=spec["stamp"]),
    "joint_states": convert.arrays_to_joint_state(
        T, shuffled(joints), *(shuffled(spec[k]) for k in ("pos", "vel", "eff")), stamp=spec["stamp"]
    ),
    "cmd_vel": convert.command_to_twist(T, spec["command"]),
}
writers = {"imu": node.writer("imu", msgs.Imu), "joint_states": node.writer("joint_states", msgs.JointState),
           "cmd_vel": node.writer("cmd_vel", msgs.Twist)}
readers = {t: node.reader(t, c) for t, c in (("joint_commands", msgs.Float64MultiArray),
           ("joint_targets", msgs.JointState), ("joint_gains", msgs.Float64MultiArray),
           ("diagnostics", msgs.DiagnosticArray))}
got = {}
deadline = time.monotonic() + spec["timeout_s"]
while len(got) < len(readers) and time.monotonic() < deadline:
    for topic, writer in writers.items():
        writer.write(sensors[topic])
    for topic, reader in readers.items():
        sample = dds.take_latest(reader)
        if sample is not None:
            got[topic] = sample
    time.sleep(0.02)
out = {"missing": sorted(set(readers) - set(got))}
if not out["missing"]:
    status = got["diagnostics"].status[0]
    out.update(
        joint_commands=convert.float64_multiarray_to_command(got["joint_commands"], n).tolist(),
        joint_targets=convert.joint_state_to_targets(got["joint_targets"], joints).tolist(),
        joint_gains=[g.tolist() for g in convert.float64_multiarray_to_gains(got["joint_gains"], n)],
        diagnostics=[status.name, convert.status_level(status), convert.status_values(status)],
    )
node.close()
print(json.dumps(out))
"""


@pytest.fixture
def loopback_dds(tmp_path, monkeypatch):
    """CYCLONEDDS_URI set to the loopback configuration, tracing each process to tmp_path."""
    monkeypatch.setenv("CYCLONEDDS_URI", dds.loopback_config_xml(str(tmp_path / "dds-${CYCLONEDDS_PID}.log")))
    uri = os.environ["CYCLONEDDS_URI"]
    assert '<NetworkInterface name="lo"/>' in uri
    assert "<AllowMulticast>false</AllowMulticast>" in uri
    assert '<Peer address="127.0.0.1"/>' in uri
    assert dds.loopback_config_problems() == []
    return tmp_path


def test_config_check_flags_configurations_that_leave_loopback():
    assert dds.loopback_config_problems(dds.loopback_config_xml()) == []
    open_config = dds.loopback_config_xml().replace('name="lo"', 'name="eth0"').replace(">false<", ">true<")
    problems = dds.loopback_config_problems(open_config)
    assert any("eth0" in p for p in problems) and any("AllowMulticast" in p for p in problems)
    assert dds.loopback_config_problems("") != []
    assert dds.loopback_trace_problems("selected interfaces: eth0 (index 2 priority 0 mc {})\n") != []
    used_elsewhere = "selected interfaces: lo (index 1)\nDomain/General/AllowMulticast/#text: false\n"
    assert dds.loopback_trace_problems(used_elsewhere + "add_peer_address: add udp/127.0.0.1:7410\n") == []
    problems = dds.loopback_trace_problems(used_elsewhere + "SPDP ST0 (data udp/192.0.2.2:7411@2)\n")
    assert problems == ["addresses used ['192.0.2.2']; expected only 127.0.0.1"]


def test_ros2_topics_travel_between_two_processes_over_loopback_only(loopback_dds):
    rng = np.random.default_rng(0)
    joints = list(load_robot("pupper_v3").joint_names)
    n = len(joints)
    quat = rng.standard_normal(4)
    spec = {
        "joints": joints,
        "order": rng.permutation(n).tolist(),  # the peer publishes joints in another order
        "namespace": f"trot_test_{os.getpid()}",  # keeps concurrent runs on this host apart
        "domain_id": DOMAIN_ID,
        "timeout_s": TIMEOUT_S,
        "quat": (quat / np.linalg.norm(quat)).tolist(),
        "gyro": rng.standard_normal(3).tolist(),
        "accel": rng.standard_normal(3).tolist(),
        "pos": rng.standard_normal(n).tolist(),
        "vel": rng.standard_normal(n).tolist(),
        "eff": rng.standard_normal(n).tolist(),
        "command": [0.3, -0.2, 0.5],
        "stamp": 1_700_000_000.25,
    }
    targets, kp, kd = rng.standard_normal(n), np.full(n, 5.0), np.full(n, 0.25)
    timing = {"state": "running", "period_ms": 20.0, "overruns": 0}
    topics = Ros2Topics(namespace=spec["namespace"])

    peer = subprocess.Popen(
        [sys.executable, "-c", PEER, json.dumps(spec)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        with dds.DdsNode(topics, domain_id=DOMAIN_ID) as node:
            # The e-stop reader joins late, after the peer's only e-stop write: transient-local.
            readers = {topic: node.reader(topic, cls) for topic, cls in SENSORS.items() if topic != "estop"}
            writers = {topic: node.writer(topic, cls) for topic, cls in COMMANDS.items()}
            writers["joint_gains"].write(convert.gains_to_float64_multiarray(T, kp, kd))  # once: latched
            got, senders = {}, {}
            deadline = time.monotonic() + TIMEOUT_S
            while peer.poll() is None and time.monotonic() < deadline:
                writers["joint_commands"].write(convert.command_to_float64_multiarray(T, targets))
                writers["joint_targets"].write(convert.targets_to_joint_state(T, joints, targets, stamp=1.0))
                if len(got) == len(SENSORS) - 1 and "estop" not in readers:
                    readers["estop"] = node.reader("estop", msgs.Bool)
                if len(got) == len(SENSORS):  # tells the peer we have everything
                    msg = convert.diagnostics(T, "trot: deploy", convert.OK, "running", timing, "pupper_v3")
                    writers["diagnostics"].write(msg)
                for topic, reader in readers.items():
                    sample = dds.take_latest(reader)
                    if sample is not None and topic not in got:
                        got[topic] = sample
                        handle = sample.sample_info.publication_handle
                        senders[topic] = reader.get_matched_publication_data(handle)
                time.sleep(0.02)
            own_key = node.participant.guid
        out, err = peer.communicate(timeout=TIMEOUT_S)
    finally:
        if peer.poll() is None:
            peer.kill()
            peer.wait()
    assert peer.returncode == 0, err
    assert set(got) == set(SENSORS), f"received {sorted(got)}; peer stderr: {err}"

    # What the peer published arrived unchanged, joint states reordered into the bundle's order.
    quat_r, gyro_r, accel_r = convert.imu_to_arrays(got["imu"])
    np.testing.assert_array_equal(quat_r, spec["quat"])
    np.testing.assert_array_equal(gyro_r, spec["gyro"])
    np.testing.assert_array_equal(accel_r, spec["accel"])
    assert convert.seconds_from_stamp(got["imu"].header.stamp) == pytest.approx(spec["stamp"], abs=1e-6)
    assert got["imu"].header.frame_id == "imu_link"
    for sent, received in zip(
        (spec["pos"], spec["vel"], spec["eff"]), convert.joint_state_to_arrays(got["joint_states"], joints)
    ):
        np.testing.assert_array_equal(received, sent)
    np.testing.assert_array_equal(convert.twist_to_command(got["cmd_vel"]), spec["command"])
    assert got["estop"].data is True

    # ... and what this side published reached the peer unchanged.
    back = json.loads(out)
    assert back["missing"] == []
    np.testing.assert_array_equal(back["joint_commands"], targets)
    np.testing.assert_array_equal(back["joint_targets"], targets)
    np.testing.assert_array_equal(back["joint_gains"], [kp, kd])
    assert back["diagnostics"] == [
        "trot: deploy",
        convert.OK,
        {"state": "running", "period_ms": "20", "overruns": "0"},
    ]

    # The samples came from the other process's participant, under ROS 2's wire names.
    for topic, cls in SENSORS.items():
        assert senders[topic].participant_key != own_key
        assert senders[topic].topic_name == topics.dds_name(topic)
        assert senders[topic].type_name == cls.__idl_typename__
    assert senders["imu"].topic_name == f"rt/{spec['namespace']}/imu/data"

    # Both processes applied the loopback configuration and used no address but 127.0.0.1.
    traces = sorted(loopback_dds.glob("dds-*.log"))
    assert len(traces) == 2, traces
    for trace in traces:
        assert dds.loopback_trace_problems(trace.read_text()) == [], trace
