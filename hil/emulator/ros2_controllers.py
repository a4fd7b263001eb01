"""The emulated robot over ROS 2 as a stock bring-up presents it: a ros2_control controller manager with its
controllers, as a robot's ROS 2 profile (`trot.deploy.ros2.profile`) describes them.

For the Pupper v3 (`robots/pupper_v3/ros2.toml`; the sources it cites): Imu on /imu_sensor_broadcaster/imu (linear
acceleration zero: the accelerometer is not enabled), JointState on /joint_states, and the hardware's command
interfaces `position`, `kp`, `kd` per joint, written by whichever controllers are active:

- the authors' controllers (the profile's `deactivate` list; `neural_controller` active at start) claim every
  interface. The stand-in holds the default pose with the contract's kp and kd (the real one runs the authors'
  policy); deactivated, it leaves position 0, kp 0 and kd `damping_kd` (neural_controller.cpp `on_deactivate`: the
  e-stop kd 0.1). Active, it hears std_msgs/Empty on the e-stop topic and damps the same way.
- the forward command controllers (the profile's `activate` list, inactive at start), one interface each, fed by the
  profile's topics (12 values in joint order). A message is written to the interfaces by an active controller only;
  what arrived while it was inactive is dropped (Jazzy's forward_command_controller resets its command buffer on
  activation); deactivated, a controller writes nothing, so the hardware keeps the last values: **no watchdog on
  this side**, the last target is held at the last gains for as long as nobody writes.
- `<manager>/switch_controller` (SwitchController, framed as the profile's RMW frames it) with Jazzy's rules: STRICT
  fails, switching nothing, on an unknown controller, one already in the asked state, or two active controllers
  claiming one interface; BEST_EFFORT skips those. `answer_switch=False` switches without replying (a lost reply).
- `<manager>/activity` (ControllerManagerActivity, latched) at start and after every change.
- the gamepad (joy_utils estop_controller): `press_gamepad_estop()` (or `gamepad_estop_at`) publishes Empty on the
  e-stop topic and, `estop_switch_delay_s` later, deactivates the authors' and the forward controllers
  (BEST_EFFORT); `press_gamepad_release()` activates `neural_controller` again and deactivates the others.

Every physics tick the interfaces go to the firmware as one POSITION Command (its clamps: kp <= kp_max, kd <= kd_max,
the soft joint limits; with kp 0 the target does not matter): ros2_control writes the hardware every cycle, so the
firmware's own command watchdog never fires here. `interface_log` records (t, mode, kp, kd) at every change of what
the motors apply, `command_modes` the modes as over the generic topics.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from trot.deploy.protocol import Command, ControlMode
from trot.deploy.ros2 import controller_msgs as cm
from trot.deploy.ros2 import convert
from trot.deploy.ros2.controllers import ACTIVITY_QOS, SERVICE_QOS
from trot.deploy.ros2.profile import Ros2Profile
from trot.hil.emulator.faults import after
from trot.hil.emulator.link import Board, LinkFactory, Reading
from trot.hil.emulator.options import EmulatorOptions
from trot.hil.emulator.ros2_link import Ros2EmulatorOptions, Ros2Link
from trot.robots import Robot

log = logging.getLogger(__name__)

INTERFACES = {"joint_commands": "position", "kp_commands": "kp", "kd_commands": "kd"}
BROADCASTERS = ("joint_state_broadcaster", "imu_sensor_broadcaster")


@dataclass(frozen=True)
class ControllerStackOptions(Ros2EmulatorOptions):
    """The controller stack's knobs on top of the ROS 2 link's."""

    profile: Ros2Profile | None = None  # required: the robot's ROS 2 profile with [controllers]
    initially_active: tuple[str, ...] | None = None  # None: the first of the profile's `deactivate` (neural_controller)
    answer_switch: bool = True  # False: switch, but never reply (a reply lost on the way)
    gamepad_estop_at: float | None = None  # fault clock: the gamepad's e-stop button
    gamepad_release_at: float | None = None  # fault clock: the gamepad's release button
    estop_switch_delay_s: float = 0.004  # from the Empty to the deactivation (joy_utils' thread and service call)
    stand_kp: float | None = None  # the authors' controller's gains (None: the contract's)
    stand_kd: float | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.profile is None or self.profile.controllers is None:
            raise ValueError("ControllerStackOptions.profile: expected a ROS 2 profile with a [controllers] table")


@dataclass
class _Controller:
    name: str
    interfaces: frozenset[str]  # command interfaces it claims: position, kp, kd
    state: str = "inactive"
    command: np.ndarray | None = field(default=None, repr=False)  # a forward controller's newest message


def stack_link(options: ControllerStackOptions) -> LinkFactory:
    """The link factory for `Emulator(robot, options, link=...)`: this robot's controller stack over ROS 2."""

    def make(robot: Robot, emulator_options: EmulatorOptions, board: Board):
        return ControllerStackLink(robot, emulator_options, board, options)

    return make


class ControllerStackLink(Ros2Link):
    """Imu and JointState out; the controller manager, its controllers and the gamepad e-stop in between."""

    def __init__(self, robot: Robot, options: EmulatorOptions, board: Board, ros2: ControllerStackOptions):
        if options.estop_at is not None:
            raise ValueError("EmulatorOptions.estop_at: the controller stack has no e-stop button of the MCU's; "
                             "use ControllerStackOptions.gamepad_estop_at")  # fmt: skip
        super().__init__(robot, options, board, ros2)
        profile, sw = ros2.profile, ros2.profile.controllers
        topics = ros2.topics
        n = robot.num_joints
        self.profile, self.switch_spec = profile, sw
        self.controllers: dict[str, _Controller] = {}
        for name in sw.deactivate:
            self.controllers[name] = _Controller(name, frozenset(INTERFACES.values()))
        self._feeds: dict[str, str] = {}  # topic field -> forward controller
        for name in sw.activate:
            fed = [f for f in INTERFACES if topics.has(f) and topics.ros_name(f).endswith(f"/{name}/commands")]
            if len(fed) != 1:
                raise ValueError(f"{profile.name}: controller {name!r} is fed by none of the topics "
                                 f"{[topics.ros_name(f) for f in INTERFACES if topics.has(f)]}")  # fmt: skip
            self._feeds[fed[0]] = name
            self.controllers[name] = _Controller(name, frozenset({INTERFACES[fed[0]]}))
        for name in BROADCASTERS:
            self.controllers[name] = _Controller(name, frozenset(), "active")
        active = ros2.initially_active if ros2.initially_active is not None else sw.deactivate[:1]
        for name in active:
            self.controllers[name].state = "active"
        self.stand_kp = robot.kp if ros2.stand_kp is None else ros2.stand_kp
        self.stand_kd = robot.kd if ros2.stand_kd is None else ros2.stand_kd
        # The hardware's command interfaces: what neural_controller's on_deactivate leaves, until someone writes.
        self.position, self.kp, self.kd = np.zeros(n), np.zeros(n), np.full(n, robot.hardware["damping_kd"])
        self._authors_estop: set[str] = set()  # authors' controllers that heard the e-stop while active
        self._pending_estop_switch: float | None = None
        self._requests = {"estop": False, "release": False}
        self._requests_lock = threading.Lock()
        self._activity_dirty = True
        self._fired: set[str] = set()  # one-shot gamepad presses already done
        self._silenced: set[str] = set()  # topics `silence` stopped
        self.switches: list[tuple[float, list, list, int, bool, str]] = []  # (t, activate, deactivate, strict, ok, msg)
        self.interface_log: list[tuple[float, str, np.ndarray, np.ndarray]] = []  # (t, mode, kp, kd) at each change
        self.estops_heard = 0  # Empty messages on the e-stop topic

    # ---- opening --------------------------------------------------------------------------------

    def open(self) -> str:
        from cyclonedds.pub import DataWriter
        from cyclonedds.sub import DataReader
        from cyclonedds.topic import Topic

        from trot.deploy.ros2 import dds, msgs
        from trot.deploy.ros2.topics import DDS_SERVICE_REPLY, DDS_SERVICE_REQUEST, DDS_TOPIC_PREFIX

        self._types = msgs.IDL_TYPES
        node = self._node = dds.DdsNode(self.ros2.topics, self.ros2.domain_id)
        self._writers = {
            "imu": node.writer("imu", msgs.Imu),
            "joint_states": node.writer("joint_states", msgs.JointState),
        }
        self._readers = {f: node.reader(f, msgs.Float64MultiArray) for f in self._feeds}
        if self.ros2.topics.has("robot_estop"):
            self._readers["robot_estop"] = node.reader("robot_estop", msgs.Empty)
            self._writers["robot_estop"] = node.writer("robot_estop", msgs.Empty)
        manager = self.switch_spec.manager_name(self.ros2.topics.namespace)
        self._wire = cm.wire_types(self.profile.rmw)
        p = node.participant
        request = Topic(p, f"{DDS_SERVICE_REQUEST}{manager}/switch_controllerRequest", self._wire.request)
        reply = Topic(p, f"{DDS_SERVICE_REPLY}{manager}/switch_controllerReply", self._wire.response)
        self._service_in = DataReader(p, request, qos=dds.dds_qos(SERVICE_QOS, cm.SwitchControllerRequest))
        self._service_out = DataWriter(p, reply, qos=dds.dds_qos(SERVICE_QOS, cm.SwitchControllerResponse))
        activity = Topic(p, f"{DDS_TOPIC_PREFIX}{manager}/activity", cm.ControllerManagerActivity)
        self._activity = DataWriter(p, activity, qos=dds.dds_qos(ACTIVITY_QOS, cm.ControllerManagerActivity))
        # ros2_control runs from boot: the motors are driven from the first tick (no host session to wait for).
        self.board.firmware.open_session(0.0, ": the controller manager drives the hardware from boot")
        name = self.ros2.topics.ros_name
        active = [c.name for c in self.controllers.values() if c.state == "active"]
        self.port = (
            f"ros2 domain {node.domain_id}: controller manager {manager} ({self.profile.rmw} service framing; active: "
            f"{', '.join(active)}), {name('imu')} and {name('joint_states')}, commands from "
            f"{', '.join(name(f) for f in self._feeds)}"
        )
        return self.port

    # ---- the gamepad (any thread) ----------------------------------------------------------------

    def press_gamepad_estop(self) -> None:
        """The gamepad's e-stop button, at the next tick."""
        with self._requests_lock:
            self._requests["estop"] = True

    def press_gamepad_release(self) -> None:
        """The gamepad's release button (start), at the next tick."""
        with self._requests_lock:
            self._requests["release"] = True

    def states(self) -> dict[str, str]:
        return {c.name: c.state for c in self.controllers.values()}

    # ---- one tick ---------------------------------------------------------------------------------

    def receive(self, t: float) -> None:
        if self._node is None:
            return
        self._gamepad(t)
        for sample in self._take_service():
            self._serve(t, sample)
        for topic, name in self._feeds.items():
            messages = self._take(topic)
            if not messages:
                continue
            controller = self.controllers[name]
            if controller.state != "active":
                continue  # nothing is written by an inactive controller; activation forgets it
            try:
                controller.command = convert.float64_multiarray_to_command(messages[-1], self.robot.num_joints)
            except ValueError as e:
                self._refuse(topic, e)
        if "robot_estop" in self._readers:
            heard = self._take("robot_estop")
            self.estops_heard += len(heard)
            if heard:
                self._authors_estop |= {c for c in self.switch_spec.deactivate if self.controllers[c].state == "active"}
        if self._activity_dirty:
            self._publish_activity()
        self._update(t)

    def _take_service(self) -> list:
        return [s for s in self._service_in.take(N=16) if s.sample_info.valid_data]

    def _update(self, t: float) -> None:
        """The controllers write the interfaces (controller manager update), then the hardware applies them."""
        n = self.robot.num_joints
        for c in self.controllers.values():
            if c.state != "active":
                continue
            if c.name in self.switch_spec.deactivate:
                if c.name in self._authors_estop:
                    self.position, self.kp, self.kd = np.zeros(n), np.zeros(n), np.full(n, self.firmware_damping_kd)
                else:
                    self.position = np.asarray(self.robot.default_joint_pos, dtype=float)
                    self.kp, self.kd = np.full(n, self.stand_kp), np.full(n, self.stand_kd)
            elif c.command is not None:
                (interface,) = c.interfaces
                setattr(self, interface, c.command.copy())
        kp, kd = self.kp, self.kd
        mode = ControlMode.POSITION if kp.any() else (ControlMode.DAMPING if kd.any() else ControlMode.OFF)
        self._commands_received += 1
        # POSITION even when kp is 0: the firmware's DAMPING would replace a kd of 0 by its damping_kd.
        command = Command(self._commands_received % (1 << 32), ControlMode.POSITION, self.position, kp, kd,
                          np.zeros(n))  # fmt: skip
        self.board.firmware.on_command(command, t)
        last = self.interface_log[-1] if self.interface_log else None
        if last is None or not (np.array_equal(last[2], kp) and np.array_equal(last[3], kd)):
            self.interface_log.append((t, mode.name, kp.copy(), kd.copy()))
        if not self.command_modes or self.command_modes[-1][1] != mode.name:
            self.command_modes.append((t, mode.name))

    @property
    def firmware_damping_kd(self) -> float:
        return self.robot.hardware["damping_kd"]

    # ---- switching --------------------------------------------------------------------------------

    def _serve(self, t: float, request) -> None:
        ok, message = self.switch(t, list(request.activate_controllers), list(request.deactivate_controllers),
                                  int(request.strictness))  # fmt: skip
        if not self.ros2.answer_switch:
            log.warning("switch_controller: switched, reply withheld (answer_switch off)")
            return
        if self._wire.header:
            reply = self._wire.response(guid=request.guid, seq=request.seq, ok=ok, message=message)
        else:
            reply = self._wire.response(ok=ok, message=message)
        self._service_out.write(reply)

    def switch(self, t: float, activate: list, deactivate: list, strictness: int) -> tuple[bool, str]:
        """One switch with Jazzy's rules (module docstring); (ok, message)."""
        strict = strictness == cm.STRICT
        problems, act, deact = [], [], []
        for names, target, out in ((deactivate, "inactive", deact), (activate, "active", act)):
            for name in names:
                c = self.controllers.get(name)
                if c is None:
                    problems.append(f"no controller with name '{name}' exists")
                elif c.state == target:
                    problems.append(f"controller '{name}' is already {target}")
                elif c.state not in ("active", "inactive"):
                    problems.append(f"controller '{name}' is {c.state}")
                else:
                    out.append(name)
        after_switch = {c.name for c in self.controllers.values() if c.state == "active"} - set(deact) | set(act)
        for name in list(act):
            clash = [
                o for o in after_switch - {name} if self.controllers[o].interfaces & self.controllers[name].interfaces
            ]
            if clash:
                problems.append(f"resource conflict: '{name}' and {clash} claim the same interfaces")
                if not strict:
                    act.remove(name)
                    after_switch.discard(name)
        if strict and problems:
            message = "; ".join(problems)
            self.switches.append((t, activate, deactivate, strictness, False, message))
            log.warning("switch_controller STRICT refused: %s", message)
            return False, message
        for name in deact:
            self._set_state(name, "inactive")
        for name in act:
            self._set_state(name, "active")
        ok = bool(act or deact) or not (activate or deactivate)
        message = "; ".join(problems)
        self.switches.append((t, activate, deactivate, strictness, ok, message))
        log.info("switch_controller at t=%.2f s: activated %s, deactivated %s%s", t, act, deact,
                 f" ({message})" if message else "")  # fmt: skip
        return ok, message

    def _set_state(self, name: str, state: str) -> None:
        c = self.controllers[name]
        n = self.robot.num_joints
        if state == "inactive" and name in self.switch_spec.deactivate:
            # neural_controller.cpp on_deactivate: every command interface 0, then kd = estop_kd
            self.position, self.kp, self.kd = np.zeros(n), np.zeros(n), np.full(n, self.firmware_damping_kd)
            self._authors_estop.discard(name)
        c.state = state
        c.command = None  # on_activate and on_deactivate reset the command buffer
        self._activity_dirty = True

    def _publish_activity(self) -> None:
        ids = {"unconfigured": cm.UNCONFIGURED, "inactive": cm.INACTIVE, "active": cm.ACTIVE, "finalized": cm.FINALIZED}
        msg = cm.ControllerManagerActivity(
            header=convert.make_header(self._types, time.time(), ""),
            controllers=[
                cm.NamedLifecycleState(c.name, cm.LifecycleState(ids[c.state], c.state))
                for c in self.controllers.values()
            ],  # fmt: skip
        )
        self._activity.write(msg)
        self._activity_dirty = False

    # ---- the gamepad ------------------------------------------------------------------------------

    def _gamepad(self, t: float) -> None:
        r, ft = self.ros2, self.board.fault_time(t)
        with self._requests_lock:
            estop, release = self._requests["estop"], self._requests["release"]
            self._requests = {"estop": False, "release": False}
        for name, at in (("estop", r.gamepad_estop_at), ("release", r.gamepad_release_at)):
            if after(at, ft) and name not in self._fired:
                self._fired.add(name)
                estop, release = estop or name == "estop", release or name == "release"
        if estop:
            log.warning("gamepad e-stop at t=%.2f s: Empty on %s, then every listed controller deactivated", t,
                        self.ros2.topics.ros_name("robot_estop"))  # fmt: skip
            if "robot_estop" in self._writers:
                self._writers["robot_estop"].write(self._types.Empty())
            self._pending_estop_switch = t + r.estop_switch_delay_s
        if self._pending_estop_switch is not None and t >= self._pending_estop_switch:
            self._pending_estop_switch = None
            self.switch(t, [], [*self.switch_spec.deactivate, *self.switch_spec.activate], cm.BEST_EFFORT)
        if release:
            first = self.switch_spec.deactivate[0]
            others = [c for c in (*self.switch_spec.deactivate, *self.switch_spec.activate) if c != first]
            log.info("gamepad release at t=%.2f s: activating %s", t, first)
            self.switch(t, [first], others, cm.BEST_EFFORT)

    # ---- sending ----------------------------------------------------------------------------------

    def publish(self, t: float, reading: Reading) -> None:
        if not self.profile.imu_linear_acceleration:  # the robot's IMU does not measure it: zeros on the wire
            quat, gyro, _ = reading.imu
            reading = Reading(reading.joint_pos, reading.joint_vel, reading.joint_torque,
                              (quat, gyro, np.zeros(3)), reading.status)  # fmt: skip
        super().publish(t, reading)

    def silence(self, topic: str) -> None:
        """Stop publishing `topic` ("imu", "joint_states") from now on, from any thread (a driver dying mid-run)."""
        self._silenced.add(topic)

    def flush(self, now: float) -> None:
        if self._silenced:
            self._queue = deque(item for item in self._queue if item[1] not in self._silenced)
        super().flush(now)

    def send_estop(self) -> None:
        """No MCU button on this stack (the gamepad is `press_gamepad_estop`)."""


def link_from_args(args) -> LinkFactory:
    """`trot emulate --transport ros2`: the robot's own bring-up when its ROS 2 profile has [controllers] (unless
    --ros_profile none), else the generic link of `ros2_link` on the profile's topic names."""
    from trot.deploy.ros2.args import profile_from_args, topics_from_args
    from trot.hil.emulator import ros2_link
    from trot.robots import load_robot

    profile = profile_from_args(args, load_robot(args.robot))
    factory = ros2_link.link_from_args(args, profile.topics)  # also keeps DDS on the loopback interface
    if profile.controllers is None:
        return factory
    return stack_link(ControllerStackOptions(
        topics=topics_from_args(args.ros_namespace, args.ros_topic, args.ros_qos, profile.topics),
        domain_id=args.domain_id, stop_imu_at=args.stop_imu_at, stop_joint_states_at=args.stop_joint_states_at,
        profile=profile, gamepad_estop_at=args.gamepad_estop_at, gamepad_release_at=args.gamepad_release_at,
        answer_switch=args.answer_switch,
    ))  # fmt: skip
