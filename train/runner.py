"""`trot train`: rsl-rl-lib's OnPolicyRunner (unforked) on the trot task, with run folders,
atomic checkpoints that carry RNG state and the robot contract, resume, and a progress line.

The subclass overrides `save`/`load` (the runner's own extension points) so checkpoints are
written atomically and hold what trot needs, and its multi-GPU set-up so that the process group can
also be gloo on CPU processes; the training loop is rsl-rl's `learn`. The physics backend is the
`--sim` one (C MuJoCo or MuJoCo Warp); under torchrun each rank trains its own envs (train/distributed.py).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import sys
from dataclasses import replace
from datetime import datetime
from pathlib import Path

import numpy as np
import torch
from rsl_rl.runners import OnPolicyRunner

from trot.robots import ContractError, load_robot
from trot.sim.backends import make_backend
from trot.sim.locomotion import LocomotionEnv
from trot.sim.task import validate_env_cfg
from trot.train import distributed
from trot.train.checkpoint import (
    atomic_torch_save,
    atomic_write_text,
    code_revision,
    find_checkpoint,
    find_run,
    load_checkpoint,
)
from trot.train.config import TrainCfg, differences, override, preset, to_dict, to_rsl_rl
from trot.train.progress import Progress
from trot.train.until_gate import SUMMARY, Stop, UntilGate, UntilGateCfg


class TrotRunner(OnPolicyRunner):
    """OnPolicyRunner whose checkpoints are atomic and self-describing."""

    def __init__(self, env: LocomotionEnv, cfg: TrainCfg, run_dir: Path | None, run_name: str = ""):
        self.trot_cfg = cfg
        self.run_dir = run_dir
        self.revision = code_revision()
        super().__init__(
            env, to_rsl_rl(cfg, run_name), log_dir=str(run_dir) if run_dir else None, device=cfg.device
        )
        self.on_iteration = None
        log = self.logger.log

        def log_and_report(**kw):
            log(**kw)
            if self.on_iteration is not None:
                self.on_iteration(self, kw)

        self.logger.log = log_and_report  # report progress after rsl-rl's own logging

    def _configure_multi_gpu(self) -> None:
        """rsl-rl's multi-GPU set-up (same variables, same `multi_gpu` config for its PPO), with the process group
        that `train` joined: NCCL on CUDA as rsl-rl does, gloo for CPU processes."""
        rank = distributed.from_env()
        self.gpu_world_size, self.gpu_global_rank, self.gpu_local_rank = rank.world_size, rank.rank, rank.local_rank
        self.is_distributed = rank.is_distributed
        self.cfg["multi_gpu"] = None
        if rank.is_distributed:
            if str(self.device) != distributed.rank_device(str(self.device), rank):
                raise ValueError(f"device '{self.device}': local rank {rank.local_rank} runs on cuda:{rank.local_rank}")
            self.cfg["multi_gpu"] = {
                "global_rank": rank.rank, "local_rank": rank.local_rank, "world_size": rank.world_size
            }  # fmt: skip

    def save(self, path: str, infos: dict | None = None) -> None:
        saved = self.alg.save()
        saved["iter"] = self.current_learning_iteration
        saved["infos"] = infos
        env: LocomotionEnv = self.env
        saved["trot"] = {
            "robot": {"name": env.robot.name, "contract_sha256": env.robot.contract_sha256()},
            "robot_model": env.robot.model,  # the body trained on: a refusal names what differs from it
            "task": self.trot_cfg.task,
            "config": to_dict(self.trot_cfg),
            "code_revision": self.revision,
            "run": self.run_dir.name if self.run_dir else "",
            "env_steps": int(self.logger.tot_timesteps),
            "created": datetime.now().astimezone().isoformat(timespec="seconds"),
            "rng": {
                "torch": torch.get_rng_state(),
                "numpy": np.random.get_state(),  # noqa: NPY002  (the global state libraries use)
                "python": random.getstate(),
                "env": env.gen.get_state(),
            },
        }
        atomic_torch_save(saved, path)
        self.logger.save_model(path, self.current_learning_iteration)

    def load(self, path: str, load_cfg: dict | None = None, strict: bool = True, map_location=None) -> dict:
        ckpt = load_checkpoint(path, self.env.robot)
        self.alg.load(ckpt, load_cfg, strict)
        self.current_learning_iteration = int(ckpt["iter"]) + 1  # continue after the saved iteration
        self.logger.tot_timesteps = ckpt["trot"].get("env_steps", 0)
        rng = ckpt["trot"]["rng"]
        torch.set_rng_state(rng["torch"])
        np.random.set_state(rng["numpy"])  # noqa: NPY002
        random.setstate(rng["python"])
        self.env.gen.set_state(rng["env"])
        return ckpt["infos"]


def build_cfg(args: argparse.Namespace) -> TrainCfg:
    """The robot's task and the preset, then the named flags, then `--set key=value` overrides, in that order."""
    if not args.task or Path(args.task).name != args.task or args.task in (".", ".."):
        raise SystemExit(f"trot train: --task '{args.task}' must be a plain name: it names the runs' folder")
    try:
        cfg = preset(args.preset, args.robot)
    except (ContractError, FileNotFoundError) as e:
        raise SystemExit(f"trot train: {e}") from None
    env = cfg.env
    if args.num_envs:
        env = replace(env, num_envs=args.num_envs)
    if args.seed is not None:
        env = replace(env, seed=args.seed)
    runner = cfg.runner
    if args.max_iterations is not None:
        runner = replace(runner, max_iterations=args.max_iterations)
    if args.logger:
        runner = replace(runner, logger=args.logger)
    cfg = replace(
        cfg, task=args.task, env=env, runner=runner, device=args.device or cfg.device, sim=args.sim or cfg.sim
    )
    for item in args.set or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"trot train: --set expects key=value, got '{item}'")
        try:
            cfg = override(cfg, key, value)
        except ContractError as e:
            raise SystemExit(f"trot train: --set {item}: {e}") from None
    try:
        validate_env_cfg(cfg.env, load_robot(cfg.env.robot), prefix="env.")
    except ContractError as e:
        raise SystemExit(f"trot train: {e}") from None
    if torch.device(cfg.device).type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(
            f"trot train: --device {cfg.device} (preset '{cfg.preset}'): this torch finds no CUDA device "
            f"(torch {torch.__version__}); train with --device cpu, or install a CUDA build of torch (docs/gpu.md)"
        )
    return cfg


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)  # noqa: NPY002
    torch.manual_seed(seed)


def train(
    cfg: TrainCfg, log_root: Path, run_name: str = "", resume_from: Path | None = None, quiet=False,
    until_gate: UntilGateCfg | None = None,
) -> Path | None:
    """Train; return the run folder. With `resume_from`, continue that checkpoint's run in its folder.
    With `until_gate`, stop when the policy passes the gate or at its wall-time cap (train/until_gate.py).
    Under torchrun every rank trains its own envs; rank 0 alone writes the run folder (others return None)."""
    rank = distributed.from_env()
    cfg = replace(cfg, device=distributed.rank_device(cfg.device, rank))
    distributed.start(cfg.device, rank)
    try:
        return _train(cfg, rank, log_root, run_name, resume_from, quiet, until_gate)
    finally:
        distributed.stop()


def _train(
    cfg: TrainCfg, rank: distributed.Rank, log_root: Path, run_name: str, resume_from: Path | None, quiet: bool,
    until_gate: UntilGateCfg | None,
) -> Path | None:
    env_cfg = replace(cfg.env, seed=cfg.env.seed + rank.rank)  # each rank its own envs
    try:
        backend = make_backend(cfg.sim, load_robot(env_cfg.robot), env_cfg.num_envs, device=cfg.device)
    except (RuntimeError, ValueError) as e:
        raise SystemExit(f"trot train: {e}") from None
    writes = rank.rank == 0
    run_dir = None
    if writes and resume_from is not None:
        run_dir = resume_from.parent
    elif writes:
        stamp = datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
        run_dir = log_root / f"{stamp}_{run_name}" if run_name else log_root / stamp
        run_dir.mkdir(parents=True, exist_ok=False)
    seed_everything(env_cfg.seed)
    if cfg.torch_threads:
        torch.set_num_threads(cfg.torch_threads)
    terminal = sys.stdout
    # rsl-rl prints a block per iteration: it goes to train.log, the terminal gets a progress line.
    with open(run_dir / "train.log" if writes else os.devnull, "a") as log, contextlib.redirect_stdout(log):
        env = LocomotionEnv(env_cfg, backend=backend)
        runner = TrotRunner(env, cfg, run_dir, run_name)
        if writes:
            atomic_write_text(run_dir / "config.json", json.dumps(to_dict(cfg), indent=2) + "\n")
            atomic_write_text(run_dir / "code_revision.txt", runner.revision + "\n")
        if resume_from is not None:
            runner.load(str(resume_from))
        start = runner.current_learning_iteration
        progress = Progress(start, start + cfg.runner.max_iterations, stream=sys.stderr, quiet=quiet or not writes)
        runner.on_iteration = progress.update
        if until_gate is None:
            runner.learn(cfg.runner.max_iterations, init_at_random_ep_len=resume_from is None)
        else:
            watch = UntilGate(until_gate, run_dir, load_robot(env_cfg.robot).folder, start, progress, terminal)

            def hook(runner, kw):
                try:
                    watch.after_iteration(runner, kw["it"])
                finally:
                    progress.update(runner, kw)

            runner.on_iteration = hook
            try:
                reason = learn_until_gate(runner, watch, start + cfg.runner.max_iterations, resume_from is None)
            finally:
                watch.side.stop()  # also on Ctrl-C: no gate process outlives the run
            progress.close()
            watch.finish(reason, int(runner.logger.tot_timesteps))
    progress.close()
    return run_dir


def learn_until_gate(runner: TrotRunner, watch: UntilGate, end_it: int, init_at_random_ep_len: bool) -> str:
    """rsl-rl's `learn` until a quick pass, then the full gate; resume after a full-gate failure. Return why it
    ended: 'passed', 'cap' or 'iterations'."""
    while runner.current_learning_iteration < end_it:
        try:
            runner.learn(end_it - runner.current_learning_iteration, init_at_random_ep_len=init_at_random_ep_len)
            return "iterations"  # learn saved the last checkpoint
        except Stop as stop:
            if stop.reason == "cap":
                runner.save(str(runner.run_dir / f"model_{runner.current_learning_iteration}.pt"))
                return "cap"
        runner.current_learning_iteration += 1  # learn stopped after this iteration's update
        init_at_random_ep_len = False
        if watch.full_gate().passed:
            return "passed"
        if watch.elapsed() >= 60 * watch.cfg.max_minutes:
            return "cap"
    return "iterations"


def run_train(args: argparse.Namespace) -> int:
    cfg = build_cfg(args)
    log_root = Path(args.log_root) / load_robot(cfg.env.robot).name / cfg.task
    resume_from = None
    if args.resume:
        run = find_run(log_root, args.load_run)
        resume_from = find_checkpoint(run, args.checkpoint)
        print(f"trot train: resuming {resume_from}")
        # As in rsl-rl and Isaac Lab, this command's settings win over the checkpoint's; say where they differ.
        changed = differences(load_checkpoint(resume_from)["trot"]["config"], to_dict(cfg))
        changed = [c for c in changed if not c.startswith("runner.max_iterations:")]  # on --resume: how many more
        if changed:
            print("trot train: settings that differ from the checkpoint's (this command's apply; the checkpoint "
                  "keeps its own):\n  " + "\n  ".join(changed))  # fmt: skip
    until_gate = until_gate_cfg(args)
    run_dir = train(cfg, log_root, args.run_name or "", resume_from, until_gate=until_gate)
    if run_dir is None:  # another rank
        return 0
    print(f"trot train: run folder {run_dir}")
    print(f"trot train: latest checkpoint {find_checkpoint(run_dir)}")
    if until_gate is None:
        return 0
    return 0 if json.loads((run_dir / SUMMARY).read_text())["reason"] == "passed" else 1


def until_gate_cfg(args: argparse.Namespace) -> UntilGateCfg | None:
    """`--until_gate` with `--gate_every` and `--max_minutes`, or None; refuse the two without it, or bad values."""
    every, minutes = getattr(args, "gate_every", None), getattr(args, "max_minutes", None)
    if not getattr(args, "until_gate", False):
        if every is not None or minutes is not None:
            raise SystemExit("trot train: --gate_every and --max_minutes only apply with --until_gate")
        return None
    if distributed.from_env().is_distributed:
        raise SystemExit("trot train: --until_gate trains in one process; run it without torchrun")
    default = UntilGateCfg()
    if every is not None and every < 1:
        raise SystemExit(f"trot train: --gate_every {every}: expected a whole number of iterations >= 1")
    if minutes is not None and not minutes > 0:
        raise SystemExit(f"trot train: --max_minutes {minutes}: expected minutes > 0")
    return UntilGateCfg(every=every or default.every, max_minutes=minutes or default.max_minutes)
