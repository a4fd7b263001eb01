"""The per-env physical parameters: what randomization writes and what every backend puts into its models.

Engine-neutral and batch-first, in SI units, starting from the robot's nominal values. The terms of
`terms.py` write into it; a backend's one `write_params(env_ids, params)` reads the fields it
simulates (MuJoCo: masses, friction, actuator gains and limits, actuation latency) and the task
reads the rest (observation latency, joint zero offsets). A new physical quantity is one field here
(and its nominal value in `nominal_params`) plus one line in each backend's `write_params`.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch

from trot.robots import Robot


@dataclass
class EnvParams:
    """Per-env values, float64 tensors with the env on the first axis."""

    friction: torch.Tensor  # (N,) floor-foot sliding friction coefficient
    mass_scale: torch.Tensor  # (N,) every link's mass and inertia are multiplied by it
    payload_mass: torch.Tensor  # (N,) kg added to the base at its centre of mass
    com_offset: torch.Tensor  # (N, 3) m, shift of the base's centre of mass, body frame
    kp: torch.Tensor  # (N, J) N·m/rad, motor position gain
    kd: torch.Tensor  # (N, J) N·m·s/rad, motor damping gain
    torque_limit: torch.Tensor  # (N, J) N·m
    actuation_latency_s: torch.Tensor  # (N,) s, a new joint target reaches the motors this late
    observation_latency_s: torch.Tensor  # (N,) s, the IMU terms the policy sees are this old
    joint_zero_offset: torch.Tensor  # (N, J) rad, encoder zero error: measured = true + offset

    def reset(self, env_ids: torch.Tensor, nominal: EnvParams) -> None:
        """Set the rows `env_ids` back to the (one-row) `nominal` values."""
        for f in fields(self):
            getattr(self, f.name)[env_ids] = getattr(nominal, f.name)[0]

    def differ(self, env_ids: torch.Tensor, nominal: EnvParams, names: tuple[str, ...]) -> bool:
        """True when any of the fields `names` of rows `env_ids` is not the nominal value."""
        return any(bool((getattr(self, n)[env_ids] != getattr(nominal, n)).any()) for n in names)


def nominal_params(robot: Robot, num_envs: int) -> EnvParams:
    """Every env with the robot as described in its folder."""
    n, j = num_envs, robot.num_joints

    def full(shape, value):
        return torch.full(shape, float(value), dtype=torch.float64)

    return EnvParams(
        friction=full((n,), 1.0),
        mass_scale=full((n,), 1.0),
        payload_mass=full((n,), 0.0),
        com_offset=full((n, 3), 0.0),
        kp=full((n, j), robot.kp),
        kd=full((n, j), robot.kd),
        torque_limit=torch.tensor(robot.torque_limit, dtype=torch.float64).repeat(n, 1),  # per joint
        actuation_latency_s=full((n,), 0.0),
        observation_latency_s=full((n,), 0.0),
        joint_zero_offset=full((n, j), 0.0),
    )
