"""controller_manager_msgs on the wire, for the raw Cyclone DDS path (controller_manager_msgs is not on the package
registry; rclpy users get the generated package from their ROS 2 installation).

Field for field the ROS 2 Jazzy definitions (ros-controls/ros2_control, branch jazzy @ 9ffbf97, since release 4.28.0
of April 2025: `controller_manager_msgs/srv/SwitchController.srv`, `msg/ControllerManagerActivity.msg`,
`msg/NamedLifecycleState.msg`; lifecycle_msgs/msg/State):

- `SwitchController` request: `string[] activate_controllers`, `string[] deactivate_controllers`, `int32 strictness`
  (BEST_EFFORT 1, STRICT 2), `bool activate_asap`, `builtin_interfaces/Duration timeout`; reply: `bool ok`,
  `string message` (`message` is new in 4.28.0: an older controller manager's reply does not decode).
- `/controller_manager/activity`: the lifecycle state of every controller, published (reliable, transient local,
  depth 1) by the controller manager at every change; a late subscriber gets the current one.

A service is two topics, `rq/<service>Request` and `rr/<service>Reply`, of the types
`<package>::srv::dds_::<Service>_Request_` and `_Response_`. How a reply finds its request depends on the RMW:

- rmw_cyclonedds_cpp (ros2/rmw_cyclonedds, branch jazzy @ 2ec6f21, `src/serdata.hpp` `cdds_request_header_t`,
  `src/serdata.cpp` `serdata_rmw_from_sample`, `src/rmw_node.cpp` `rmw_send_request` / `rmw_send_response`) puts a
  header in the payload, before the fields: `uint64 guid` (the client's request writer) and `int64 seq`; the service
  copies it into the reply, and the client keeps the replies whose guid is its own. A client whose endpoints carry
  no `clientid=` in their USER_DATA is answered at once ("backwards-compatibility" in `check_for_response_reader`).
- rmw_fastrtps_cpp (ros2/rmw_fastrtps, branch jazzy @ 3b66524, `rmw_fastrtps_shared_cpp/src/rmw_request.cpp` and
  `rmw_response.cpp`) puts nothing in the payload: the request's RTPS sample identity travels in the submessage, and
  the reply carries it back as the `related_sample_identity` inline QoS, which the Cyclone DDS Python binding does not
  expose. The raw client therefore takes the first reply that arrives after its request (it has one in flight at a
  time) and checks the effect on the activity topic.

`Request`/`Response` below are the ROS fields only (their type hashes are the ROS ones); `wire_types(rmw)` gives the
structs to put on the wire for that RMW.
"""

from dataclasses import dataclass, field

from cyclonedds.idl import IdlStruct
from cyclonedds.idl import types as t

from trot.deploy.ros2.msgs import Header

BEST_EFFORT, STRICT = 1, 2
# lifecycle_msgs/msg/State ids (State.msg's PRIMARY_STATE_* constants)
UNCONFIGURED, INACTIVE, ACTIVE, FINALIZED = 1, 2, 3, 4
RMW_HEADERS = ("rmw_cyclonedds_cpp", "rmw_fastrtps_cpp")


@dataclass
class Duration(IdlStruct, typename="builtin_interfaces::msg::dds_::Duration_"):
    sec: t.int32 = 0
    nanosec: t.uint32 = 0


@dataclass
class LifecycleState(IdlStruct, typename="lifecycle_msgs::msg::dds_::State_"):
    id: t.uint8 = 0
    label: str = ""


@dataclass
class NamedLifecycleState(IdlStruct, typename="controller_manager_msgs::msg::dds_::NamedLifecycleState_"):
    name: str = ""
    state: LifecycleState = field(default_factory=LifecycleState)


@dataclass
class ControllerManagerActivity(IdlStruct, typename="controller_manager_msgs::msg::dds_::ControllerManagerActivity_"):
    header: Header = field(default_factory=Header)
    controllers: t.sequence[NamedLifecycleState] = field(default_factory=list)
    hardware_components: t.sequence[NamedLifecycleState] = field(default_factory=list)


@dataclass
class SwitchControllerRequest(IdlStruct, typename="controller_manager_msgs::srv::dds_::SwitchController_Request_"):
    activate_controllers: t.sequence[str] = field(default_factory=list)
    deactivate_controllers: t.sequence[str] = field(default_factory=list)
    strictness: t.int32 = 0
    activate_asap: bool = False
    timeout: Duration = field(default_factory=Duration)


@dataclass
class SwitchControllerResponse(IdlStruct, typename="controller_manager_msgs::srv::dds_::SwitchController_Response_"):
    ok: bool = False
    message: str = ""


# rmw_cyclonedds_cpp's payloads: the request header, then the same fields.
@dataclass
class CycloneSwitchControllerRequest(
    IdlStruct, typename="controller_manager_msgs::srv::dds_::SwitchController_Request_"
):
    guid: t.uint64 = 0
    seq: t.int64 = 0
    activate_controllers: t.sequence[str] = field(default_factory=list)
    deactivate_controllers: t.sequence[str] = field(default_factory=list)
    strictness: t.int32 = 0
    activate_asap: bool = False
    timeout: Duration = field(default_factory=Duration)


@dataclass
class CycloneSwitchControllerResponse(
    IdlStruct, typename="controller_manager_msgs::srv::dds_::SwitchController_Response_"
):
    guid: t.uint64 = 0
    seq: t.int64 = 0
    ok: bool = False
    message: str = ""


@dataclass(frozen=True)
class WireTypes:
    """The structs a SwitchController client or server puts on the wire under one RMW's request header."""

    rmw: str
    request: type
    response: type
    header: bool  # whether the payload starts with (guid, seq)


def wire_types(rmw: str) -> WireTypes:
    """The SwitchController wire structs of `rmw` (rmw_cyclonedds_cpp or rmw_fastrtps_cpp); ValueError otherwise."""
    if rmw == "rmw_cyclonedds_cpp":
        return WireTypes(rmw, CycloneSwitchControllerRequest, CycloneSwitchControllerResponse, True)
    if rmw == "rmw_fastrtps_cpp":
        return WireTypes(rmw, SwitchControllerRequest, SwitchControllerResponse, False)
    raise ValueError(f"rmw {rmw!r}: expected one of {', '.join(RMW_HEADERS)} (how a service request is framed)")
