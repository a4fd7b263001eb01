"""The ROS 2 link: the emulated robot's readings and commands as ROS 2 topics over raw Cyclone DDS.

It publishes `sensor_msgs/Imu` and `sensor_msgs/JointState` at a steady rate and hands the joint targets
and gains that `trot deploy --transport ros2` publishes (`deploy/ROS2.md`) to the same firmware as the
serial link, so the deploy loop runs against it unchanged. `trot emulate --transport ros2` keeps DDS on
the loopback interface (`dds.loopback_config_xml()`) unless CYCLONEDDS_URI already is a loopback-only
configuration. What ROS 2 changes, against the serial link:

- No Hello: a session opens with the first command message (physics waits for it, as for the Hello).
- Commands: `joint_targets` (JointState: position = target, effort = feed-forward torque) or, with
  `command_topic="joint_commands"`, the forward command controller's Float64MultiArray. The mode follows
  the latched `joint_gains`: kp > 0 on some joint is POSITION, kp all zero DAMPING (with the kd), kp and kd
  all zero OFF. Until a gains message arrives, the contract's kp and kd apply (a hardware interface
  configured with the bundle's gains). A gains message re-applies the last target at once.
- Watchdog: no command message for `watchdog_ms` -> damping with `damping_kd`, as over serial.
- The e-stop topic (unless `listen_estop` is off): true latches the e-stop (damping, then motors off),
  false releases it. The e-stop button fault publishes true there, latched.
- No status flags: ROS 2 has no State frame. A frozen IMU (`freeze_imu_at`) repeats its last message,
  stamp and all (a driver republishing stale data); `freeze_imu_silent` keeps stamping it fresh.
- Faults of their own: `stop_imu_at`, `stop_joint_states_at` (that topic stops being published).
- JointState `effort` is the applied motor torque in N·m (ROS's unit); `torque_constant` does not apply.
"""

from __future__ import annotations

import argparse
import functools
import logging
import time
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from trot.deploy.protocol import Command, ControlMode, EStopReason, StatusFlags
from trot.deploy.ros2 import convert
from trot.deploy.ros2.topics import Ros2Topics
from trot.hil.emulator.faults import after
from trot.hil.emulator.link import Board, LinkFactory, Reading
from trot.hil.emulator.options import EmulatorOptions
from trot.robots import Robot

log = logging.getLogger(__name__)

COMMAND_TOPICS = ("joint_targets", "joint_commands")


@dataclass(frozen=True)
class Ros2EmulatorOptions:
    """The ROS 2 side of the emulator; the physics, watchdog and shared faults stay in EmulatorOptions."""

    topics: Ros2Topics = field(default_factory=Ros2Topics)
    domain_id: int | None = None  # None: $ROS_DOMAIN_ID, else 0
    command_topic: str = "joint_targets"  # or "joint_commands" (Float64MultiArray)
    listen_estop: bool = True  # latch on true on the estop topic, release on false
    stop_imu_at: float | None = None  # Imu stops being published (fault clock)
    stop_joint_states_at: float | None = None  # JointState stops being published (fault clock)

    def __post_init__(self) -> None:
        if self.command_topic not in COMMAND_TOPICS:
            raise ValueError(
                f"Ros2EmulatorOptions.command_topic={self.command_topic!r}, expected one of {', '.join(COMMAND_TOPICS)}"
            )


def ros2_link(ros2: Ros2EmulatorOptions | None = None, backend: str = "dds") -> LinkFactory:
    """The link factory for `Emulator(robot, options, link=...)`: this robot over ROS 2, through raw Cyclone DDS
    (`backend` "dds") or rclpy ("rclpy": the robot's drivers as a stock ROS 2 robot runs them)."""
    if backend not in ("dds", "rclpy"):
        raise ValueError(f"emulator ROS 2 backend {backend!r}; expected dds or rclpy")
    return functools.partial(Ros2Link, ros2=ros2 or Ros2EmulatorOptions(), backend=backend)


class Ros2Link:
    """Imu and JointState out, joint commands, gains and the e-stop in, over one DDS participant."""

    label = ""

    def __init__(self, robot: Robot, options: EmulatorOptions, board: Board, ros2: Ros2EmulatorOptions,
                 backend: str = "dds"):  # fmt: skip
        serial_only = [name for name, used in (("corrupt", options.corrupt > 0), ("link", options.link is not None))
                       if used]  # fmt: skip
        if serial_only:
            raise ValueError(f"EmulatorOptions {', '.join(serial_only)}: serial link only, no meaning over ROS 2")
        self.robot, self.options, self.board, self.ros2, self.backend = robot, options, board, ros2, backend
        n = robot.num_joints
        self.port: str | None = None
        self._gains = (np.full(n, robot.kp), np.full(n, robot.kd))  # until a joint_gains message says otherwise
        self._target: np.ndarray | None = None
        self._tau_ff = np.zeros(n)
        self._node = None
        self._queue: deque[tuple[float, str, object]] = deque()  # (due, topic, message), for delay_ms
        self._stopped: set[str] = set()
        self._frozen_stamp: float | None = None
        self._commands_received = 0
        self._refusing = False
        self.last_published: dict[str, float] = {}  # topic -> host monotonic time of its last publication
        self.command_modes: list[tuple[float, str]] = []  # (t, mode) each time the commanded mode changes

    def open(self) -> str:
        """Join the ROS 2 graph; return what it publishes and takes, for people."""
        self._connect()
        name, command = self.ros2.topics.ros_name, self.ros2.command_topic
        rate = 1.0 / self.robot.physics_dt if self.options.state_rate_hz is None else self.options.state_rate_hz
        self.port = (
            f"ros2 domain {self._node.domain_id}: publishing {name('imu')} and {name('joint_states')} at {rate:g} Hz, "
            f"commands from {name(command)} with gains from {name('joint_gains')}"
        )
        return self.port

    def _connect(self) -> None:
        """The middleware: `_node`, `_types`, `_writers` (imu, joint_states, estop) and `_readers` (command,
        joint_gains, estop), through raw Cyclone DDS or (`backend` "rclpy") `ros2_rclpy_link`."""
        if self.backend == "rclpy":
            from trot.hil.emulator.ros2_rclpy_link import connect_rclpy

            self._take = connect_rclpy(self)  # its subscriptions' inboxes replace the DDS readers' take
            return
        from trot.deploy.ros2 import dds, msgs

        self._types = msgs.IDL_TYPES
        node = self._node = dds.DdsNode(self.ros2.topics, self.ros2.domain_id)
        command = self.ros2.command_topic
        self._writers = {
            "imu": node.writer("imu", msgs.Imu),
            "joint_states": node.writer("joint_states", msgs.JointState),
            "estop": node.writer("estop", msgs.Bool),
        }
        self._readers = {
            "command": node.reader(command, msgs.JointState if command == "joint_targets" else msgs.Float64MultiArray),
            "joint_gains": node.reader("joint_gains", msgs.Float64MultiArray),
        }
        if self.ros2.listen_estop:
            self._readers["estop"] = node.reader("estop", msgs.Bool)

    # ---- receiving ------------------------------------------------------------------------------

    def _take(self, reader: str) -> list:
        return [s for s in self._readers[reader].take(N=64) if s.sample_info.valid_data]

    def receive(self, t: float) -> None:
        """The newest gains, e-stop messages and the newest command, to the firmware."""
        if self._node is None:
            return
        n, firmware = self.robot.num_joints, self.board.firmware
        gains_changed = False
        gains = self._take("joint_gains")
        if gains:
            try:
                self._gains = convert.float64_multiarray_to_gains(gains[-1], n)
                gains_changed = True
            except ValueError as e:
                self._refuse("joint_gains", e)
        estop_topic = self.ros2.topics.ros_name("estop")
        for msg in self._take("estop") if "estop" in self._readers else []:
            if msg.data:
                firmware.latch_estop(t, EStopReason.HOST, f"a true on {estop_topic}")
            else:
                firmware.release_estop(t, f"a false on {estop_topic}")
        commands = self._take("command")
        if commands:
            try:
                if self.ros2.command_topic == "joint_targets":
                    target, _, effort = convert.joint_state_to_arrays(commands[-1], self.robot.joint_names)
                    tau_ff = np.where(np.isfinite(effort), effort, 0.0)
                else:
                    target, tau_ff = convert.float64_multiarray_to_command(commands[-1], n), np.zeros(n)
            except ValueError as e:
                self._refuse(self.ros2.command_topic, e)
                return
            self._refusing = False
            if firmware.session_t is None:
                firmware.open_session(t, f": first command on {self.ros2.command_topic}")
            self._target, self._tau_ff = target, tau_ff
            self._apply(t)
        elif gains_changed and self._target is not None:
            self._apply(t)

    def _apply(self, t: float) -> None:
        """The last target with the gains in force, as a serial Command (the firmware's clamps and checks)."""
        kp, kd = self._gains
        if not kp.any():
            mode = ControlMode.DAMPING if kd.any() else ControlMode.OFF
        else:
            mode = ControlMode.POSITION
        self._commands_received += 1
        command = Command(self._commands_received % (1 << 32), mode, self._target, kp, kd, self._tau_ff)
        self.board.firmware.on_command(command, t)
        if not self.command_modes or self.command_modes[-1][1] != mode.name:
            self.command_modes.append((t, mode.name))

    def _refuse(self, topic: str, error: Exception) -> None:
        self.board.stats.rx_errors += 1
        if not self._refusing:
            log.warning("%s message refused: %s", topic, error)
        self._refusing = True

    # ---- sending --------------------------------------------------------------------------------

    def publish(self, t: float, reading: Reading) -> None:
        """Imu and JointState, each through the drop fault, queued for the delay fault."""
        r, ft, topics = self.ros2, self.board.fault_time(t), self.ros2.topics
        stamp = imu_stamp = time.time()
        if reading.status & StatusFlags.IMU_STALE:  # the driver repeats its last message, stamp and all
            if self._frozen_stamp is None:
                self._frozen_stamp = stamp
            imu_stamp = self._frozen_stamp
        T, messages = self._types, []
        if not self._stops("imu", r.stop_imu_at, ft, t):
            imu = convert.arrays_to_imu(T, *reading.imu, stamp=imu_stamp, frame_id=topics.imu_frame_id)
            messages.append(("imu", imu))
        if not self._stops("joint_states", r.stop_joint_states_at, ft, t):
            js = convert.arrays_to_joint_state(T, self.robot.joint_names, reading.joint_pos, reading.joint_vel,
                                               reading.joint_torque, stamp, topics.joint_frame_id)  # fmt: skip
            messages.append(("joint_states", js))
        due = time.monotonic() + self.board.faults.delay_s
        for topic, msg in messages:
            if not self.board.faults.drop():
                self._queue.append((due, topic, msg))

    def _stops(self, topic: str, at: float | None, ft: float | None, t: float) -> bool:
        """Whether `topic` has stopped being published (its stop_*_at fault); logged once."""
        if not after(at, ft):
            return False
        if topic not in self._stopped:
            self._stopped.add(topic)
            log.warning("fault: %s stops being published at t=%.2f s", self.ros2.topics.ros_name(topic), t)
        return True

    def send_estop(self) -> None:
        """The e-stop button: true on the estop topic (latched)."""
        if self._node is not None:
            self._writers["estop"].write(convert.make_bool(self._types, True))

    def flush(self, now: float) -> None:
        """Publish the messages due by `now`."""
        if self._node is None:
            return
        while self._queue and self._queue[0][0] <= now:
            _, topic, msg = self._queue.popleft()
            self._writers[topic].write(msg)
            self.last_published[topic] = time.monotonic()
            if topic == "joint_states":
                self.board.stats.states_sent += 1

    def disconnect(self) -> None:
        """Leave the ROS 2 graph: the DDS participant goes."""
        if self._node is not None:
            self._node.close()
            self._node = None

    close = disconnect


# ---- command line -------------------------------------------------------------------------------


def add_args(p: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """Flags of `trot emulate --transport ros2` (argparse only)."""
    from trot.deploy.ros2.args import add_ros2_args

    add_ros2_args(p)
    p.add_argument(
        "--command_topic",
        choices=COMMAND_TOPICS,
        default="joint_targets",
        help="take the targets from the JointState topic (default) or the forward command Float64MultiArray",
    )
    p.add_argument(
        "--ignore_estop_topic", dest="listen_estop", action="store_false", help="do not latch on the estop topic"
    )
    p.add_argument(
        "--ros2_backend",
        choices=["dds", "rclpy"],
        default="dds",
        help="the emulated robot's middleware: raw Cyclone DDS (default) or rclpy (its default RMW, as stock)",
    )
    p.add_argument("--stop_imu_at", type=float, default=None, help="fault: stop publishing Imu at this time")
    p.add_argument(
        "--stop_joint_states_at", type=float, default=None, help="fault: stop publishing JointState at this time"
    )
    # A robot whose ROS 2 profile has [controllers] gets its controller stack (ros2_controllers.py); its own flags:
    p.add_argument("--gamepad_estop_at", type=float, default=None,
                   help="controller stack: the gamepad's e-stop button at this time (Empty, then controllers out)")
    p.add_argument("--gamepad_release_at", type=float, default=None,
                   help="controller stack: the gamepad's release button at this time (the authors' controller in)")
    p.add_argument("--no_switch_reply", dest="answer_switch", action="store_false",
                   help="controller stack: switch controllers but never reply (a lost reply)")  # fmt: skip


def link_from_args(args: argparse.Namespace, base_topics: dict | None = None) -> LinkFactory:
    """The ROS 2 link from `trot emulate` flags (topic names from a robot's profile, `base_topics`, under them),
    with DDS kept on the loopback interface."""
    from trot.deploy.ros2 import dds, fastdds
    from trot.deploy.ros2.args import topics_from_args

    if dds.loopback_config_problems():
        dds.use_config(dds.loopback_config_xml())
        log.info("CYCLONEDDS_URI set to the loopback-only configuration (give `trot deploy` --dds_loopback)")
    if args.ros2_backend == "rclpy" and fastdds.loopback_problems():
        fastdds.use_loopback()
        log.info("Fast DDS kept on loopback: %s (give `trot deploy` --dds_loopback)", fastdds.loopback_env())
    return ros2_link(
        Ros2EmulatorOptions(
            topics=topics_from_args(args.ros_namespace, args.ros_topic, args.ros_qos, base_topics),
            domain_id=args.domain_id,
            command_topic=args.command_topic,
            listen_estop=args.listen_estop,
            stop_imu_at=args.stop_imu_at,
            stop_joint_states_at=args.stop_joint_states_at,
        ),
        args.ros2_backend,
    )
