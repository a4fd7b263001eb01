"""The locomotion task as an rsl-rl VecEnv: batching, layout, runner compatibility, rewards."""

import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from trot.randomization import TERMS, RandomizationCfg, nominal_params
from trot.robots import load_robot
from trot.sim.backend import MujocoBackend
from trot.sim.config import RewardTerm
from trot.sim.locomotion import LocomotionEnv
from trot.sim.task import task_cfg
from trot.train.config import preset, to_rsl_rl

ROBOT = load_robot("pupper_v3")
PUPPER = task_cfg("pupper_v3")


def test_batched_stepping_equals_stepping_each_env_alone():
    gen = torch.Generator().manual_seed(0)
    n, steps = 3, 40
    default = torch.tensor(ROBOT.default_joint_pos, dtype=torch.float64)
    targets = default + 0.3 * torch.randn(steps, n, ROBOT.num_joints, generator=gen, dtype=torch.float64)
    params = nominal_params(ROBOT, n)
    params.actuation_latency_s[:] = torch.tensor([0, 2, 5]) * ROBOT.physics_dt
    params.friction[:] = torch.tensor([1.0, 0.8, 1.2])
    batched = MujocoBackend(ROBOT, n, nthread=2)
    batched.write_params(torch.arange(n), params)
    for t in range(steps):
        batched.step(targets[t])
    for i in range(n):
        alone = MujocoBackend(ROBOT, 1, nthread=1)
        alone.write_params(torch.arange(1), _row(params, i))
        for t in range(steps):
            alone.step(targets[t, i : i + 1])
        np.testing.assert_array_equal(alone.state[0], batched.state[i])


def _row(params, i):
    """The params of env i alone, as a one-env batch."""
    from dataclasses import fields

    return type(params)(**{f.name: getattr(params, f.name)[i : i + 1].clone() for f in fields(params)})


def test_observation_layout_matches_its_metadata():
    env = LocomotionEnv(
        replace(
            PUPPER, num_envs=4, randomization=RandomizationCfg.nominal(),
            observations=replace(PUPPER.observations, add_noise=False),
        )
    )  # fmt: skip
    gen = torch.Generator().manual_seed(0)
    for _ in range(3):
        env.step(torch.randn(4, 12, generator=gen))
    obs = env.get_observations()
    for group, spec in (("policy", env.cfg.observations.policy), ("critic", env.cfg.observations.critic)):
        meta = spec.metadata(env.num_actions)
        assert [t["name"] for t in meta["terms"]] == [t.name for t in spec.terms]
        frame = sum(t["size"] for t in meta["terms"])
        assert obs[group].shape == (4, frame * meta["history"])
        expected = {
            "base_lin_vel": env.base_lin_vel,
            "projected_gravity": env.projected_gravity,
            "velocity_command": env.commands,
            "joint_pos_rel": env.sim.joint_pos - env.default_joint_pos,
            "joint_vel": env.sim.joint_vel,
            "last_action": env.actions,
            "base_ang_vel": env.sim.base_ang_vel,
            "gait_phase": torch.stack(
                [torch.sin(2 * torch.pi * env.gait_clock), torch.cos(2 * torch.pi * env.gait_clock)], 1
            ),
        }
        start = 0
        for t in meta["terms"]:
            got = obs[group][:, start : start + t["size"]]
            np.testing.assert_allclose(got, expected[t["name"]] * t["scale"], atol=1e-5, err_msg=t["name"])
            start += t["size"]
    assert "base_lin_vel" not in [t.name for t in env.cfg.observations.policy.terms]


def test_vecenv_runs_on_policy_runner_unchanged(tmp_path):
    from rsl_rl.runners import OnPolicyRunner

    cfg = preset("cpu")
    cfg = replace(cfg, env=replace(cfg.env, num_envs=16))
    env = LocomotionEnv(cfg.env)
    runner = OnPolicyRunner(env, to_rsl_rl(cfg), log_dir=str(tmp_path), device="cpu")
    runner.learn(2)
    assert runner.current_learning_iteration == 1
    assert list(tmp_path.glob("events.out.tfevents.*"))


def test_timeouts_are_reported_apart_from_falls():
    env = LocomotionEnv(replace(PUPPER, num_envs=2, episode_length_s=0.1, randomization=RandomizationCfg.nominal()))
    for _ in range(4):
        _, _, dones, extras = env.step(torch.zeros(2, 12))
        assert not dones.any()
    _, _, dones, extras = env.step(torch.zeros(2, 12))
    assert dones.all() and extras["time_outs"].all()
    assert extras["log"]["termination/time_out"] == 1.0 and extras["log"]["termination/fall"] == 0.0


def test_tipping_over_terminates_and_is_penalised():
    env = LocomotionEnv(replace(PUPPER, num_envs=2, randomization=RandomizationCfg.nominal()))
    qpos = env.sim_backend.home_qpos().repeat(2, 1)
    rq = env.sim_backend.root_qpos_adr
    qpos[1, rq + 3 : rq + 7] = torch.tensor([0.0, 1.0, 0.0, 0.0], dtype=torch.float64)  # upside down
    qpos[1, rq + 2] = 0.3
    env.sim_backend.reset_envs(torch.arange(2), qpos, torch.zeros(2, env.sim_backend.num_qvel, dtype=torch.float64))
    _, rewards, dones, extras = env.step(torch.zeros(2, 12))
    assert dones.tolist() == [False, True] and not extras["time_outs"].any()
    penalty = env.cfg.rewards["termination"].weight * env.dt
    assert penalty < 0
    # Only the fallen env is logged, its termination sum is one penalty (logged per episode second).
    assert extras["log"]["reward/termination"].item() == pytest.approx(penalty / env.cfg.episode_length_s)
    assert rewards[1] < 0 <= rewards[0]


def test_only_positive_clips_the_shaping_terms_but_not_the_fall_penalty():
    rewards = {"orientation": PUPPER.rewards["orientation"], "termination": PUPPER.rewards["termination"]}
    env = LocomotionEnv(replace(PUPPER, num_envs=1, rewards=rewards, randomization=RandomizationCfg.nominal()))
    qpos = env.sim_backend.home_qpos()[None].clone()
    rq = env.sim_backend.root_qpos_adr
    qpos[0, rq + 3 : rq + 7] = torch.tensor([0.966, 0.259, 0.0, 0.0], dtype=torch.float64)  # 30 deg roll
    env.sim_backend.reset_envs(torch.arange(1), qpos, torch.zeros(1, env.sim_backend.num_qvel, dtype=torch.float64))
    _, clipped, _, _ = env.step(torch.zeros(1, 12))
    assert clipped.item() == 0.0
    env_raw = LocomotionEnv(replace(env.cfg, only_positive_rewards=False))
    env_raw.sim_backend.reset_envs(torch.arange(1), qpos, torch.zeros(1, env.sim_backend.num_qvel, dtype=torch.float64))
    _, raw, _, _ = env_raw.step(torch.zeros(1, 12))
    assert raw.item() < -0.01


def test_each_reward_term_is_logged_and_zero_weight_disables_it():
    rewards = dict(PUPPER.rewards, orientation=replace(PUPPER.rewards["orientation"], weight=0.0))
    env = LocomotionEnv(replace(PUPPER, num_envs=4, episode_length_s=0.1, rewards=rewards))
    logs = {}
    for _ in range(5):
        _, _, _, extras = env.step(torch.zeros(4, 12))
        logs.update(extras["log"])
    active = {name for name, term in rewards.items() if term.weight != 0}
    assert {k.split("/", 1)[1] for k in logs if k.startswith("reward/")} == active
    assert "reward/orientation" not in logs


def test_a_terminal_term_is_added_after_the_clip_whatever_its_name():
    """The fall penalty is flagged `terminal`, not recognised by its name: renamed, it still escapes the clip."""
    fall = RewardTerm("termination", -5.0, terminal=True)
    env = LocomotionEnv(replace(PUPPER, num_envs=2, rewards={"fall": fall}, randomization=RandomizationCfg.nominal()))
    qpos = env.sim_backend.home_qpos().repeat(2, 1)
    rq = env.sim_backend.root_qpos_adr
    qpos[1, rq + 3 : rq + 7] = torch.tensor([0.0, 1.0, 0.0, 0.0], dtype=torch.float64)  # upside down
    qpos[1, rq + 2] = 0.3
    env.sim_backend.reset_envs(torch.arange(2), qpos, torch.zeros(2, env.sim_backend.num_qvel, dtype=torch.float64))
    _, rewards, _, extras = env.step(torch.zeros(2, 12))
    assert rewards.tolist() == pytest.approx([0.0, -5.0 * 0.02])
    assert extras["log"]["reward/fall"].item() == pytest.approx(-5.0 * 0.02 / env.cfg.episode_length_s)


def test_reward_params_reach_their_function():
    """track_lin_vel_xy = exp(-|cmd - v|^2 / sigma): at rest under a 0.3 m/s command, 0.41 with sigma 0.1."""
    rewards = {"track": RewardTerm("track_lin_vel_xy", 1.0, {"sigma": 0.1})}
    cfg = replace(PUPPER, num_envs=1, rewards=rewards, randomization=RandomizationCfg.nominal(),
                  init=replace(PUPPER.init, base_vel_noise=0.0, joint_pos_noise=0.0))  # fmt: skip
    env = LocomotionEnv(cfg)
    env.commands[:] = torch.tensor([[0.3, 0.0, 0.0]], dtype=torch.float64)
    value = env.reward_terms["track"]
    from trot.sim.rewards import REWARDS

    got = REWARDS[value.func](env, **value.params)
    v = env.base_lin_vel[0, :2]
    expected = math.exp(-((0.3 - v[0].item()) ** 2 + v[1].item() ** 2) / 0.1)
    assert got.item() == pytest.approx(expected) and 0.39 < got.item() < 0.43


@pytest.mark.parametrize(
    "rewards, field, expected",
    [
        ({"moonwalk": RewardTerm("moonwalk", 1.0)}, "rewards.moonwalk.func", "a reward function"),
        ({"track": RewardTerm("track_lin_vel_xy", 1.0, {"sigma_lin": 0.1})}, "rewards.track.params", "['sigma']"),
    ],
)
def test_unknown_reward_function_or_param_is_refused(rewards, field, expected):
    from trot.robots import ContractError

    with pytest.raises(ContractError, match=expected) as e:
        LocomotionEnv(replace(PUPPER, num_envs=1, rewards=rewards))
    assert e.value.field == field


def test_train_scale_draws_commands_beyond_the_promised_ranges_and_the_bundle_keeps_the_promise():
    from trot.train.config import TrainCfg
    from trot.train.export import bundle_metadata

    commands = replace(PUPPER.commands, train_scale=1.25, standing_fraction=0.0, min_speed=0.0)
    env = LocomotionEnv(replace(PUPPER, num_envs=4096, commands=commands, randomization=RandomizationCfg.nominal()))
    drawn = env.commands.numpy()
    for axis, (lo, hi) in enumerate((commands.vx, commands.vy, commands.yaw_rate)):
        x = drawn[:, axis]
        assert 1.25 * lo <= x.min() and x.max() <= 1.25 * hi
        assert 0.08 < np.mean(x < lo) < 0.12 and 0.08 < np.mean(x > hi) < 0.12  # a tenth beyond each end
    cfg = TrainCfg(env=replace(PUPPER, commands=commands))
    meta = bundle_metadata(cfg, {"iter": 0, "trot": {}})
    assert (meta.commands.vx, meta.commands.vy, meta.commands.yaw_rate) == (commands.vx, commands.vy, commands.yaw_rate)


def test_a_train_scale_below_one_is_refused():
    from trot.robots import ContractError

    with pytest.raises(ContractError, match="≥ 1") as e:
        LocomotionEnv(replace(PUPPER, num_envs=1, commands=replace(PUPPER.commands, train_scale=0.9)))
    assert e.value.field == "commands.train_scale"


def test_step_never_mutates_an_observation_already_handed_out():
    """rsl-rl stores the observation an action came from after the next step; it must still be that one."""
    env = LocomotionEnv(replace(PUPPER, num_envs=4))
    first = env.get_observations()
    kept = {k: first[k].clone() for k in ("policy", "critic")}
    second, _, _, _ = env.step(torch.randn(4, 12, generator=torch.Generator().manual_seed(0)))
    for k in kept:
        assert torch.equal(first[k], kept[k]), k
        assert not torch.equal(second[k], kept[k]), k


# Summed rewards of 8 envs over 15 steps (a reset at step 10) with seed 0, with the task settings of eed94be (below),
# first pinned there; re-measured on 0861fbe, whose Pupper body (the authors' description) is a deliberate change of
# the physics. The same seed gives the same run. The bugs this test alone used to catch (issue 29: pushes in one
# half-plane, tracking in the world frame, the fall penalty paid on time-outs) have tests of their own below, which a
# re-pinning cannot blind.
PINNED_REWARDS = [
    0.198004272766, 0.164301762823, 0.18813564349, 0.210846721195, 0.159812794998, 0.183766235597,
    0.155422337353, 0.170420978684, 0.186103467364, 0.182089396287, 0.207428810187, 0.202226986177,
    0.200879698619, 0.205230566673, 0.184916813858,
]  # fmt: skip


# Pupper's randomization on eed94be where it differs from today's task.toml: three ranges, and the terms added since
# left at their nominal values (which draw nothing from the generator).
EED94BE_RANGES = {"friction": (0.6, 1.4), "actuation_latency": (0.0, 0.02), "observation_latency": (0.0, 0.02)}
# ... and the reward settings of then: the narrow tracking terms added since, stand_still -0.5, a tenth of the
# commands zero.
EED94BE_REWARDS_SINCE = ("track_lin_vel_xy_fine", "track_ang_vel_z_fine")
TERMS_SINCE = (
    "contact_timeconst", "contact_dampratio", "armature_scale", "joint_damping_scale", "joint_friction_scale",
)  # fmt: skip


def test_same_seed_gives_the_rewards_pinned_before_terms_were_declared():
    terms = PUPPER.randomization
    for name, (lo, hi) in EED94BE_RANGES.items():
        terms = terms.with_term(name, lo, hi)
    for name in TERMS_SINCE:
        terms = terms.with_term(name, TERMS[name].nominal)
    rewards = {n: t for n, t in PUPPER.rewards.items() if n not in EED94BE_REWARDS_SINCE}
    rewards["stand_still"] = replace(rewards["stand_still"], weight=-0.5)
    commands = replace(PUPPER.commands, standing_fraction=0.1)
    env = LocomotionEnv(replace(PUPPER, num_envs=8, seed=0, episode_length_s=0.2, randomization=terms,
                                rewards=rewards, commands=commands))  # fmt: skip
    gen = torch.Generator().manual_seed(1)
    got = [env.step(0.5 * torch.randn(8, 12, generator=gen))[1].double().sum().item() for _ in range(15)]
    np.testing.assert_allclose(got, PINNED_REWARDS, rtol=1e-6)


# ---- what the task promises, pinned by its effect (issue 29: bugs only the pinned rewards above used to catch) ----

NOMINAL = RandomizationCfg.nominal()


def test_the_fall_penalty_is_not_paid_when_an_episode_runs_out_of_time():
    """`termination` is 1 where the episode ended early (a fall), not at the time limit: a robot that stood its whole
    episode gets no penalty at the time-out, and its episode log says so."""
    rewards = {"termination": PUPPER.rewards["termination"]}
    env = LocomotionEnv(replace(PUPPER, num_envs=2, episode_length_s=0.1, rewards=rewards, randomization=NOMINAL))
    for _ in range(5):
        _, reward, dones, extras = env.step(torch.zeros(2, 12))
    assert dones.all() and extras["time_outs"].all()
    assert reward.tolist() == [0.0, 0.0], "the fall penalty was paid on a time-out"
    assert extras["log"]["reward/termination"].item() == 0.0


def _yawed_in_the_air(env, yaw: float, lin_vel_world: list[list[float]]) -> None:
    """Every env's base 1 m up, level, facing `yaw` (rad) and moving at its own world-frame velocity."""
    n, b = env.num_envs, env.sim_backend
    qpos = b.home_qpos().repeat(n, 1)
    rq, rv = b.root_qpos_adr, b.root_qvel_adr
    qpos[:, rq + 2] = 1.0
    qpos[:, rq + 3 : rq + 7] = torch.tensor([math.cos(yaw / 2), 0.0, 0.0, math.sin(yaw / 2)], dtype=torch.float64)
    qvel = torch.zeros(n, b.num_qvel, dtype=torch.float64)
    qvel[:, rv : rv + 3] = torch.tensor(lin_vel_world, dtype=torch.float64)
    b.reset_envs(torch.arange(n), qpos, qvel)


def test_velocity_tracking_is_judged_in_the_robot_s_own_frame():
    """track_lin_vel_xy compares the command with the body-frame velocity (a command is 'forward', whichever way
    the robot faces). Facing world +y (yaw 90°), 0.3 m/s along world +y is 0.3 m/s forward: a 0.3 m/s forward command
    is tracked exactly, exp(0) = 1; 0.3 m/s along world +x is 0.3 m/s to its right: exp(-(0.3² + 0.3²) / 0.25) = 0.487.
    The reward is that times weight 1 and control_dt (one step in the air: gravity adds only vertical speed)."""
    rewards = {"track": RewardTerm("track_lin_vel_xy", 1.0, {"sigma": 0.25})}
    env = LocomotionEnv(replace(PUPPER, num_envs=2, rewards=rewards, randomization=NOMINAL))
    _yawed_in_the_air(env, math.pi / 2, [[0.0, 0.3, 0.0], [0.3, 0.0, 0.0]])
    env.commands[:] = torch.tensor([0.3, 0.0, 0.0], dtype=torch.float64)
    _, reward, dones, _ = env.step(torch.zeros(2, 12))
    assert not dones.any()
    np.testing.assert_allclose(reward / env.dt, [1.0, math.exp(-0.18 / 0.25)], atol=0.01,
                               err_msg="tracking reward of [forward, sideways] motion, forward command")  # fmt: skip


@pytest.mark.parametrize("resample_s", [0.1, 0.3])
def test_commands_are_resampled_every_resample_s_seconds_of_episode_time(resample_s):
    """CommandCfg: commands are resampled at reset and every `resample_s` seconds: at 0.02 s a control step, 0.1 s is
    every 5th step (0.1, 0.2, ... s into the episode) and 0.3 s every 15th, never in between."""
    commands = replace(PUPPER.commands, resample_s=resample_s, standing_fraction=0.0, min_speed=0.0)
    env = LocomotionEnv(replace(PUPPER, num_envs=2, commands=commands, randomization=NOMINAL))
    changed_at, last = [], env.commands.clone()
    for step in range(1, 46):
        _, _, dones, _ = env.step(torch.zeros(2, 12))
        assert not dones.any()
        if not torch.equal(env.commands, last):
            assert (env.commands != last).all(1).all(), "every env's command is drawn anew, in every axis"
            changed_at.append(round(step * env.dt, 9))
        last = env.commands.clone()
    every = round(resample_s / ROBOT.control_dt)
    expected = [round(k * every * ROBOT.control_dt, 9) for k in range(1, 45 // every + 1)]
    assert changed_at == expected, f"commands changed at {changed_at} s into the episode; every {resample_s} s expected"


def test_a_small_linear_command_keeps_its_yaw_rate_so_the_robot_turns_in_place():
    """min_speed: a linear command smaller than it becomes 0, the yaw rate stays; a turn in place is a command to
    move, so the gait rewards ask for steps (sim/rewards.py `_desired_stance`)."""
    commands = replace(PUPPER.commands, vx=(-0.03, 0.03), vy=(-0.03, 0.03), yaw_rate=(0.5, 1.0),
                       standing_fraction=0.0, min_speed=0.05)  # fmt: skip
    env = LocomotionEnv(replace(PUPPER, num_envs=64, commands=commands, randomization=NOMINAL))
    c = env.commands
    assert (c[:, :2] == 0.0).all(), "|v_xy| ≤ 0.042 < min_speed: zeroed"
    assert ((0.5 <= c[:, 2]) & (c[:, 2] <= 1.0)).all(), f"the yaw rate must be kept: {c[:4, 2].tolist()} ..."
    assert env.moving_command.all()


def test_a_linear_command_above_min_speed_is_kept_whole():
    commands = replace(PUPPER.commands, vx=(0.2, 0.3), vy=(-0.1, 0.1), yaw_rate=(-0.2, 0.2),
                       standing_fraction=0.0, min_speed=0.05)  # fmt: skip
    env = LocomotionEnv(replace(PUPPER, num_envs=64, commands=commands, randomization=NOMINAL))
    c = env.commands
    assert ((0.2 <= c[:, 0]) & (c[:, 0] <= 0.3)).all() and (c[:, 1] != 0).all() and (c[:, 2] != 0).all()


def _place(env, qpos_rows: list[tuple[float, list[float]]]) -> None:
    """Each env's base at (height m, quaternion w x y z), joints at the standing pose, at rest."""
    b = env.sim_backend
    qpos = b.home_qpos().repeat(env.num_envs, 1)
    for i, (z, quat) in enumerate(qpos_rows):
        qpos[i, b.root_qpos_adr + 2] = z
        qpos[i, b.root_qpos_adr + 3 : b.root_qpos_adr + 7] = torch.tensor(quat, dtype=torch.float64)
    b.reset_envs(torch.arange(env.num_envs), qpos, torch.zeros(env.num_envs, b.num_qvel, dtype=torch.float64))


def _roll(deg: float) -> list[float]:
    return [math.cos(math.radians(deg) / 2), math.sin(math.radians(deg) / 2), 0.0, 0.0]


def test_a_tilt_beyond_max_tilt_deg_ends_the_episode_and_one_within_it_does_not():
    """terminations.max_tilt_deg (60°): rolled 55° the episode goes on, 65° it ends as a fall (in the air: no
    contact decides it)."""
    env = LocomotionEnv(replace(PUPPER, num_envs=2, randomization=NOMINAL))
    _place(env, [(1.0, _roll(55.0)), (1.0, _roll(65.0))])
    _, _, dones, extras = env.step(torch.zeros(2, 12))
    assert dones.tolist() == [False, True] and not extras["time_outs"].any()
    assert extras["log"]["termination/fall"].item() == 1.0


@pytest.mark.parametrize("base_contact", [True, False])
def test_the_base_touching_the_ground_ends_the_episode_only_when_configured(base_contact):
    """On its back on the floor with every tilt allowed: the base touches the ground; terminations.base_contact
    decides whether that is a fall."""
    terminations = replace(PUPPER.terminations, max_tilt_deg=180.0, base_contact=base_contact)
    env = LocomotionEnv(replace(PUPPER, num_envs=1, randomization=NOMINAL, terminations=terminations))
    _place(env, [(0.06, [0.0, 1.0, 0.0, 0.0])])
    fell = [bool(env.step(torch.zeros(1, 12))[2][0]) for _ in range(5)]
    assert any(fell) == base_contact, fell


def test_a_foot_s_air_time_is_paid_once_at_touchdown_and_counts_the_steps_it_was_off_the_floor():
    """Dropped from 3 cm above the standing height, each foot is in the air for some control steps, then lands: the
    air time it lands with is the time since the last step it was seen on the floor (the reset), the landing step
    included, and it is a first contact only on that step; a foot on the floor has no air time."""
    env = LocomotionEnv(replace(PUPPER, num_envs=1, randomization=NOMINAL,
                                init=replace(PUPPER.init, joint_pos_noise=0.0, base_vel_noise=0.0)))  # fmt: skip
    height = env.sim_backend.home_qpos()[env.sim_backend.root_qpos_adr + 2].item()
    _place(env, [(height + 0.03, [1.0, 0.0, 0.0, 0.0])])
    landed_at = [None] * 4
    for step in range(1, 16):
        env.step(torch.zeros(1, 12))
        for foot in range(4):
            down, first = bool(env.foot_contact[0, foot]), bool(env.first_contact[0, foot])
            if landed_at[foot] is None and down:
                landed_at[foot] = step
                assert first and env.touchdown_air_time[0, foot].item() == pytest.approx(step * env.dt)
            else:
                assert not first, (foot, step)
            if down:
                assert env.feet_air_time[0, foot].item() == 0.0
            else:
                assert env.feet_air_time[0, foot].item() == pytest.approx(step * env.dt)
    assert all(s is not None and s > 1 for s in landed_at), landed_at  # every foot was in the air, then landed


def test_the_gait_clock_is_episode_time_times_the_gait_frequency_and_restarts_with_the_episode():
    """Pupper's clock runs at 2.5 Hz: 5 control steps of 0.02 s are a quarter cycle, where the policy's gait_phase
    input is (sin, cos) = (1, 0); a new episode starts it at 0 again, (0, 1)."""
    env = LocomotionEnv(replace(PUPPER, num_envs=1, episode_length_s=0.2, randomization=NOMINAL,
                                observations=replace(PUPPER.observations, add_noise=False)))  # fmt: skip
    spec = env.cfg.observations.policy
    at = 0
    for term in spec.metadata(env.num_actions)["terms"]:
        if term["name"] == "gait_phase":
            break
        at += term["size"]
    phases = []
    for _ in range(10):
        _, _, dones, _ = env.step(torch.zeros(1, 12))
        phases.append((env.gait_clock.item(), env.get_observations()["policy"][0, at : at + 2].tolist()))
    assert phases[4][0] == pytest.approx(0.25) and phases[4][1] == pytest.approx([1.0, 0.0], abs=1e-6)
    assert phases[8][0] == pytest.approx(0.45)
    assert dones.all()  # the 10th step ends the 0.2 s episode
    assert phases[9][1] == pytest.approx([0.0, 1.0], abs=1e-6)  # the new episode's first observation


@pytest.mark.parametrize(
    ("command", "moving"),
    [((0.03, 0.03, 0.0), False), ((0.0, 0.0, 0.06), True), ((0.03, 0.03, 0.02), True), ((0.0, 0.0, -0.04), False)],
)
def test_a_command_asks_to_move_when_its_linear_speed_plus_yaw_rate_exceeds_min_speed(command, moving):
    """|v_xy| + |yaw rate| > min_speed (0.05; docs/isaaclab.md): 0.042 + 0 no, 0 + 0.06 yes, 0.042 + 0.02 yes."""
    env = LocomotionEnv(replace(PUPPER, num_envs=1, randomization=NOMINAL))
    env.commands[:] = torch.tensor(command, dtype=torch.float64)
    env.step(torch.zeros(1, 12))
    assert env.moving_command.tolist() == [moving]


def test_a_timed_out_episode_logs_its_length_in_seconds():
    env = LocomotionEnv(replace(PUPPER, num_envs=2, episode_length_s=0.1, randomization=NOMINAL))
    for _ in range(5):
        _, _, dones, extras = env.step(torch.zeros(2, 12))
    assert dones.all() and extras["log"]["episode/length_s"].item() == pytest.approx(0.1)
    assert extras["log"]["termination/time_out"].item() == 1.0


def test_resets_start_near_the_standing_pose_facing_any_way_and_nearly_at_rest():
    """InitCfg: joints uniformly within ±joint_pos_noise (0.1 rad) of the default pose, a yaw anywhere in ±π, base
    velocities uniformly within ±base_vel_noise (0.1); the robot level, actions and air times zero."""
    env = LocomotionEnv(replace(PUPPER, num_envs=256, randomization=NOMINAL))
    s = env.sim_backend.read()
    off = s.joint_pos - env.default_joint_pos
    assert off.abs().max() <= 0.1 + 1e-12 and off.abs().max() > 0.099 and 0.04 < off.abs().mean() < 0.06
    w, z = s.base_quat[:, 0], s.base_quat[:, 3]
    yaw = 2 * torch.atan2(z, w)
    yaw = torch.atan2(torch.sin(yaw), torch.cos(yaw))
    assert yaw.min() < -0.9 * math.pi and yaw.max() > 0.9 * math.pi
    assert torch.allclose(s.base_quat[:, 1:3], torch.zeros(256, 2, dtype=torch.float64))  # level
    for v in (s.base_lin_vel_world, s.base_ang_vel):
        assert v.abs().max() <= 0.1 + 1e-12 and v.abs().max() > 0.099
    assert not env.actions.any() and not env.last_actions.any() and not env.feet_air_time.any()
    assert not env.episode_length_buf.any()


def test_a_fifth_of_the_commands_are_exactly_zero():
    """standing_fraction 0.2: the share of commands that are zero in all three axes (see stand_still)."""
    env = LocomotionEnv(replace(PUPPER, num_envs=2000, randomization=NOMINAL))
    zero = (env.commands == 0).all(1).double().mean().item()
    assert 0.17 < zero < 0.23, zero
    moving = env.commands[~(env.commands == 0).all(1)]
    assert (moving[:, 2] != 0).all()  # a drawn command is never zero in yaw but for standing


def test_actions_are_clipped_and_targets_held_inside_the_soft_joint_limits():
    """action_clip 4: an action of 100 is 4 (what the policy's last_action input shows); 4 x 0.25 rad on the FL
    abduction (default 0, URDF upper 0.42, soft 0.32) would be 1 rad: the target stops at 0.32 and, in the air, the
    joint settles there."""
    env = LocomotionEnv(replace(PUPPER, num_envs=1, randomization=NOMINAL, observations=_noiseless()))
    _place(env, [(1.0, [1.0, 0.0, 0.0, 0.0])])
    actions = torch.zeros(1, 12)
    actions[0, 4] = 100.0
    for _ in range(10):
        env.step(actions)
    assert env.actions[0, 4].item() == 4.0 and _policy_term(env, "last_action")[0, 4] == pytest.approx(4.0)
    soft_upper = env.robot.soft_joint_limits.upper[4]
    assert soft_upper == pytest.approx(0.32)
    assert env.sim.joint_pos[0, 4].item() == pytest.approx(soft_upper, abs=0.02)


def _noiseless():
    return replace(PUPPER.observations, add_noise=False)


def _policy_term(env, name, frame: int = 0):
    """Term `name` of policy history frame `frame` (0 newest), unscaled."""
    spec = env.cfg.observations.policy
    terms = spec.metadata(env.num_actions)["terms"]
    size = sum(t["size"] for t in terms)
    at = frame * size
    for t in terms:
        if t["name"] == name:
            return env.get_observations()["policy"][:, at : at + t["size"]] / t["scale"]
        at += t["size"]
    raise KeyError(name)


def test_a_new_episode_s_history_holds_only_its_own_first_frame():
    """After a reset, every frame of the policy's history is the new episode's first (as the robot's first
    observation fills its history), with no action yet; the other env's history goes on."""
    env = LocomotionEnv(replace(PUPPER, num_envs=2, episode_length_s=0.1, randomization=NOMINAL,
                                observations=_noiseless()))  # fmt: skip
    gen = torch.Generator().manual_seed(3)
    for _ in range(5):
        _, _, dones, _ = env.step(0.5 * torch.randn(2, 12, generator=gen))
    assert dones.all()
    env.episode_length_buf[1] = 3  # env 1 now times out in two steps, env 0 in five
    _, _, dones, _ = env.step(0.5 * torch.randn(2, 12, generator=gen))
    obs = env.get_observations()["policy"]
    frame = obs.shape[1] // env.cfg.observations.policy_history
    history = [obs[:, k * frame : (k + 1) * frame] for k in range(env.cfg.observations.policy_history)]
    assert dones.tolist() == [False, False]
    assert not torch.equal(history[0][1], history[1][1])  # env 1's frames differ: it moves
    _, _, dones, _ = env.step(0.5 * torch.randn(2, 12, generator=gen))
    assert dones.tolist() == [False, True]
    obs = env.get_observations()["policy"]
    frames = [obs[1, k * frame : (k + 1) * frame] for k in range(env.cfg.observations.policy_history)]
    assert all(torch.equal(f, frames[0]) for f in frames[1:]), "the last episode's frames are still in the history"
    assert not _policy_term(env, "last_action")[1].any()


def test_observations_are_float32_and_clipped_at_their_bound():
    env = LocomotionEnv(replace(PUPPER, num_envs=4, randomization=NOMINAL,
                                observations=replace(PUPPER.observations, clip=0.5)))  # fmt: skip
    env.step(torch.randn(4, 12, generator=torch.Generator().manual_seed(0)))
    for group in ("policy", "critic"):
        obs = env.get_observations()[group]
        assert obs.dtype == torch.float32 and obs.abs().max().item() == 0.5, group


def test_a_pushed_robot_is_observed_moving_at_its_new_velocity_in_the_same_step():
    """A push acts after the physics step; the critic's base_lin_vel (body frame, scale 2) that step already shows
    the velocity the push left, as the backend reads it."""
    terms = NOMINAL.with_term("push_velocity", 0.5, 0.5, "interval", interval_s=ROBOT.control_dt)
    env = LocomotionEnv(replace(PUPPER, num_envs=3, randomization=terms))
    env.step(torch.zeros(3, 12))
    from trot import mapping

    s = env.sim_backend.read()
    body = mapping.quat_rotate_inverse(torch, s.base_quat, s.base_lin_vel_world)
    critic = env.get_observations()["critic"][:, :3] / 2.0  # base_lin_vel comes first in the critic's frame
    np.testing.assert_allclose(critic, body, atol=1e-5)
    assert (body[:, :2].norm(dim=1) > 0.3).all()  # 0.5 m/s kicks: the robots move


def test_the_physics_time_is_logged_in_milliseconds_per_step():
    import time as clock

    env = LocomotionEnv(replace(PUPPER, num_envs=8, randomization=NOMINAL))
    start = clock.perf_counter()
    _, _, _, extras = env.step(torch.zeros(8, 12))
    wall_ms = 1e3 * (clock.perf_counter() - start)
    assert 0 < extras["log"]["perf/physics_ms_per_step"] <= wall_ms


def test_each_episode_logs_its_own_reward_sums():
    """reward/<name> is an episode's sum per second of episode, and the sums restart with the next episode: two falls
    in a row log one penalty each."""
    fall = RewardTerm("termination", -5.0, terminal=True)
    env = LocomotionEnv(replace(PUPPER, num_envs=1, rewards={"fall": fall}, randomization=NOMINAL))
    logged = []
    for _ in range(2):
        _place(env, [(0.3, [0.0, 1.0, 0.0, 0.0])])
        _, _, dones, extras = env.step(torch.zeros(1, 12))
        assert dones.all()
        logged.append(extras["log"]["reward/fall"].item())
    assert logged == pytest.approx([-5.0 * 0.02 / env.cfg.episode_length_s] * 2)
