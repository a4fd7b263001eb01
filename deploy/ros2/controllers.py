"""A ros2_control controller manager as trot sees it: the controllers' states and the switch service.

- States come from `<manager>/activity` (`controller_manager_msgs/msg/ControllerManagerActivity`, reliable and
  transient local, published by the manager at every change since ros2_control 4.28.0): a new subscriber gets the
  current states at once, and every later switch (the gamepad e-stop, its release button, another node) as it
  happens. `states()` is {controller name: lifecycle label} ("active", "inactive", "unconfigured", "finalized").
- Switching is `<manager>/switch_controller` (`controller_manager_msgs/srv/SwitchController`); `switch` waits for
  the reply and returns (ok, message).

`DdsControllerManager` speaks both over raw Cyclone DDS (the service's `rq/.../switch_controllerRequest` and
`rr/.../switch_controllerReply` topics, framed as the robot's RMW frames them: `controller_msgs`), on the transport's
own participant. `RclpyControllerManager` uses rclpy's client and subscription with the generated
controller_manager_msgs; `make_rclpy_manager` falls back to the raw DDS one (its own participant) when that package is
not installed, and refuses, saying what to install, when neither can be had.
"""

from __future__ import annotations

import importlib.util
import itertools
import threading
import time
from typing import Any

from trot.deploy.ros2.topics import QosProfile

# rmw_qos_profile_services_default: reliable, volatile, keep last 10.
SERVICE_QOS = QosProfile("reliable", "volatile", 10)
# The controller manager publishes its activity with QoS(1).reliable().transient_local().
ACTIVITY_QOS = QosProfile("reliable", "transient_local", 1)
POLL_S = 0.005
STRICTNESS = {1: "BEST_EFFORT", 2: "STRICT"}


class ControllerManagerError(RuntimeError):
    """The controller manager cannot be reached or did not answer."""


def activity_states(msg: Any) -> dict[str, str]:
    """{controller: lifecycle label} from a ControllerManagerActivity (rclpy message or IDL struct)."""
    return {c.name: c.state.label for c in msg.controllers}


class _Base:
    """What both implementations share: the newest states and waiting on them."""

    manager: str  # fully qualified name, e.g. /controller_manager

    def __init__(self, manager: str):
        self.manager = manager
        self._states: dict[str, str] | None = None
        self._states_lock = threading.Lock()

    @property
    def activity_topic(self) -> str:
        return f"{self.manager}/activity"

    @property
    def switch_service(self) -> str:
        return f"{self.manager}/switch_controller"

    def _set_states(self, msg: Any) -> None:
        with self._states_lock:
            self._states = activity_states(msg)

    def _drain(self) -> None:
        """Take what arrived (the DDS path reads here; rclpy's executor thread delivers on its own)."""

    def states(self) -> dict[str, str] | None:
        """The newest controller states; None until the first activity message arrived. Never blocks."""
        self._drain()
        with self._states_lock:
            return None if self._states is None else dict(self._states)

    def wait_states(self, timeout_s: float, until=None) -> dict[str, str] | None:
        """The states once known (and `until(states)` holds, when given), waiting up to timeout_s; else the newest
        (None when none came)."""
        deadline = time.monotonic() + timeout_s
        while True:
            states = self.states()
            if states is not None and (until is None or until(states)):
                return states
            if time.monotonic() >= deadline:
                return states
            time.sleep(POLL_S)


class DdsControllerManager(_Base):
    """The controller manager over raw Cyclone DDS, framed as `rmw` (the robot's RMW) frames services."""

    def __init__(self, participant, manager: str, rmw: str):
        from cyclonedds.pub import DataWriter
        from cyclonedds.sub import DataReader
        from cyclonedds.topic import Topic

        from trot.deploy.ros2 import controller_msgs as cm
        from trot.deploy.ros2.dds import dds_qos
        from trot.deploy.ros2.topics import DDS_SERVICE_REPLY, DDS_SERVICE_REQUEST, DDS_TOPIC_PREFIX

        super().__init__(manager)
        self.rmw = rmw
        self._wire = cm.wire_types(rmw)
        self._cm = cm
        service = self.switch_service
        # USER_DATA: the ROS types' hashes, as the RMW announces them; no `clientid=`, so that an rmw_cyclonedds_cpp
        # server answers at once instead of waiting to match a reader of that id.
        self._request_topic = Topic(participant, f"{DDS_SERVICE_REQUEST}{service}Request", self._wire.request)
        self._reply_topic = Topic(participant, f"{DDS_SERVICE_REPLY}{service}Reply", self._wire.response)
        self._requests = DataWriter(
            participant, self._request_topic, qos=dds_qos(SERVICE_QOS, cm.SwitchControllerRequest)
        )
        self._replies = DataReader(
            participant, self._reply_topic, qos=dds_qos(SERVICE_QOS, cm.SwitchControllerResponse)
        )
        self._activity_topic = Topic(
            participant, f"{DDS_TOPIC_PREFIX}{self.activity_topic}", cm.ControllerManagerActivity
        )
        self._activity = DataReader(participant, self._activity_topic,
                                    qos=dds_qos(ACTIVITY_QOS, cm.ControllerManagerActivity))  # fmt: skip
        self._guid = int(self._requests.instance_handle) & (2**64 - 1)  # as rmw_cyclonedds_cpp: the writer's handle
        self._seq = itertools.count(1)

    def _drain(self) -> None:
        samples = [s for s in self._activity.take(N=16) if s.sample_info.valid_data]
        if samples:
            self._set_states(samples[-1])

    def _service_ready(self, timeout_s: float) -> bool:
        """Whether the request writer and reply reader matched the server's (rclcpp's wait_for_service)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._requests.get_matched_subscriptions() and self._replies.get_matched_publications():
                return True
            time.sleep(POLL_S)
        return False

    def switch(self, activate, deactivate, strict: bool = True, timeout_s: float = 5.0) -> tuple[bool, str]:
        """Send one SwitchController request and wait for its reply: (ok, message). ControllerManagerError when the
        service is not there or does not answer within timeout_s."""
        cm, wire = self._cm, self._wire
        start = time.monotonic()
        if not self._service_ready(timeout_s):
            raise ControllerManagerError(
                f"no {self.switch_service} service within {timeout_s:g} s (is the controller manager running, on "
                "this ROS domain?)"
            )
        fields = dict(
            activate_controllers=list(activate),
            deactivate_controllers=list(deactivate),
            strictness=cm.STRICT if strict else cm.BEST_EFFORT,
            activate_asap=True,
            timeout=cm.Duration(sec=int(timeout_s), nanosec=int(1e9 * (timeout_s % 1))),
        )
        seq = next(self._seq)
        self._replies.take(N=64)  # replies to earlier requests (or other clients') are not this one's
        request = wire.request(guid=self._guid, seq=seq, **fields) if wire.header else wire.request(**fields)
        self._requests.write(request)
        deadline = start + timeout_s
        while time.monotonic() < deadline:
            for sample in self._replies.take(N=64):
                if not sample.sample_info.valid_data:
                    continue
                if wire.header and (sample.guid != self._guid or sample.seq != seq):
                    continue  # another client's reply (rmw_cyclonedds_cpp sends every reply to every client)
                return bool(sample.ok), str(sample.message)
            time.sleep(POLL_S)
        raise ControllerManagerError(f"no reply from {self.switch_service} within {timeout_s:g} s")

    def close(self) -> None:
        """Nothing of its own: its endpoints go with the participant."""


class RclpyControllerManager(_Base):
    """The controller manager through rclpy and the generated controller_manager_msgs (a sourced ROS 2)."""

    def __init__(self, node, manager: str):
        from controller_manager_msgs.msg import ControllerManagerActivity
        from controller_manager_msgs.srv import SwitchController

        from trot.deploy.ros2.transport import rclpy_qos

        super().__init__(manager)
        self._srv = SwitchController
        self._client = node.create_client(SwitchController, self.switch_service)
        node.create_subscription(ControllerManagerActivity, self.activity_topic, self._set_states,
                                 rclpy_qos(ACTIVITY_QOS))  # fmt: skip

    def switch(self, activate, deactivate, strict: bool = True, timeout_s: float = 5.0) -> tuple[bool, str]:
        from builtin_interfaces.msg import Duration

        if not self._client.wait_for_service(timeout_sec=timeout_s):
            raise ControllerManagerError(f"no {self.switch_service} service within {timeout_s:g} s")
        request = self._srv.Request()
        request.activate_controllers = list(activate)
        request.deactivate_controllers = list(deactivate)
        request.strictness = self._srv.Request.STRICT if strict else self._srv.Request.BEST_EFFORT
        request.activate_asap = True
        request.timeout = Duration(sec=int(timeout_s), nanosec=int(1e9 * (timeout_s % 1)))
        done = threading.Event()
        future = self._client.call_async(request)
        future.add_done_callback(lambda _: done.set())  # the transport's executor thread completes it
        if not done.wait(timeout_s):
            raise ControllerManagerError(f"no reply from {self.switch_service} within {timeout_s:g} s")
        reply = future.result()
        return bool(reply.ok), str(getattr(reply, "message", ""))

    def close(self) -> None:
        """Nothing of its own: its client and subscription go with the node."""


def make_rclpy_manager(node, manager: str, rmw: str, domain_id: int):
    """The controller manager for the rclpy transport: rclpy's own where controller_manager_msgs imports, else raw
    Cyclone DDS on a participant of its own; ImportError saying what to install when neither can be had."""
    if importlib.util.find_spec("controller_manager_msgs") is not None:
        return RclpyControllerManager(node, manager)
    if importlib.util.find_spec("cyclonedds") is None:
        raise ImportError(
            f"switching controllers through {manager}/switch_controller needs controller_manager_msgs "
            "(sudo apt install ros-jazzy-controller-manager-msgs, then source ROS 2) or the Cyclone DDS binding "
            "(pip install 'trot[ros2]')"
        )
    from cyclonedds.domain import DomainParticipant

    return _OwnParticipant(DdsControllerManager(DomainParticipant(domain_id), manager, rmw))


class _OwnParticipant:
    """A DdsControllerManager whose participant it made, and deletes on close."""

    def __init__(self, inner: DdsControllerManager):
        self._inner = inner
        self._participant = inner._requests.participant

    def __getattr__(self, name):
        return getattr(self._inner, name)

    def close(self) -> None:
        self._participant.__del__()
