"""Deploy telemetry: one JSON object per line, appended as the loop runs, readable after a crash.

Records, each with a `kind`:
- `header`: first line: format version, robot, bundle summary, transport, limits, start time.
- `tick`: one per control tick: timing, the newest State, every byte received (base64), the command
  sent, and where the policy ran its observation, action and inference time.
- `transition`: a state machine transition with its cause and reason.
- `event`: anything else worth a line (handshake, command source lost, refusal).
- `summary`: last line of a run that ended normally: the timing figures.

Each line is written with one `os.write` as soon as it exists (a crash loses no line the loop finished),
fsync'd about once a second by a helper thread (a power cut loses at most about a second). The reader
skips a truncated last line. NaN and infinity are written as Python's json writes them (NaN, Infinity).
"""

from __future__ import annotations

import base64
import json
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

FORMAT_VERSION = 1
FSYNC_PERIOD_S = 1.0


def rounded(values, digits: int = 6) -> list[float]:
    """Array -> list of floats with at most `digits` decimals (shorter lines; NaN and inf kept)."""
    return np.round(np.asarray(values, dtype=np.float64), digits).tolist()


class TelemetryWriter:
    """Append-only JSON-lines writer: one os.write per record, fsync about once a second by a helper thread."""

    def __init__(self, path: str | Path, header: dict):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd: int | None = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o644)
        # The helper fsyncs its own descriptor of the same file, so that a slow fsync (an SD card) never
        # holds up a write from the loop; it is closed only after the helper has stopped.
        self._sync_fd = os.dup(self._fd)
        self._lock = threading.Lock()  # write() never uses a closed descriptor
        self._stop = threading.Event()
        self.records = 0
        self.write({"kind": "header", "format_version": FORMAT_VERSION, **header})
        self._syncer = threading.Thread(target=self._sync_loop, name="telemetry-fsync", daemon=True)
        self._syncer.start()

    def write(self, record: dict) -> None:
        line = (json.dumps(record, separators=(",", ":")) + "\n").encode()
        with self._lock:
            if self._fd is None:
                return
            view = memoryview(line)
            while view:
                written = os.write(self._fd, view)
                view = view[written:]
            self.records += 1

    def _sync_loop(self) -> None:
        while not self._stop.wait(FSYNC_PERIOD_S):
            os.fsync(self._sync_fd)

    def close(self) -> None:
        """Stop the fsync thread, fsync and close; safe to call twice."""
        self._stop.set()
        if self._syncer.is_alive() and self._syncer is not threading.current_thread():
            self._syncer.join(timeout=10.0)
        with self._lock:
            if self._fd is not None:
                os.fsync(self._fd)
                os.close(self._fd)
                self._fd = None
                if not self._syncer.is_alive():
                    os.close(self._sync_fd)

    def __enter__(self) -> TelemetryWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@dataclass
class Telemetry:
    """A telemetry file, read back."""

    path: Path
    header: dict
    ticks: list[dict] = field(default_factory=list)
    transitions: list[dict] = field(default_factory=list)
    events: list[dict] = field(default_factory=list)
    summary: dict | None = None
    truncated: bool = False  # the last line was cut short (a crash mid-write)

    @property
    def complete(self) -> bool:
        """The run ended normally: a summary line and no truncated line."""
        return self.summary is not None and not self.truncated

    def series(self, key: str) -> np.ndarray:
        """One per-tick field as an array (ticks without it read NaN), e.g. series('joint_pos') -> (T, J)."""
        rows = [t.get(key) for t in self.ticks]
        width = next((len(r) for r in rows if isinstance(r, list)), None)
        if width is None:
            return np.array([np.nan if r is None else r for r in rows], dtype=np.float64)
        return np.array([r if isinstance(r, list) else [np.nan] * width for r in rows], dtype=np.float64)

    def received_bytes(self) -> bytes:
        """Every byte the loop read from the link, in order (decode with protocol.Decoder)."""
        return b"".join(base64.b64decode(t["rx"]) for t in self.ticks if t.get("rx"))


def read_telemetry(path: str | Path) -> Telemetry:
    """Parse a telemetry file; a truncated last line is skipped (and flagged), any other bad line raises."""
    path = Path(path)
    lines = path.read_bytes().split(b"\n")
    truncated = False
    if lines and lines[-1] == b"":
        lines.pop()
    elif lines:  # no newline at the end: the writer was cut off mid-line
        lines.pop()
        truncated = True
    if not lines:
        raise ValueError(f"{path}: empty telemetry file; expected a header line")
    records = []
    for number, line in enumerate(lines, 1):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}:{number}: not a JSON object ({e})") from e
    header = records[0]
    if header.get("kind") != "header":
        raise ValueError(f"{path}:1: kind {header.get('kind')!r}; expected the 'header' record first")
    out = Telemetry(path, header, truncated=truncated)
    buckets = {"tick": out.ticks, "transition": out.transitions, "event": out.events}
    for record in records[1:]:
        kind = record.get("kind")
        if kind == "summary":
            out.summary = record
        elif kind in buckets:
            buckets[kind].append(record)
    return out


def format_summary(summary: dict) -> str:
    """The timing figures of a run, a few lines for people."""
    s = summary
    lines = [
        f"ticks {s['ticks']} in {s['wall_s']:.1f} s at {1e3 * s['period_s']:.1f} ms "
        f"({s['rate_hz']:.1f} Hz achieved); end state {s['end_state']}, exit code {s['exit_code']}",
        f"loop period jitter p99 {s['jitter_p99_ms']:.2f} ms (|tick-to-tick - period|), start lateness p50 "
        f"{s['late_p50_ms']:.2f} / p99 {s['late_p99_ms']:.2f} / max {s['late_max_ms']:.2f} ms",
        f"overruns {s['overruns']} ({s['overrun_pct']:.2f} %, tick started > {s['overrun_ms']:.1f} ms late), "
        f"missed ticks {s['missed_ticks']}",
        f"inference (observation + onnxruntime) p50 {s['inference_p50_ms']:.2f} / p99 {s['inference_p99_ms']:.2f}"
        f" / max {s['inference_max_ms']:.2f} ms over {s['inferences']} ticks; tick compute p99 "
        f"{s['compute_p99_ms']:.2f} ms",
        f"link: {s['states_received']} States ({s['state_rate_hz']:.1f} Hz), {s['link_errors']} framing/CRC errors, "
        f"{s['commands_sent']} Commands sent",
    ]
    for t in s.get("transitions", []):
        lines.append(f"  t={t['t']:7.3f} s  {t['line']}")
    return "\n".join(lines)


# ---- plots (a workstation tool: matplotlib is imported here, never by the loop) -------------------


def plot_telemetry(path: str | Path, out_dir: str | Path) -> list[Path]:
    """Write PNG plots of a telemetry file to out_dir; return their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tel = read_telemetry(path)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if not tel.ticks:
        raise ValueError(f"{path}: no tick records to plot")
    t = tel.series("t")
    names = tel.header.get("robot", {}).get("joint_names") or [f"joint {i}" for i in range(len(tel.ticks[0]["target"]))]
    written = []

    def save(fig, name: str) -> None:
        fig.tight_layout()
        target = out_dir / name
        fig.savefig(target, dpi=90)
        plt.close(fig)
        written.append(target)

    def mark_transitions(ax) -> None:
        for tr in tel.transitions:
            ax.axvline(tr["t"], color="0.6", lw=0.8, ls="--")

    q, target = tel.series("joint_pos"), tel.series("target")
    target[[tick["mode"] != "POSITION" for tick in tel.ticks]] = np.nan  # DAMPING and OFF ignore the target
    cols = 3
    rows = (len(names) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(12, 2.2 * rows), sharex=True, squeeze=False)
    for j, name in enumerate(names):
        ax = axes[j // cols][j % cols]
        ax.plot(t, q[:, j], lw=1, label="joint_pos")
        ax.plot(t, target[:, j], lw=1, label="target")
        ax.set_title(name, fontsize=9)
        mark_transitions(ax)
    axes[0][0].legend(fontsize=7)
    for ax in axes[-1]:
        ax.set_xlabel("t (s)")
    save(fig, "joints.png")

    current = tel.series("joint_current")
    fig, ax = plt.subplots(figsize=(10, 4))
    for j, name in enumerate(names):
        ax.plot(t, current[:, j], lw=0.8, label=name)
    ax.set(xlabel="t (s)", ylabel="joint_current (A; emulator: N·m)", title="motor current / torque")
    ax.legend(fontsize=6, ncol=4)
    mark_transitions(ax)
    save(fig, "currents.png")

    quat, gyro = tel.series("imu_quat"), tel.series("gyro")
    w, x, y, z = quat.T
    roll = np.degrees(np.arctan2(2 * (w * x + y * z), 1 - 2 * (x * x + y * y)))
    pitch = np.degrees(np.arcsin(np.clip(2 * (w * y - z * x), -1, 1)))
    fig, (a1, a2) = plt.subplots(2, 1, figsize=(10, 5), sharex=True)
    a1.plot(t, roll, label="roll")
    a1.plot(t, pitch, label="pitch")
    a1.set(ylabel="deg", title="base orientation (IMU)")
    a1.legend()
    for i, axis in enumerate("xyz"):
        a2.plot(t, gyro[:, i], lw=0.8, label=f"gyro {axis}")
    a2.set(xlabel="t (s)", ylabel="rad/s")
    a2.legend()
    for ax in (a1, a2):
        mark_transitions(ax)
    save(fig, "orientation.png")

    period_ms = 1e3 * tel.header["control_dt"]
    intervals = np.diff(t) * 1e3
    late, infer = tel.series("late_ms"), tel.series("inference_ms")
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    axes[0].hist(intervals, bins=60)
    axes[0].axvline(period_ms, color="k", lw=0.8)
    axes[0].set(xlabel="tick-to-tick (ms)", ylabel="ticks", title="loop period", yscale="log")
    axes[1].plot(t, late, lw=0.8)
    axes[1].set(xlabel="t (s)", ylabel="ms", title="tick start lateness")
    finite = infer[np.isfinite(infer)]
    axes[2].hist(finite if finite.size else [0.0], bins=60)
    axes[2].axvline(period_ms, color="r", lw=0.8)
    axes[2].set(xlabel="ms", title="observation + inference", yscale="log")
    save(fig, "timing.png")

    states = [tick["state"] for tick in tel.ticks]
    order = list(
        dict.fromkeys(
            [
                "HANDSHAKE",
                "SOFT_START",
                "FADE_IN",
                "RUNNING",
                "DAMPING",
                "ESTOP_DAMPING",
                "OFF",
                "SHUTDOWN",
                "DONE",
                *states,
            ]
        )
    )
    fig, ax = plt.subplots(figsize=(10, 3))
    ax.step(t, [order.index(s) for s in states], where="post")
    ax.set_yticks(range(len(order)), order, fontsize=8)
    for tr in tel.transitions:
        ax.annotate(tr["cause"], (tr["t"], order.index(tr["dst"])), fontsize=7, rotation=20)
    ax.set(xlabel="t (s)", title="state timeline")
    save(fig, "states.png")
    return written
