"""`trot bench ros2`: rate and latency of trot's ROS 2 transport against a robot on each middleware, on loopback.

For each pair (trot's transport: raw Cyclone DDS or rclpy; the robot's nodes: raw Cyclone DDS or rclpy on Fast DDS)
two processes run: the robot publishes `sensor_msgs/Imu` and `JointState` best effort at `--state_hz` (the
emulator's 250 Hz) and takes trot's `joint_targets`; trot's transport (the deploy loop's own receive path, in its
middleware's thread) opens, then for `--seconds` takes the sensors and publishes targets at the control rate (50 Hz).
Latency is arrival wall-clock time minus the header stamp the sender wrote just before publishing (one host, one
clock). The reference is the raw-DDS pair measured in the same run. DDS stays on loopback: Cyclone DDS with
`dds.loopback_config_xml()`, Fast DDS with the loopback profile (`fastdds`). rclpy pairs need rclpy to import here
(`pip install trot[ros2-rclpy]`); they are left out, saying why, where it does not.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections import deque

import numpy as np

PAIRS = [("dds", "dds"), ("dds", "rclpy"), ("rclpy", "dds"), ("rclpy", "rclpy")]  # (trot, robot)
CONTROL_HZ = 50.0
JOINTS = [f"joint_{i}" for i in range(12)]


def add_bench_args(p: argparse.ArgumentParser) -> None:
    """Flags of `trot bench ros2`."""
    p.add_argument("--seconds", type=float, default=5.0, help="measuring window per pair")
    p.add_argument("--state_hz", type=float, default=250.0, help="the robot's JointState rate")
    p.add_argument("--domain_id", type=int, default=211, help="DDS domain of the runs (one pair at a time)")
    p.add_argument("--role", choices=["trot", "robot"], default=None, help=argparse.SUPPRESS)  # a pair's process
    p.add_argument("--backend", choices=["dds", "rclpy"], default=None, help=argparse.SUPPRESS)


def _node(backend: str, domain_id: int):
    """(message types, publish(topic, msg), subscribe(topic, type, callback), close) on one middleware."""
    from trot.deploy.ros2.topics import Ros2Topics

    if backend == "dds":
        import threading

        from trot.deploy.ros2 import dds, msgs

        node, stop, readers = dds.DdsNode(Ros2Topics(), domain_id), threading.Event(), []

        def subscribe(topic, cls, callback):
            reader = node.reader(topic, cls)

            def loop():  # what the transport does: block in a wait, stamp each sample as it is taken
                from cyclonedds.core import InstanceState, ReadCondition, SampleState, ViewState, WaitSet
                from cyclonedds.util import duration

                waitset = WaitSet(node.participant)
                waitset.attach(ReadCondition(reader, SampleState.NotRead | ViewState.Any | InstanceState.Any))
                while not stop.is_set():
                    waitset.wait(duration(milliseconds=50))
                    for sample in reader.take(N=64):
                        if sample.sample_info.valid_data:  # a writer going away leaves a sample with no data
                            callback(sample)

            readers.append(threading.Thread(target=loop, daemon=True))
            readers[-1].start()

        writers = {}

        def publish(topic, msg):
            if topic not in writers:
                writers[topic] = node.writer(topic, type(msg))
            writers[topic].write(msg)

        def close():
            stop.set()
            for thread in readers:
                thread.join(timeout=1.0)
            node.close()

        return msgs.IDL_TYPES, publish, subscribe, close
    from trot.deploy.ros2.rclpy_msgs import rclpy_message_types
    from trot.deploy.ros2.rclpy_node import RclpyNode

    node, publishers = RclpyNode("trot_bench_robot", Ros2Topics(), domain_id), {}

    def publish(topic, msg):
        if topic not in publishers:
            publishers[topic] = node.publisher(topic, type(msg))
        publishers[topic].publish(msg)

    def subscribe(topic, cls, callback):
        node.subscribe(topic, cls, callback)
        if node._spin is None:
            node.start()

    return rclpy_message_types(), publish, subscribe, node.close


def _stamp_latency(msg, arrived: float, into: list) -> None:
    from trot.deploy.ros2 import convert

    into.append(arrived - convert.seconds_from_stamp(msg.header.stamp))


def run_robot(backend: str, domain_id: int, state_hz: float) -> dict:
    """The robot's side: Imu and JointState out at state_hz until stdin closes, joint_targets in."""
    import threading

    from trot.deploy.ros2 import convert

    T, publish, subscribe, close = _node(backend, domain_id)
    latencies: list[float] = []
    subscribe("joint_targets", T.JointState, lambda m: _stamp_latency(m, time.time(), latencies))
    done = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), done.set()), daemon=True).start()
    sent, period, zeros = 0, 1.0 / state_hz, [0.0] * len(JOINTS)
    start = next_t = time.monotonic()
    while not done.is_set():
        stamp = time.time()
        publish("imu", convert.arrays_to_imu(T, [1.0, 0, 0, 0], [0, 0, 0], [0, 0, 9.81], stamp))
        publish("joint_states", convert.arrays_to_joint_state(T, JOINTS, zeros, zeros, zeros, stamp=stamp))
        sent += 1
        next_t += period
        time.sleep(max(0.0, next_t - time.monotonic()))
    close()
    return {"sent_hz": sent / (time.monotonic() - start), "latency_s": latencies}


def run_trot(backend: str, domain_id: int, seconds: float) -> dict:
    """trot's side: the transport takes Imu and JointState (stamping arrivals as the loop's would be), publishes
    targets at CONTROL_HZ for `seconds` after it opened."""
    from trot.deploy.link import ControlMode
    from trot.deploy.ros2.transport import make_ros2_transport

    link = make_ros2_transport(backend, joint_names=JOINTS, domain_id=domain_id, control_dt=1.0 / CONTROL_HZ)
    arrivals: deque = deque()
    hook = link._on_message

    def on_message(topic, msg):  # beside the transport's own hook: the wall-clock arrival, for the latency
        if topic == "joint_states":
            arrivals.append((time.time(), msg))
        hook(topic, msg)

    link._on_message = on_message  # before the middleware is joined: its callbacks are bound in open()
    zeros = np.zeros(len(JOINTS))
    opened = time.monotonic()
    link.open(30.0)
    open_s = time.monotonic() - opened
    arrivals.clear()
    start = next_t = time.monotonic()
    while time.monotonic() - start < seconds:
        link.poll()
        link.send(ControlMode.POSITION, zeros, zeros, zeros)
        next_t += 1.0 / CONTROL_HZ
        time.sleep(max(0.0, next_t - time.monotonic()))
    window = time.monotonic() - start
    received = list(arrivals)
    link.close()
    return {"open_s": open_s, "received": len(received), "window_s": window,
            "latency_s": [t - (m.header.stamp.sec + m.header.stamp.nanosec * 1e-9) for t, m in received]}  # fmt: skip


def _figures(latency_s: list[float]) -> dict:
    ms = 1e3 * np.asarray(latency_s) if latency_s else np.array([np.nan])
    return {"p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99)), "max_ms": float(ms.max())}


def bench_pair(trot_backend: str, robot_backend: str, domain_id: int, seconds: float, state_hz: float) -> dict:
    """Both processes of one pair, each with the loopback configuration of its middleware; their figures."""
    from trot.deploy.ros2 import dds, fastdds

    env = {**os.environ, "CYCLONEDDS_URI": dds.loopback_config_xml(), **fastdds.loopback_env(),
           "RMW_IMPLEMENTATION": "rmw_fastrtps_cpp", "ROS_DOMAIN_ID": str(domain_id)}  # fmt: skip
    for name in fastdds.WIDENING_VARIABLES:
        env.pop(name, None)
    common = ["--domain_id", str(domain_id), "--seconds", str(seconds), "--state_hz", str(state_hz)]
    cmd = [sys.executable, "-m", "trot.cli", "bench", "ros2", *common, "--role"]
    robot = subprocess.Popen([*cmd, "robot", "--backend", robot_backend], env=env, stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        trot = subprocess.run([*cmd, "trot", "--backend", trot_backend], env=env, capture_output=True, text=True,
                              timeout=seconds + 120)  # fmt: skip
    finally:
        robot_out, _ = robot.communicate(input="", timeout=60)  # closing its stdin ends the robot
    if trot.returncode != 0 or robot.returncode != 0:
        raise SystemExit(f"trot bench ros2: trot {trot_backend} / robot {robot_backend} failed: {trot.stderr[-2000:]}")
    t, r = json.loads(trot.stdout.strip().splitlines()[-1]), json.loads(robot_out.strip().splitlines()[-1])
    return {"trot": trot_backend, "robot": robot_backend, "open_s": t["open_s"], "sent_hz": r["sent_hz"],
            "state_rate_hz": t["received"] / t["window_s"], "state": _figures(t["latency_s"]),
            "targets": _figures(r["latency_s"]), "targets_received": len(r["latency_s"])}  # fmt: skip


def format_bench(rows: list[dict], state_hz: float, skipped: str | None) -> str:
    lines = [f"JointState {state_hz:g} Hz robot -> trot (best effort), joint_targets {CONTROL_HZ:g} Hz trot -> robot; "
             "latency = arrival - header stamp, one host clock; reference: the dds/dds pair of this run",
             f"{'trot':6} {'robot':6} {'open s':>6} {'sent Hz':>7} {'got Hz':>7} {'state ms p50':>12} {'p99':>6} "
             f"{'max':>6} {'targets ms p50':>14} {'p99':>6} {'max':>6}"]  # fmt: skip
    for row in rows:
        s, c = row["state"], row["targets"]
        lines.append(f"{row['trot']:6} {row['robot']:6} {row['open_s']:6.2f} {row['sent_hz']:7.1f} "
                     f"{row['state_rate_hz']:7.1f} {s['p50_ms']:12.2f} {s['p99_ms']:6.2f} {s['max_ms']:6.2f} "
                     f"{c['p50_ms']:14.2f} {c['p99_ms']:6.2f} {c['max_ms']:6.2f}")  # fmt: skip
    if skipped:
        lines.append(f"rclpy pairs left out: {skipped}")
    return "\n".join(lines)


def run_bench(args: argparse.Namespace) -> int:
    """`trot bench ros2`."""
    if args.role == "robot":
        print(json.dumps(run_robot(args.backend, args.domain_id, args.state_hz)), flush=True)
        return 0
    if args.role == "trot":
        print(json.dumps(run_trot(args.backend, args.domain_id, args.seconds)), flush=True)
        return 0
    from trot.deploy.ros2.rclpy_node import import_problem

    problem = import_problem()
    pairs = [p for p in PAIRS if problem is None or "rclpy" not in p]
    rows = [bench_pair(*pair, args.domain_id, args.seconds, args.state_hz) for pair in pairs]
    print(format_bench(rows, args.state_hz, problem), flush=True)
    return 0
