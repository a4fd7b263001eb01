"""The Go2's motion switcher and sport service, emulated for the unitree link: the RPCs trot's deploy side makes
(`trot.deploy.unitree.motion`), answered over the same request/response topics and types, and the service's own
LowCmd while a mode is active.

A Go2 boots with its locomotion service in a mode ("normal"): the emulator starts the same way when given a mode,
and while a mode is active it writes its own `rt/lowcmd` once per control period from the link's participant, as a
second controller beside any host's (what the link applies is whichever LowCmd came last). What it does is a
stand-in for Unitree's service, whose inside is not published:

- standing: every joint held at the contract's default pose with the contract's kp and kd;
- `StandDown` (sport, 1005): the stiffness fades out over STAND_DOWN_S while the damping rises to the contract's
  `damping_kd`, and the robot settles on the ground; then it stays lying (kp 0, damping_kd);
- `ReleaseMode` (1003): the service stops, and with it its LowCmd; the sport service answers nothing any more;
- `SelectMode` (1002) with a mode name of MODES: the service runs again, damping the robot where it lies; another
  name is refused with 7004 (name or alias is invalid), as Unitree's motion switcher declares it;
- `CheckMode` (1001): {"form": "0", "name": the active mode, or ""}, the keys unitree_sdk2's client reads;
- any other api_id: 3203 (API not implemented). A request with `policy.noreply` gets no response.
Every call is logged in `calls` (emulator time, service, api_id, status code) for tests and people.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass

import numpy as np

from trot.deploy.unitree import convert
from trot.deploy.unitree.api_msgs import (
    RPC_ERR_SERVER_API_NOT_IMPL,
    RPC_OK,
    RequestIdentity_,
    Response_,
    ResponseHeader_,
    ResponseStatus_,
)
from trot.deploy.unitree.motion import (
    CHECK_MODE,
    MODE_SERVICES,
    MOTION_SWITCHER,
    RELEASE_MODE,
    SELECT_MODE,
    SPORT,
    STAND_DOWN,
)
from trot.deploy.unitree.msgs import LOWCMD_TOPIC

log = logging.getLogger(__name__)

MODES = tuple(MODE_SERVICES)  # the names SelectMode accepts ("normal", "ai", "advanced")
LEGGED_FORM = "0"
SWITCH_ERR_NAME = 7004  # unitree_sdk2 motion_switcher_error.hpp: UT_SWITCH_ERR_NAME
STAND_DOWN_S = 1.5


@dataclass(frozen=True)
class Call:
    """One request the emulated services took."""

    t: float  # emulator time, s
    service: str
    api_id: int
    code: int  # the status code answered


def check_mode_name(mode: str | None) -> None:
    """ValueError unless `mode` is a mode the motion switcher runs, or None."""
    if mode is not None and mode not in MODES:
        raise ValueError(f"motion mode {mode!r}: expected one of {', '.join(MODES)}, or none")


class MotionService:
    """The motion switcher and the sport service on one `UnitreeNode`, with the service's own LowCmd writer."""

    def __init__(self, node, robot, motors: convert.MotorMap, mode: str | None):
        check_mode_name(mode)
        self.robot, self.motors, self.mode = robot, motors, mode or ""
        self._servers = {service: node.server_endpoints(service) for service in (MOTION_SWITCHER, SPORT)}
        self._lowcmd = node.writer(LOWCMD_TOPIC)
        self.lowcmd_handle = self._lowcmd.instance_handle % (1 << 64)  # as samples' publication_handle reads it
        self.calls: list[Call] = []
        self.posture, self._posture_t = "standing", 0.0
        self._next_cmd_t: float | None = None

    def describe(self) -> str:
        if not self.mode:
            return "motion service: no mode active"
        return f"motion service: mode '{self.mode}' active, writing its own {LOWCMD_TOPIC}"

    # ---- the calls ------------------------------------------------------------------------------

    def serve(self, t: float) -> None:
        """Answer every request that arrived; the sport service answers only while a mode runs."""
        for service, (reader, writer) in self._servers.items():
            for request in reader.take(N=16):
                if not request.sample_info.valid_data or (service == SPORT and not self.mode):
                    continue
                identity = request.header.identity
                code, data = self._answer(service, identity.api_id, request.parameter, t)
                self.calls.append(Call(t, service, identity.api_id, code))
                log.info("%s api %d -> %d %s", service, identity.api_id, code, data)
                if not request.header.policy.noreply:
                    header = ResponseHeader_(RequestIdentity_(identity.id, identity.api_id), ResponseStatus_(code))
                    writer.write(Response_(header=header, data=data, binary=[]))

    def _answer(self, service: str, api_id: int, parameter: str, t: float) -> tuple[int, str]:
        if service == SPORT:
            if api_id != STAND_DOWN:
                return RPC_ERR_SERVER_API_NOT_IMPL, ""
            if self.posture == "standing":
                self.posture, self._posture_t = "lying down", t
            return RPC_OK, ""
        if api_id == CHECK_MODE:
            return RPC_OK, json.dumps({"form": LEGGED_FORM, "name": self.mode})
        if api_id == RELEASE_MODE:
            self.mode = ""
            return RPC_OK, ""
        if api_id == SELECT_MODE:
            try:
                name = json.loads(parameter).get("name")
            except (ValueError, AttributeError):
                name = None
            if name not in MODES:
                return SWITCH_ERR_NAME, ""
            if self.mode != name:
                self.mode, self.posture = name, "lying"  # it comes up where the robot lies
            return RPC_OK, ""
        return RPC_ERR_SERVER_API_NOT_IMPL, ""

    # ---- its own LowCmd -------------------------------------------------------------------------

    def command(self, t: float) -> None:
        """While a mode runs: one LowCmd per control period, holding the pose its posture asks for."""
        if not self.mode:
            self._next_cmd_t = None
            return
        if self._next_cmd_t is not None and t < self._next_cmd_t:
            return
        self._next_cmd_t = t + self.robot.control_dt
        kp, kd = self._gains(t)
        self._lowcmd.write(convert.targets_to_low_cmd(self.motors, np.array(self.robot.default_joint_pos), kp, kd))

    def _gains(self, t: float) -> tuple[float, float]:
        kp, kd, damping_kd = self.robot.kp, self.robot.kd, self.robot.hardware["damping_kd"]
        if self.posture == "lying down":
            s = min((t - self._posture_t) / STAND_DOWN_S, 1.0)
            if s >= 1.0:
                self.posture = "lying"
            return (1 - s) * kp, (1 - s) * kd + s * damping_kd
        return (kp, kd) if self.posture == "standing" else (0.0, damping_kd)
