"""The two processes of test_ros2_interop.py, each run as `python ros2_interop_peers.py ROLE SPEC_JSON`.

- `robot`: the robot's ROS 2 drivers and an operator, on raw Cyclone DDS or rclpy (`spec["backend"]`), with the QoS
  stock nodes use (not trot's own profiles, so a wrong profile on trot's side cannot be mirrored here): publishes
  Imu and JointState best effort with fresh stamps (JointState in another joint order), a Twist on cmd_vel, and one
  latched e-stop `true` before anyone listens; takes every topic trot publishes, subscribing to the latched gains
  only after the first command arrived. Exits when it has everything, trot's e-stop included (or at the
  deadline), and prints JSON.
- `trot`: the deploy loop's transport (`make_ros2_transport(spec["backend"])`): opens, polls, sends targets and
  gains, reports diagnostics, and once it saw cmd_vel and the robot's e-stop raises its own host e-stop; runs until
  its stdin closes, then prints JSON.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections import deque
from dataclasses import replace

import numpy as np

from trot.deploy.link import ControlMode
from trot.deploy.ros2 import convert
from trot.deploy.ros2.topics import QosProfile, Ros2Topics

PERIOD_S = 0.01
# How stock nodes publish and subscribe: SensorDataQoS (best effort) for drivers' sensor streams, the ROS defaults
# (reliable, volatile, 10) for teleop and command consumers, latched (transient local) for the e-stop and gains.
PEER_QOS = {
    "imu": QosProfile("best_effort", "volatile", 5),
    "joint_states": QosProfile("best_effort", "volatile", 5),
    "cmd_vel": QosProfile("reliable", "volatile", 10),
    "estop": QosProfile("reliable", "transient_local", 1),
    "joint_commands": QosProfile("reliable", "volatile", 10),
    "joint_targets": QosProfile("reliable", "volatile", 10),
    "joint_gains": QosProfile("reliable", "transient_local", 1),
    "diagnostics": QosProfile("reliable", "volatile", 10),
}
TAKES = {"joint_commands": "Float64MultiArray", "joint_targets": "JointState", "joint_gains": "Float64MultiArray",
         "diagnostics": "DiagnosticArray", "estop": "Bool"}  # fmt: skip


class Peer:
    """Publishers and subscriptions on one middleware, by Ros2Topics field: `publish(topic, msg)`, `take(topic)`."""

    def __init__(self, backend: str, topics: Ros2Topics, domain_id: int):
        self.backend, self.topics, self.domain_id = backend, topics, domain_id
        self._writers, self._inbox = {}, {}
        if backend == "dds":
            from trot.deploy.ros2 import dds, msgs

            self.T, self.node = msgs.IDL_TYPES, dds.DdsNode(topics, domain_id)
        else:
            from trot.deploy.ros2.rclpy_msgs import rclpy_message_types
            from trot.deploy.ros2.rclpy_node import RclpyNode

            self.T, self.node = rclpy_message_types(), RclpyNode("robot_peer", topics, domain_id)
            self.node.start()

    def publish(self, topic: str, msg) -> None:
        if topic not in self._writers:
            cls = type(msg)
            self._writers[topic] = (self.node.writer(topic, cls).write if self.backend == "dds"
                                    else self.node.publisher(topic, cls).publish)  # fmt: skip
        self._writers[topic](msg)

    def subscribe(self, topic: str, type_name: str) -> None:
        cls = getattr(self.T, type_name)
        if self.backend == "dds":
            self._inbox[topic] = self.node.reader(topic, cls)
        else:
            self._inbox[topic] = deque(maxlen=64)
            self.node.subscribe(topic, cls, self._inbox[topic].append)

    def take(self, topic: str) -> list:
        inbox = self._inbox[topic]
        if self.backend == "dds":
            return [s for s in inbox.take(N=64) if s.sample_info.valid_data]
        out = []
        while inbox:
            out.append(inbox.popleft())
        return out

    def close(self) -> None:
        self.node.close()


def robot(spec: dict) -> dict:
    joints, order = spec["joints"], spec["order"]
    topics = replace(Ros2Topics(namespace=spec["namespace"]), **{f"{t}_qos": q for t, q in PEER_QOS.items()})
    peer = Peer(spec["backend"], topics, spec["domain_id"])
    T, n = peer.T, len(joints)
    peer.publish("estop", convert.make_bool(T, True))  # once, before trot exists: latched
    for topic in ("joint_commands", "joint_targets", "diagnostics", "estop"):
        peer.subscribe(topic, TAKES[topic])
    got: dict[str, list] = {}
    deadline = time.monotonic() + spec["timeout_s"]
    # Its own latched true comes back to it (a node hears its own publications): trot's is the second.
    while time.monotonic() < deadline and not (got.get("joint_gains") and got.get("diagnostics") and
                                               sum(m.data for m in got.get("estop", [])) >= 2):  # fmt: skip
        stamp = time.time()
        shuffled = [[values[i] for i in order] for values in (joints, spec["pos"], spec["vel"], spec["eff"])]
        peer.publish("imu", convert.arrays_to_imu(T, spec["quat"], spec["gyro"], spec["accel"], stamp))
        peer.publish("joint_states", convert.arrays_to_joint_state(T, *shuffled, stamp=stamp))
        peer.publish("cmd_vel", convert.command_to_twist(T, spec["command"]))
        for topic in list(peer._inbox):
            got.setdefault(topic, []).extend(peer.take(topic))
        if got.get("joint_commands") and "joint_gains" not in peer._inbox:
            peer.subscribe("joint_gains", TAKES["joint_gains"])  # after trot published them: only latching delivers
        time.sleep(PERIOD_S)
    out = {"missing": sorted(t for t in TAKES if not got.get(t)), "estop": [bool(m.data) for m in got.get("estop", [])]}
    if got.get("joint_commands"):
        out["joint_commands"] = convert.float64_multiarray_to_command(got["joint_commands"][-1], n).tolist()
    if got.get("joint_targets"):
        msg = got["joint_targets"][-1]
        out["joint_targets"] = convert.joint_state_to_targets(msg, joints).tolist()
        out["target_names"] = list(msg.name)
    if got.get("joint_gains"):
        out["joint_gains"] = [g.tolist() for g in convert.float64_multiarray_to_gains(got["joint_gains"][-1], n)]
    if got.get("diagnostics"):
        status = got["diagnostics"][-1].status[0]
        out["diagnostics"] = [status.name, convert.status_level(status), status.hardware_id,
                              convert.status_values(status)]  # fmt: skip
    peer.close()
    return out


def trot(spec: dict) -> dict:
    from trot.deploy.ros2.transport import CmdVelCommand, make_ros2_transport

    joints = spec["joints"]
    link = make_ros2_transport(spec["backend"], joint_names=joints, topics=Ros2Topics(namespace=spec["namespace"]),
                               domain_id=spec["domain_id"], hardware_id="pupper_v3", control_dt=0.02)  # fmt: skip
    stdin_closed = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), stdin_closed.set()), daemon=True).start()
    out = {"class": type(link).__name__, "backend": link.backend, "samples": 0, "frames": {}}
    link.open(spec["timeout_s"])
    target, kp, kd = (np.asarray(spec[k], dtype=float) for k in ("target", "kp", "kd"))
    deadline, tick = time.monotonic() + spec["timeout_s"], 0
    while not stdin_closed.is_set() and time.monotonic() < deadline:
        poll = link.poll()
        out["samples"] += len(poll.samples)
        for kind, count in poll.frames.items():
            out["frames"][kind] = out["frames"].get(kind, 0) + count
        if poll.samples:
            s = poll.samples[-1]
            arrays = (s.joint_pos, s.joint_vel, s.joint_current, s.imu_quat, s.gyro, s.accel)
            out["state"] = [a.tolist() for a in arrays]
        out["estop_from"] = out.get("estop_from") or poll.peer_estop_from
        velocity = CmdVelCommand(link).velocity(None).tolist()
        if any(velocity):  # zero once the robot side has gone for cmd_vel_timeout_s
            out["velocity"] = velocity
        link.send(ControlMode.POSITION, target, kp, kd)
        link.report({"t": tick * 0.02, "state": "RUNNING", "mode": "POSITION"}, overruns=0, missed_ticks=0, reason="")
        if out["estop_from"] and "velocity" in out:
            link.estop(2)  # EStopReason.HOST: published once, latched
        tick += 1
        time.sleep(PERIOD_S)
    out["lost"] = poll.lost
    link.close()
    return out


if __name__ == "__main__":
    role, spec = sys.argv[1], json.loads(sys.argv[2])
    print(json.dumps({"robot": robot, "trot": trot}[role](spec)), flush=True)
