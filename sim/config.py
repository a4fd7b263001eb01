"""Every knob of the velocity-tracking locomotion task, with its shared default, in one place.

These are the defaults for any robot; what differs per robot (command ranges, gait, sensor noise,
randomization ranges, a few reward params) is set in the robot's `task.toml` and laid over them by
`trot.sim.task.task_cfg(robot)`. Terms are declarations: an observation term is a vocabulary name +
scale + noise (trot.mapping), a reward term a function of sim/rewards.py by name + weight + params,
a randomization term a range + schedule for a declared term (trot.randomization).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from trot.mapping import ObsSpec, ObsTerm
from trot.randomization import RandomizationCfg

# Noise is a Gaussian std in the term's own units (0: off by default; a robot sets its sensors' noise).
POLICY_TERMS = (
    ObsTerm("base_ang_vel", scale=0.25),
    ObsTerm("projected_gravity", scale=1.0),
    ObsTerm("velocity_command", scale=1.0),
    ObsTerm("joint_pos_rel", scale=1.0),
    ObsTerm("joint_vel", scale=0.05),
    ObsTerm("last_action", scale=1.0),
    ObsTerm("gait_phase", scale=1.0),
)
# The critic sees noiseless terms and the privileged base velocity.
CRITIC_TERMS = (ObsTerm("base_lin_vel", scale=2.0),) + tuple(ObsTerm(t.name, t.scale) for t in POLICY_TERMS)


@dataclass(frozen=True)
class CommandCfg:
    """Velocity commands, resampled at reset and every `resample_s` seconds (ranges: Isaac Lab's velocity task)."""

    vx: tuple[float, float] = (-1.0, 1.0)  # m/s
    vy: tuple[float, float] = (-1.0, 1.0)  # m/s
    yaw_rate: tuple[float, float] = (-1.0, 1.0)  # rad/s
    resample_s: float = 10.0
    standing_fraction: float = 0.2  # share of commands that are exactly zero (see the stand_still reward)
    min_speed: float = 0.05  # m/s: a smaller linear command becomes 0 (ambiguous gait otherwise)
    # Training draws each command from its range times this: the ranges are what the bundle promises and the
    # gate tests, and with a scale above 1 their ends are not the edge of what the policy was trained on.
    train_scale: float = 1.0

    def sample_ranges(self) -> tuple[tuple[float, float], ...]:
        """The (lo, hi) of vx, vy and yaw rate that training draws commands from."""
        return tuple((self.train_scale * lo, self.train_scale * hi) for lo, hi in (self.vx, self.vy, self.yaw_rate))


@dataclass(frozen=True)
class GaitCfg:
    """The two groups of feet of a two-beat gait (trot: the diagonals), as indices into robot.toml's foot_links:
    `pairs[0]` stands during the first half of each clock cycle while `pairs[1]` swings, then they swap.
    No shared default: a robot's task.toml names its own."""

    pairs: tuple[tuple[int, ...], ...] | None = None


@dataclass(frozen=True)
class ObsCfg:
    """The policy and critic observation groups; `policy` and `critic` are the ordered specs (trot.mapping)
    that feed the env, the bundle metadata and the robot."""

    policy_terms: tuple[ObsTerm, ...] = POLICY_TERMS
    critic_terms: tuple[ObsTerm, ...] = CRITIC_TERMS
    policy_history: int = 3
    # The gait clock (Hz): the policy's gait_phase input and the schedule the gait rewards follow.
    # No shared default: it depends on the robot's legs, set in its task.toml.
    gait_frequency_hz: float | None = None
    clip: float = 100.0
    add_noise: bool = True

    @property
    def policy(self) -> ObsSpec:
        return ObsSpec(self.policy_terms, self.policy_history, self.gait_frequency_hz or 0.0)

    @property
    def critic(self) -> ObsSpec:
        return ObsSpec(self.critic_terms, 1, self.gait_frequency_hz or 0.0)


@dataclass(frozen=True)
class RewardTerm:
    """`func` (a function of sim/rewards.py, by name) called with `params`, times `weight`; weight 0 disables it.
    A `terminal` term is added after the only-positive clip. Logged as reward/<name of the entry>."""

    func: str
    weight: float
    params: dict[str, float] = field(default_factory=dict)
    terminal: bool = False


def default_rewards() -> dict[str, RewardTerm]:
    """The shared reward terms, in the order they are summed. Scaled by control_dt."""
    return {
        # exp(-error^2 / sigma), legged_gym's sigma.
        "track_lin_vel_xy": RewardTerm("track_lin_vel_xy", 1.5, {"sigma": 0.25}),
        "track_ang_vel_z": RewardTerm("track_ang_vel_z", 0.8, {"sigma": 0.25}),
        # The same two errors through a narrow kernel: the wide ones above are flat within the gate's bounds
        # (0.05 m/s, 0.1 rad/s: 0.99 and 0.96 of their top), so little pays for the last cm/s of drift or the
        # stride's yaw wobble; these still pay 0.88 / 0.61 of theirs at those errors. The yaw one at 0.5
        # left the Pupper's wobble at 0.12-0.16 rad/s; 1.5 brought it to 0.07-0.12 in 400 iterations.
        "track_lin_vel_xy_fine": RewardTerm("track_lin_vel_xy", 1.0, {"sigma": 0.02}),
        "track_ang_vel_z_fine": RewardTerm("track_ang_vel_z", 1.5, {"sigma": 0.02}),
        "lin_vel_z": RewardTerm("lin_vel_z", -2.0),
        "ang_vel_xy": RewardTerm("ang_vel_xy", -0.05),
        "orientation": RewardTerm("orientation", -5.0),
        "torques": RewardTerm("torques", -2e-4),
        "action_rate": RewardTerm("action_rate", -0.01),
        "feet_air_time": RewardTerm("feet_air_time", 0.2, {"target_s": 0.5}),  # legged_gym's 0.5 s
        "gait_contact": RewardTerm("gait_contact", 1.0),
        "swing_height": RewardTerm("swing_height", 1.0, {"target_m": 0.04}),  # linear up to this clearance
        "joint_limits": RewardTerm("joint_limits", -10.0),
        # Joints off the standing pose at a zero command. At -0.5 (and a tenth of the commands zero) policies kept
        # trotting in place, creeping 0.1-0.3 m in 10 s (feet down 60 % of the time); -2.0 with a fifth of the
        # commands zero made the same policy stand (0.01 m) within 150 iterations.
        "stand_still": RewardTerm("stand_still", -2.0),
        "foot_slip": RewardTerm("foot_slip", -0.1),
        "termination": RewardTerm("termination", -5.0, terminal=True),
    }


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
    robot: str = "pupper_v3"  # a robot name or folder
    num_envs: int = 1024
    episode_length_s: float = 20.0
    seed: int = 0
    commands: CommandCfg = CommandCfg()
    gait: GaitCfg = GaitCfg()
    observations: ObsCfg = ObsCfg()
    rewards: dict[str, RewardTerm] = field(default_factory=default_rewards)
    # legged_gym's `only_positive_rewards`: the sum of the non-terminal terms is clipped at 0 before the
    # terminal ones are added, so early clumsy steps are never worse than standing still, and a fall
    # costs the reward it forfeits. Without it PPO settles on standing still.
    only_positive_rewards: bool = True
    terminations: TerminationCfg = TerminationCfg()
    init: InitCfg = InitCfg()
    randomization: RandomizationCfg = field(default_factory=RandomizationCfg)
