"""Each randomization term changes the physics it should; bad terms are refused by name."""

import math
from dataclasses import replace

import mujoco
import numpy as np
import pytest
import torch

from trot.randomization import RandomizationCfg, nominal_values, validate
from trot.robots import load_robot
from trot.sim.backend import MujocoBackend
from trot.sim.config import EnvCfg
from trot.sim.locomotion import LocomotionEnv

ROBOT = load_robot("pupper_v3")
DEFAULT = torch.tensor(ROBOT.default_joint_pos, dtype=torch.float64)


def backend_with(num_envs: int, **per_env: list) -> MujocoBackend:
    """A backend whose env i has term=value[i] for each keyword, every other term nominal."""
    b = MujocoBackend(ROBOT, num_envs, nthread=1, per_env_models=True)
    values = nominal_values(num_envs, ROBOT.num_joints)
    for name, vals in per_env.items():
        values[name] = torch.tensor(vals, dtype=torch.float64)
    b.apply_randomization(torch.arange(num_envs), values)
    return b


def hold_default(b: MujocoBackend, steps: int, latency=0):
    lat = torch.full((b.num_envs,), latency, dtype=torch.long)
    target = DEFAULT.repeat(b.num_envs, 1)
    for _ in range(steps):
        s = b.step(target, lat)
    return s


def float_in_zero_gravity(b: MujocoBackend) -> None:
    """Lift every env into the air with gravity off, so joints move freely."""
    for m in b.models:
        m.opt.gravity[:] = 0
    qpos = b.home_qpos().repeat(b.num_envs, 1)
    qpos[:, b.root_qpos_adr + 2] = 1.0
    b.reset_envs(torch.arange(b.num_envs), qpos, torch.zeros(b.num_envs, b.num_qvel, dtype=torch.float64))


def test_payload_lowers_the_stance():
    # Each foot sits under its hip, so the joints carry the load on short levers: ~0.6 mm per kg.
    s = hold_default(backend_with(2, payload_mass=[0.0, 2.0]), 100)
    light, heavy = s.base_pos[:, 2].tolist()
    assert heavy < light - 0.0008, (light, heavy)


def test_low_friction_slides_on_a_tilted_floor_where_high_friction_holds():
    b = backend_with(2, friction=[0.1, 1.0])
    # tan(12 deg) = 0.21 lies between the two coefficients; the robot tips over only beyond ~22 deg.
    tilt = math.radians(12)
    for m in b.models:
        m.opt.gravity[:] = [9.81 * math.sin(tilt), 0, -9.81 * math.cos(tilt)]
    start = hold_default(b, 1).foot_pos[:, :, 0].clone()
    s = hold_default(b, 50)
    slid = (s.foot_pos[:, :, 0] - start).mean(1).tolist()  # the legs' PD sag moves the base, not the feet
    assert slid[0] > 0.2 and abs(slid[1]) < 0.02, slid  # MuJoCo's soft contacts creep a few mm


def test_weaker_motors_track_worse_under_load():
    s = hold_default(backend_with(2, payload_mass=[1.0, 1.0], motor_strength=[1.0, 0.5]), 100)
    err = (s.joint_pos - DEFAULT).abs().sum(1).tolist()
    assert err[1] > 1.5 * err[0], err


def test_kp_scale_changes_the_step_response():
    b = backend_with(2, kp_scale=[0.5, 2.0])
    float_in_zero_gravity(b)
    hold_default(b, 5)
    q0 = b.read().joint_pos.clone()
    lat = torch.zeros(2, dtype=torch.long)
    s = b.step(DEFAULT.repeat(2, 1) + 0.3, lat)
    rise = (s.joint_pos - q0).mean(1).tolist()
    assert rise[1] > 1.5 * rise[0] > 0, rise


@pytest.mark.parametrize("latency", [0, 2, 4])
def test_actuation_latency_delays_motion_by_exactly_k_substeps(latency):
    b = backend_with(1)
    float_in_zero_gravity(b)
    hold_default(b, 10)
    b.step(DEFAULT[None] + 0.3, torch.tensor([latency]))
    qvel = b._state_out[0][:, b._qvel_at + b.idx.joint_qvel]  # (decimation, joints)
    moving = np.abs(qvel).max(1) > 1e-3
    assert moving.tolist() == [s >= latency for s in range(b.decimation)]


def test_com_offset_shifts_load_to_the_front_feet():
    s = hold_default(backend_with(2, com_offset_x=[-0.03, 0.03]), 100)
    front_share = (s.foot_force[:, :2].sum(1) / s.foot_force.sum(1)).tolist()
    assert front_share[1] > front_share[0] + 0.1, front_share


def test_link_mass_scale_changes_total_weight_on_the_feet():
    s = hold_default(backend_with(2, link_mass_scale=[0.7, 1.3]), 100)
    weight = s.foot_force.sum(1).tolist()
    assert weight[1] / weight[0] == pytest.approx(1.3 / 0.7, rel=0.05)


def test_joint_zero_offset_moves_the_true_joint_not_the_measured_one():
    terms = RandomizationCfg.nominal().with_term("joint_zero_offset", 0.05, 0.05, "startup")
    env = LocomotionEnv(replace(EnvCfg(), num_envs=2, randomization=terms, observations=_noiseless()))
    for _ in range(50):
        env.step(torch.zeros(2, 12))
    true_rel = (env.sim.joint_pos - env.default_joint_pos).mean().item()
    assert true_rel == pytest.approx(-0.05, abs=0.01)
    obs = _term(env, "joint_pos_rel")
    assert obs.mean().item() == pytest.approx(0.0, abs=0.01)


def _noiseless():
    return replace(EnvCfg().observations, add_noise=False)


def _term(env, name, group="policy"):
    """Slice of the newest observation frame holding `name`, found from the metadata."""
    spec = env.cfg.observations.policy if group == "policy" else env.cfg.observations.critic
    meta = spec.metadata(env.num_actions)["terms"]
    start = 0
    for t in meta:
        if t["name"] == name:
            return env.get_observations()[group][:, start : start + t["size"]] / t["scale"]
        start += t["size"]
    raise KeyError(name)


def test_push_changes_base_velocity_by_the_sampled_amount():
    terms = RandomizationCfg.nominal().with_term("push_velocity", 0.3, 0.3, "interval")
    env = LocomotionEnv(replace(EnvCfg(), num_envs=8, randomization=replace(terms, push_probability=1.0)))
    before = env.sim_backend.read().base_lin_vel_world[:, :2].clone()
    env._push()
    after = env.sim_backend.read().base_lin_vel_world[:, :2]
    np.testing.assert_allclose((after - before).norm(dim=1), 0.3, atol=1e-9)
    np.testing.assert_allclose(env.rand["push_velocity"], 0.3)


def test_observation_noise_has_the_configured_std():
    env = LocomotionEnv(replace(EnvCfg(), num_envs=512, randomization=RandomizationCfg.nominal()))
    noisy = _term(env, "projected_gravity")
    err = noisy - env.projected_gravity
    spec = {t.name: t for t in env.cfg.observations.policy.terms}["projected_gravity"]
    assert err.std().item() == pytest.approx(spec.noise, rel=0.1)


def test_observation_latency_delays_the_gyro_by_one_step():
    terms = RandomizationCfg.nominal().with_term("observation_latency", 1, 1)
    env = LocomotionEnv(replace(EnvCfg(), num_envs=2, randomization=terms, observations=_noiseless()))
    gen = torch.Generator().manual_seed(1)
    env.step(torch.randn(2, 12, generator=gen))
    previous_gyro = env.sim.base_ang_vel.clone()
    env.step(torch.randn(2, 12, generator=gen))
    np.testing.assert_allclose(_term(env, "base_ang_vel"), previous_gyro, atol=1e-5)
    assert not torch.allclose(previous_gyro, env.sim.base_ang_vel)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda c: c.with_term("gravity_scale", 0.0, 1.0), "unknown term"),
        (lambda c: c.with_term("friction", 1.2, 0.6), "min 1.2 > max 0.6"),
        (lambda c: c.with_term("friction", -0.5, 1.0), "outside the physical bounds"),
        (lambda c: c.with_term("actuation_latency", 0, 2.5), "whole substeps"),
        (lambda c: c.with_term("kp_scale", 0.5, 1.5, "sometimes"), "schedule 'sometimes'"),
    ],
)
def test_bad_randomization_is_refused_by_name(change, message):
    cfg = change(RandomizationCfg())
    with pytest.raises(ValueError, match=message):
        validate(cfg)


def test_sampling_is_reproducible_from_the_seed():
    a = LocomotionEnv(replace(EnvCfg(), num_envs=16, seed=3))
    b = LocomotionEnv(replace(EnvCfg(), num_envs=16, seed=3))
    c = LocomotionEnv(replace(EnvCfg(), num_envs=16, seed=4))
    for name in a.rand:
        assert torch.equal(a.rand[name], b.rand[name]), name
    assert not torch.equal(a.rand["friction"], c.rand["friction"])
    assert mujoco.mj_stateSize(a.sim_backend.model, mujoco.mjtState.mjSTATE_FULLPHYSICS) > 0
