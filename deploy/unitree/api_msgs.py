"""Unitree's request/response types (`unitree_api::msg::dds_::*`) and the topics of its services.

Unitree's robot services (the motion switcher, the sport service, ...) are RPCs over plain DDS topics: a client
writes a `Request_` on `rt/api/<service>/request` and reads the `Response_` the service writes on
`rt/api/<service>/response`, matched by `header.identity.id` (unitree_sdk2 `include/unitree/robot/channel/
channel_namer.hpp`; unitree_sdk2_python `unitree_sdk2py/core/channel_name.py`). Each class follows its IDL in
unitree_sdk2 `include/unitree/robot/internal/internal_idl_decl/*.hpp` (commit 21d0a3b) field for field, with the
same XTypes type identifiers (the sequences are `octet`, as the uint8_t members there). They are @final and
travel as classic little-endian CDR (XCDR1), as every unitree_sdk2 type. `deploy/UNITREE.md` documents them.
"""

from dataclasses import dataclass, field

from cyclonedds.idl import IdlStruct
from cyclonedds.idl import types as t


def request_topic(service: str) -> str:
    """The topic a client writes its requests on (the service reads it)."""
    return f"rt/api/{service}/request"


def response_topic(service: str) -> str:
    """The topic a service writes its responses on (the client reads it)."""
    return f"rt/api/{service}/response"


# Status codes of the RPC layer (unitree_sdk2_python unitree_sdk2py/rpc/internal.py, commit 37116c5) and of the
# motion switcher (unitree_sdk2 include/unitree/robot/b2/motion_switcher/motion_switcher_error.hpp, commit 21d0a3b).
RPC_OK = 0
RPC_ERR_SERVER_API_NOT_IMPL = 3203
STATUS_TEXT = {
    3001: "unknown error",
    3102: "the client could not send",
    3103: "API not registered by the client",
    3104: "the client timed out",
    3105: "the reply's API does not match",
    3106: "the reply's data could not be read",
    3107: "the client's lease is invalid",
    3201: "the server could not send",
    3202: "server internal error",
    3203: "API not implemented by the server",
    3204: "parameter refused by the server",
    3205: "lease denied",
    3206: "lease does not exist",
    3207: "lease already exists",
    4201: "the sport service timed out",
    4202: "the sport service is not initialised",
    7001: "parameter is invalid",
    7002: "switcher is busy",
    7003: "event is invalid",
    7004: "name or alias is invalid",
    7005: "command is invalid",
    7006: "check command failed",
    7007: "select command failed",
    7008: "release command failed",
    7009: "saving customised data failed",
}


def status_text(code: int) -> str:
    """A status code with its meaning, for messages: '7004 (name or alias is invalid)'."""
    return f"{code} ({STATUS_TEXT.get(code, 'no published meaning')})"


@dataclass
class RequestIdentity_(IdlStruct, typename="unitree_api::msg::dds_::RequestIdentity_"):
    id: t.int64 = 0  # the client's request id; the response carries it back
    api_id: t.int64 = 0


@dataclass
class RequestLease_(IdlStruct, typename="unitree_api::msg::dds_::RequestLease_"):
    id: t.int64 = 0  # 0: no lease (the motion switcher and the sport client use none)


@dataclass
class RequestPolicy_(IdlStruct, typename="unitree_api::msg::dds_::RequestPolicy_"):
    priority: t.int32 = 0
    noreply: bool = False


@dataclass
class RequestHeader_(IdlStruct, typename="unitree_api::msg::dds_::RequestHeader_"):
    identity: RequestIdentity_ = field(default_factory=RequestIdentity_)
    lease: RequestLease_ = field(default_factory=RequestLease_)
    policy: RequestPolicy_ = field(default_factory=RequestPolicy_)


@dataclass
class Request_(IdlStruct, typename="unitree_api::msg::dds_::Request_"):
    header: RequestHeader_ = field(default_factory=RequestHeader_)
    parameter: str = ""  # JSON
    binary: t.sequence[t.byte] = field(default_factory=list)


@dataclass
class ResponseStatus_(IdlStruct, typename="unitree_api::msg::dds_::ResponseStatus_"):
    code: t.int32 = 0  # 0: done; else STATUS_TEXT


@dataclass
class ResponseHeader_(IdlStruct, typename="unitree_api::msg::dds_::ResponseHeader_"):
    identity: RequestIdentity_ = field(default_factory=RequestIdentity_)
    status: ResponseStatus_ = field(default_factory=ResponseStatus_)


@dataclass
class Response_(IdlStruct, typename="unitree_api::msg::dds_::Response_"):
    header: ResponseHeader_ = field(default_factory=ResponseHeader_)
    data: str = ""  # JSON
    binary: t.sequence[t.byte] = field(default_factory=list)
