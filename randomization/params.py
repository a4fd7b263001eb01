"""The per-env physical parameters: what randomization writes and what every backend puts into its models.

Engine-neutral and batch-first, in SI units, starting from the robot's nominal values. The terms of
`terms.py` write into it; a backend's one `write_params(env_ids, params)` reads the fields it
simulates (MuJoCo: masses, friction, contact softness, actuator gains and limits, joint armature,
damping and dry friction, actuation latency) and the task reads the rest (observation latency, joint
zero offsets). A new physical quantity is one field here (and its nominal value in `nominal_params`)
plus one line in each backend's `write_params`.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch

from trot.robots import Robot

# MuJoCo's default contact softness (solref: time constant s, damping ratio), which the models keep: the
# nominal value of the contact terms, and what the gate's PyBullet matches by standing penetration.
CONTACT_SOLREF = (0.02, 1.0)


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
    contact_timeconst: torch.Tensor  # (N,) s, contact softness of floor, feet and base (MuJoCo solref[0])
    contact_dampratio: torch.Tensor  # (N,) contact damping ratio (MuJoCo solref[1])
    armature: torch.Tensor  # (N, J) kg·m², reflected rotor inertia on each joint
    joint_damping: torch.Tensor  # (N, J) N·m·s/rad, joint viscous friction
    joint_friction: torch.Tensor  # (N, J) N·m, joint dry (Coulomb) friction

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
        contact_timeconst=full((n,), CONTACT_SOLREF[0]),
        contact_dampratio=full((n,), CONTACT_SOLREF[1]),
        armature=full((n, j), robot.armature),
        joint_damping=full((n, j), robot.damping),
        joint_friction=full((n, j), robot.frictionloss),
    )
