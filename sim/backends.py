"""Pick a physics backend by name: `mujoco` (C MuJoCo on the CPU threads) or `mjwarp` (MuJoCo Warp).

MuJoCo Warp is imported only when asked for, so the CPU install (without the `gpu` extra) never needs it.
"""

from __future__ import annotations

from trot.robots import Robot
from trot.sim.backend import Backend, MujocoBackend

SIMS = ("mujoco", "mjwarp")


def make_backend(sim: str, robot: Robot, num_envs: int, device: str = "cpu", nthread: int | None = None) -> Backend:
    """`num_envs` copies of `robot` in the backend `sim`; `device` is MuJoCo Warp's (cpu, cuda:0), `nthread`
    the C backend's thread count (default: every core)."""
    if sim == "mujoco":
        return MujocoBackend(robot, num_envs, nthread=nthread)
    if sim == "mjwarp":
        try:
            from trot.sim.mjwarp_backend import MjwarpBackend
        except ImportError as e:
            raise RuntimeError(
                f"--sim mjwarp needs the gpu extra: pip install -e '.[train,gpu]' ({e.name} is missing)"
            ) from None
        return MjwarpBackend(robot, num_envs, device=device)
    raise ValueError(f"unknown sim '{sim}'; expected one of {SIMS}")
