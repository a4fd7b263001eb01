"""Every knob of the velocity-tracking locomotion task, with its default, in one place."""

from __future__ import annotations

from dataclasses import dataclass, field

from trot.mapping import ObsSpec, ObsTerm
from trot.randomization import RandomizationCfg

# Gaussian noise std = published uniform amplitude / sqrt(3) (Pupper v3: gyro 0.3, gravity 0.1, joints 0.1).
POLICY_TERMS = (
    ObsTerm("base_ang_vel", scale=0.25, noise=0.17),
    ObsTerm("projected_gravity", scale=1.0, noise=0.058),
    ObsTerm("velocity_command", scale=1.0),
    ObsTerm("joint_pos_rel", scale=1.0, noise=0.058),
    ObsTerm("joint_vel", scale=0.05, noise=0.5),
    ObsTerm("last_action", scale=1.0),
    ObsTerm("gait_phase", scale=1.0),
)
GAIT_FREQUENCY_HZ = 2.5  # trot clock: each diagonal pair swings for half of a 0.4 s cycle
IMU_TERMS = ("base_ang_vel", "projected_gravity")  # delayed by observation_latency


@dataclass(frozen=True)
class CommandCfg:
    """Velocity commands, resampled at reset and every `resample_s` seconds."""

    vx: tuple[float, float] = (-0.6, 0.6)  # m/s
    vy: tuple[float, float] = (-0.4, 0.4)  # m/s
    yaw_rate: tuple[float, float] = (-1.5, 1.5)  # rad/s
    resample_s: float = 10.0
    standing_fraction: float = 0.1  # share of commands that are exactly zero
    min_speed: float = 0.05  # m/s: a smaller linear command becomes 0 (ambiguous gait otherwise)


@dataclass(frozen=True)
class ObsCfg:
    policy: ObsSpec = ObsSpec(POLICY_TERMS, history=3, gait_frequency_hz=GAIT_FREQUENCY_HZ)
    # The critic sees noiseless terms and the privileged base velocity.
    critic: ObsSpec = ObsSpec(
        (ObsTerm("base_lin_vel", scale=2.0),) + tuple(ObsTerm(t.name, t.scale) for t in POLICY_TERMS),
        history=1,
        gait_frequency_hz=GAIT_FREQUENCY_HZ,
    )
    clip: float = 100.0
    add_noise: bool = True


@dataclass(frozen=True)
class RewardCfg:
    """Weights keyed by reward function name (sim/rewards.py); 0 disables a term. Scaled by control_dt."""

    weights: dict[str, float] = field(
        default_factory=lambda: {
            "track_lin_vel_xy": 1.5,
            "track_ang_vel_z": 0.8,
            "lin_vel_z": -2.0,
            "ang_vel_xy": -0.05,
            "orientation": -5.0,
            "torques": -2e-4,
            "action_rate": -0.01,
            "feet_air_time": 0.2,
            "gait_contact": 1.0,
            "swing_height": 1.0,
            "joint_limits": -10.0,
            "stand_still": -0.5,
            "foot_slip": -0.1,
            "termination": -5.0,
        }
    )
    # legged_gym's `only_positive_rewards`: the sum of the other terms is clipped at 0 before the
    # termination term is added, so early clumsy steps are never worse than standing still, and a
    # fall costs the reward it forfeits. Without it PPO settles on standing still.
    only_positive: bool = True
    # exp(-error^2 / sigma). Pupper commands are a third of ANYmal's speeds, so the linear sigma is
    # scaled down from legged_gym's 0.25: with 0.25, standing still at a 0.3 m/s command
    # still earns 70 % of the tracking reward and PPO settles on standing.
    tracking_sigma_lin: float = 0.1
    tracking_sigma_ang: float = 0.25
    air_time_target_s: float = 0.2
    swing_height_m: float = 0.04  # foot clearance rewarded in swing (linearly up to this height)


@dataclass(frozen=True)
class TerminationCfg:
    base_contact: bool = True
    max_tilt_deg: float = 60.0


@dataclass(frozen=True)
class InitCfg:
    """Reset state: default pose plus noise, random yaw."""

    joint_pos_noise: float = 0.1  # rad, uniform
    base_vel_noise: float = 0.1  # m/s and rad/s, uniform


@dataclass(frozen=True)
class EnvCfg:
    robot: str = "pupper_v3"
    num_envs: int = 1024
    episode_length_s: float = 20.0
    seed: int = 0
    commands: CommandCfg = CommandCfg()
    observations: ObsCfg = ObsCfg()
    rewards: RewardCfg = RewardCfg()
    terminations: TerminationCfg = TerminationCfg()
    init: InitCfg = InitCfg()
    randomization: RandomizationCfg = field(default_factory=RandomizationCfg)
