"""Velocity command sources for the deploy loop: constant, scripted file, keyboard on a TTY, gamepad.

The loop calls `poll()` once a tick, first thing (it reads the keys or the gamepad's events without
blocking), and later `velocity(t)`: (vx m/s, vy m/s, yaw rate rad/s) at t seconds since the policy
started. Keyboard and gamepad also carry the operator's e-stop (`estop`) and quit (`stop`) requests, and a
gamepad that went away (`lost`), as reason strings. The loop clips every command to the bundle's ranges.
"""

from __future__ import annotations

import json
import os
import select
import struct
from pathlib import Path
from typing import Protocol

import numpy as np


class CommandError(ValueError):
    """A command source that cannot be used: bad file, no TTY, no gamepad."""


class CommandSource(Protocol):
    """What the loop reads every tick; `estop`, `stop` and `lost` are reason strings once set (or None)."""

    describe: str
    estop: str | None  # the operator's e-stop
    stop: str | None  # the operator's quit
    lost: str | None  # the source went away (its command is zero from then on)

    def poll(self) -> None:
        """Read what the operator did since the last tick (keys, buttons, sticks). Never blocks."""

    def velocity(self, t: float | None) -> np.ndarray:
        """(vx, vy, yaw rate) at t = seconds since the policy started (None before). No I/O."""

    def close(self) -> None:
        """Give back what the source took (the terminal's settings, the device)."""


def parse_velocity(text: str) -> np.ndarray:
    """'vx,vy,yaw' -> array; raise CommandError naming what was expected."""
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        values = []
    if len(values) != 3 or not np.all(np.isfinite(values)):
        raise CommandError(f"--command {text!r}: expected three numbers 'vx,vy,yaw' (m/s, m/s, rad/s)")
    return np.array(values)


def clip_to_ranges(command: np.ndarray, ranges) -> np.ndarray:
    """Clip (vx, vy, yaw) to the bundle's command ranges (`trot.bundle.Commands`)."""
    lo = np.array([ranges.vx[0], ranges.vy[0], ranges.yaw_rate[0]], dtype=np.float64)
    hi = np.array([ranges.vx[1], ranges.vy[1], ranges.yaw_rate[1]], dtype=np.float64)
    return np.clip(np.asarray(command, dtype=np.float64), lo, hi)


class BaseCommand:
    """What every source has: no e-stop, quit or loss until one happens, nothing to read or give back."""

    describe = "command source"
    estop: str | None = None
    stop: str | None = None
    lost: str | None = None

    def poll(self) -> None:
        pass

    def close(self) -> None:
        pass


class ConstantCommand(BaseCommand):
    """The same command all the time (zero: stand)."""

    def __init__(self, velocity=(0.0, 0.0, 0.0)):
        self.command = np.asarray(velocity, dtype=np.float64)
        self.describe = "constant " + ",".join(f"{v:g}" for v in self.command)

    def velocity(self, t: float | None) -> np.ndarray:
        return self.command


class ScriptedCommand(BaseCommand):
    """Piecewise-constant commands from a file: lines `t vx vy yaw` (spaces or commas, # comments) or JSON
    lines {"t": .., "vx": .., "vy": .., "yaw": ..}; t in s since the policy started, increasing. Before the
    first line: zero; after the last: the last command holds."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.times, self.values = _read_script(self.path)
        self.describe = f"scripted {self.path} ({len(self.times)} segments)"

    def velocity(self, t: float | None) -> np.ndarray:
        if t is None:
            return np.zeros(3)
        i = int(np.searchsorted(self.times, t, side="right")) - 1
        return self.values[i] if i >= 0 else np.zeros(3)


def _read_script(path: Path) -> tuple[np.ndarray, np.ndarray]:
    if not path.is_file():
        raise CommandError(f"{path}: no such command file")
    rows = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        try:
            if text.startswith("{"):
                obj = json.loads(text)
                row = [float(obj["t"]), float(obj.get("vx", 0)), float(obj.get("vy", 0)), float(obj.get("yaw", 0))]
            else:
                row = [float(v) for v in text.replace(",", " ").split()]
        except (ValueError, KeyError, TypeError, json.JSONDecodeError):
            row = []
        if len(row) != 4 or not np.all(np.isfinite(row)):
            raise CommandError(
                f"{path}:{number}: {line.strip()!r}; expected 't vx vy yaw' or a JSON object "
                'with "t", "vx", "vy", "yaw"'
            )
        if rows and row[0] < rows[-1][0]:
            raise CommandError(f"{path}:{number}: t = {row[0]} is before the previous line's {rows[-1][0]}")
        rows.append(row)
    if not rows:
        raise CommandError(f"{path}: no command lines; expected 't vx vy yaw' per line")
    table = np.array(rows)
    return table[:, 0], table[:, 1:]


class KeyboardCommand(BaseCommand):
    """Keys on a TTY (cbreak mode, so Ctrl-C still signals): w/s vx ±step, a/d vy ±step, q/e yaw ±step,
    x or 0 zero, space e-stop."""

    KEYS = {"w": (0, 1), "s": (0, -1), "a": (1, 1), "d": (1, -1), "q": (2, 1), "e": (2, -1)}
    HELP = "keys: w/s forward/back, a/d left/right, q/e turn left/right, x stop moving, space E-STOP, Ctrl-C quit"

    def __init__(self, fd: int | None = None, steps=(0.05, 0.05, 0.1)):
        import termios
        import tty

        self.fd = 0 if fd is None else fd
        if not os.isatty(self.fd):
            raise CommandError("--keyboard: standard input is not a terminal (use --command or --commands)")
        self._saved = termios.tcgetattr(self.fd)
        tty.setcbreak(self.fd)
        self.steps = np.asarray(steps, dtype=np.float64)
        self.command = np.zeros(3)
        self.describe = "keyboard (" + self.HELP + ")"

    def poll(self) -> None:
        while select.select([self.fd], [], [], 0)[0]:
            data = os.read(self.fd, 64)
            if not data:
                break
            for key in data.decode("ascii", "ignore").lower():
                self.press(key)

    def velocity(self, t: float | None) -> np.ndarray:
        return self.command

    def press(self, key: str) -> None:
        if key in self.KEYS:
            axis, sign = self.KEYS[key]
            self.command = self.command.copy()
            self.command[axis] = round(self.command[axis] + sign * self.steps[axis], 6)
        elif key in "x0":
            self.command = np.zeros(3)
        elif key == " ":
            self.estop = "keyboard e-stop (space)"

    def close(self) -> None:
        import termios

        if self._saved is not None:
            termios.tcsetattr(self.fd, termios.TCSADRAIN, self._saved)
            self._saved = None


_JS_EVENT = struct.Struct("<IhBB")  # Linux joystick API: time ms, value, type, number
_JS_BUTTON, _JS_AXIS, _JS_INIT = 0x01, 0x02, 0x80


def find_gamepad() -> str | None:
    """The first /dev/input/js* device, or None."""
    found = sorted(Path("/dev/input").glob("js*")) if Path("/dev/input").is_dir() else []
    return str(found[0]) if found else None


class GamepadCommand(BaseCommand):
    """A gamepad through the Linux joystick API (/dev/input/js*): left stick vx (up +) and vy (left +),
    right stick x yaw (left +), full deflection = the bundle's range; button `estop_button` e-stops,
    `stop_button` quits. A lost gamepad sets the command to zero and says so once."""

    def __init__(
        self,
        device: str | None,
        ranges,
        deadzone: float = 0.1,
        axes=(1, 0, 3),
        estop_button: int = 1,
        stop_button: int = 7,
    ):
        device = device or find_gamepad()
        if device is None:
            raise CommandError("--gamepad: no /dev/input/js* device (plug in a gamepad or give its path)")
        try:
            self.fd = os.open(device, os.O_RDONLY | os.O_NONBLOCK)
        except OSError as e:
            raise CommandError(f"--gamepad {device}: cannot open ({e})") from e
        self.device = device
        self.describe = f"gamepad {device}"
        # Full stick = the largest command magnitude the policy was trained on, each direction.
        self.scale = np.array([max(abs(v) for v in r) for r in (ranges.vx, ranges.vy, ranges.yaw_rate)])
        self.deadzone, self.axes = deadzone, axes
        self.estop_button, self.stop_button = estop_button, stop_button
        self.axis_values: dict[int, float] = {}

    def poll(self) -> None:
        while not self.lost:
            try:
                data = os.read(self.fd, 64 * _JS_EVENT.size)
            except BlockingIOError:
                break
            except OSError as e:
                self.lost = f"gamepad {self.device} lost ({e}): velocity command set to zero"
                break
            if not data:
                break
            for i in range(0, len(data) - _JS_EVENT.size + 1, _JS_EVENT.size):
                self.event(*_JS_EVENT.unpack_from(data, i)[1:])

    def event(self, value: int, kind: int, number: int) -> None:
        kind &= ~_JS_INIT
        if kind == _JS_AXIS:
            self.axis_values[number] = value / 32767.0
        elif kind == _JS_BUTTON and value:
            if number == self.estop_button:
                self.estop = f"gamepad e-stop (button {number})"
            elif number == self.stop_button:
                self.stop = f"gamepad quit (button {number})"

    def velocity(self, t: float | None) -> np.ndarray:
        if self.lost:
            return np.zeros(3)
        # Stick up and left read negative on the joystick API; forward, left and counter-clockwise are +.
        raw = np.array([-self.axis_values.get(a, 0.0) for a in self.axes])
        live = np.where(np.abs(raw) > self.deadzone, (np.abs(raw) - self.deadzone) / (1 - self.deadzone), 0.0)
        return np.sign(raw) * np.minimum(live, 1.0) * self.scale

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
