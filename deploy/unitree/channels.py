"""The DDS topics of Unitree's low-level interface, with the QoS trot gives each end (`UNITREE.md`, "QoS"), and
the request/response topics of Unitree's services (`api_msgs`).

Unitree does not publish the QoS of its robots' endpoints, so each end here is the one that matches any
peer a DDS peer can offer or request: readers are best-effort (a best-effort reader matches a reliable or
a best-effort writer), the command writer is reliable with a history of one (a reliable writer matches
either kind of reader, and with keep-last 1 it never blocks: only the newest command is resent), all
volatile. Writers send classic CDR (XCDR1), as unitree_sdk2 does; readers take XCDR1 or XCDR2.
The services' endpoints take the same choices, with a history of RPC_DEPTH on the writers so that
requests or responses written close together are all kept for resending.
`UnitreeNode` is one participant with these endpoints, for the deploy transport (reads LowState, writes
LowCmd, calls the motion switcher) and for the emulator (reads LowCmd, writes LowState, serves the calls).
"""

from __future__ import annotations

from cyclonedds.core import Qos
from cyclonedds.domain import DomainParticipant
from cyclonedds.pub import DataWriter
from cyclonedds.qos import Policy
from cyclonedds.sub import DataReader
from cyclonedds.topic import Topic

from trot.deploy.unitree.api_msgs import Request_, Response_, request_topic, response_topic
from trot.deploy.unitree.msgs import LOWCMD_TOPIC, LOWSTATE_TOPIC, LowCmd_, LowState_

TOPICS = {LOWCMD_TOPIC: LowCmd_, LOWSTATE_TOPIC: LowState_}
READER_DEPTH = 16  # samples a reader holds between takes (the deploy loop takes every 20 ms)
RPC_DEPTH = 8  # requests or responses a service endpoint's writer keeps for resending


def reader_qos() -> Qos:
    """Best-effort, volatile, keep-last READER_DEPTH; XCDR1 or XCDR2."""
    return Qos(
        Policy.Reliability.BestEffort,
        Policy.Durability.Volatile,
        Policy.History.KeepLast(depth=READER_DEPTH),
        Policy.DataRepresentation(use_cdrv0_representation=True, use_xcdrv2_representation=True),
    )


def writer_qos(reliable: bool, depth: int = 1) -> Qos:
    """Reliable (commands, requests, responses) or best-effort (states), volatile, keep-last `depth`, XCDR1."""
    return Qos(
        Policy.Reliability.Reliable(max_blocking_time=0) if reliable else Policy.Reliability.BestEffort,
        Policy.Durability.Volatile,
        Policy.History.KeepLast(depth=depth),
        Policy.DataRepresentation(use_cdrv0_representation=True),
    )


class UnitreeNode:
    """One DDS participant in `domain_id` with readers and writers on `rt/lowcmd`, `rt/lowstate` and services."""

    def __init__(self, domain_id: int):
        self.domain_id = domain_id
        self.participant = DomainParticipant(domain_id)
        self._topics = {name: Topic(self.participant, name, cls) for name, cls in TOPICS.items()}

    def reader(self, topic: str) -> DataReader:
        return DataReader(self.participant, self._topics[topic], qos=reader_qos())

    def writer(self, topic: str) -> DataWriter:
        """The command topic's writer is reliable, the state topic's best-effort."""
        return DataWriter(self.participant, self._topics[topic], qos=writer_qos(reliable=topic == LOWCMD_TOPIC))

    def client_endpoints(self, service: str) -> tuple[DataWriter, DataReader]:
        """A client's ends of `service`: the request writer and the response reader."""
        return self._rpc_writer(request_topic(service), Request_), self._rpc_reader(response_topic(service), Response_)

    def server_endpoints(self, service: str) -> tuple[DataReader, DataWriter]:
        """A service's ends: the request reader and the response writer."""
        return self._rpc_reader(request_topic(service), Request_), self._rpc_writer(response_topic(service), Response_)

    def _topic(self, name: str, cls) -> Topic:
        if name not in self._topics:
            self._topics[name] = Topic(self.participant, name, cls)
        return self._topics[name]

    def _rpc_reader(self, name: str, cls) -> DataReader:
        return DataReader(self.participant, self._topic(name, cls), qos=reader_qos())

    def _rpc_writer(self, name: str, cls) -> DataWriter:
        return DataWriter(self.participant, self._topic(name, cls), qos=writer_qos(reliable=True, depth=RPC_DEPTH))

    def close(self) -> None:
        """Delete the participant and every reader, writer and topic under it."""
        self._topics.clear()
        # cyclonedds has no public delete: Entity.__del__ is dds_delete, which frees the children.
        self.participant.__del__()

    def __enter__(self) -> UnitreeNode:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
