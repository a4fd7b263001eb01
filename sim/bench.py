"""`trot bench sim`: env-steps/s of the full task against raw stepping of the same model in the same run.

`--sim mujoco`: the task against raw `mujoco.rollout` of the same per-env models, substeps and threads,
replaying the physics calls the task made (its start states and its controls, recorded over the first
second), so the ratio is what the task adds to the physics it asks for.
`--sim mjwarp`: the task against raw MuJoCo Warp stepping of the same per-world model (each control step's
substeps captured as one graph, as the backend does), and raw `mujoco.rollout` of the same `MjModel` on
the CPU threads as a third column. Every figure comes from the same run, so the ratios hold on a noisy
machine where absolute figures do not.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from dataclasses import replace

import torch

from trot.robots import load_robot
from trot.sim.backend import MujocoBackend
from trot.sim.backends import make_backend
from trot.sim.locomotion import LocomotionEnv
from trot.sim.task import task_cfg

RECORDED_STEPS = 50  # control steps of the task whose physics calls the raw reference replays (1 s at 50 Hz)


def _rate(fn: Callable[[], object], seconds: float, sync: Callable[[], None]) -> float:
    """Calls per second of `fn` over about `seconds`, after one warm-up call; `sync` waits for queued device work."""
    fn()
    sync()
    calls, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        fn()
        calls += 1
    sync()
    return calls / (time.perf_counter() - start)


def _record_task(b: MujocoBackend, env: LocomotionEnv, actions: torch.Tensor, steps: int) -> list:
    """Run the task `steps` control steps and keep each physics call's input: (start state, controls)."""
    inner, calls = b._rollout, []

    class Recorder:
        def rollout(self, models, datas, initial_state, control, **kw):
            calls.append((initial_state.copy(), control.copy()))
            return inner.rollout(models, datas, initial_state, control, **kw)

    b._rollout = Recorder()
    try:
        for _ in range(steps):
            env.step(actions)
    finally:
        b._rollout = inner
    return calls


def _raw_rollout(b: MujocoBackend, calls: list) -> Callable[[], None]:
    """One control step of raw `mujoco.rollout` replaying the task's recorded physics calls in turn (same start
    states, controls, per-env models and threads), so the raw figure is the physics the task asked for."""
    at = [0]
    state_out, sens_out = b._state_out.copy(), b._sens_out.copy()

    def step():
        state, ctrl = calls[at[0] % len(calls)]
        at[0] += 1
        b._rollout.rollout(
            b.models, b._datas, state.copy(), ctrl, nstep=b.decimation,
            state=state_out, sensordata=sens_out, skip_checks=True,
        )  # fmt: skip

    return step


def _raw_mjwarp(b) -> Callable[[], None]:
    """One control step of raw MuJoCo Warp stepping of the backend's per-world model, from a copy of its state."""
    import mujoco
    import mujoco_warp as mjw
    import warp as wp

    m = b.model
    home = mujoco.MjData(m)
    mujoco.mj_resetDataKeyframe(m, home, m.key("home").id)
    with wp.ScopedDevice(b.wp_device):
        data = mjw.put_data(m, home, nworld=b.num_envs, nconmax=b.nconmax, njmax=b.njmax)
        for name in ("qpos", "qvel", "ctrl"):
            wp.copy(getattr(data, name), getattr(b.wd, name))

        def substeps():
            for _ in range(b.decimation):
                mjw.step(b.wm, data)

        if not b._use_graph:
            return substeps
        with wp.ScopedCapture() as capture:
            substeps()
    return lambda: wp.capture_launch(capture.graph)


def _sync(device: torch.device) -> Callable[[], None]:
    if device.type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    return lambda: None


def bench_task(
    num_envs: int, seconds: float, robot: str = "pupper_v3", threads: int | None = None,
    sim: str = "mujoco", device: str = "cpu",
) -> dict:  # fmt: skip
    """Full task steps/s (physics, observations, rewards, resets, randomization) and raw stepping steps/s."""
    r = load_robot(robot)
    backend = make_backend(sim, r, num_envs, device=device, nthread=threads)
    env = LocomotionEnv(replace(task_cfg(robot), num_envs=num_envs), backend=backend)
    gen = torch.Generator().manual_seed(0)
    actions = (0.3 * torch.randn(num_envs, env.num_actions, generator=gen)).to(env.device)
    sync = _sync(env.device)
    calls = _record_task(backend, env, actions, RECORDED_STEPS) if sim == "mujoco" else []
    task = num_envs * _rate(lambda: env.step(actions), seconds, sync)
    if sim == "mujoco":
        raw = num_envs * _rate(_raw_rollout(backend, calls), seconds, sync)
        return {"num_envs": num_envs, "task": task, "raw": raw, "ratio": task / raw, "threads": len(backend._datas)}
    raw = num_envs * _rate(_raw_mjwarp(backend), seconds, sync)
    c = MujocoBackend(r, num_envs, nthread=threads)
    c_env = LocomotionEnv(replace(task_cfg(robot), num_envs=num_envs), backend=c)
    c_raw = num_envs * _rate(_raw_rollout(c, _record_task(c, c_env, actions.cpu(), RECORDED_STEPS)), seconds,
                             lambda: None)  # fmt: skip
    return {
        "num_envs": num_envs, "task": task, "raw": raw, "ratio": task / raw, "c_rollout": c_raw,
        "threads": len(c._datas),
    }  # fmt: skip


def run_bench_sim(args: argparse.Namespace) -> int:
    sim, device = args.sim, args.device
    if sim == "mujoco":
        print("trot bench sim --sim mujoco: env-steps/s, full task vs raw mujoco.rollout replaying the task's physics "
              "calls (same models, states, controls and run)")
        print(f"{'num_envs':>9}{'task':>12}{'raw rollout':>14}{'ratio':>8}{'threads':>9}")
    else:
        print(
            f"trot bench sim --sim mjwarp --device {device}: env-steps/s, full task vs raw MuJoCo Warp stepping of "
            "the same model (graph per control step), and raw C mujoco.rollout of the same MjModel replaying the "
            "task's physics calls (same run); "
            "ms: one control step of all envs, raw"
        )
        print(f"{'num_envs':>9}{'task':>12}{'raw mjwarp':>13}{'ratio':>8}{'C rollout':>12}{'threads':>9}"
              f"{'mjwarp ms':>11}{'C ms':>8}")  # fmt: skip
    for n in args.num_envs:
        try:
            r = bench_task(n, args.seconds, args.robot, args.threads, sim, device)
        except (RuntimeError, ValueError) as e:
            raise SystemExit(f"trot bench sim: {e}") from None
        if sim == "mujoco":
            print(f"{n:>9d}{r['task']:>12.0f}{r['raw']:>14.0f}{r['ratio']:>8.2f}{r['threads']:>9d}")
        else:
            ms = 1e3 * n / r["raw"], 1e3 * n / r["c_rollout"]
            print(
                f"{n:>9d}{r['task']:>12.0f}{r['raw']:>13.0f}{r['ratio']:>8.2f}{r['c_rollout']:>12.0f}"
                f"{r['threads']:>9d}{ms[0]:>11.2f}{ms[1]:>8.2f}"
            )
    return 0
