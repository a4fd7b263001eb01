"""Policy evaluation in MuJoCo: fixed commands on the nominal robot, metrics, traces, video, plots.

`evaluate` runs one env per command in parallel for `seconds` each and returns per-command metrics
(fell, velocity tracking error, torques) and traces; `trot play` adds an MP4 and PNG plots.
"""

from __future__ import annotations

import argparse
import contextlib
import io
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from trot import mapping
from trot.randomization import RandomizationCfg
from trot.sim.config import CommandCfg, EnvCfg
from trot.sim.locomotion import LocomotionEnv
from trot.sim.metrics import settle_times, settled, tracking_errors

# name -> (vx m/s, vy m/s, yaw rate rad/s); the targets of the training issue.
EVAL_COMMANDS = {
    "stand": (0.0, 0.0, 0.0),
    "forward_0.2": (0.2, 0.0, 0.0),
    "forward_0.4": (0.4, 0.0, 0.0),
    "sideways_0.2": (0.0, 0.2, 0.0),
    "turn_left_1.0": (0.0, 0.0, 1.0),
    "turn_right_1.0": (0.0, 0.0, -1.0),
}
SETTLE_S = 2.0  # tracking error is averaged after the robot has had this long to reach the command
MAX_LIN_ERR = 0.1  # m/s, mean |v_xy - command_xy|
MAX_YAW_ERR = 0.3  # rad/s, mean |yaw rate - command|


@dataclass
class CommandResult:
    name: str
    command: tuple[float, float, float]
    fell: bool
    lin_err: float
    yaw_err: float
    mean_torque: float
    peak_torque: float

    @property
    def passed(self) -> bool:
        return not self.fell and self.lin_err <= MAX_LIN_ERR and self.yaw_err <= MAX_YAW_ERR


@dataclass
class Evaluation:
    results: list[CommandResult]
    dt: float
    traces: dict = field(default_factory=dict)  # name -> (steps, num_commands, ...) arrays

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.results)

    def table(self) -> str:
        lines = [f"{'command':<16}{'vx':>6}{'vy':>6}{'yaw':>6}{'fell':>6}{'lin err':>9}{'yaw err':>9}"
                 f"{'|tau| mean':>11}{'peak':>7}  pass"]  # fmt: skip
        for r in self.results:
            vx, vy, wz = r.command
            lines.append(
                f"{r.name:<16}{vx:>6.2f}{vy:>6.2f}{wz:>6.2f}{'yes' if r.fell else 'no':>6}{r.lin_err:>9.3f}"
                f"{r.yaw_err:>9.3f}{r.mean_torque:>11.3f}{r.peak_torque:>7.2f}  "
                + ("ok" if r.passed else "FAIL")
            )
        lines.append(f"thresholds: no fall, lin err <= {MAX_LIN_ERR} m/s, yaw err <= {MAX_YAW_ERR} rad/s "
                     f"(averaged after the first {SETTLE_S:.0f} s, at most half the run)")  # fmt: skip
        return "\n".join(lines)


def eval_env_cfg(env_cfg: EnvCfg, num_commands: int, seconds: float) -> EnvCfg:
    """The training env made deterministic: nominal robot, no noise, fixed commands, no early reset."""
    return replace(
        env_cfg,
        num_envs=num_commands,
        episode_length_s=seconds + 1.0,
        randomization=RandomizationCfg.nominal(),
        observations=replace(env_cfg.observations, add_noise=False),
        commands=replace(CommandCfg(), resample_s=1e9, standing_fraction=0.0, min_speed=0.0),
        init=replace(env_cfg.init, joint_pos_noise=0.0, base_vel_noise=0.0),
    )


def evaluate(
    act, env_cfg: EnvCfg, commands: dict = EVAL_COMMANDS, seconds: float = 10.0, frames=None
) -> Evaluation:
    """Run `act(obs_tensor) -> actions` on each command for `seconds`; `frames(env)` is called each step."""
    env = LocomotionEnv(eval_env_cfg(env_cfg, len(commands), seconds))
    names = list(commands)
    cmd = torch.tensor([commands[n] for n in names], dtype=torch.float64)
    env.commands[:] = cmd
    env._compute_observations(torch.arange(env.num_envs))
    # Face +x at the start so that plots of world motion read naturally.
    steps = round(seconds / env.dt)
    fell = np.zeros(len(names), dtype=bool)
    keys = (
        "base_lin_vel",
        "yaw_rate",
        "joint_pos",
        "joint_target",
        "joint_torque",
        "foot_contact",
        "base_height",
    )
    traces = {k: [] for k in keys}
    obs = env.get_observations()
    with torch.inference_mode():
        for _ in range(steps):
            actions = act(obs)
            obs, _, dones, extras = env.step(actions)
            env.commands[:] = cmd
            fell |= (dones & ~extras["time_outs"]).numpy()
            r = env.robot
            traces["base_lin_vel"].append(env.base_lin_vel.numpy().copy())
            traces["yaw_rate"].append(env.sim.base_ang_vel[:, 2].numpy().copy())
            traces["joint_pos"].append(env.sim.joint_pos.numpy().copy())
            target = mapping.action_to_target(torch, env.actions, env.default_joint_pos, r.action_scale, r.action_clip)
            target = torch.maximum(torch.minimum(target, env.joint_upper), env.joint_lower)  # the soft limits
            traces["joint_target"].append(target.numpy().copy())
            traces["joint_torque"].append(env.sim.joint_torque.numpy().copy())
            traces["foot_contact"].append(env.foot_contact.numpy().copy())
            traces["base_height"].append(env.sim.base_pos[:, 2].numpy().copy())
            if frames is not None:
                frames(env)
    traces = {k: np.stack(v) for k, v in traces.items()}
    settle, _ = settle_times(SETTLE_S, 0.0, [0.0], seconds)
    measured = settled(np.arange(1, steps + 1) * env.dt, settle)  # sample k is taken after step k + 1
    results = []
    for i, name in enumerate(names):
        c = np.asarray(commands[name])
        lin_err, yaw_err = tracking_errors(
            traces["base_lin_vel"][measured, i, :2], traces["yaw_rate"][measured, i], c
        )
        tau = np.abs(traces["joint_torque"][:, i])
        results.append(CommandResult(name, tuple(c.tolist()), bool(fell[i]), lin_err, yaw_err,
                                     float(tau.mean()), float(tau.max())))  # fmt: skip
    traces["commands"] = cmd.numpy()
    traces["names"] = names
    return Evaluation(results, env.dt, traces)


def load_policy(checkpoint: Path):
    """(act, TrainCfg, checkpoint dict) for a trot checkpoint; act maps obs TensorDict -> actions."""
    from trot.robots import load_robot
    from trot.train.checkpoint import load_checkpoint
    from trot.train.config import TrainCfg, from_dict
    from trot.train.runner import TrotRunner

    ckpt = load_checkpoint(checkpoint)
    cfg = from_dict(TrainCfg, ckpt["trot"]["config"])
    load_checkpoint(checkpoint, load_robot(cfg.env.robot))  # refuse a checkpoint for another contract
    cfg = replace(
        cfg, device="cpu", env=replace(cfg.env, num_envs=1, randomization=RandomizationCfg.nominal())
    )
    with contextlib.redirect_stdout(io.StringIO()):  # rsl-rl prints the model structure
        runner = TrotRunner(LocomotionEnv(cfg.env), cfg, run_dir=None)
    runner.alg.load(ckpt, None, True)
    policy = runner.get_inference_policy("cpu")
    return policy, cfg, ckpt


def run_play(args: argparse.Namespace) -> int:
    from trot.train.checkpoint import CheckpointError, find_checkpoint

    target = Path(args.run)
    try:
        checkpoint = find_checkpoint(target, args.checkpoint) if target.is_dir() else target
        policy, cfg, ckpt = load_policy(checkpoint)
    except CheckpointError as e:
        raise SystemExit(f"trot play: {e}") from None
    out = Path(args.output) if args.output else checkpoint.parent / "play"
    out.mkdir(parents=True, exist_ok=True)
    recorder = None
    if not args.no_video:
        from trot.train.media import VideoRecorder

        recorder = VideoRecorder(cfg.env.robot, fps=args.fps)
    try:
        ev = evaluate(policy, cfg.env, seconds=args.seconds, frames=recorder.capture if recorder else None)
    finally:
        if recorder:
            recorder.close()
    from trot.train.media import save_plots

    written = save_plots(ev, out)
    if recorder:
        written.append(recorder.write(out / "play.mp4", ev.traces["names"]))
    print(f"trot play: {checkpoint} (iteration {ckpt['iter']}, {ckpt['trot']['env_steps']} env steps)")
    print(ev.table())
    for path in written:
        print(f"wrote {path}")
    return 0 if ev.passed or not args.strict else 1
