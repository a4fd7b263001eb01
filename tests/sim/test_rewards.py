"""Each reward term against values worked out by hand from its definition (sim/rewards.py docstrings, docs/isaaclab.md's
table of the same terms), on a real task whose per-step quantities are set to known values."""

import math
from dataclasses import replace

import pytest
import torch

from trot.randomization import RandomizationCfg
from trot.sim.locomotion import LocomotionEnv
from trot.sim.rewards import REWARDS
from trot.sim.task import task_cfg

PUPPER = task_cfg("pupper_v3")
F64 = torch.float64


@pytest.fixture(scope="module")
def env():
    """Two Pupper envs (feet FR, FL, BR, BL; gait pairs FR+BL, then FL+BR), whose quantities each test sets."""
    return LocomotionEnv(replace(PUPPER, num_envs=2, randomization=RandomizationCfg.nominal()))


def t(values) -> torch.Tensor:
    return torch.tensor(values, dtype=F64)


def set_sim(env, **fields) -> None:
    env.sim = replace(env.sim, **{k: t(v) for k, v in fields.items()})


def reward(env, name: str, **params) -> list[float]:
    return REWARDS[name](env, **params).tolist()


def test_yaw_rate_tracking_is_exp_of_the_squared_error_over_sigma(env):
    """exp(-(command_yaw - yaw_rate)^2 / sigma): 0.5 rad/s short of a 1 rad/s command with sigma 0.25 is exp(-1);
    the roll and pitch rates do not count."""
    env.commands = t([[0.0, 0.0, 1.0], [0.3, 0.2, 0.5]])
    set_sim(env, base_ang_vel=[[3.0, -2.0, 0.5], [0.0, 0.0, 0.5]])
    assert reward(env, "track_ang_vel_z", sigma=0.25) == pytest.approx([math.exp(-1.0), 1.0])


def test_linear_tracking_compares_the_horizontal_velocity_only(env):
    """exp(-|command_xy - v_xy|^2 / sigma), v in the body frame: the vertical velocity does not count."""
    env.commands = t([[0.3, 0.4, 0.0], [0.0, 0.0, 0.7]])
    env.base_lin_vel = t([[0.0, 0.0, 2.0], [0.0, 0.0, -1.0]])
    assert reward(env, "track_lin_vel_xy", sigma=0.5) == pytest.approx([math.exp(-0.25 / 0.5), 1.0])


def test_vertical_velocity_penalty_is_the_body_frame_vz_squared(env):
    env.base_lin_vel = t([[0.3, 0.2, 0.5], [1.0, 1.0, -0.2]])
    set_sim(env, base_lin_vel_world=[[9.0, 9.0, 9.0], [9.0, 9.0, 9.0]])  # not what it reads
    assert reward(env, "lin_vel_z") == pytest.approx([0.25, 0.04])


def test_roll_and_pitch_rate_penalty_is_their_squares_summed(env):
    set_sim(env, base_ang_vel=[[0.3, -0.4, 2.0], [0.0, 0.0, -5.0]])
    assert reward(env, "ang_vel_xy") == pytest.approx([0.25, 0.0])


def test_orientation_penalty_is_the_horizontal_part_of_gravity_in_the_body_frame(env):
    """Tilted 36.87° (sin 0.6), 0.36; level, 0."""
    env.projected_gravity = t([[0.6, 0.0, -0.8], [0.0, 0.0, -1.0]])
    assert reward(env, "orientation") == pytest.approx([0.36, 0.0])


def test_torque_penalty_is_the_sum_of_squared_joint_torques(env):
    set_sim(env, joint_torque=[[0.1 * k for k in range(1, 13)], [0.0] * 12])
    assert reward(env, "torques") == pytest.approx([0.01 * 650, 0.0])  # 1² + ... + 12² = 650


def test_action_rate_penalty_is_the_squared_change_of_the_action(env):
    env.last_actions = t([[0.5] * 12, [1.0] * 12])
    env.actions = t([[0.6] * 12, [1.0] * 12])
    assert reward(env, "action_rate") == pytest.approx([0.12, 0.0])


def test_air_time_pays_each_touchdown_its_time_beyond_the_target_when_asked_to_move(env):
    """At touchdown, air time - target per foot: FR after 0.3 s and FL after 0.6 s with a 0.5 s target give
    -0.2 + 0.1; BR still in the air (0.1 s) pays nothing yet. Nothing at all at a standing command."""
    env.touchdown_air_time = t([[0.3, 0.6, 0.1, 0.0]] * 2)
    env.first_contact = torch.tensor([[True, True, False, False]] * 2)
    env.moving_command = torch.tensor([True, False])
    assert reward(env, "feet_air_time", target_s=0.5) == pytest.approx([-0.1, 0.0])


def _gait(env, clock: list[float], moving: list[bool]) -> None:
    env.gait_clock = t(clock)
    env.moving_command = torch.tensor(moving)


@pytest.mark.parametrize(
    ("contact", "first_half", "second_half"),
    [
        ([True, False, False, True], 1.0, 0.0),  # FR and BL down: the first pair's stance
        ([False, True, True, False], 0.0, 1.0),  # FL and BR down: the second pair's
        ([True, True, True, True], 0.5, 0.5),  # every foot down: half of them where they should be
        ([True, False, False, False], 0.75, 0.25),
    ],
)
def test_gait_contact_is_the_share_of_feet_where_the_clock_wants_them(env, contact, first_half, second_half):
    """The task's gait pairs (FR+BL, FL+BR): the first stands in the first half of the clock, the second in the
    second half."""
    env.foot_contact = torch.tensor([contact, contact])
    _gait(env, [0.25, 0.75], [True, True])
    assert reward(env, "gait_contact") == pytest.approx([first_half, second_half])


def test_at_a_standing_command_every_foot_should_be_down(env):
    env.foot_contact = torch.tensor([[True] * 4, [True, False, False, True]])
    _gait(env, [0.25, 0.75], [False, False])
    assert reward(env, "gait_contact") == pytest.approx([1.0, 0.5])


def test_swing_height_is_the_mean_clearance_of_the_swinging_feet_up_to_the_target(env):
    """First half of the clock: FL and BR swing. FL 2 cm above the floor (sphere bottom) pays 0.5 of a 4 cm target,
    BR 6 cm pays 1 (capped): mean 0.75; the standing feet's height does not count. Standing: no foot swings, 0."""
    r = env.robot.foot_radius
    heights = [r + 0.10, r + 0.02, r + 0.06, r + 0.10]  # FR, FL, BR, BL: sphere centres
    set_sim(env, foot_pos=[[[0.0, 0.0, z] for z in heights]] * 2)
    _gait(env, [0.25, 0.25], [True, False])
    assert reward(env, "swing_height", target_m=0.04) == pytest.approx([0.75, 0.0])


def test_a_foot_below_the_floor_earns_no_swing_height(env):
    r = env.robot.foot_radius
    set_sim(env, foot_pos=[[[0.0, 0.0, r - 0.01], [0.0, 0.0, r - 0.005], [0.0, 0.0, r], [0.0, 0.0, r]]] * 2)
    _gait(env, [0.75, 0.75], [True, True])  # FR and BL swing
    assert reward(env, "swing_height", target_m=0.04) == pytest.approx([0.0, 0.0])


def test_joint_limit_penalty_is_how_far_joints_are_beyond_the_soft_limits(env):
    """0.1 rad beyond one joint's upper soft limit and 0.05 below another's lower: 0.15; inside them: 0."""
    q = (0.5 * (env.joint_lower + env.joint_upper)).repeat(2, 1)
    q[0, 0] = env.joint_upper[0] + 0.1
    q[0, 4] = env.joint_lower[4] - 0.05
    q[1, 2] = env.joint_upper[2] - 0.01
    env.sim = replace(env.sim, joint_pos=q)
    assert reward(env, "joint_limits") == pytest.approx([0.15, 0.0])


def test_stand_still_penalises_joints_off_the_standing_pose_only_at_a_standing_command(env):
    q = env.default_joint_pos.repeat(2, 1)
    q[:, 0] += 0.1
    q[:, 7] -= 0.2
    env.sim = replace(env.sim, joint_pos=q)
    env.moving_command = torch.tensor([False, True])
    assert reward(env, "stand_still") == pytest.approx([0.3, 0.0])


def test_foot_slip_is_the_squared_horizontal_speed_of_the_feet_on_the_floor(env):
    """FR on the floor sliding at (0.3, 0.4) m/s pays 0.25 (its vertical speed does not count); FL in the air
    does not count whatever its speed."""
    vel = [[0.3, 0.4, 5.0], [3.0, 3.0, 3.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]]
    set_sim(env, foot_vel=[vel, vel])
    env.foot_contact = torch.tensor([[True, False, True, True], [False, False, True, True]])
    assert reward(env, "foot_slip") == pytest.approx([0.25, 0.0])


def test_the_termination_term_is_one_for_a_fall_and_zero_otherwise(env):
    env.terminated = torch.tensor([True, False])
    env.time_outs = torch.tensor([False, False])
    assert reward(env, "termination") == [1.0, 0.0]
