"""The deploy loop's `Transport` over Unitree's low-level DDS topics (`deploy/UNITREE.md`): LowState_ in,
LowCmd_ out, through the robot contract's hardware map.

A reader thread waits on a WaitSet for `rt/lowstate` and stamps each LowState with the monotonic clock as it
arrives; `poll` checks and converts what came since the last tick, so the loop's stale check times a State
from its arrival, as over ROS 2. A LowState is refused when its arrays do not have the IDL's sizes (a
payload error: the peer sends another type; the loop damps at once) or when its `crc` does not match its
contents (a link error, as a serial CRC error: dropped, and a burst damps), each logged naming the field.
LowState has no sequence number trot can rely on (`tick`'s step is not published) and no e-stop: lost
States show as staleness, and the host's e-stop is the loop's damping.

Before the first LowCmd, `open` asks the robot's motion switcher which mode runs (`motion.take_over`, over the
same participant): it refuses while one is active, or with `MotionPolicy.release` lies the robot down and releases
it. `hand_back` selects a released mode again after the run, where the policy says so.

`send` writes one LowCmd per control tick: every mapped motor in servo mode (0x01) with the tick's target
and gains; DAMPING is kp 0 with the loop's damping kd, OFF is zero gains and torque (Unitree's own zero
torque command), never another mode byte.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque

import numpy as np

from trot.deploy.link import ControlMode, Poll, Sample, TransportError
from trot.deploy.unitree import convert, crc
from trot.deploy.unitree.motion import MotionPolicy
from trot.deploy.unitree.msgs import LOWCMD_TOPIC, LOWSTATE_TOPIC, LowState_

log = logging.getLogger("trot.deploy")

MAX_INBOX = 256  # LowStates held for a loop that stopped polling (about 1 s at 200 Hz); older ones are dropped
READER_WAKE_MS = 50  # the reader thread checks for close() this often while nothing arrives
OPEN_POLL_S = 0.005


def check_low_state(msg: LowState_) -> tuple[str, str] | None:
    """Why a received LowState can't be used: ('payload', ...) for arrays of the wrong size, ('crc', ...) for a
    crc field that does not match the contents; None when it is sound."""
    try:
        expected = crc.message_crc(msg)  # walks every field: refuses an array of the wrong size, naming it
    except (ValueError, TypeError) as e:
        return "payload", f"LowState refused: {e}"
    if msg.crc != expected:
        return "crc", f"LowState refused: field 'crc' = {msg.crc:#010x}; expected {expected:#010x} (its contents')"
    return None


class UnitreeTransport:
    """`rt/lowstate` and `rt/lowcmd` through Cyclone DDS, for a robot whose hardware map names LowCmd slots."""

    name = "unitree"

    def __init__(self, motors: convert.MotorMap, domain_id: int = 0, motion: MotionPolicy | None = None):
        motion = MotionPolicy() if motion is None else motion
        self.motors, self.domain_id, self.motion = motors, domain_id, motion
        service = ("released by trot" + (", restored at exit" if motion.restore else "")) if motion.release else (
            "checked" if motion.check else "not asked")
        self.describe = (f"unitree DDS domain {domain_id}: {LOWSTATE_TOPIC} in, {LOWCMD_TOPIC} out; motion service "
                         f"{service}")  # fmt: skip
        self.released_mode: str | None = None  # the motion service's mode this transport released
        self._node = None
        self._inbox: deque[tuple[float, LowState_]] = deque(maxlen=MAX_INBOX)
        self._inbox_lock = threading.Lock()
        self._stop = threading.Event()
        self._reader_thread: threading.Thread | None = None
        self._lost: str | None = None  # set by either thread; a plain assignment
        self._pending: list[tuple[float, LowState_]] = []  # checked during open, handed to the first poll
        self.crc_errors = 0
        self.payload_errors = 0
        self._refusing: str | None = None  # the last refusal logged, so that a burst logs once

    # ---- opening and closing ----------------------------------------------------------------------

    def open(self, timeout_s: float = 3.0) -> str:
        """Join the DDS domain and wait for the first sound LowState (the handshake's stand-in)."""
        from trot.deploy.unitree.channels import UnitreeNode

        try:
            self._node = UnitreeNode(self.domain_id)
            reader = self._node.reader(LOWSTATE_TOPIC)
            self._writer = self._node.writer(LOWCMD_TOPIC)
        except Exception as e:  # cyclonedds' DDSException: the domain can't be joined (bad CYCLONEDDS_URI)
            self.close()
            raise TransportError(f"{self.describe}: cannot join the DDS domain ({type(e).__name__}: {e})") from e
        self._reader_thread = threading.Thread(target=self._read, args=(reader,), name="trot-unitree-rx", daemon=True)
        self._reader_thread.start()
        if self.motion.check:
            self._take_over_motion()
        deadline, refused = time.monotonic() + timeout_s, None
        while time.monotonic() < deadline:
            for arrived, msg in self._take():
                problem = check_low_state(msg)
                if problem is None:
                    self._pending.append((arrived, msg))
                elif problem[0] == "payload":
                    raise TransportError(f"{LOWSTATE_TOPIC}: {problem[1]} (is the peer a Go2's unitree_go types?)")
                else:
                    refused = problem[1]
            if self._pending:
                slots = self.motors.index.tolist()
                return (f"first LowState on {LOWSTATE_TOPIC} (tick {self._pending[0][1].tick}); LowCmd to "
                        f"{LOWCMD_TOPIC}, {self.motors.num_joints} joints on motor slots {slots}")  # fmt: skip
            time.sleep(OPEN_POLL_S)
        why = f"; the last one came with a wrong CRC ({refused})" if refused else ""
        raise TransportError(
            f"no sound LowState on {LOWSTATE_TOPIC} within {timeout_s:.1f} s in DDS domain {self.domain_id}{why} "
            "(is the robot, or `trot emulate --transport unitree`, on this domain and network interface, with the "
            "same CYCLONEDDS_URI?)"
        )

    def _take_over_motion(self) -> None:
        """No mode of the motion service may drive the robot beside trot: check it, or release it (the policy)."""
        from trot.deploy.unitree.motion import MotionServiceError, MotionSwitcher, take_over
        from trot.deploy.unitree.rpc import ApiError

        try:
            self.released_mode = take_over(MotionSwitcher(self._node), self.motion, self._joint_speed)
        except MotionServiceError as e:
            self.close()
            raise TransportError(str(e)) from e
        except ApiError as e:
            self.close()
            raise TransportError(
                f"motion service: {e} (trot asks the robot's motion switcher before its first LowCmd; for a peer "
                "without one, such as unitree_mujoco, pass --no_motion_switcher)"
            ) from e
        except Exception as e:  # cyclonedds' DDSException: the service's endpoints could not be made
            self.close()
            raise TransportError(f"motion service: asking the motion switcher failed ({type(e).__name__}: {e})") from e
        self._take()  # LowStates from before trot's first command are no observation of it

    def hand_back(self, clean: bool) -> str | None:
        """After the run: select the mode this transport released again if the policy asks and the run was `clean`
        (no fault, no e-stop); a line saying what was done, None when nothing was released."""
        mode = self.released_mode
        if mode is None:
            return None
        how = (f"give it back with Unitree's app or SDK (MotionSwitcherClient SelectMode '{mode}'), or restart the "
               "robot")  # fmt: skip
        if not self.motion.restore:
            return f"motion service: mode '{mode}' stays released (no --restore_motion_service); {how}"
        if not clean:
            return f"motion service: mode '{mode}' stays released after a fault, an e-stop or a forced exit; {how}"
        from trot.deploy.unitree.channels import UnitreeNode
        from trot.deploy.unitree.motion import MotionServiceError, MotionSwitcher, give_back
        from trot.deploy.unitree.rpc import ApiError

        try:
            with UnitreeNode(self.domain_id) as node:
                now = give_back(MotionSwitcher(node), mode)
        except (MotionServiceError, ApiError) as e:
            return f"motion service: selecting mode '{mode}' again failed: {e}; {how}"
        except Exception as e:  # cyclonedds' DDSException: the domain could not be joined again
            return f"motion service: selecting mode '{mode}' again failed ({type(e).__name__}: {e}); {how}"
        self.released_mode = None
        return f"motion service: mode {now.describe()} selected again (SelectMode, then CheckMode)"

    def close(self) -> None:
        self._stop.set()
        if self._reader_thread is not None:
            self._reader_thread.join(timeout=1.0)
            self._reader_thread = None
        if self._node is not None:
            self._node.close()
            self._node = None

    # ---- the loop's side ----------------------------------------------------------------------------

    def poll(self) -> Poll:
        """A Sample for every sound LowState since the last poll, each stamped with its arrival time."""
        lost = self._lost  # before draining: every State that came before the loss is drained below
        messages, self._pending = self._pending + self._take(), []
        poll = Poll(lost=lost)
        for arrived, msg in messages:
            problem = check_low_state(msg)
            if problem is not None:
                kind, why = problem
                if kind == "crc":
                    self.crc_errors += 1
                else:
                    self.payload_errors += 1
                poll.frames[f"LowState refused ({kind})"] = poll.frames.get(f"LowState refused ({kind})", 0) + 1
                if why != self._refusing:
                    log.warning("%s", why)
                self._refusing = why
                continue
            self._refusing = None
            poll.frames["LowState"] = poll.frames.get("LowState", 0) + 1
            poll.samples.append(self._sample(arrived, msg))
        poll.received = len(poll.samples)
        poll.link_errors, poll.payload_errors = self.crc_errors, self.payload_errors
        return poll

    def send(self, mode: ControlMode, target: np.ndarray, kp: np.ndarray, kd: np.ndarray) -> str | None:
        """One LowCmd, CRC stamped: servo mode on every mapped motor; OFF sends zero gains."""
        if self._lost or self._node is None:
            return self._lost
        if mode == ControlMode.OFF:
            kp = kd = np.zeros(self.motors.num_joints)
        try:
            self._writer.write(convert.targets_to_low_cmd(self.motors, target, kp, kd))
        except ValueError as e:  # a non-finite target or gain: no LowCmd is better than a wrong one
            self._lost = f"LowCmd not sent: {e}"
        except Exception as e:  # the middleware refused the write: nothing reaches the robot any more
            self._lost = f"writing {LOWCMD_TOPIC} failed ({type(e).__name__}: {e})"
        return self._lost

    def estop(self, reason: int) -> None:
        """Unitree's low-level interface has no e-stop message: the loop's damping commands are the e-stop."""

    def report(self, record: dict, *, overruns: int, missed_ticks: int, reason: str) -> None:
        """No status channel: the telemetry file has the record."""

    # ---- the reader thread --------------------------------------------------------------------------

    def _read(self, reader) -> None:
        """Wake when a LowState arrives (the wait releases the GIL), stamp it, put it in the inbox."""
        from cyclonedds.core import InstanceState, ReadCondition, SampleState, ViewState, WaitSet
        from cyclonedds.util import duration

        try:
            waitset = WaitSet(self._node.participant)
            waitset.attach(ReadCondition(reader, SampleState.NotRead | ViewState.Any | InstanceState.Any))
            while not self._stop.is_set():
                waitset.wait(duration(milliseconds=READER_WAKE_MS))
                samples = [s for s in reader.take(N=64) if s.sample_info.valid_data]
                arrived = time.monotonic()
                with self._inbox_lock:
                    self._inbox.extend((arrived, s) for s in samples)
        except Exception as e:  # the participant went away under the thread, or the middleware failed
            if not self._stop.is_set():
                self._lost = f"reading {LOWSTATE_TOPIC} failed ({type(e).__name__}: {e})"

    def _joint_speed(self) -> float | None:
        """The largest |joint velocity| of the newest sound LowState, rad/s; None before one."""
        with self._inbox_lock:
            newest = self._inbox[-1][1] if self._inbox else None
        if newest is None or check_low_state(newest) is not None:
            return None
        return float(np.abs(convert.low_state_to_joints(newest, self.motors)[1]).max())

    def _take(self) -> list[tuple[float, LowState_]]:
        with self._inbox_lock:
            out = list(self._inbox)
            self._inbox.clear()
        return out

    def _sample(self, arrived: float, msg: LowState_) -> Sample:
        q, dq, tau = convert.low_state_to_joints(msg, self.motors)
        quat, gyro, accel = convert.low_state_to_imu(msg)
        return Sample(arrived, None, None, q, dq, tau, quat, gyro, accel)
