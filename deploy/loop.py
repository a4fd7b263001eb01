"""The onboard deploy loop: a fixed-rate loop at the bundle's control_dt around the policy and the safety layer.

Each tick: drain the link (every State, stamped with its arrival), poll the command source once (keys,
buttons, e-stop), run the safety checks, run the policy where the state says so, clamp the targets, send
one Command (POSITION, DAMPING or OFF: every tick, so that the microcontroller's watchdog stays fed), and
append a telemetry record. Deadlines sit on the grid start + k·control_dt of the monotonic clock: a late
tick never shifts the later ones, and a tick more than a period late skips the missed slots instead of
running them back to back.

The loop measures its own share of the actuation latency on every policy tick: from the arrival of the sensor
frame the policy read to the command written to the link (`obs_to_cmd_ms`). When it exceeds the latency the
robot is declared to meet (robot.toml [latency], the figure the gate judges at), it says so once: a log
warning and a telemetry event, not one per tick.
"""

from __future__ import annotations

import base64
import contextlib
import gc
import logging
import math
import platform
import time
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone

import numpy as np

from trot.deploy.bundle import Bundle, check_contract
from trot.deploy.commands import CommandSource, clip_to_ranges
from trot.deploy.link import ControlMode, EStopReason, Sample, StatusFlags, Transport, TransportError
from trot.deploy.runtime import PolicyRuntime
from trot.deploy.safety import (
    COMMAND_MODE,
    POLICY_MODES,
    Mode,
    SafetyLimits,
    SafetyMachine,
    TargetClamp,
    Transition,
    smoothstep,
)
from trot.deploy.sched import ThreadClock, descheduled
from trot.deploy.telemetry import TelemetryWriter, rounded

log = logging.getLogger("trot.deploy")

EXIT_CLEAN, EXIT_FAULT, EXIT_REFUSED = 0, 1, 2


@dataclass(frozen=True)
class LoopConfig:
    """Knobs of the loop itself (the safety thresholds are in SafetyLimits)."""

    duration_s: float | None = None  # stop (through SHUTDOWN) after this long; None: until stopped
    overrun_fraction: float = 0.5  # a tick that starts more than this × control_dt late is an overrun
    handshake_timeout_s: float = 3.0
    estop_repeat_s: float = 0.1  # the host's EStop is repeated this often until the MCU reports ESTOP
    warmup_inferences: int = 20  # onnxruntime runs before the handshake (first runs allocate)
    telemetry_obs: bool = True  # log the observation vector every tick


@dataclass
class LoopResult:
    exit_code: int
    summary: dict
    transitions: list[Transition] = field(default_factory=list)


def percentile(values, q: float) -> float:
    values = np.asarray(values, dtype=np.float64)
    return float(np.percentile(values, q)) if values.size else math.nan


def _use_ms(prefix: str, use: tuple[float, float | None]) -> dict:
    """Telemetry fields `<prefix>cpu_ms` and, where the kernel says, `<prefix>wait_ms` (run-queue wait)."""
    cpu, wait = use
    fields = {f"{prefix}cpu_ms": round(1e3 * cpu, 4)}
    if wait is not None:
        fields[f"{prefix}wait_ms"] = round(1e3 * wait, 4)
    return fields


def time_inference(runtime: PolicyRuntime, count: int) -> list[float]:
    """Seconds per onnxruntime call on a zero observation, `count` times: warm-up and a raw reference."""
    obs = np.zeros((1, runtime.obs_size), dtype=np.float32)
    times = []
    for _ in range(count):
        start = time.perf_counter()
        runtime.act(obs)
        times.append(time.perf_counter() - start)
    return times


class DeployLoop:
    """One run of the deploy loop: handshake on `transport`, tick until DONE; `run()` gives exit code and figures."""

    def __init__(
        self,
        bundle: Bundle,
        robot,
        transport: Transport,
        commands: CommandSource,
        telemetry: TelemetryWriter,
        limits: SafetyLimits | None = None,
        config: LoopConfig | None = None,
        runtime: PolicyRuntime | None = None,
    ):
        self.bundle, self.robot, self.transport, self.commands = bundle, robot, transport, commands
        self.telemetry = telemetry
        self.limits = limits or SafetyLimits()
        self.config = config or LoopConfig()
        # Gains, action scale, default pose and limits come from this contract only: the bundle's, verified
        # (integrity when it was loaded, and field by field against the robot's here).
        self.contract = check_contract(bundle, robot)
        self.period = self.contract.control_dt
        self.runtime = runtime or PolicyRuntime(bundle, robot)
        self.machine = SafetyMachine(self.limits, self.period)
        self.clamp = TargetClamp(self.contract, robot.hardware)
        self.ranges = bundle.meta.commands
        n = robot.num_joints
        self._kp = np.full(n, self.clamp.kp)
        self._kd = np.full(n, self.clamp.kd)
        self._damping_kd = np.full(n, self.clamp.damping_kd)
        self._zeros = np.zeros(n)
        self._stop_reason: str | None = None
        self._estop_reason: str | None = None
        self._logged_lost: set[str] = set()
        self.sample: Sample | None = None
        self.t0 = 0.0
        self.start_pose: np.ndarray | None = None
        self.last_target: np.ndarray | None = None
        self.policy_start: float | None = None
        self._estop_frames_until_seen = False
        self._last_estop_sent = -math.inf
        self._seen_transitions = 0
        # Timing and counters.
        self.tick_starts: list[float] = []
        self.lateness: list[float] = []
        self.inference: list[float] = []
        self.compute: list[float] = []
        self.overruns = 0
        self.descheduled = 0  # overruns that waiting for a CPU explains (sched.descheduled)
        self.cpu: list[float] = []  # loop thread's CPU time between tick starts, s
        self.run_queue_wait: list[float] = []  # ... and its time runnable but not running (Linux), s
        self.missed = 0
        self.states_received = 0
        self.commands_sent = 0
        self.link_errors = 0
        self.obs_to_cmd: list[float] = []  # s, sensor frame arrival to command written, per policy tick
        self.latency_declared = float(robot.actuation_latency_s)
        self.latency_exceeded = 0  # policy ticks whose obs_to_cmd exceeded latency_declared

    # ---- requests from other threads or signal handlers (a plain assignment each) ----------------

    def request_stop(self, reason: str) -> None:
        """Damp and exit at the next tick (Ctrl-C, SIGTERM)."""
        self._stop_reason = self._stop_reason or reason

    def request_estop(self, reason: str) -> None:
        """E-stop at the next tick (keyboard, signal): damping, motors off, EStop sent to the MCU."""
        self._estop_reason = self._estop_reason or reason

    # ---- the run --------------------------------------------------------------------------------

    def run(self) -> LoopResult:
        """Handshake, then tick at control_dt until DONE; always ends with a summary record.

        Everything alive before the run is frozen out of the garbage collector's reach for its length: a full
        collection would otherwise scan the whole heap (rclpy, onnxruntime, numpy...; 0.2 s for a million objects
        on a desktop core) inside whichever tick it fell in. The run's own short-lived objects are collected as usual.
        """
        gc.collect()
        gc.freeze()
        try:
            return self._run()
        finally:
            gc.unfreeze()

    def _run(self) -> LoopResult:
        self.t0 = time.monotonic()
        self.machine.begin(0.0, self.transport.describe)
        self._record_transitions()
        try:
            peer = self.transport.open(self.config.handshake_timeout_s)
        except TransportError as e:
            self._event("refused", f"refused: {e}")
            self.machine.refuse(self._now(), str(e))
            return self._finish(EXIT_REFUSED)
        self._event("handshake", f"{self.transport.describe}: {peer}")
        self.machine.connected(self._now())
        try:
            self._run_ticks()
        except BaseException as e:  # a crash or a forced exit: leave the motors damped, keep the log
            self._event("error", f"loop aborted by {type(e).__name__}: {e}; sending DAMPING")
            with contextlib.suppress(Exception):  # the link may be what failed; the original error is what counts
                for _ in range(3):
                    self.transport.send(ControlMode.DAMPING, self.clamp.default, self._zeros, self._damping_kd)
            self._finish(EXIT_FAULT)
            raise
        return self._finish(EXIT_FAULT if self.machine.faulted else EXIT_CLEAN)

    def _now(self) -> float:
        return time.monotonic() - self.t0

    def _run_ticks(self) -> None:
        period = self.period
        deadline = time.monotonic()
        clock = ThreadClock()
        while self.machine.state != Mode.DONE:
            now = time.monotonic()
            if now < deadline:
                time.sleep(deadline - now)
                now = time.monotonic()
            late = now - deadline
            cpu, wait = clock.lap()
            self.cpu.append(cpu)
            if wait is not None:
                self.run_queue_wait.append(wait)
            overrun = self.config.overrun_fraction * period
            if late > overrun:
                self.overruns += 1
                self.descheduled += descheduled(late, wait, overrun)
            skipped = int(late // period)  # whole slots already past: skip them, stay on the grid
            self.missed += skipped
            if skipped and self.machine.state in POLICY_MODES:
                self.runtime.steps += skipped  # the gait clock counts control periods, run or skipped
            deadline += period * (1 + skipped)
            self.tick_starts.append(now)
            self.lateness.append(late)
            self._tick(now - self.t0, late, cpu, wait)

    def _tick(self, now: float, late: float, cpu: float = 0.0, wait: float | None = None) -> None:
        m = self.machine
        poll = self.transport.poll()
        arrived = [replace(s, rx_time=s.rx_time - self.t0) for s in poll.samples]  # on the loop's clock, like `now`
        if arrived:
            self.sample = arrived[-1]
        self.states_received += poll.received
        self.link_errors = poll.link_errors
        self.commands.poll()  # once a tick, keys and buttons first: an e-stop pressed now acts in this tick
        if self.config.duration_s is not None and now >= self.config.duration_s:
            self.request_stop(f"--duration {self.config.duration_s:g} s reached")
        lost = self.commands.lost  # a gamepad unplugged: its command is zero from now on
        if lost and lost not in self._logged_lost:
            self._logged_lost.add(lost)
            self._event("command_source", lost)
        self._stop_reason = self._stop_reason or self.commands.stop
        host_estop = self._estop_reason or self.commands.estop
        if host_estop and m.estop(now, "estop_host", f"e-stop: {host_estop}"):
            self._estop_frames_until_seen = True
        if poll.peer_estop_from:
            m.estop(now, "estop_topic", f"e-stop: {poll.peer_estop_from}")
        if poll.peer_estop is not None:
            try:
                name = EStopReason(poll.peer_estop).name
            except ValueError:  # a newer firmware's reason: still an e-stop
                name = "unknown"
            m.estop(now, "estop_mcu", f"microcontroller sent EStop (reason {poll.peer_estop} {name})")
        if self._stop_reason:
            m.request_stop(now, self._stop_reason)
        m.check_link(now, poll.lost, poll.link_errors, poll.payload_errors)
        m.check_state(now, arrived, poll.seq_gap)
        m.advance(now)
        self._on_transitions(now)

        policy_t = None if self.policy_start is None else now - self.policy_start
        velocity = clip_to_ranges(self.commands.velocity(policy_t), self.ranges)
        out, inference_s, inference_use = None, None, None
        if m.state in POLICY_MODES:
            s = self.sample
            start, clock = time.perf_counter(), ThreadClock()
            out = self.runtime.step(s.imu_quat, s.gyro, s.joint_pos, s.joint_vel, velocity)
            inference_s = time.perf_counter() - start
            inference_use = clock.lap()
            self.inference.append(inference_s)
            m.check_policy(now, out.obs, out.action, inference_s)
            self._on_transitions(now)

        mode, target, kp, kd, counts = self._command(now, out)
        lost = self.transport.send(mode, target, kp, kd)
        sent = self._now()
        if lost is None:
            self.commands_sent += 1
        self._repeat_estop(now)
        record = self._record(now, late, poll, velocity, mode, target, kp, kd, counts, out, inference_s)
        if out is not None:
            record["obs_to_cmd_ms"] = round(1e3 * self._check_latency(sent - self.sample.rx_time), 4)
        record.update(_use_ms("", (cpu, wait)))
        if inference_use is not None:
            record.update(_use_ms("inference_", inference_use))
        self.compute.append(time.monotonic() - self.t0 - now)
        record["compute_ms"] = round(1e3 * self.compute[-1], 4)
        self.telemetry.write(record)
        reason = m.transitions[-1].reason if m.transitions else ""
        self.transport.report(record, overruns=self.overruns, missed_ticks=self.missed, reason=reason)

    def _check_latency(self, obs_to_cmd: float) -> float:
        """Count and keep one policy tick's sensor-to-command time (s); the first time it exceeds the robot's declared
        latency, warn (log and telemetry) once."""
        self.obs_to_cmd.append(obs_to_cmd)
        if obs_to_cmd > self.latency_declared:
            self.latency_exceeded += 1
            if self.latency_exceeded == 1:
                self._event("latency", f"sensor frame to command took {1e3 * obs_to_cmd:.1f} ms, more than the "
                            f"{1e3 * self.latency_declared:g} ms robot '{self.robot.name}' is declared to meet "
                            "(robot.toml [latency], the latency the gate judged the policy at); said once, the "
                            "summary counts every tick")  # fmt: skip
        return obs_to_cmd

    def _command(self, now: float, out) -> tuple:
        """(mode, target, kp, kd, clamp counts) for this tick's state."""
        m = self.machine
        mode = COMMAND_MODE[m.state]
        if m.state == Mode.DONE:  # the last frame repeats what the state before sent: OFF stays off
            mode = COMMAND_MODE[m.transitions[-1].src]
        if mode == ControlMode.POSITION:
            s = self.sample
            if m.state == Mode.SOFT_START:
                desired = self.start_pose + smoothstep(m.progress(now)) * (self.clamp.default - self.start_pose)
            elif m.state == Mode.FADE_IN:
                desired = self.clamp.default + m.progress(now) * (out.target - self.clamp.default)
            else:
                desired = out.target
            target, counts = self.clamp(desired, s.joint_pos, s.joint_vel, self.last_target)
            if np.all(np.isfinite(target)):
                self.last_target = target
                return mode, target, self._kp, self._kd, counts
            m.fault(now, "nonfinite", f"non-finite target after the clamps: {target.tolist()}")
            self._on_transitions(now)
            mode = COMMAND_MODE[m.state]
        if mode == ControlMode.DAMPING:
            return mode, self.clamp.default, self._zeros, self._damping_kd, None
        return ControlMode.OFF, self.clamp.default, self._zeros, self._zeros, None

    def _repeat_estop(self, now: float) -> None:
        """Send the host's EStop at 10 Hz until a State shows the MCU latched it (PROTOCOL.md)."""
        if not self._estop_frames_until_seen:
            return
        if self.sample is not None and StatusFlags.ESTOP in StatusFlags(self.sample.status):
            self._estop_frames_until_seen = False
            self._event("estop_ack", "microcontroller reports ESTOP: e-stop latched on the robot side")
            return
        if now - self._last_estop_sent >= self.config.estop_repeat_s:
            self.transport.estop(EStopReason.HOST)
            self._last_estop_sent = now

    def _on_transitions(self, now: float) -> None:
        """Side effects of entering a state, then log and record each new transition."""
        for tr in self.machine.transitions[self._seen_transitions :]:
            if tr.dst == Mode.SOFT_START:
                self.start_pose = np.clip(self.sample.joint_pos.astype(np.float64), self.clamp.lower, self.clamp.upper)
                self.last_target = self.start_pose
            elif tr.dst == Mode.FADE_IN:
                self.runtime.reset()  # the first observation fills the history, as in training
                self.policy_start = now
        self._record_transitions()

    def _record_transitions(self) -> None:
        for tr in self.machine.transitions[self._seen_transitions :]:
            level = logging.WARNING if tr.dst in (Mode.DAMPING, Mode.ESTOP_DAMPING) else logging.INFO
            log.log(level, tr.line)
            self.telemetry.write(
                {
                    "kind": "transition",
                    "t": round(tr.t, 6),
                    "src": tr.src.value,
                    "dst": tr.dst.value,
                    "cause": tr.cause,
                    "reason": tr.reason,
                    "line": tr.line,
                    "tick": len(self.tick_starts) - 1,
                }
            )
        self._seen_transitions = len(self.machine.transitions)

    def _event(self, what: str, message: str) -> None:
        (log.warning if what in ("refused", "error", "command_source", "latency") else log.info)(message)
        self.telemetry.write({"kind": "event", "t": round(self._now(), 6), "what": what, "message": message})

    def _record(self, now, late, poll, velocity, mode, target, kp, kd, counts, out, inference_s) -> dict:
        record = {
            "kind": "tick",
            "i": len(self.tick_starts) - 1,
            "t": round(now, 6),
            "late_ms": round(1e3 * late, 4),
            "state": self.machine.state.value,
            "received": poll.received,
            "frames": poll.frames,
            "rx": base64.b64encode(poll.raw).decode("ascii") if poll.raw else "",
            "link_errors": poll.link_errors,
        }
        s = self.sample
        if s is not None:
            record.update(
                seq=s.seq,
                timestamp_us=s.timestamp_us,
                status=s.status,
                age_ms=round(1e3 * (now - s.rx_time), 3),
                joint_pos=rounded(s.joint_pos),
                joint_vel=rounded(s.joint_vel),
                joint_current=rounded(s.joint_current),
                imu_quat=rounded(s.imu_quat),
                gyro=rounded(s.gyro),
                accel=rounded(s.accel),
            )
        record.update(
            velocity_command=rounded(velocity),
            mode=mode.name,
            target=rounded(target),
            kp=float(kp[0]),
            kd=float(kd[0]),
        )
        if counts is not None:
            record["clamped"] = {"rate": counts.rate, "torque": counts.torque, "position": counts.position}
        if out is not None:
            record.update(
                action=rounded(out.action), policy_target=rounded(out.target), inference_ms=round(1e3 * inference_s, 4)
            )
            if self.config.telemetry_obs:
                record["obs"] = rounded(out.obs)
        return record

    # ---- the end --------------------------------------------------------------------------------

    def summary(self, exit_code: int) -> dict:
        period = self.period
        starts = np.asarray(self.tick_starts)
        wall = float(starts[-1] - starts[0]) if starts.size > 1 else 0.0
        intervals = np.diff(starts)
        ticks = len(self.tick_starts)
        ms = lambda values, q: 1e3 * percentile(values, q)  # noqa: E731
        return {
            "kind": "summary",
            "exit_code": exit_code,
            "end_state": self.machine.state.value,
            "faulted": self.machine.faulted,
            "ticks": ticks,
            "wall_s": wall,
            "period_s": period,
            "rate_hz": (ticks - 1) / wall if wall > 0 else 0.0,
            "jitter_p99_ms": ms(np.abs(intervals - period), 99),
            "late_p50_ms": ms(self.lateness, 50),
            "late_p99_ms": ms(self.lateness, 99),
            "late_max_ms": 1e3 * max(self.lateness, default=math.nan),
            "overruns": self.overruns,
            "overrun_pct": 100.0 * self.overruns / ticks if ticks else 0.0,
            # Overruns the loop caused itself: those that waiting for a CPU does not explain (all of them where the
            # kernel gives no run-queue figure). docs/testing.md: how the HIL tests judge a loaded machine.
            "descheduled_overruns": self.descheduled,
            "own_overrun_pct": 100.0 * (self.overruns - self.descheduled) / ticks if ticks else 0.0,
            "cpu_p99_ms": ms(self.cpu, 99),
            "run_queue_wait_s": float(sum(self.run_queue_wait)) if self.run_queue_wait else None,
            "overrun_ms": 1e3 * self.config.overrun_fraction * period,
            "missed_ticks": self.missed,
            "inferences": len(self.inference),
            "inference_p50_ms": ms(self.inference, 50),
            "inference_p99_ms": ms(self.inference, 99),
            "inference_max_ms": 1e3 * max(self.inference, default=math.nan),
            "compute_p99_ms": ms(self.compute, 99),
            # Sensor frame arrival to command written, per policy tick, against the robot's declared latency.
            "obs_to_cmd_p50_ms": ms(self.obs_to_cmd, 50),
            "obs_to_cmd_p99_ms": ms(self.obs_to_cmd, 99),
            "obs_to_cmd_max_ms": 1e3 * max(self.obs_to_cmd, default=math.nan),
            "latency_declared_ms": 1e3 * self.latency_declared,
            "latency_exceeded_ticks": self.latency_exceeded,
            "states_received": self.states_received,
            "state_rate_hz": self.states_received / wall if wall > 0 else 0.0,
            "link_errors": self.link_errors,
            "commands_sent": self.commands_sent,
            "transitions": [{"t": round(t.t, 6), "cause": t.cause, "line": t.line} for t in self.machine.transitions],
        }

    def _finish(self, exit_code: int) -> LoopResult:
        self._record_transitions()
        summary = self.summary(exit_code)
        self.telemetry.write(summary)
        return LoopResult(exit_code, summary, list(self.machine.transitions))


def telemetry_header(
    bundle: Bundle, robot, transport: Transport, commands, limits: SafetyLimits, config: LoopConfig
) -> dict:
    """The header record: enough to read the file without the bundle."""
    meta, c = bundle.meta, bundle.contract
    import onnxruntime

    return {
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "host": platform.node(),
        "robot": {
            "name": robot.name,
            "contract_sha256": robot.contract_sha256(),
            "joint_names": list(robot.joint_names),
            "num_joints": robot.num_joints,
        },
        "bundle": {
            "path": str(bundle.path),
            "graph_sha256": meta.integrity.graph_sha256,
            "training": asdict(meta.training),
            "kp": c.kp,
            "kd": c.kd,
            "action_scale": c.action_scale,
            "obs_size": bundle.obs_size,
            "commands": asdict(meta.commands),
        },
        "control_dt": c.control_dt,
        "latency_declared_s": robot.actuation_latency_s,  # robot.toml [latency]
        "transport": transport.describe,
        "commands": commands.describe,
        "limits": asdict(limits),
        "config": asdict(config),
        "versions": {
            "python": platform.python_version(),
            "numpy": np.__version__,
            "onnxruntime": onnxruntime.__version__,
        },
    }


def run_loop(
    bundle: Bundle,
    robot,
    transport: Transport,
    commands,
    telemetry_path,
    limits: SafetyLimits | None = None,
    config: LoopConfig | None = None,
    runtime: PolicyRuntime | None = None,
    ready=None,
) -> LoopResult:
    """Warm the policy up, open the telemetry file, run the loop, and always close transport, commands and file.

    `ready(loop)` is called just before the handshake (signal handlers and tests use it to reach the loop).
    """
    limits, config = limits or SafetyLimits(), config or LoopConfig()
    telemetry = None
    try:
        runtime = runtime or PolicyRuntime(bundle, robot)
        time_inference(runtime, config.warmup_inferences)
        runtime.reset()
        header = telemetry_header(bundle, robot, transport, commands, limits, config)
        telemetry = TelemetryWriter(telemetry_path, header)
        loop = DeployLoop(bundle, robot, transport, commands, telemetry, limits, config, runtime)
        if ready is not None:
            ready(loop)
        return loop.run()
    finally:
        try:
            transport.close()
        finally:
            commands.close()  # a keyboard source gives the terminal back its settings
            if telemetry is not None:
                telemetry.close()
