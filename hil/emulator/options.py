"""The emulator's settings (`EmulatorOptions`, one field per `trot emulate` flag) and its counters."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class EmulatorOptions:
    """Every knob of the emulator with its default; CLI flags override fields by name."""

    state_rate_hz: float | None = None  # None: one State per physics step
    watchdog_ms: float = 100.0  # no valid Command this long -> damping + WATCHDOG_DAMPING
    estop_damping_s: float = 1.0  # after an e-stop: damping this long, then motors off
    torque_constant: float = 1.0  # joint-side N·m per A for joint_current (1.0: current field = N·m)
    check_robot_id: bool = True  # refuse a Hello whose robot_id is not this contract's SHA-256
    firmware: str = "trot-emulator"  # HelloAck firmware name, at most 16 ASCII bytes
    link: str | None = None  # symlink to the pty slave, a stable name for another process
    seed: int = 0
    fault_clock: str = "start"  # "start": *_at times from start(); "session": from the first session
    drop: float = 0.0  # probability of dropping each outgoing State (its seq is still used)
    delay_ms: float = 0.0  # every outgoing frame leaves this much later
    corrupt: float = 0.0  # probability of changing one byte of each outgoing frame
    freeze_imu_at: float | None = None  # IMU readings stop updating
    freeze_imu_silent: bool = False  # freeze without raising IMU_STALE (a sensor stuck, undetected)
    nan_at: float | None = None  # one joint position reads NaN from then on
    disconnect_at: float | None = None  # the pty closes and the emulator stops
    push_at: float | None = None  # lateral kick of push_velocity to the base
    push_velocity: float = 0.5  # m/s along the base's y axis
    tip_at: float | None = None  # the base is rolled onto its side
    estop_at: float | None = None  # the e-stop button is pressed: latch and send EStop(BUTTON)
    # Physics waits for the first session: the robot stands where it was placed, as if held up at power-on,
    # instead of collapsing limp before any host connects (the soft start can't stand it up from the floor).
    wait_for_host: bool = True

    def __post_init__(self) -> None:
        for name in ("drop", "corrupt"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"EmulatorOptions.{name}={getattr(self, name)}, expected a probability in [0, 1]")
        for name in ("watchdog_ms", "torque_constant"):
            if not getattr(self, name) > 0:
                raise ValueError(f"EmulatorOptions.{name}={getattr(self, name)}, expected > 0")
        for name in ("delay_ms", "estop_damping_s"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"EmulatorOptions.{name}={getattr(self, name)}, expected >= 0")
        if self.state_rate_hz is not None and not self.state_rate_hz > 0:
            raise ValueError(f"EmulatorOptions.state_rate_hz={self.state_rate_hz}, expected > 0 or None")
        if self.fault_clock not in ("start", "session"):
            raise ValueError(f"EmulatorOptions.fault_clock={self.fault_clock!r}, expected 'start' or 'session'")
        if len(self.firmware.encode("ascii")) > 16:
            raise ValueError(f"EmulatorOptions.firmware={self.firmware!r}, expected at most 16 ASCII bytes")


@dataclass
class EmulatorStats:
    """Counters of one emulator; `summary()` prints the real-time figures."""

    ticks: int = 0  # physics steps
    overruns: int = 0  # ticks that started more than one physics_dt after their deadline
    resyncs: int = 0  # times the loop fell MAX_CATCHUP_TICKS behind and restarted its clock
    max_late_ms: float = 0.0  # worst start of a tick after its deadline
    wall_s: float = 0.0
    cpu_s: float = 0.0  # CPU time of the thread that ran the loop
    states_sent: int = 0
    states_dropped: int = 0  # by the drop fault
    frames_corrupted: int = 0
    stale_flushes: int = 0  # unread output thrown away because nobody read it
    hellos: int = 0
    commands: int = 0  # applied
    commands_ignored: int = 0  # no session or e-stop latched
    commands_rejected: int = 0  # non-finite values
    commands_lost: int = 0  # gaps in the Command seq
    rx_errors: int = 0  # incoming frames the decoder refused (framing, CRC, payload)
    watchdog_trips: int = 0  # times the command watchdog started damping

    def summary(self, physics_dt: float) -> str:
        wall = max(self.wall_s, 1e-9)
        return (
            f"emulator: {self.wall_s:.1f} s, physics {self.ticks / wall:.1f} Hz "
            f"(target {1 / physics_dt:.0f}), state {self.states_sent / wall:.1f} Hz, "
            f"overruns {self.overruns}, resyncs {self.resyncs}, max late {self.max_late_ms:.1f} ms, "
            f"cpu {100 * self.cpu_s / wall:.0f} %, commands {self.commands} "
            f"(ignored {self.commands_ignored}, rejected {self.commands_rejected}, "
            f"lost {self.commands_lost}), rx errors {self.rx_errors}"
        )
