"""The deploy loop's `Transport` over ROS 2 topics (`deploy/ROS2.md`).

In: `sensor_msgs/Imu` and `sensor_msgs/JointState` (the loop's State), `geometry_msgs/Twist` on
`cmd_vel` (a velocity command source, `CmdVelCommand`), `std_msgs/Bool` on the e-stop topic. Out: the
targets as a forward command controller's `Float64MultiArray` and as a `JointState`, the gains on a
latched `Float64MultiArray` (kp row, kd row) whenever they change, and `DiagnosticArray` (the state
machine and the loop's timing) at `diagnostics_period_s` and at every state change.

`Ros2Transport` speaks raw Cyclone DDS (`dds.DdsNode`). `RclpyTransport` replaces its three middleware
hooks (`_connect`, `_publish`, `_disconnect`) with rclpy and is what `make_ros2_transport`
picks when rclpy imports; everything else (conversion, names, QoS, staleness, e-stop, gains,
diagnostics) is this module's shared code. Both are tested end to end, against each other and against the
emulator on either middleware (tests/deploy/test_ros2_interop.py, tests/hil/test_hil_ros2.py).

ROS 2 has no handshake, sequence numbers or CRC; how the loop's checks that relied on them map is in
ROS2.md, "Safety over ROS 2". In short: `open` waits for the first Imu and JointState (names checked
against the bundle's) instead of a HelloAck; a topic is fresh while messages with a newer header
stamp keep arriving, and the State's receive time is the older of the two topics', so that either
topic going quiet (or repeating its last stamp) trips the loop's `stale` check; a message that does
not convert is a lost link; the e-stop topic turning true is the robot side's e-stop.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import math
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np

from trot.deploy.commands import BaseCommand
from trot.deploy.link import ControlMode, Poll, Sample, StatusFlags, TransportError
from trot.deploy.ros2 import convert
from trot.deploy.ros2.topics import Ros2Topics, domain_id_from_env

# The message type (a `convert.MessageTypes` field) of each topic.
TOPIC_TYPES = {
    "imu": "Imu",
    "joint_states": "JointState",
    "cmd_vel": "Twist",
    "estop": "Bool",
    "joint_commands": "Float64MultiArray",
    "joint_targets": "JointState",
    "joint_gains": "Float64MultiArray",
    "diagnostics": "DiagnosticArray",
}
SENSOR_TOPICS = ("imu", "joint_states")
SUBSCRIBED = (*SENSOR_TOPICS, "cmd_vel", "estop")
# The e-stop topic is published too: a host e-stop (keyboard, SIGUSR1) is announced on it, latched.
PUBLISHED = ("joint_commands", "joint_targets", "joint_gains", "diagnostics", "estop")
DIAGNOSTICS_PERIOD_S = 0.5  # 2 Hz, plus one message at every state change
CMD_VEL_TIMEOUT_S = 0.5  # no Twist for this long: the velocity command is zero (stand)
OPEN_POLL_S = 0.005
MAX_TAKE = 64
READER_WAKE_MS = 50  # the DDS reader thread checks for close() this often while nothing arrives
# DiagnosticStatus level of each state; the others are OK.
STATE_LEVELS = {"DAMPING": convert.ERROR, "ESTOP_DAMPING": convert.WARN, "OFF": convert.WARN}


@dataclass
class _Sensor:
    """The newest fresh message of one sensor topic, converted."""

    kind: str  # "Imu", "JointState": the telemetry's frame names
    arrays: tuple | None = None  # imu_to_arrays or joint_state_to_arrays of it
    stamp: float = 0.0  # its header stamp, s (0: the publisher does not stamp)
    rx_time: float | None = None  # host monotonic clock when it arrived


@dataclass
class _Window:
    """Timing figures between two diagnostics messages."""

    ticks: int = 0
    interval_sum: float = 0.0
    intervals: int = 0
    jitter_max: float = 0.0
    late_max_ms: float = 0.0
    inference_max_ms: float = 0.0
    compute_max_ms: float = 0.0
    last_t: float | None = field(default=None, repr=False)


class Ros2Transport:
    """The deploy loop's link over ROS 2 topics, through raw Cyclone DDS."""

    name = "ros2"
    backend = "dds"

    def __init__(
        self,
        joint_names,
        topics: Ros2Topics | None = None,
        domain_id: int | None = None,
        hardware_id: str = "",
        control_dt: float = 0.02,
        diagnostics_period_s: float = DIAGNOSTICS_PERIOD_S,
        cmd_vel_timeout_s: float = CMD_VEL_TIMEOUT_S,
    ):
        self.joint_names = list(joint_names)
        self.topics = topics or Ros2Topics()
        self.domain_id = domain_id_from_env() if domain_id is None else domain_id
        if not 0 <= self.domain_id <= 232:
            raise ValueError(f"ROS 2 domain id {self.domain_id}; expected an integer in 0..232")
        self.hardware_id = hardware_id
        self.control_dt = control_dt
        self.diagnostics_period_s = diagnostics_period_s
        self.cmd_vel_timeout_s = cmd_vel_timeout_s
        namespace = self.topics.namespace.strip("/")
        self.describe = f"ros2 ({self.backend}) domain {self.domain_id}" + (
            f" namespace /{namespace}" if namespace else ""
        )
        self.types: convert.MessageTypes | None = None  # set by _connect
        self._connected = False
        self._sensors = {"imu": _Sensor("Imu"), "joint_states": _Sensor("JointState")}
        self._frames: dict[str, int] = {}
        self._lost: str | None = None
        self._velocity = np.zeros(3)
        self._velocity_t = -math.inf
        self._estop_on = False  # the e-stop topic's newest value
        self._estop_raised = False  # it turned true since the last poll
        self._estop_sent = False  # this side published its own e-stop (host e-stop)
        self._gains: tuple[np.ndarray, np.ndarray] | None = None  # last published
        self._window = _Window()
        self._diag_state: str | None = None
        self._diag_t = -math.inf
        # Messages in arrival order with the monotonic time they arrived, filled by the middleware's thread.
        self._inbox = {topic: deque(maxlen=MAX_TAKE) for topic in SUBSCRIBED}
        self._inbox_lock = threading.Lock()
        self._arrived: list[Sample] = []  # States built since the last poll, oldest first

    # ---- middleware hooks: raw Cyclone DDS (RclpyTransport replaces these three) --------------------

    def _connect(self) -> None:
        from trot.deploy.ros2 import dds, msgs

        self.types = msgs.IDL_TYPES
        self._node = dds.DdsNode(self.topics, self.domain_id)
        readers = {topic: self._node.reader(topic, self._type(topic)) for topic in SUBSCRIBED}
        self._writers = {topic: self._node.writer(topic, self._type(topic)) for topic in PUBLISHED}
        self._stop_reading = threading.Event()
        self._reader = threading.Thread(target=self._read_dds, args=(readers,), name="trot-dds-rx", daemon=True)
        self._reader.start()

    def _read_dds(self, readers: dict) -> None:
        """Reader thread: wake when a sample arrives (the wait releases the GIL), stamp it, put it in the inbox."""
        from cyclonedds.core import InstanceState, ReadCondition, SampleState, ViewState, WaitSet
        from cyclonedds.util import duration

        waitset = WaitSet(self._node.participant)
        mask = SampleState.NotRead | ViewState.Any | InstanceState.Any
        conditions = [ReadCondition(reader, mask) for reader in readers.values()]
        for condition in conditions:
            waitset.attach(condition)
        while not self._stop_reading.is_set():
            waitset.wait(duration(milliseconds=READER_WAKE_MS))
            for topic, reader in readers.items():
                for sample in reader.take(N=MAX_TAKE):
                    if sample.sample_info.valid_data:  # a writer going away leaves a sample with no data
                        self._on_message(topic, sample)

    def _publish(self, topic: str, msg: Any) -> None:
        self._writers[topic].write(msg)

    def _disconnect(self) -> None:
        self._stop_reading.set()
        self._reader.join(timeout=1.0)
        self._node.close()

    def _on_message(self, topic: str, msg: Any) -> None:
        """A subscribed message, stamped with the monotonic clock as it arrives (middleware thread)."""
        arrived = time.monotonic()
        with self._inbox_lock:
            self._inbox[topic].append((arrived, msg))

    def _take(self, topic: str) -> list[tuple[float, Any]]:
        """(arrival time, message) of every message waiting on a subscribed topic, oldest first; never blocks."""
        with self._inbox_lock:
            messages = list(self._inbox[topic])
            self._inbox[topic].clear()
        return messages

    # ---- the Transport seam ---------------------------------------------------------------------

    def open(self, timeout_s: float = 3.0) -> str:
        """Join the graph and wait for the first Imu and JointState (the handshake's stand-in)."""
        try:
            self._connect()
        except Exception as e:  # cyclonedds' DDSException, rclpy's errors: the graph cannot be joined
            with contextlib.suppress(Exception):  # whatever was half made; the error above is what counts
                self._disconnect()
            raise TransportError(f"{self.describe}: cannot join the ROS 2 graph ({type(e).__name__}: {e})") from e
        self._connected = True
        deadline = time.monotonic() + timeout_s
        while True:
            self._drain()
            if self._lost:
                raise TransportError(f"{self.describe}: {self._lost}")
            missing = [t for t, s in self._sensors.items() if s.arrays is None]
            if not missing:
                break
            if time.monotonic() >= deadline:
                names = " and ".join(f"{self._sensors[t].kind} on {self.topics.ros_name(t)}" for t in missing)
                raise TransportError(
                    f"no {names} within {timeout_s:.1f} s (is the robot's driver, or `trot emulate --transport ros2`, "
                    f"publishing on ROS 2 domain {self.domain_id}, with the same CYCLONEDDS_URI?)"
                )
            time.sleep(OPEN_POLL_S)
        t = self.topics.ros_name
        return (
            f"first Imu on {t('imu')} and JointState on {t('joint_states')} ({len(self.joint_names)} joints, "
            f"matched by name); targets to {t('joint_commands')} and {t('joint_targets')}, gains to {t('joint_gains')}"
        )

    def poll(self) -> Poll:
        """A State for every fresh Imu or JointState (with the newest of the other), in arrival order, each
        stamped with the older topic's arrival time: either topic going quiet makes the State stale."""
        if self._connected and not self._lost:
            self._drain()
        poll = Poll(samples=self._arrived, received=len(self._arrived), lost=self._lost, frames=self._frames)
        self._frames, self._arrived = {}, []
        if self._estop_raised:
            self._estop_raised = False
            poll.peer_estop_from = f"{self.topics.ros_name('estop')} is true"
        return poll

    def send(self, mode: ControlMode, target: np.ndarray, kp: np.ndarray, kd: np.ndarray) -> str | None:
        """Publish the targets (and the gains when they changed); DAMPING and OFF hold the measured pose."""
        if self._lost or not self._connected:
            return self._lost
        if mode != ControlMode.POSITION:
            # A robot that only takes the position commands (fixed gains) cannot damp; the measured pose,
            # renewed every tick, resists motion instead of driving the joints anywhere. Gains-aware
            # consumers see kp 0 (DAMPING) or kp = kd = 0 (OFF) and ignore the target.
            target = self._hold(target)
        T = self.types
        try:
            if self._gains is None or not (np.array_equal(kp, self._gains[0]) and np.array_equal(kd, self._gains[1])):
                self._publish("joint_gains", convert.gains_to_float64_multiarray(T, kp, kd))
                self._gains = (np.array(kp, dtype=np.float64), np.array(kd, dtype=np.float64))
            self._publish("joint_commands", convert.command_to_float64_multiarray(T, target))
            stamp, frame = time.time(), self.topics.joint_frame_id
            self._publish("joint_targets", convert.targets_to_joint_state(T, self.joint_names, target, stamp, frame))
        except Exception as e:  # the middleware refused the write: nothing reaches the robot any more
            self._lost = f"publishing the joint commands failed ({type(e).__name__}: {e})"
        return self._lost

    def estop(self, reason: int) -> None:
        """Publish true on the e-stop topic, once (latched: every subscriber, late ones too, sees it)."""
        if self._estop_sent or not self._connected or self._lost:
            return
        try:
            self._publish("estop", convert.make_bool(self.types, True))
            self._estop_sent = True
        except Exception as e:
            self._lost = f"publishing the e-stop failed ({type(e).__name__}: {e})"

    def close(self) -> None:
        if self._connected:
            self._connected = False
            self._disconnect()

    # ---- velocity command and diagnostics ---------------------------------------------------------

    def velocity_command(self) -> np.ndarray:
        """The newest cmd_vel Twist as (vx, vy, yaw rate); zero once none came for `cmd_vel_timeout_s`."""
        if time.monotonic() - self._velocity_t > self.cmd_vel_timeout_s:
            return np.zeros(3)
        return self._velocity

    def report(self, record: dict, *, overruns: int, missed_ticks: int, reason: str) -> None:
        """The loop's tick record: folded into the timing window, published as diagnostics when due."""
        w, t, state = self._window, record["t"], record["state"]
        w.ticks += 1
        if w.last_t is not None:
            interval = t - w.last_t
            w.interval_sum += interval
            w.intervals += 1
            w.jitter_max = max(w.jitter_max, abs(interval - self.control_dt))
        w.last_t = t
        w.late_max_ms = max(w.late_max_ms, record.get("late_ms", 0.0))
        w.inference_max_ms = max(w.inference_max_ms, record.get("inference_ms", 0.0))
        w.compute_max_ms = max(w.compute_max_ms, record.get("compute_ms", 0.0))
        if state == self._diag_state and t - self._diag_t < self.diagnostics_period_s:
            return
        self._diag_state, self._diag_t = state, t
        self._publish_diagnostics(record, overruns, missed_ticks, reason)
        self._window = _Window(last_t=t)

    def _publish_diagnostics(self, record: dict, overruns: int, missed_ticks: int, reason: str) -> None:
        if self._lost or not self._connected:
            return
        w, now, state = self._window, time.monotonic(), record["state"]

        def age_ms(rx_time: float | None) -> float:
            return math.nan if rx_time is None else 1e3 * (now - rx_time)

        values = {
            "state": state,
            "mode": record.get("mode", ""),
            "t_s": record["t"],
            "period_ms": 1e3 * w.interval_sum / w.intervals if w.intervals else math.nan,
            "jitter_max_ms": 1e3 * w.jitter_max,
            "late_max_ms": w.late_max_ms,
            "inference_max_ms": w.inference_max_ms,
            "compute_max_ms": w.compute_max_ms,
            "overruns": overruns,
            "missed_ticks": missed_ticks,
            "imu_age_ms": age_ms(self._sensors["imu"].rx_time),
            "joint_states_age_ms": age_ms(self._sensors["joint_states"].rx_time),
            "velocity_command": ",".join(f"{v:g}" for v in record.get("velocity_command", [])),
            "estop": self._estop_on or self._estop_sent,
            "backend": self.backend,
        }
        level = STATE_LEVELS.get(state, convert.OK)
        message = f"{state}: {reason}" if reason else state
        msg = convert.diagnostics(self.types, "trot: deploy", level, message, values, self.hardware_id, time.time())
        try:
            self._publish("diagnostics", msg)
        except Exception as e:
            self._lost = f"publishing diagnostics failed ({type(e).__name__}: {e})"

    # ---- helpers --------------------------------------------------------------------------------

    def _type(self, topic: str) -> type:
        return getattr(self.types, TOPIC_TYPES[topic])

    def _count(self, kind: str) -> None:
        self._frames[kind] = self._frames.get(kind, 0) + 1

    def _drain(self) -> None:
        """Take everything waiting on the subscribed topics; a sensor message counts only if its stamp is newer."""
        sensor_messages = sorted(
            ((arrived, topic, msg) for topic in self._sensors for arrived, msg in self._take(topic)),
            key=lambda item: item[0],
        )
        for arrived, topic, msg in sensor_messages:
            sensor = self._sensors[topic]
            stamp = convert.seconds_from_stamp(msg.header.stamp)
            if sensor.arrays is not None and stamp and stamp <= sensor.stamp:
                self._count(f"{sensor.kind} repeated")  # an old or repeated message is no news
                continue
            self._count(sensor.kind)
            try:
                if topic == "imu":
                    arrays = convert.imu_to_arrays(msg)
                else:
                    arrays = convert.joint_state_to_arrays(msg, self.joint_names)
            except ValueError as e:
                self._lost = f"{sensor.kind} on {self.topics.ros_name(topic)} refused: {e}"
                break
            sensor.arrays, sensor.stamp, sensor.rx_time = arrays, stamp, arrived
            self._add_state()
        for arrived, msg in self._take("cmd_vel"):
            velocity = convert.twist_to_command(msg)
            if np.all(np.isfinite(velocity)):
                self._count("Twist")
                self._velocity, self._velocity_t = velocity, arrived
            else:
                self._count("Twist refused")  # non-finite: the previous command stands (and times out)
        for _, msg in self._take("estop"):
            self._count("Bool")
            on = bool(msg.data)
            if on and not self._estop_on and not self._estop_sent:
                self._estop_raised = True
            self._estop_on = on

    def _add_state(self) -> None:
        """A State from the newest Imu and JointState, once both have come, stamped with the older's arrival."""
        imu, joints = self._sensors["imu"], self._sensors["joint_states"]
        if imu.arrays is None or joints.arrays is None:
            return
        quat, gyro, accel = imu.arrays
        pos, vel, effort = joints.arrays
        status = StatusFlags.ESTOP if self._estop_on and not self._estop_sent else StatusFlags(0)
        stamp_us = round(joints.stamp * 1e6) if joints.stamp else None
        rx_time = min(imu.rx_time, joints.rx_time)  # either topic going quiet makes the State stale
        self._arrived.append(Sample(rx_time, None, stamp_us, pos, vel, effort, quat, gyro, accel, int(status)))

    def _hold(self, target: np.ndarray) -> np.ndarray:
        arrays = self._sensors["joint_states"].arrays
        if arrays is None:
            return np.asarray(target, dtype=np.float64)
        return np.where(np.isfinite(arrays[0]), arrays[0], target)


class CmdVelCommand(BaseCommand):
    """The velocity command source of `--transport ros2`: the transport's newest cmd_vel Twist, zero once
    none came for its `cmd_vel_timeout_s` (a teleop that stopped publishing means stand, not walk on)."""

    def __init__(self, transport: Ros2Transport):
        self.transport = transport
        self.describe = (
            f"cmd_vel {transport.topics.ros_name('cmd_vel')} (zero after {transport.cmd_vel_timeout_s:g} s "
            "without a Twist)"
        )

    def velocity(self, t: float | None) -> np.ndarray:
        return self.transport.velocity_command()  # the transport's poll drained the topic this tick


# ---- rclpy ---------------------------------------------------------------------------------------


class RclpyTransport(Ros2Transport):
    """The same transport through rclpy (a sourced ROS 2, or the ROS 2 wheels of `trot[ros2-rclpy]`): subscriptions
    fill the inbox from an executor thread (`rclpy_node.RclpyNode`), stamping each message as it arrives."""

    backend = "rclpy"

    def _connect(self) -> None:
        from trot.deploy.ros2.rclpy_msgs import rclpy_message_types
        from trot.deploy.ros2.rclpy_node import RclpyNode

        self.types = rclpy_message_types()
        self._node = RclpyNode("trot_deploy", self.topics, self.domain_id)
        for topic in SUBSCRIBED:
            self._node.subscribe(topic, self._type(topic), partial(self._on_message, topic))
        self._publishers = {topic: self._node.publisher(topic, self._type(topic)) for topic in PUBLISHED}
        self._node.start()

    def _publish(self, topic: str, msg: Any) -> None:
        self._publishers[topic].publish(msg)

    def _disconnect(self) -> None:
        self._node.close()


def make_ros2_transport(backend: str = "auto", **kwargs) -> Ros2Transport:
    """`RclpyTransport` where rclpy imports (backend "auto" or "rclpy"), else `Ros2Transport` over Cyclone
    DDS; ValueError saying what to install when the backend asked for is missing."""
    from trot.deploy.ros2.rclpy_node import import_problem

    if backend not in ("auto", "rclpy", "dds"):
        raise ValueError(f"ROS 2 backend {backend!r}; expected auto, rclpy or dds")
    # Installed is not enough: rclpy's C extension needs its ROS libraries on the loader path (a sourced ROS 2, or
    # the ROS 2 wheels' own start-up hook), so "auto" takes rclpy only where it imports.
    installed = importlib.util.find_spec("rclpy") is not None
    rclpy_problem = import_problem() if backend != "dds" and installed else "not installed"
    if backend == "auto" and installed and rclpy_problem is not None:
        logging.getLogger(__name__).warning("rclpy is installed but does not import (%s): raw DDS", rclpy_problem)
    if backend == "rclpy" or (backend == "auto" and rclpy_problem is None):
        if rclpy_problem is not None:
            raise ValueError(
                f"--ros2_backend rclpy: rclpy does not import ({rclpy_problem}); source a ROS 2 installation, or "
                "pip install 'trot[ros2-rclpy]' into this Python's own environment"
            )
        return RclpyTransport(**kwargs)
    if importlib.util.find_spec("cyclonedds") is None:
        raise ValueError(
            "--transport ros2 needs rclpy (a sourced ROS 2 installation) or the Cyclone DDS binding "
            "(pip install 'trot[ros2]')"
        )
    return Ros2Transport(**kwargs)
