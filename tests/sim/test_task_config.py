"""A robot's task.toml over the shared task defaults: Pupper's numbers, and bad files refused by file and field."""

import math
import shutil
from pathlib import Path

import pytest

from trot.robots import ContractError, load_robot
from trot.sim.config import EnvCfg
from trot.sim.task import policy_noise_stds, task_cfg

PUPPER_DIR = load_robot("pupper_v3").folder


def test_pupper_task_holds_its_numbers():
    cfg = task_cfg("pupper_v3")
    c = cfg.commands
    assert (c.vx, c.vy, c.yaw_rate) == ((-0.6, 0.6), (-0.4, 0.4), (-1.5, 1.5))
    assert cfg.gait.pairs == ((0, 3), (1, 2))  # FR+BL, then FL+BR
    assert cfg.observations.policy.gait_frequency_hz == cfg.observations.critic.gait_frequency_hz == 2.5
    assert policy_noise_stds("pupper_v3") == {
        "base_ang_vel": 0.17, "projected_gravity": 0.058, "joint_pos_rel": 0.058, "joint_vel": 0.5,
    }  # fmt: skip
    assert cfg.rewards["track_lin_vel_xy"].params == {"sigma": 0.1}
    assert cfg.rewards["track_ang_vel_z"].params == {"sigma": 0.25}
    assert cfg.rewards["feet_air_time"].params == {"target_s": 0.2}
    terms = cfg.randomization.terms
    assert {n: t.range for n, t in terms.items()} == {
        "friction": (0.4, 1.4), "link_mass_scale": (0.7, 1.3), "payload_mass": (0.0, 0.4),
        "com_offset_x": (-0.03, 0.03), "com_offset_y": (-0.01, 0.01), "com_offset_z": (-0.02, 0.02),
        "kp_scale": (0.75, 1.25), "kd_scale": (0.5, 2.0), "motor_strength": (0.8, 1.2),
        "actuation_latency": (0.0, 0.04), "observation_latency": (0.0, 0.04), "joint_zero_offset": (-0.02, 0.02),
        "contact_timeconst": (0.008, 0.04), "contact_dampratio": (0.5, 2.0), "armature_scale": (0.5, 1.5),
        "joint_damping_scale": (0.0, 5.0), "joint_friction_scale": (0.0, 5.0), "push_velocity": (0.0, 0.2),
    }  # fmt: skip
    assert terms["link_mass_scale"].schedule == terms["joint_zero_offset"].schedule == "startup"
    assert terms["push_velocity"].schedule == "interval" and terms["push_velocity"].interval_s == 1.0


def test_go2_task_holds_its_numbers():
    cfg = task_cfg("go2")
    c = cfg.commands
    assert (c.vx, c.vy, c.yaw_rate) == ((-1.0, 1.0), (-0.6, 0.6), (-1.0, 1.0))
    assert cfg.gait.pairs == ((0, 3), (1, 2))  # FR+RL, then FL+RR (foot_links: FR, FL, RR, RL)
    assert cfg.observations.policy.gait_frequency_hz == 2.0
    assert policy_noise_stds("go2") == {
        "base_ang_vel": 0.115, "projected_gravity": 0.029, "joint_pos_rel": 0.017, "joint_vel": 0.87,
    }  # fmt: skip
    assert cfg.rewards["track_lin_vel_xy"].params == {"sigma": 0.25}  # the shared default, for Go2 speeds
    assert cfg.rewards["feet_air_time"].params == {"target_s": 0.25}
    assert cfg.rewards["swing_height"].params == {"target_m": 0.08}
    terms = cfg.randomization.terms
    assert {n: t.range for n, t in terms.items()} == {
        "friction": (0.4, 1.25), "link_mass_scale": (0.9, 1.1), "payload_mass": (-1.0, 3.5),
        "com_offset_x": (-0.05, 0.05), "com_offset_y": (-0.05, 0.05), "com_offset_z": (-0.01, 0.01),
        "kp_scale": (0.9, 1.1), "kd_scale": (0.9, 1.1), "motor_strength": (0.8, 1.2),
        "actuation_latency": (0.0, 0.04), "observation_latency": (0.0, 0.04), "joint_zero_offset": (-0.02, 0.02),
        "contact_timeconst": (0.01, 0.04), "contact_dampratio": (0.5, 2.0), "armature_scale": (0.5, 1.5),
        "joint_damping_scale": (0.0, 5.0), "joint_friction_scale": (0.0, 2.0), "push_velocity": (0.0, 1.0),
    }  # fmt: skip
    assert terms["push_velocity"].interval_s == 15.0


def test_shared_defaults_hold_no_robot_numbers():
    cfg = EnvCfg()
    assert cfg.gait.pairs is None and cfg.observations.gait_frequency_hz is None
    assert all(t.noise == 0 for t in cfg.observations.policy_terms)
    assert all(t.range[0] == t.range[1] for t in cfg.randomization.terms.values())


def robot_with_task(tmp_path: Path, task: str | None) -> Path:
    folder = tmp_path / "robot"
    shutil.copytree(PUPPER_DIR, folder, ignore=shutil.ignore_patterns("policies", "task.toml"))
    if task is not None:
        (folder / "task.toml").write_text(task)
    return folder


GOOD = """
[gait]
pairs = [[0, 3], [1, 2]]
[observations]
gait_frequency_hz = 2.0
"""


@pytest.mark.parametrize(
    "extra, field, expected",
    [
        ('[commands]\nvx = "fast"\n', "commands.vx", "a list of 2 values"),
        ("[commands]\nvz = [0.0, 1.0]\n", "commands.vz", "a known field: one of ['min_speed'"),
        ("[observations.policy_terms]\nfoo = { noise = 1.0 }\n", "observations.policy_terms.foo", "one of the entries"),
        ("[observations.policy_terms]\njoint_vel = { noise = true }\n", "observations.policy_terms[4].noise",
         "a number"),
        ("[rewards.feet_air_time.params]\ntarget = 0.3\n", "rewards.feet_air_time.params.target", "['target_s']"),
        ("[randomization.terms]\nfriction = { range = [0.6, 9.0] }\n", "randomization.terms.friction.range",
         "physical bounds [0.0, 5.0]"),
        ("[randomization.terms]\nactuation_latency = { range = [0.0, 0.005] }\n",
         "randomization.terms.actuation_latency.range", "whole physics steps of 0.004 s"),
    ],
)  # fmt: skip
def test_bad_task_file_is_refused_with_file_field_and_expectation(tmp_path, extra, field, expected):
    folder = robot_with_task(tmp_path, GOOD + extra)
    with pytest.raises(ContractError) as e:
        task_cfg(folder)
    assert e.value.file == str(folder / "task.toml") and e.value.field == field
    assert expected in e.value.expected


def test_bad_gait_pairs_are_refused(tmp_path):
    folder = robot_with_task(tmp_path, GOOD.replace("[[0, 3], [1, 2]]", '[["leg_front_r_3", "leg_back_l_3"], [1]]'))
    with pytest.raises(ContractError, match="gait.pairs.*each foot once") as e:
        task_cfg(folder)
    assert e.value.file == str(folder / "task.toml")


def test_robot_without_task_file_is_told_what_to_set(tmp_path):
    folder = robot_with_task(tmp_path, None)
    with pytest.raises(ContractError) as e:
        task_cfg(folder)
    assert e.value.field == "observations.gait_frequency_hz" and str(folder / "task.toml") in e.value.expected


@pytest.mark.parametrize("robot", ["pupper_v3", "go2"])
def test_tracking_rewards_still_pay_for_errors_inside_the_gate_bounds(robot):
    """A policy that drifts 0.05 m/s standing, or wobbles 0.1 rad/s in yaw, fails the gate (hil/gate/judge.py);
    its reward must notice: each error's narrowest tracking kernel pays at most 90 % of its top there, where
    the wide legged_gym-style kernels pay 96-99 %."""
    from trot.hil.gate.judge import GateThresholds

    th = GateThresholds()
    cfg = task_cfg(robot)
    for func, bound in (("track_lin_vel_xy", th.lin_err_floor), ("track_ang_vel_z", th.yaw_err_floor)):
        sigmas = [t.params["sigma"] for t in cfg.rewards.values() if t.func == func and t.weight > 0]
        assert math.exp(-(bound**2) / max(sigmas)) > 0.96, f"{robot} {func}: a wide kernel keeps the coarse signal"
        assert math.exp(-(bound**2) / min(sigmas)) <= 0.9, f"{robot} {func}: flat within the gate bound {bound}"


def _refusal(cfg, prefix: str = ""):
    from trot.sim.task import validate_env_cfg

    with pytest.raises(ContractError) as e:
        validate_env_cfg(cfg, load_robot("pupper_v3"), "robots/pupper_v3/task.toml", prefix)
    return e.value


def test_each_task_refusal_names_the_file_the_field_the_value_and_what_was_expected():
    from dataclasses import replace

    from trot import mapping
    from trot.mapping import ObsTerm
    from trot.sim.config import RewardTerm
    from trot.sim.rewards import REWARDS

    good = task_cfg("pupper_v3")
    obs = good.observations
    where = "robots/pupper_v3/task.toml"
    cases = [
        (replace(good, observations=replace(obs, critic_terms=(*obs.critic_terms, ObsTerm("lidar")))),
         "observations.critic_terms", ["lidar"], f"names from {sorted(mapping.OBS_VOCABULARY)}"),
        (replace(good, observations=replace(obs, gait_frequency_hz=0.0)), "observations.gait_frequency_hz", 0.0,
         f"the gait clock in Hz > 0: set in {PUPPER_DIR / 'task.toml'}, which task_cfg(robot) lays over the shared "
         "defaults"),
        (replace(good, commands=replace(good.commands, train_scale=0.5)), "commands.train_scale", 0.5,
         "a number ≥ 1 (training must cover the command ranges that the bundle promises and the gate tests)"),
        (replace(good, rewards={"x": RewardTerm("fly", 1.0)}), "rewards.x.func", "fly",
         f"a reward function: one of {sorted(REWARDS)}"),
        (replace(good, rewards={"x": RewardTerm("feet_air_time", 1.0, {"target_s": 0.2, "k": 1.0})}),
         "rewards.x.params", {"target_s": 0.2, "k": 1.0}, "the params of feet_air_time: ['target_s']"),
        (replace(good, gait=replace(good.gait, pairs=None)), "gait.pairs", None,
         "the two groups of feet of the gait for reward terms ['gait_contact', 'swing_height'] (set it in the robot's "
         "task.toml)"),
    ]  # fmt: skip
    for cfg, field, value, expected in cases:
        e = _refusal(cfg)
        assert (e.file, e.field, e.value, e.expected) == (where, field, value, expected), field
        assert _refusal(cfg, prefix="env.").field == "env." + field  # as trot train names the --set fields


def test_the_gait_clock_is_needed_by_a_critic_term_too_and_only_weighted_gait_rewards_need_the_gait():
    from dataclasses import replace

    from trot.sim.task import validate_env_cfg

    good = task_cfg("pupper_v3")
    obs = good.observations
    no_clock = replace(obs, gait_frequency_hz=None,
                       policy_terms=tuple(t for t in obs.policy_terms if t.name != "gait_phase"))  # fmt: skip
    assert _refusal(replace(good, observations=no_clock)).field == "observations.gait_frequency_hz"
    no_phase = replace(no_clock, critic_terms=tuple(t for t in obs.critic_terms if t.name != "gait_phase"))
    rewards = {n: replace(t, weight=0.0) if t.func in ("gait_contact", "swing_height") else t
               for n, t in good.rewards.items()}  # fmt: skip
    validate_env_cfg(replace(good, observations=no_phase, gait=replace(good.gait, pairs=None), rewards=rewards),
                     load_robot("pupper_v3"))  # fmt: skip
