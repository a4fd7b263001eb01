"""A client of one Unitree service over DDS (`api_msgs`): a request out, the response with its id back.

Written from unitree_sdk2_python's client (`unitree_sdk2py/rpc/client_base.py`, commit 37116c5) and unitree_sdk2's
headers: the request's `header.identity` is (id, api_id), the lease id 0 and the policy (priority 0, noreply false)
as its clients send for the motion switcher and the sport service; the parameter is JSON. The response is the one
whose `header.identity.id` is the request's (other clients' responses on the same topic are skipped); its
`api_id` must be the request's and its `header.status.code` 0, or the call fails naming the code.

Every call is bounded by `timeout_s`, discovery included: the client first waits until the service's request
reader and response writer are matched (no request is written into a topic nobody reads), then writes the
request, and writes it again with a new id every RESEND_S without an answer (the calls trot makes are
idempotent), accepting the response to any of them. Each failure is an `ApiError` that says which service,
which call, and what happened.
"""

from __future__ import annotations

import json
import time

from trot.deploy.unitree.api_msgs import (
    RPC_OK,
    Request_,
    RequestHeader_,
    RequestIdentity_,
    request_topic,
    response_topic,
    status_text,
)

RESEND_S = 0.5  # a request unanswered this long is written again (under a new id)
POLL_S = 0.002
_last_request_id = 0


class ApiError(Exception):
    """A service call that did not get a sound answer: no service, no reply in time, or a non-zero status."""

    def __init__(self, message: str, code: int | None = None):
        super().__init__(message)
        self.code = code  # the response's status code, where one came


def new_request_id() -> int:
    """A request id unique in this process: the monotonic clock in ns, as unitree_sdk2_python's, made strictly
    increasing."""
    global _last_request_id
    _last_request_id = max(time.monotonic_ns(), _last_request_id + 1)
    return _last_request_id


def build_request(request_id: int, api_id: int, parameter: dict | None = None) -> Request_:
    """The Request_ of one call; the parameter is encoded as unitree_sdk2_python encodes it (`json.dumps`)."""
    header = RequestHeader_(identity=RequestIdentity_(id=request_id, api_id=api_id))
    return Request_(header=header, parameter=json.dumps(parameter or {}), binary=[])


class ServiceClient:
    """Calls of one service (`rt/api/<service>/request` → `/response`) on a `UnitreeNode`'s participant."""

    def __init__(self, node, service: str, api_names: dict[int, str], timeout_s: float):
        self.service, self.api_names, self.timeout_s = service, api_names, timeout_s
        self.domain_id = node.domain_id
        self._writer, self._reader = node.client_endpoints(service)

    def call(self, api_id: int, parameter: dict | None = None) -> str:
        """The response's data (JSON text) of one call; ApiError saying why there is none."""
        what = f"{self.service} {self.api_names.get(api_id, 'api')} (api_id {api_id})"
        deadline = time.monotonic() + self.timeout_s
        self._wait_matched(what, deadline)
        self._reader.take(N=256)  # responses to earlier calls, or to other clients, before this one
        sent: set[int] = set()
        resend_at = time.monotonic()
        while True:
            now = time.monotonic()
            if now >= resend_at:
                request = build_request(new_request_id(), api_id, parameter)
                self._writer.write(request)
                sent.add(request.header.identity.id)
                resend_at = now + RESEND_S
            for response in self._reader.take(N=64):
                if not response.sample_info.valid_data or response.header.identity.id not in sent:
                    continue  # a response to another client (or to nothing of ours)
                return self._check(what, api_id, response)
            if time.monotonic() >= deadline:
                raise ApiError(
                    f"{what}: no response on {response_topic(self.service)} within {self.timeout_s:g} s "
                    f"({len(sent)} request(s) sent on {request_topic(self.service)}, DDS domain {self.domain_id})"
                )
            time.sleep(POLL_S)

    def _check(self, what: str, api_id: int, response) -> str:
        got = response.header.identity.api_id
        if got != api_id:
            raise ApiError(f"{what}: the response to request {response.header.identity.id} names api_id {got}")
        code = response.header.status.code
        if code != RPC_OK:
            raise ApiError(f"{what}: refused with status {status_text(code)}", code)
        return response.data

    def _wait_matched(self, what: str, deadline: float) -> None:
        """Until a reader of the requests and a writer of the responses are discovered, or ApiError at the deadline."""
        while True:
            readers = len(self._writer.get_matched_subscriptions())
            writers = len(self._reader.get_matched_publications())
            if readers and writers:
                return
            if time.monotonic() >= deadline:
                missing = [f"no reader of {request_topic(self.service)}"] if not readers else []
                missing += [f"no writer of {response_topic(self.service)}"] if not writers else []
                raise ApiError(
                    f"{what}: {' and '.join(missing)} within {self.timeout_s:g} s in DDS domain {self.domain_id}: "
                    f"nothing on this domain and network interface serves Unitree's '{self.service}' service"
                )
            time.sleep(POLL_S)
