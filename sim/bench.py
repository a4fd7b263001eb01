"""`trot bench sim`: env-steps/s of the full task against raw `mujoco.rollout` of the same model.

Both figures come from the same run, same models, same substeps and threads, so the ratio holds
on a noisy machine where absolute figures do not.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace

import torch

from trot.sim.locomotion import LocomotionEnv
from trot.sim.task import task_cfg


def _timed(fn, seconds: float) -> tuple[int, float]:
    fn()  # warm-up
    calls, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        fn()
        calls += 1
    return calls, time.perf_counter() - start


def bench_task(num_envs: int, seconds: float, robot: str = "pupper_v3", threads: int | None = None) -> dict:
    """Full task steps/s (physics, observations, rewards, resets, randomization) and raw rollout steps/s."""
    env = LocomotionEnv(replace(task_cfg(robot), num_envs=num_envs), nthread=threads)
    gen = torch.Generator().manual_seed(0)
    actions = 0.3 * torch.randn(num_envs, env.num_actions, generator=gen)
    calls, elapsed = _timed(lambda: env.step(actions), seconds)
    task = calls * num_envs / elapsed

    b = env.sim_backend
    state = b.state.copy()
    ctrl = b._ctrl.copy()

    def raw():
        b._rollout.rollout(
            b.models, b._datas, state, ctrl, nstep=b.decimation,
            state=b._state_out, sensordata=b._sens_out, skip_checks=True,
        )  # fmt: skip
        state[:] = b._state_out[:, -1]

    calls, elapsed = _timed(raw, seconds)
    rollout = calls * num_envs / elapsed
    return {
        "num_envs": num_envs,
        "task": task,
        "raw": rollout,
        "ratio": task / rollout,
        "threads": len(b._datas),
    }


def run_bench_sim(args: argparse.Namespace) -> int:
    print(
        f"trot bench sim --sim {args.sim}: env-steps/s, full task vs raw mujoco.rollout (same models and run)"
    )
    print(f"{'num_envs':>9}{'task':>12}{'raw rollout':>14}{'ratio':>8}{'threads':>9}")
    for n in args.num_envs:
        r = bench_task(n, args.seconds, args.robot, args.threads)
        print(f"{n:>9d}{r['task']:>12.0f}{r['raw']:>14.0f}{r['ratio']:>8.2f}{r['threads']:>9d}")
    return 0
