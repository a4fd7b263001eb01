"""The ROS 2 transport on a robot's own bring-up, as its profile (`profile.py`) describes it.

On top of `Ros2Transport` / `RclpyTransport` (whose topics and safety mapping are unchanged):

- **Controllers.** `open` waits for the first Imu and JointState as before, then reads the controller states from
  `<manager>/activity` and switches, STRICT, the profile's `activate` controllers in and its `deactivate` ones out
  (only those not already so: a strict switch fails on a controller already in the asked state), and waits until
  the activity shows it done. A switch refused, unanswered or not seen done is a refusal. `close` gives the motors
  back: trot's controllers out and the ones it deactivated back in, on Ctrl-C, the end of --duration, a fault, a
  crash or a refused start; after an e-stop, or when another node took the motors, only trot's controllers go out
  (the authors' controller would stand the robot up again: the operator releases it with the gamepad).
- **Gains.** Every tick, the loop's kp and kd go to the profile's kp and kd topics (forward command controllers of
  the hardware's `kp` and `kd` command interfaces), one Float64MultiArray each in joint order: the policy's gains in
  SOFT_START/FADE_IN/RUNNING, kp 0 and the contract's `damping_kd` in DAMPING, kp 0 and kd 0 in OFF. Every tick,
  because a forward command controller forgets what it received before it was activated.
- **The robot's e-stop, both ways.** A message on the profile's e-stop topic (the Pupper's gamepad: std_msgs/Empty
  on /emergency_stop) is an e-stop of the robot side, acted on in the tick it arrives; a host e-stop (keyboard,
  SIGUSR1) is published there too. When the activity shows one of trot's controllers no longer active (the gamepad
  e-stop deactivates them), trot stops publishing at once and says which controller, in what state.
- **IMU.** A profile whose IMU does not measure linear acceleration gets NaN there (not measured), not zeros.
"""

from __future__ import annotations

import importlib.util
import logging
import threading
import time
from collections import deque
from dataclasses import replace
from typing import Any

import numpy as np

from trot.deploy.link import ControlMode, Poll, TransportError
from trot.deploy.ros2 import convert
from trot.deploy.ros2.controllers import ControllerManagerError
from trot.deploy.ros2.profile import GENERIC, Ros2Profile
from trot.deploy.ros2.transport import RclpyTransport, Ros2Transport

log = logging.getLogger("trot.deploy")


class _Bringup:
    """The mixin; `_connect_bringup` is the middleware's part (DDS or rclpy)."""

    def __init__(self, *args, damping_kd: float, profile: Ros2Profile = GENERIC, **kwargs):
        super().__init__(*args, **kwargs)
        self.profile = profile
        self.robot_damping_kd = damping_kd  # the contract's damping gain (capped at kd_max), for the robot's e-stop
        if profile.file is not None:
            self.describe += f", profile {profile.file.parent.name}/{profile.file.name}"
        self._manager = None
        self._robot_estops: deque = deque(maxlen=64)  # filled by rclpy's thread; the DDS path takes its reader
        self._robot_estop_sent = False
        self._robot_estop_heard = False
        self._initial: dict[str, str] = {}  # controller states before trot switched
        self._switched = False  # trot asked the controller manager for a switch
        self._taken: str | None = None  # why trot's controllers are no longer active
        self._host_estop = False
        self._estop_damper: threading.Thread | None = None  # damps through the gain controllers after the gamepad

    # ---- the seam --------------------------------------------------------------------------------

    def open(self, timeout_s: float = 3.0) -> str:
        peer = super().open(timeout_s)
        if self.topics.has("kp_commands"):
            name = self.topics.ros_name
            peer += f"; kp and kd to {name('kp_commands')} and {name('kd_commands')} every tick"
        sw = self.profile.controllers
        if sw is None:
            return peer
        try:
            switched = self._take_motors()
        except ControllerManagerError as e:
            raise TransportError(f"{self.describe}: {e}") from e
        except Exception as e:  # the middleware's own errors (a reply that does not decode, a refused write)
            raise TransportError(f"{self.describe}: switching controllers failed ({type(e).__name__}: {e})") from e
        return f"{peer}; {switched}"

    def poll(self) -> Poll:
        poll = super().poll()
        if not self.profile.imu_linear_acceleration and poll.samples:
            nan = np.full(3, np.nan)
            poll.samples = [replace(s, accel=nan) for s in poll.samples]
        if self._connected:
            heard = len(self._take_robot_estops())
            if heard:
                poll.frames["Empty"] = poll.frames.get("Empty", 0) + heard
            if heard and not self._robot_estop_sent:  # not the echo of trot's own (a host e-stop it announced)
                self._robot_estop_heard = True
                if not poll.peer_estop_from:
                    poll.peer_estop_from = f"{self.topics.ros_name('robot_estop')} (std_msgs/Empty, the robot's e-stop)"
        if self._connected and self.profile.controllers is not None and self._switched and self._taken is None:
            self._check_controllers()
            if self._taken:
                poll.lost = self._lost
        if self._taken and self._robot_estop_heard and self._estop_damper is None and self.topics.has("kp_commands"):
            self._estop_damper = threading.Thread(target=self._damp_after_robot_estop, name="trot-estop-damping")
            self._estop_damper.start()
        return poll

    def send(self, mode: ControlMode, target: np.ndarray, kp: np.ndarray, kd: np.ndarray) -> str | None:
        """The targets (as before), and kp and kd on their topics: before the targets when kp drops to zero, after
        them when it rises, so that the motors never hold a stale target with new gains."""
        if not self.topics.has("kp_commands"):
            return super().send(mode, target, kp, kd)
        if self._lost or not self._connected:
            return self._lost
        damp_first = not np.any(kp)
        if damp_first:
            self._send_gains(kp, kd)
        lost = super().send(mode, target, kp, kd)
        if not damp_first and lost is None:
            self._send_gains(kp, kd)
        return self._lost

    def estop(self, reason: int) -> None:
        """The host's e-stop on trot's e-stop topic and, once, on the robot's."""
        self._host_estop = True
        super().estop(reason)
        if self.topics.has("robot_estop") and not self._robot_estop_sent and self._connected and not self._lost:
            try:
                self._publish("robot_estop", self.types.Empty())
                self._robot_estop_sent = True
            except Exception as e:
                self._lost = f"publishing the e-stop failed ({type(e).__name__}: {e})"

    def close(self) -> None:
        if self._estop_damper is not None:
            self._estop_damper.join()
        if self._connected and self._switched:
            try:
                self._give_back()
            except Exception as e:  # ControllerManagerError, or the middleware's: the link is closing anyway
                log.warning("giving the motors back failed (%s: %s)", type(e).__name__, e)
        if self._manager is not None:
            self._manager.close()
        super().close()

    # ---- controllers -----------------------------------------------------------------------------

    def _take_motors(self) -> str:
        """Switch the profile's controllers in (STRICT), once the activity shows the states; a line for people."""
        sw, manager = self.profile.controllers, self._manager
        states = manager.wait_states(sw.switch_timeout_s)
        if states is None:
            raise ControllerManagerError(
                f"no controller states on {manager.activity_topic} within {sw.switch_timeout_s:g} s (is ros2_control "
                "running, 4.28.0 or later (April 2025), on this ROS domain?)"
            )
        self._initial = states
        unusable = {c: states.get(c, "not loaded") for c in sw.activate if states.get(c) not in ("active", "inactive")}
        if unusable:
            raise ControllerManagerError(
                f"cannot drive the motors through {', '.join(f'{c} ({s})' for c, s in unusable.items())}: the "
                f"profile {self.profile.name} needs them loaded and configured (is this the robot's own bring-up?)"
            )
        activate = [c for c in sw.activate if states[c] != "active"]
        deactivate = [c for c in sw.deactivate if states.get(c) == "active"]
        if activate or deactivate:
            self._switched = True
            ok, message = manager.switch(activate, deactivate, strict=True, timeout_s=sw.switch_timeout_s)
            if not ok:
                raise ControllerManagerError(
                    f"{manager.switch_service} refused to activate {activate} and deactivate {deactivate} (STRICT): "
                    f"{message or 'no message'}"
                )
        states = manager.wait_states(sw.switch_timeout_s, until=self._ours)
        if not self._ours(states):
            raise ControllerManagerError(
                f"{manager.activity_topic} does not show the switch done within {sw.switch_timeout_s:g} s: {states}"
            )
        self._switched = True
        was = [c for c in deactivate] or ["none active"]
        return f"controllers {', '.join(sw.activate)} active (authors' controllers deactivated: {', '.join(was)})"

    def _ours(self, states: dict | None) -> bool:
        sw = self.profile.controllers
        return (
            bool(states)
            and all(states.get(c) == "active" for c in sw.activate)
            and not any(states.get(c) == "active" for c in sw.deactivate)
        )

    def _check_controllers(self) -> None:
        states = self._manager.states()
        gone = {c: (states or {}).get(c, "not loaded") for c in self.profile.controllers.activate
                if (states or {}).get(c) != "active"}  # fmt: skip
        if states is None or not gone:
            return
        what = ", ".join(f"{c} is {s}" for c, s in gone.items())
        self._taken = (
            f"{what} ({self._manager.activity_topic}): another node switched trot's controllers out (the gamepad "
            "e-stop or its release button, a controller switch); trot stops commanding"
        )
        self._lost = self._taken
        log.warning("%s", self._taken)

    def _damp_after_robot_estop(self) -> None:
        """The robot's e-stop switched trot's controllers out, leaving its last target held at its last gains (a
        deactivated forward controller writes nothing): switch the gain controllers in, write damping (kp 0, kd
        `damping_kd`, the authors' own e-stop gains), and out again. Every controller ends inactive, as the e-stop
        asked, and the motors damp. Runs beside the loop (a few service calls); a refusal (the operator released the
        authors' controller meanwhile) leaves things as they are."""
        sw, manager, name = self.profile.controllers, self._manager, self.topics.ros_name
        gains = [c for c in sw.activate if f"/{c}/" in f"{name('kp_commands')} {name('kd_commands')}"]
        kd = self.robot_damping_kd
        try:
            states = manager.states() or {}
            wake = [c for c in gains if states.get(c) != "active"]
            ok, message = manager.switch(wake, [], strict=True, timeout_s=sw.switch_timeout_s)
            if not ok:
                log.warning("damping after the robot's e-stop: %s refused %s (%s): the motors keep what they hold",
                            manager.switch_service, wake, message)  # fmt: skip
                return
            zeros = np.zeros(len(self.joint_names))
            for _ in range(3):  # written by the controllers at their next update (ros2_control: 500 Hz)
                self._publish("kp_commands", convert.per_joint_float64_multiarray(self.types, zeros))
                self._publish("kd_commands", convert.per_joint_float64_multiarray(self.types, zeros + kd))
                time.sleep(0.02)
            ok, message = manager.switch([], wake, strict=True, timeout_s=sw.switch_timeout_s)
            log.warning(
                "the robot's e-stop left trot's last target held: damped it through %s (kp 0, kd %g), then "
                "switched them out again%s",
                ", ".join(wake),
                kd,
                "" if ok else f" (refused: {message})",
            )
        except Exception as e:  # the loop goes on regardless; say what happened
            log.warning("damping after the robot's e-stop failed (%s: %s)", type(e).__name__, e)

    def _give_back(self) -> None:
        """Trot's controllers out; the ones it deactivated back in, unless an e-stop happened or another node took
        the motors (then the operator decides: the gamepad's release button gives them to the authors' controller)."""
        sw, manager = self.profile.controllers, self._manager
        states = manager.wait_states(1.0) or {}
        ours = [c for c in sw.activate if states.get(c) == "active" and self._initial.get(c) != "active"]
        estopped = self._host_estop or self._estop_on or self._robot_estop_heard
        keep_off = estopped or self._taken is not None
        theirs = [] if keep_off else [c for c in sw.deactivate
                                      if self._initial.get(c) == "active" and states.get(c) != "active"]  # fmt: skip
        if not ours and not theirs:
            return

        def done(states: dict) -> bool:
            return all(states.get(c) == "active" for c in theirs) and not any(states.get(c) == "active" for c in ours)

        try:
            ok, message = manager.switch(theirs, ours, strict=True, timeout_s=sw.switch_timeout_s)
        except ControllerManagerError as e:  # at exit the activity is the judge: a lost reply is not a lost switch
            if not done(manager.wait_states(sw.switch_timeout_s, until=done) or {}):
                raise
            ok, message = True, ""
            log.warning("%s; %s shows the switch done", e, manager.activity_topic)
        if not ok:
            log.warning("%s refused to give the motors back (activate %s, deactivate %s): %s",
                        manager.switch_service, theirs, ours, message)  # fmt: skip
            return
        why = "after the e-stop" if estopped else "after another node took them"
        log.info(
            "controllers %s deactivated; %s",
            ", ".join(ours) or "(none active)",
            f"{', '.join(theirs)} active again"
            if theirs
            else f"the authors' controllers left inactive {why} (the gamepad's release button activates them)"
            if keep_off
            else "no controller of the authors' was active before",
        )

    # ---- helpers ---------------------------------------------------------------------------------

    def _send_gains(self, kp: np.ndarray, kd: np.ndarray) -> None:
        T = self.types
        try:
            self._publish("kp_commands", convert.per_joint_float64_multiarray(T, kp))
            self._publish("kd_commands", convert.per_joint_float64_multiarray(T, kd))
        except Exception as e:
            self._lost = f"publishing the gains failed ({type(e).__name__}: {e})"


class DdsBringupTransport(_Bringup, Ros2Transport):
    """The profiled transport over raw Cyclone DDS."""

    def _connect(self) -> None:
        super()._connect()
        from trot.deploy.ros2 import msgs
        from trot.deploy.ros2.controllers import DdsControllerManager

        node = self._node
        for topic in ("kp_commands", "kd_commands"):
            if self.topics.has(topic):
                self._writers[topic] = node.writer(topic, msgs.Float64MultiArray)
        self._estop_reader = None
        if self.topics.has("robot_estop"):
            self._writers["robot_estop"] = node.writer("robot_estop", msgs.Empty)
            self._estop_reader = node.reader("robot_estop", msgs.Empty)
        sw = self.profile.controllers
        if sw is not None:
            self._manager = DdsControllerManager(node.participant, sw.manager_name(self.topics.namespace),
                                                 self.profile.rmw)  # fmt: skip

    def _take_robot_estops(self) -> list:
        if self._estop_reader is None:
            return []
        return [s for s in self._estop_reader.take(N=64) if s.sample_info.valid_data]


class RclpyBringupTransport(_Bringup, RclpyTransport):
    """The profiled transport through rclpy; controllers through rclpy where controller_manager_msgs imports."""

    def _connect(self) -> None:
        super()._connect()
        from trot.deploy.ros2.controllers import make_rclpy_manager

        node = self._node  # trot.deploy.ros2.rclpy_node.RclpyNode: each topic with its name and QoS
        for topic in ("kp_commands", "kd_commands"):
            if self.topics.has(topic):
                self._publishers[topic] = node.publisher(topic, self.types.Float64MultiArray)
        if self.topics.has("robot_estop"):
            self._publishers["robot_estop"] = node.publisher("robot_estop", self.types.Empty)
            node.subscribe("robot_estop", self.types.Empty, self._robot_estops.append)
        sw = self.profile.controllers
        if sw is not None:
            self._manager = make_rclpy_manager(node.node, sw.manager_name(self.topics.namespace), self.profile.rmw,
                                               self.domain_id)  # fmt: skip

    def _take_robot_estops(self) -> list[Any]:
        out = list(self._robot_estops)
        self._robot_estops.clear()
        return out


def make_profiled_transport(backend: str, profile: Ros2Profile, robot, **kwargs) -> Ros2Transport:
    """The ROS 2 transport of `backend` (auto, rclpy, dds) on `profile`; ValueError saying what is missing."""
    from trot.deploy.ros2.transport import make_ros2_transport

    plain = make_ros2_transport(backend, **kwargs)  # picks the middleware, or says what to install
    if isinstance(plain, RclpyTransport):
        if profile.controllers is not None and not (
            importlib.util.find_spec("controller_manager_msgs") or importlib.util.find_spec("cyclonedds")
        ):
            raise ValueError(
                f"the ROS 2 profile {profile.name} switches controllers: install controller_manager_msgs (sudo apt "
                "install ros-jazzy-controller-manager-msgs) or the Cyclone DDS binding (pip install 'trot[ros2]')"
            )
        return RclpyBringupTransport(profile=profile, damping_kd=damping_kd(robot), **kwargs)
    return DdsBringupTransport(profile=profile, damping_kd=damping_kd(robot), **kwargs)


def damping_kd(robot) -> float:
    """The contract's damping gain as the loop's DAMPING sends it (capped at kd_max)."""
    return min(robot.hardware["damping_kd"], robot.hardware["kd_max"])
