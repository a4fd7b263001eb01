"""Reward functions: name -> small function of the env (and its params) returning (num_envs,).

The reward terms of the task (sim/config.py `RewardTerm`) name these functions and give their weight
and keyword params; a new term is a function here, registered in `REWARDS`, and its declaration.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from trot.sim.locomotion import LocomotionEnv


def track_lin_vel_xy(env: LocomotionEnv, sigma: float) -> torch.Tensor:
    """exp(-|command_xy - v_xy|^2 / sigma), body frame (sigma in m^2/s^2)."""
    err = (env.commands[:, :2] - env.base_lin_vel[:, :2]).square().sum(1)
    return torch.exp(-err / sigma)


def track_ang_vel_z(env: LocomotionEnv, sigma: float) -> torch.Tensor:
    """exp(-(command_yaw - yaw_rate)^2 / sigma) (sigma in rad^2/s^2)."""
    err = (env.commands[:, 2] - env.sim.base_ang_vel[:, 2]).square()
    return torch.exp(-err / sigma)


def lin_vel_z(env: LocomotionEnv) -> torch.Tensor:
    return env.base_lin_vel[:, 2].square()


def ang_vel_xy(env: LocomotionEnv) -> torch.Tensor:
    return env.sim.base_ang_vel[:, :2].square().sum(1)


def orientation(env: LocomotionEnv) -> torch.Tensor:
    return env.projected_gravity[:, :2].square().sum(1)


def torques(env: LocomotionEnv) -> torch.Tensor:
    return env.sim.joint_torque.square().sum(1)


def action_rate(env: LocomotionEnv) -> torch.Tensor:
    return (env.actions - env.last_actions).square().sum(1)


def feet_air_time(env: LocomotionEnv, target_s: float) -> torch.Tensor:
    """Reward steps longer than the target air time, paid at touchdown, only when asked to move."""
    reward = ((env.touchdown_air_time - target_s) * env.first_contact).sum(1)
    return reward * env.moving_command


def _desired_stance(env: LocomotionEnv) -> torch.Tensor:
    """(N, feet) gait schedule: the first pair of the task's gait stands in the first half of the clock, the
    second pair in the second half; every foot stands when there is nothing to track."""
    stance_a = (env.gait_clock < 0.5)[:, None]
    return torch.where(env.first_pair, stance_a, ~stance_a) | ~env.moving_command[:, None]


def gait_contact(env: LocomotionEnv) -> torch.Tensor:
    """Share of feet whose contact matches the gait clock; all feet down when standing."""
    return (env.foot_contact == _desired_stance(env)).double().mean(1)


def swing_height(env: LocomotionEnv, target_m: float) -> torch.Tensor:
    """Clearance of the feet the clock says are in swing, up to `target_m`: a dense signal to lift them."""
    clearance = env.sim.foot_pos[:, :, 2] - env.robot.foot_radius
    swing = ~_desired_stance(env)
    lifted = (clearance.clamp(0.0, target_m) / target_m) * swing
    return lifted.sum(1) / swing.sum(1).clamp(min=1)  # mean over the feet in swing


def joint_limits(env: LocomotionEnv) -> torch.Tensor:
    """How far joints are beyond the soft limits (rad), where the robot clamps its targets."""
    q = env.sim.joint_pos
    return ((q - env.joint_upper).clamp(min=0.0) + (env.joint_lower - q).clamp(min=0.0)).sum(1)


def stand_still(env: LocomotionEnv) -> torch.Tensor:
    return (env.sim.joint_pos - env.default_joint_pos).abs().sum(1) * ~env.moving_command


def foot_slip(env: LocomotionEnv) -> torch.Tensor:
    return (env.sim.foot_vel[:, :, :2].square().sum(2) * env.foot_contact).sum(1)


def termination(env: LocomotionEnv) -> torch.Tensor:
    """1 where the episode ended early (a fall), not at the time limit."""
    return (env.terminated & ~env.time_outs).float()


REWARDS = {
    f.__name__: f
    for f in (
        track_lin_vel_xy,
        track_ang_vel_z,
        lin_vel_z,
        ang_vel_xy,
        orientation,
        torques,
        action_rate,
        feet_air_time,
        gait_contact,
        swing_height,
        joint_limits,
        stand_still,
        foot_slip,
        termination,
    )
}
