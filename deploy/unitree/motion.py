"""The Go2's motion service, spoken by trot: check which mode runs, lie the robot down and release it, give it back.

A Go2 boots with Unitree's locomotion service running in a mode of its motion switcher ("normal", "ai", ...),
and that service writes its own `rt/lowcmd`. Before trot's first LowCmd, `take_over` asks the motion switcher
(`CheckMode`); while a mode is active it refuses, naming the mode, unless the operator asked for the release:
then it asks the sport service to lie the robot down (`StandDown`), waits until the joints are still, releases the
mode (`ReleaseMode`) and checks that none is active any more, as Unitree's low-level examples do
(unitree_sdk2 `example/go2/go2_stand_example.cpp`, unitree_sdk2_python `example/go2/low_level/go2_stand_example.py`).
`give_back` selects the released mode again (`SelectMode`). API ids, JSON and codes: `api_msgs`, `UNITREE.md`.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from trot.deploy.unitree.rpc import ApiError, ServiceClient

log = logging.getLogger("trot.deploy")

# unitree_sdk2 include/unitree/robot/b2/motion_switcher/motion_switcher_api.hpp (commit 21d0a3b; the Go2's examples
# use this client) and unitree_sdk2_python unitree_sdk2py/comm/motion_switcher/motion_switcher_api.py (37116c5).
MOTION_SWITCHER = "motion_switcher"
CHECK_MODE, SELECT_MODE, RELEASE_MODE = 1001, 1002, 1003
SWITCHER_APIS = {CHECK_MODE: "CheckMode", SELECT_MODE: "SelectMode", RELEASE_MODE: "ReleaseMode"}
# unitree_sdk2_python unitree_sdk2py/go2/sport/sport_api.py (commit 37116c5); unitree_sdk2 go2/sport/sport_api.hpp.
SPORT = "sport"
STAND_DOWN = 1005
SPORT_APIS = {STAND_DOWN: "StandDown"}
# The service behind each mode name of a legged Go2 (robot form "0"), as go2_stand_example.cpp names them.
MODE_SERVICES = {"normal": "sport_mode", "ai": "ai_sport", "advanced": "advanced_sport"}

RPC_TIMEOUT_S = 3.0  # one call, discovery included (Unitree's examples allow 5 to 10 s)
STAND_DOWN_MIN_S = 1.0  # after StandDown, wait at least this long before judging the robot still
STILL_S = 0.5  # ... then until every joint has been slower than STILL_RAD_S this long
STILL_RAD_S = 0.2
STAND_DOWN_TIMEOUT_S = 8.0  # the robot not still by then: nothing is released
RELEASE_TRIES = 3  # ReleaseMode, then CheckMode, this many times (Unitree's examples loop until none is active)
RELEASE_RETRY_S = 1.0


class MotionServiceError(Exception):
    """The motion service is in the way (a mode active, no release asked for) or did not do what was asked."""


@dataclass(frozen=True)
class MotionPolicy:
    """What `trot deploy --transport unitree` does about the robot's motion service before its first LowCmd."""

    check: bool = True  # ask CheckMode; False: the peer has no motion switcher (unitree_mujoco, bare DDS peers)
    release: bool = False  # an active mode: lie down and release it instead of refusing
    restore: bool = False  # select the released mode again when the run ends without a fault or e-stop

    def __post_init__(self) -> None:
        if self.restore and not self.release:
            raise ValueError("MotionPolicy.restore: only a mode trot released can be restored; expected release too")
        if self.release and not self.check:
            raise ValueError("MotionPolicy.release: needs the motion switcher; expected check too")


@dataclass(frozen=True)
class Mode:
    """What CheckMode answers: the active mode's name ('' when none) and the robot's form ('0': legged)."""

    name: str
    form: str = ""

    def describe(self) -> str:
        service = MODE_SERVICES.get(self.name) if self.form in ("", "0") else None
        notes = ([f"Unitree's {service}"] if service else []) + ([f"form '{self.form}'"] if self.form else [])
        return f"'{self.name}'" + (f" ({', '.join(notes)})" if notes else "")


class MotionSwitcher:
    """The motion switcher's and the sport service's calls over one `UnitreeNode`."""

    def __init__(self, node, timeout_s: float | None = None):
        timeout_s = RPC_TIMEOUT_S if timeout_s is None else timeout_s
        self.switcher = ServiceClient(node, MOTION_SWITCHER, SWITCHER_APIS, timeout_s)
        self._node, self._timeout_s, self._sport = node, timeout_s, None

    def check_mode(self) -> Mode:
        """CheckMode: the active mode, Mode('') when none; ApiError on a reply that is not {"name": ...}."""
        data = self.switcher.call(CHECK_MODE)
        try:
            body = json.loads(data)
            name, form = body["name"], body.get("form", "")
            if not isinstance(name, str):
                raise TypeError(f"'name' is {type(name).__name__}")
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            why = f"expected JSON with a string 'name' ({e})"
            raise ApiError(f"{MOTION_SWITCHER} CheckMode: data {data!r}; {why}") from e
        return Mode(name, str(form))

    def select_mode(self, name: str) -> None:
        """SelectMode {"name": name}."""
        self.switcher.call(SELECT_MODE, {"name": name})

    def release_mode(self) -> None:
        """ReleaseMode {}."""
        self.switcher.call(RELEASE_MODE)

    def stand_down(self) -> None:
        """The sport service's StandDown {}: the robot lies down."""
        if self._sport is None:
            self._sport = ServiceClient(self._node, SPORT, SPORT_APIS, self._timeout_s)
        self._sport.call(STAND_DOWN)


def take_over(switcher: MotionSwitcher, policy: MotionPolicy, joint_speed: Callable[[], float | None]) -> str | None:
    """Make sure no mode of the motion service drives the robot; return the mode released ('normal'...), or None.

    `joint_speed()` is the largest |joint velocity| of the newest LowState (rad/s), None before the first.
    MotionServiceError (a mode active and no release asked for; the robot not still after StandDown; a mode still
    active after ReleaseMode) or ApiError (a call failed) saying why; nothing is released then.
    """
    mode = switcher.check_mode()
    if not mode.name:
        log.info("motion service: no mode active (CheckMode)")
        return None
    if not policy.release:
        raise MotionServiceError(
            f"the robot's motion service is active: CheckMode names mode {mode.describe()}, which writes its own "
            "rt/lowcmd; trot does not start beside it. Pass --release_motion_service to have trot lie the robot "
            "down (StandDown) and release the mode (ReleaseMode), or release it with Unitree's app or SDK"
        )
    log.info("motion service: mode %s active; StandDown (the robot lies down), then ReleaseMode", mode.describe())
    switcher.stand_down()
    wait_until_still(joint_speed)
    for attempt in range(1, RELEASE_TRIES + 1):
        switcher.release_mode()
        now = switcher.check_mode()
        if not now.name:
            log.info("motion service: mode '%s' released (CheckMode names none)", mode.name)
            return mode.name
        if attempt < RELEASE_TRIES:
            time.sleep(RELEASE_RETRY_S)
    raise MotionServiceError(
        f"ReleaseMode was answered {RELEASE_TRIES} times, but CheckMode still names mode {now.describe()}: "
        "the motion service keeps writing rt/lowcmd; trot does not start beside it"
    )


def wait_until_still(joint_speed: Callable[[], float | None], clock=time.monotonic, sleep=time.sleep) -> float:
    """After StandDown: wait STAND_DOWN_MIN_S, then until every joint has been slower than STILL_RAD_S for
    STILL_S; return the seconds waited. MotionServiceError after STAND_DOWN_TIMEOUT_S, naming the last speed."""
    start = clock()
    still_since, speed = None, None
    while True:
        now = clock()
        if now - start >= STAND_DOWN_MIN_S:
            speed = joint_speed()
            if speed is not None and speed < STILL_RAD_S:
                still_since = now if still_since is None else still_since
                if now - still_since >= STILL_S:
                    return now - start
            else:
                still_since = None
        if now - start >= STAND_DOWN_TIMEOUT_S:
            seen = "no LowState arrived" if speed is None else f"a joint still moved at {speed:.2f} rad/s"
            raise MotionServiceError(
                f"after StandDown the robot was not still within {STAND_DOWN_TIMEOUT_S:g} s ({seen}; still means "
                f"every joint under {STILL_RAD_S:g} rad/s for {STILL_S:g} s): nothing was released"
            )
        sleep(0.02)


def give_back(switcher: MotionSwitcher, name: str) -> Mode:
    """SelectMode `name`, then CheckMode; MotionServiceError when another mode (or none) is active after."""
    switcher.select_mode(name)
    now = switcher.check_mode()
    if now.name != name:
        raise MotionServiceError(f"SelectMode '{name}' was answered, but CheckMode names "
            + (f"mode {now.describe()}" if now.name else "no mode"))
    return now
