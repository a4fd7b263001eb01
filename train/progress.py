"""Training progress: a tqdm bar on a terminal, plain periodic lines otherwise (CI, log files)."""

from __future__ import annotations

import statistics
import time

from tqdm import tqdm

PLAIN_EVERY_S = 30.0  # without a TTY, one line at most this often (and at the end)


class Progress:
    def __init__(self, start_it: int, total_it: int, stream, quiet: bool = False):
        self.start_it, self.total_it = start_it, total_it
        self.stream = stream
        self.quiet = quiet
        self.tty = hasattr(stream, "isatty") and stream.isatty()
        self.started = time.monotonic()
        self.last_line = 0.0
        self.bar = None
        self.note = ""  # shown at the end of the line (the last gate result of an --until_gate run)
        if self.tty and not quiet:
            self.bar = tqdm(total=total_it - start_it, file=stream, unit="it", dynamic_ncols=True)

    def summary(self, runner, kw: dict) -> dict:
        logger = runner.logger
        done = kw["it"] + 1 - self.start_it
        elapsed = time.monotonic() - self.started
        return {
            "it": kw["it"],
            "steps_per_s": runner.cfg["num_steps_per_env"]
            * runner.env.num_envs
            / (kw["collect_time"] + kw["learn_time"]),
            "reward": statistics.mean(logger.rewbuffer) if logger.rewbuffer else float("nan"),
            "ep_len": statistics.mean(logger.lenbuffer) if logger.lenbuffer else float("nan"),
            "eta_s": elapsed / done * (self.total_it - self.start_it - done),
            "sim_share": kw["collect_time"] / (kw["collect_time"] + kw["learn_time"]),
        }

    def update(self, runner, kw: dict) -> None:
        if self.quiet:
            return
        s = self.summary(runner, kw)
        text = (
            f"steps/s {s['steps_per_s']:.0f} | reward {s['reward']:.2f} | ep len {s['ep_len']:.0f} | "
            f"sim {100 * s['sim_share']:.0f}%"
        )
        if self.note:
            text += f" | {self.note}"
        if self.bar is not None:
            self.bar.set_postfix_str(text, refresh=False)
            self.bar.update(1)
            return
        now = time.monotonic()
        last = kw["it"] + 1 >= self.total_it
        if last or now - self.last_line >= PLAIN_EVERY_S or kw["it"] == self.start_it:
            self.last_line = now
            eta = time.strftime("%H:%M:%S", time.gmtime(s["eta_s"]))
            print(
                f"iteration {kw['it'] + 1}/{self.total_it} | {text} | ETA {eta}", file=self.stream, flush=True
            )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
