"""`trot watchdog`: damping through the robot's own means when `trot deploy --transport ros2` stops commanding.

A forward command controller keeps writing its last command: if the deploy process dies (a crash, SIGKILL, the OOM
killer, a hung interpreter), the motors hold its last target at its last gains, indefinitely. This small process, its
own systemd unit beside the deploy unit (`trot flash` installs both), watches trot's command stream and commands
damping when it stops:

- The stream is `joint_targets` (sensor_msgs/JointState), which the deploy loop publishes every tick alongside the
  controller's position commands, and nothing else publishes (so the authors' animation node, which also drives the
  forward controllers, never arms it).
- Armed by the first message. When none arrives for `timeout_ms` (the robot profile's `[watchdog] timeout_ms`, 100 ms
  = 5 ticks of the Pupper's 20 ms loop, or --timeout_ms), it publishes damping `DAMPING_REPEATS` times
  `DAMPING_REPEAT_S` apart: kp 0 and kd = the contract's `damping_kd` (capped at `kd_max`) on the profile's kp and kd
  topics (forward command controllers), or on the latched `joint_gains` for a robot without them. Then it stays quiet
  (the controllers hold what it wrote) until the stream resumes, which re-arms it.
- Bound: damping is published between `timeout_ms` and `timeout_ms + check_ms` after the last message arrived (it
  checks every `check_ms`, 10 ms, and whenever a message arrives).

It never writes the topic it watches, nor the position commands: with kp 0 the target does not matter.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
import time
from dataclasses import dataclass

import numpy as np

log = logging.getLogger("trot.watchdog")

CHECK_MS = 10.0
DAMPING_REPEATS = 3  # a damping command written this many times (a message lost on the way is not the last word)
DAMPING_REPEAT_S = 0.02


@dataclass
class Watchdog:
    """The watchdog's logic on a clock it is handed: `heard(t)` on every stream message, `due(t)` each check."""

    timeout_s: float
    repeats: int = DAMPING_REPEATS
    repeat_s: float = DAMPING_REPEAT_S
    last: float | None = None  # arrival of the newest stream message; None: not armed yet
    fired_at: float | None = None  # when damping was first commanded for the current silence
    sent: int = 0  # damping commands sent for the current silence
    trips: int = 0

    def heard(self, t: float) -> bool:
        """A stream message arrived at t; True when it ends a silence the watchdog had damped."""
        resumed = self.fired_at is not None
        self.last, self.fired_at, self.sent = t, None, 0
        return resumed

    def due(self, t: float) -> bool:
        """Whether a damping command is to be sent now."""
        if self.last is None or t - self.last <= self.timeout_s or self.sent >= self.repeats:
            return False
        if self.fired_at is None:
            self.fired_at = t
            self.trips += 1
        elif t < self.fired_at + self.sent * self.repeat_s:
            return False
        self.sent += 1
        return True


def damping_gains(robot) -> tuple[np.ndarray, np.ndarray]:
    """(kp, kd) of damping: kp 0, kd the contract's damping_kd capped at kd_max (as the deploy loop's DAMPING)."""
    from trot.deploy.ros2.bringup import damping_kd

    n = robot.num_joints
    return np.zeros(n), np.full(n, damping_kd(robot))


# ---- the process -----------------------------------------------------------------------------------


class _DdsIo:
    """Raw Cyclone DDS: a reader on the stream, writers for the gains."""

    def __init__(self, topics, domain_id: int | None):
        from trot.deploy.ros2 import dds, msgs

        self.types = msgs.IDL_TYPES
        self.node = dds.DdsNode(topics, domain_id)
        self.domain_id = self.node.domain_id
        self._reader = self.node.reader("joint_targets", msgs.JointState)
        self._writers = {}
        for topic in ("kp_commands", "kd_commands") if topics.has("kp_commands") else ("joint_gains",):
            self._writers[topic] = self.node.writer(topic, msgs.Float64MultiArray)
        from cyclonedds.core import InstanceState, ReadCondition, SampleState, ViewState, WaitSet

        self._waitset = WaitSet(self.node.participant)
        self._waitset.attach(ReadCondition(self._reader, SampleState.NotRead | ViewState.Any | InstanceState.Any))

    def wait(self, timeout_s: float) -> int:
        """Messages on the stream that arrived, waiting up to timeout_s for one."""
        from cyclonedds.util import duration

        self._waitset.wait(duration(microseconds=int(1e6 * timeout_s)))
        return sum(1 for s in self._reader.take(N=64) if s.sample_info.valid_data)

    def publish(self, topic: str, msg) -> None:
        self._writers[topic].write(msg)

    def close(self) -> None:
        self.node.close()


class _RclpyIo:
    """rclpy: a subscription on the stream (its executor thread counts arrivals), publishers for the gains."""

    def __init__(self, topics, domain_id: int | None):
        import rclpy
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.signals import SignalHandlerOptions

        from trot.deploy.ros2.rclpy_msgs import rclpy_message_types
        from trot.deploy.ros2.topics import domain_id_from_env
        from trot.deploy.ros2.transport import rclpy_qos

        self.types = rclpy_message_types()
        self.domain_id = domain_id_from_env() if domain_id is None else domain_id
        self._context = rclpy.Context()
        rclpy.init(context=self._context, domain_id=self.domain_id, signal_handler_options=SignalHandlerOptions.NO)
        self._node = rclpy.create_node("trot_watchdog", context=self._context)
        self._arrived = threading.Semaphore(0)
        name, qos = topics.ros_name, lambda t: rclpy_qos(topics.qos(t))
        self._node.create_subscription(self.types.JointState, name("joint_targets"),
                                       lambda _: self._arrived.release(), qos("joint_targets"))  # fmt: skip
        self._publishers = {
            t: self._node.create_publisher(self.types.Float64MultiArray, name(t), qos(t))
            for t in (("kp_commands", "kd_commands") if topics.has("kp_commands") else ("joint_gains",))
        }
        self._executor = SingleThreadedExecutor(context=self._context)
        self._executor.add_node(self._node)
        self._spin = threading.Thread(target=self._executor.spin, name="trot-watchdog-rclpy", daemon=True)
        self._spin.start()

    def wait(self, timeout_s: float) -> int:
        count = int(self._arrived.acquire(timeout=timeout_s))
        while self._arrived.acquire(blocking=False):
            count += 1
        return count

    def publish(self, topic: str, msg) -> None:
        self._publishers[topic].publish(msg)

    def close(self) -> None:
        import rclpy

        self._executor.shutdown()
        self._node.destroy_node()
        rclpy.shutdown(context=self._context)


def run(robot, topics, domain_id: int | None, backend: str, timeout_s: float, check_s: float, stop: threading.Event):
    """Watch until `stop` is set; returns the number of times it damped."""
    import importlib.util

    from trot.deploy.ros2 import convert

    if backend == "auto":
        backend = "rclpy" if importlib.util.find_spec("rclpy") is not None else "dds"
    io = _RclpyIo(topics, domain_id) if backend == "rclpy" else _DdsIo(topics, domain_id)
    kp, kd = damping_gains(robot)
    if topics.has("kp_commands"):
        messages = [("kp_commands", convert.per_joint_float64_multiarray(io.types, kp)),
                    ("kd_commands", convert.per_joint_float64_multiarray(io.types, kd))]  # fmt: skip
        where = f"{topics.ros_name('kp_commands')} and {topics.ros_name('kd_commands')}"
    else:
        messages = [("joint_gains", convert.gains_to_float64_multiarray(io.types, kp, kd))]
        where = topics.ros_name("joint_gains")
    dog = Watchdog(timeout_s)
    stream = topics.ros_name("joint_targets")
    print(f"trot watchdog: {robot.name}, ROS 2 domain {io.domain_id} ({backend}): damping (kp 0, kd {kd[0]:g}) on "
          f"{where} when {stream} is silent for {1e3 * timeout_s:g} ms (checked every {1e3 * check_s:g} ms)",
          flush=True)  # fmt: skip
    try:
        while not stop.is_set():
            arrived = io.wait(check_s)
            now = time.monotonic()
            if arrived and dog.heard(now):
                log.info("%s resumed: watching again", stream)
            if dog.due(now):
                for topic, msg in messages:
                    io.publish(topic, msg)
                if dog.sent == 1:
                    log.warning("%s silent for %.0f ms (> %.0f ms): damping, kp 0 and kd %g on %s", stream,
                                1e3 * (now - dog.last), 1e3 * timeout_s, kd[0], where)  # fmt: skip
    finally:
        io.close()
    return dog.trips


def add_watchdog_args(p: argparse.ArgumentParser) -> None:
    """Flags of `trot watchdog` (argparse only)."""
    from trot.deploy.ros2.args import add_ros2_args

    p.add_argument("--robot", required=True, help="robot name or folder (its contract's damping_kd, its ROS 2 profile)")
    add_ros2_args(p)
    p.add_argument("--ros2_backend", choices=["auto", "rclpy", "dds"], default="auto",
                   help="auto: rclpy where it imports, else raw Cyclone DDS")  # fmt: skip
    p.add_argument("--dds_loopback", action="store_true", help="CYCLONEDDS_URI = the loopback-only configuration")
    p.add_argument("--timeout_ms", type=float, default=None,
                   help="silence that trips it (default: the profile's [watchdog] timeout_ms, else 100)")  # fmt: skip
    p.add_argument("--check_ms", type=float, default=CHECK_MS, help=f"how often it checks ({CHECK_MS:g})")


def run_watchdog(args: argparse.Namespace) -> int:
    """`trot watchdog`: run until SIGTERM or Ctrl-C."""
    if not logging.getLogger("trot.watchdog").handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("watchdog: %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False
    from trot.deploy.ros2.args import profile_from_args, topics_from_args
    from trot.robots import load_robot

    try:
        robot = load_robot(args.robot)
        profile = profile_from_args(args, robot)
        topics = topics_from_args(args.ros_namespace, args.ros_topic, args.ros_qos, profile.topics)
        timeout_ms = profile.watchdog_timeout_ms if args.timeout_ms is None else args.timeout_ms
        if not (timeout_ms > 0 and args.check_ms > 0):
            raise ValueError(f"--timeout_ms {timeout_ms} and --check_ms {args.check_ms}: expected both > 0")
    except (ValueError, FileNotFoundError) as e:
        print(f"trot watchdog: refused: {e}", file=sys.stderr, flush=True)
        return 2
    if args.dds_loopback:
        from trot.deploy.ros2.dds import loopback_config_xml, use_config

        use_config(loopback_config_xml())
    stop = threading.Event()
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
    trips = run(robot, topics, args.domain_id, args.ros2_backend, 1e-3 * timeout_ms, 1e-3 * args.check_ms, stop)
    print(f"trot watchdog: stopped; damped {trips} time(s)", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trot.deploy.watchdog", description=__doc__.split("\n")[0])
    add_watchdog_args(parser)
    return run_watchdog(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
