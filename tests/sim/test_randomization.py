"""Each randomization term changes the physics it should; bad terms are refused by name."""

import math
from dataclasses import replace

import mujoco
import numpy as np
import pytest
import torch

from trot.randomization import TERMS, RandomizationCfg, Randomizer, nominal_params, validate
from trot.robots import ContractError, load_robot
from trot.sim.backend import MujocoBackend
from trot.sim.backends import make_backend
from trot.sim.locomotion import LocomotionEnv
from trot.sim.task import task_cfg

ROBOT = load_robot("pupper_v3")
PUPPER = task_cfg("pupper_v3")
DEFAULT = torch.tensor(ROBOT.default_joint_pos, dtype=torch.float64)


BACKENDS = ("mujoco", "mjwarp")


@pytest.fixture(params=BACKENDS)
def backend_with(request):
    """A factory for the parametrized backend: backend_with(num_envs, term=[value per env], ...) gives env i
    term=value[i] for each keyword, every other term nominal. The values go through the terms' apply steps
    (the randomization loop) and the backend's write_params, so each physics test runs on both backends."""
    if request.param == "mjwarp":
        pytest.importorskip("mujoco_warp", reason="the gpu extra (mujoco-warp, warp-lang) is not installed")

    def make(num_envs: int, **per_env: list):
        cfg = RandomizationCfg.nominal()
        randomizer = Randomizer(cfg, ROBOT, num_envs, torch.Generator().manual_seed(0))
        for name, vals in per_env.items():
            shape = randomizer.values[name].shape
            randomizer.values[name][:] = torch.tensor(vals, dtype=torch.float64).reshape(shape)
        ids = torch.arange(num_envs)
        randomizer.compose(ids)
        b = make_backend(request.param, ROBOT, num_envs, nthread=1)
        b.write_params(ids, randomizer.params)
        return b

    return make


def hold_default(b, steps: int):
    target = DEFAULT.repeat(b.num_envs, 1)
    for _ in range(steps):
        s = b.step(target)
    return s


def set_gravity(b, gravity: list[float]) -> None:
    """The same gravity vector (m/s^2, world frame) in every env of either backend."""
    if isinstance(b, MujocoBackend):
        for m in b.models:
            m.opt.gravity[:] = gravity
    else:
        import warp as wp

        wp.to_torch(b.wm.opt.gravity)[:] = torch.tensor(gravity)


def substep_joint_vel(b, target: torch.Tensor) -> np.ndarray:
    """Run one control step; env 0's joint velocities after each physics substep, (decimation, joints)."""
    if isinstance(b, MujocoBackend):
        b.step(target)
        return b._state_out[0][:, b._qvel_at + b.idx.joint_qvel]
    rows = []
    b._target_t.copy_(target)
    b._control_step(after_substep=lambda s: rows.append(b._qvel[0, b._jv].double().clone()))
    return torch.stack(rows).numpy()


def float_in_zero_gravity(b) -> None:
    """Lift every env into the air with gravity off, so joints move freely."""
    set_gravity(b, [0.0, 0.0, 0.0])
    qpos = b.home_qpos().repeat(b.num_envs, 1)
    qpos[:, b.root_qpos_adr + 2] = 1.0
    b.reset_envs(torch.arange(b.num_envs), qpos, torch.zeros(b.num_envs, b.num_qvel, dtype=torch.float64))


def test_payload_lowers_the_stance(backend_with):
    # Each foot sits under its hip, so the joints carry the load on short levers: ~0.6 mm per kg.
    s = hold_default(backend_with(2, payload_mass=[0.0, 2.0]), 100)
    light, heavy = s.base_pos[:, 2].tolist()
    assert heavy < light - 0.0008, (light, heavy)


def test_low_friction_slides_on_a_tilted_floor_where_high_friction_holds(backend_with):
    b = backend_with(2, friction=[0.1, 1.0])
    # tan(12 deg) = 0.21 lies between the two coefficients; the robot tips over only beyond ~22 deg.
    tilt = math.radians(12)
    set_gravity(b, [9.81 * math.sin(tilt), 0, -9.81 * math.cos(tilt)])
    start = hold_default(b, 1).foot_pos[:, :, 0].clone()
    s = hold_default(b, 50)
    slid = (s.foot_pos[:, :, 0] - start).mean(1).tolist()  # the legs' PD sag moves the base, not the feet
    assert slid[0] > 0.2 and abs(slid[1]) < 0.02, slid  # MuJoCo's soft contacts creep a few mm


def test_weaker_motors_track_worse_under_load(backend_with):
    s = hold_default(backend_with(2, payload_mass=[1.0, 1.0], motor_strength=[1.0, 0.5]), 100)
    err = (s.joint_pos - DEFAULT).abs().sum(1).tolist()
    assert err[1] > 1.5 * err[0], err


def test_kp_scale_changes_the_step_response(backend_with):
    b = backend_with(2, kp_scale=[0.5, 2.0])
    float_in_zero_gravity(b)
    hold_default(b, 5)
    q0 = b.read().joint_pos.clone()
    s = b.step(DEFAULT.repeat(2, 1) + 0.3)
    rise = (s.joint_pos - q0).mean(1).tolist()
    assert rise[1] > 1.5 * rise[0] > 0, rise


def test_kd_scale_damps_the_step_response(backend_with):
    b = backend_with(2, kd_scale=[0.5, 2.0])
    float_in_zero_gravity(b)
    hold_default(b, 5)
    q0 = b.read().joint_pos.clone()
    s = b.step(DEFAULT.repeat(2, 1) + 0.3)
    rise = (s.joint_pos - q0).mean(1).tolist()  # 0.094 and 0.044 rad (both backends)
    assert rise[0] > 1.5 * rise[1] > 0, rise


@pytest.mark.parametrize("latency", [0, 2, 4, 5, 7, 12])
def test_actuation_latency_delays_motion_by_exactly_k_physics_steps(backend_with, latency):
    """0.004 s per physics step, 5 per control step: the target moves the joints `latency` substeps late, also
    when that is more than one control step."""
    b = backend_with(1, actuation_latency=[latency * ROBOT.physics_dt])
    float_in_zero_gravity(b)
    hold_default(b, 10)
    moving = []
    for _ in range(3):
        qvel = substep_joint_vel(b, DEFAULT[None] + 0.3)  # (decimation, joints)
        moving += (np.abs(qvel).max(1) > 1e-3).tolist()
    assert moving == [s >= latency for s in range(3 * b.decimation)]


def test_com_offset_shifts_load_to_the_front_feet(backend_with):
    s = hold_default(backend_with(2, com_offset_x=[-0.03, 0.03]), 100)
    front_share = (s.foot_force[:, :2].sum(1) / s.foot_force.sum(1)).tolist()
    assert front_share[1] > front_share[0] + 0.1, front_share


def test_link_mass_scale_changes_total_weight_on_the_feet(backend_with):
    s = hold_default(backend_with(2, link_mass_scale=[0.7, 1.3]), 100)
    weight = s.foot_force.sum(1).tolist()
    assert weight[1] / weight[0] == pytest.approx(1.3 / 0.7, rel=0.05)


def test_joint_zero_offset_moves_the_true_joint_not_the_measured_one():
    terms = RandomizationCfg.nominal().with_term("joint_zero_offset", 0.05, 0.05, "startup")
    env = LocomotionEnv(replace(PUPPER, num_envs=2, randomization=terms, observations=_noiseless()))
    for _ in range(50):
        env.step(torch.zeros(2, 12))
    true_rel = (env.sim.joint_pos - env.default_joint_pos).mean().item()
    assert true_rel == pytest.approx(-0.05, abs=0.01)
    obs = _term(env, "joint_pos_rel")
    assert obs.mean().item() == pytest.approx(0.0, abs=0.01)


def _noiseless():
    return replace(PUPPER.observations, add_noise=False)


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
    # A mean interval of one control step: every env is pushed every step.
    terms = RandomizationCfg.nominal().with_term("push_velocity", 0.3, 0.3, "interval", interval_s=ROBOT.control_dt)
    env = LocomotionEnv(replace(PUPPER, num_envs=8, randomization=terms))
    before = env.sim_backend.read().base_lin_vel_world[:, :2].clone()
    env.randomizer.events(env.sim_backend, env.dt)
    after = env.sim_backend.read().base_lin_vel_world[:, :2]
    np.testing.assert_allclose((after - before).norm(dim=1), 0.3, atol=1e-9)
    np.testing.assert_allclose(env.randomizer.values["push_velocity"], 0.3)


def test_observation_noise_has_the_configured_std():
    env = LocomotionEnv(replace(PUPPER, num_envs=512, randomization=RandomizationCfg.nominal()))
    noisy = _term(env, "projected_gravity")
    err = noisy - env.projected_gravity
    spec = {t.name: t for t in env.cfg.observations.policy.terms}["projected_gravity"]
    assert err.std().item() == pytest.approx(spec.noise, rel=0.1)


def test_observation_latency_delays_the_gyro_by_one_step():
    terms = RandomizationCfg.nominal().with_term("observation_latency", ROBOT.control_dt, ROBOT.control_dt)
    env = LocomotionEnv(replace(PUPPER, num_envs=2, randomization=terms, observations=_noiseless()))
    gen = torch.Generator().manual_seed(1)
    env.step(torch.randn(2, 12, generator=gen))
    previous_gyro = env.sim.base_ang_vel.clone()
    env.step(torch.randn(2, 12, generator=gen))
    np.testing.assert_allclose(_term(env, "base_ang_vel"), previous_gyro, atol=1e-5)
    assert not torch.allclose(previous_gyro, env.sim.base_ang_vel)


@pytest.mark.parametrize(
    "change, field, expected",
    [
        (lambda c: c.with_term("gravity_scale", 0.0, 1.0), "randomization.terms.gravity_scale", "one of"),
        (lambda c: c.with_term("friction", 1.2, 0.6), "randomization.terms.friction.range", "min <= max"),
        (lambda c: c.with_term("friction", -0.5, 1.0), "randomization.terms.friction.range", "physical bounds"),
        (lambda c: c.with_term("actuation_latency", 0, 0.01), "randomization.terms.actuation_latency.range",
         "whole physics steps of 0.004 s"),
        (lambda c: c.with_term("observation_latency", 0, 0.03), "randomization.terms.observation_latency.range",
         "whole control steps of 0.02 s"),
        (lambda c: c.with_term("kp_scale", 0.5, 1.5, "sometimes"), "randomization.terms.kp_scale.schedule", "one of"),
        (lambda c: c.with_term("friction", 0.5, 1.5, "interval"), "randomization.terms.friction.schedule",
         "'startup' or 'reset' for a model term"),
        (lambda c: c.with_term("push_velocity", 0.0, 0.5, interval_s=0.0),
         "randomization.terms.push_velocity.interval_s", "> 0 s"),
    ],
)  # fmt: skip
def test_bad_randomization_is_refused_by_field(change, field, expected):
    with pytest.raises(ContractError, match=expected) as e:
        validate(change(RandomizationCfg()), ROBOT)
    assert e.value.field == field


def test_latency_is_sampled_in_whole_steps_from_the_same_draws_as_before():
    """A latency range in seconds draws whole physics steps: [0, 0.02] s at 0.004 s is uniform over 0..5 steps,
    from the same randint the step-counted term used (so a seed gives the same run)."""
    cfg = RandomizationCfg.nominal().with_term("actuation_latency", 0.0, 0.02)
    r = Randomizer(cfg, ROBOT, 4000, torch.Generator().manual_seed(5))
    r.sample("reset", torch.arange(4000))
    steps = r.values["actuation_latency"] / ROBOT.physics_dt
    assert torch.equal(steps, steps.round()) and set(steps.round().long().tolist()) == {0, 1, 2, 3, 4, 5}
    # Reset terms draw in name order and actuation_latency comes first: its draw is the generator's first.
    expected = torch.randint(0, 6, (4000,), generator=torch.Generator().manual_seed(5))
    assert torch.equal(steps.round().long(), expected)


def test_every_term_composes_into_the_params_it_declares():
    """Hand-computed params for one env: Kp = 5 * kp_scale * strength, torque limit = 3 * strength, ..."""
    r = Randomizer(RandomizationCfg.nominal(), ROBOT, 1, torch.Generator())
    values = {"friction": 0.7, "link_mass_scale": 1.2, "payload_mass": 0.3, "com_offset_x": 0.01,
              "com_offset_y": -0.02, "com_offset_z": 0.005, "kp_scale": 1.2, "kd_scale": 0.5, "motor_strength": 0.9,
              "actuation_latency": 0.012, "observation_latency": 0.02, "joint_zero_offset": 0.03}  # fmt: skip
    assert set(values) | {"push_velocity"} == set(TERMS)
    for name, v in values.items():
        r.values[name][:] = v
    r.compose(torch.arange(1))
    p = r.params
    assert p.friction.item() == 0.7 and p.mass_scale.item() == 1.2 and p.payload_mass.item() == 0.3
    assert p.com_offset[0].tolist() == [0.01, -0.02, 0.005]
    np.testing.assert_allclose(p.kp[0], 5.0 * 1.2 * 0.9)
    np.testing.assert_allclose(p.kd[0], 0.25 * 0.5 * 0.9)
    np.testing.assert_allclose(p.torque_limit[0], 3.0 * 0.9)
    assert p.actuation_latency_s.item() == 0.012 and p.observation_latency_s.item() == 0.02
    np.testing.assert_allclose(p.joint_zero_offset[0], 0.03)
    r.values["kp_scale"][:] = 1.0  # recomposing starts from the nominal robot: nothing accumulates
    r.compose(torch.arange(1))
    np.testing.assert_allclose(r.params.kp[0], 5.0 * 0.9)


def test_a_pinned_config_gives_every_env_the_same_params():
    """A perturbation is a randomization config pinned to a value: each env gets exactly it."""
    cfg = RandomizationCfg.pinned(friction=0.5, motor_strength=0.8, actuation_latency=0.02)
    r = Randomizer(cfg, ROBOT, 3, torch.Generator().manual_seed(0))
    for schedule in ("startup", "reset"):
        r.sample(schedule, torch.arange(3))
    assert r.params.friction.tolist() == [0.5] * 3
    np.testing.assert_allclose(r.params.torque_limit, 3.0 * 0.8)
    np.testing.assert_allclose(r.params.kp, 5.0 * 0.8)
    assert r.params.actuation_latency_s.tolist() == [0.02] * 3  # one control step, as the gate's latency_1_step


def test_nominal_params_share_one_model_and_a_difference_gives_each_env_its_own():
    b = MujocoBackend(ROBOT, 3, nthread=1)
    params = nominal_params(ROBOT, 3)
    b.write_params(torch.arange(3), params)
    assert all(m is b.model for m in b.models)
    params.friction[1] = 0.5
    b.write_params(torch.arange(3), params)
    assert len({id(m) for m in b.models}) == 3 and b.model not in b.models
    floor = b.model.geom("floor").id
    assert [m.geom_friction[floor, 0] for m in b.models] == [1.0, 0.5, 1.0]


def test_sampling_is_reproducible_from_the_seed():
    a = LocomotionEnv(replace(PUPPER, num_envs=16, seed=3))
    b = LocomotionEnv(replace(PUPPER, num_envs=16, seed=3))
    c = LocomotionEnv(replace(PUPPER, num_envs=16, seed=4))
    for name in a.randomizer.values:
        assert torch.equal(a.randomizer.values[name], b.randomizer.values[name]), name
    assert not torch.equal(a.randomizer.values["friction"], c.randomizer.values["friction"])
    assert mujoco.mj_stateSize(a.sim_backend.model, mujoco.mjtState.mjSTATE_FULLPHYSICS) > 0


def test_a_new_term_is_one_declaration_and_its_apply_step(monkeypatch):
    """Declared in TERMS alone, a term is validated, sampled, composed, written to the models and logged."""
    from trot.randomization import TermSpec

    def torque_limit_scale(p, ids, v):
        p.torque_limit[ids] *= v[:, None]

    spec = TermSpec("actuation", "x", 1.0, (0.1, 2.0), torque_limit_scale, help="scales the torque limit")
    monkeypatch.setitem(TERMS, "torque_limit_scale", spec)
    cfg = RandomizationCfg.nominal().with_term("torque_limit_scale", 0.5, 0.5)
    env = LocomotionEnv(replace(PUPPER, num_envs=2, episode_length_s=0.04, randomization=cfg))
    act = env.sim_backend.idx.joint_ctrl
    assert [m.actuator_forcerange[act, 1].tolist() for m in env.sim_backend.models] == [[1.5] * 12] * 2
    env.step(torch.zeros(2, 12))
    _, _, _, extras = env.step(torch.zeros(2, 12))
    assert extras["log"]["randomization/torque_limit_scale"] == 0.5
    with pytest.raises(ContractError, match="physical bounds"):
        validate(cfg.with_term("torque_limit_scale", 0.5, 3.0), ROBOT)


def test_docs_list_every_term():
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[2] / "docs" / "randomization.md").read_text()
    table = [line for line in doc.splitlines() if line.startswith("| `")]
    for name in TERMS:
        short = name.replace("com_offset_", "_") if name.startswith("com_offset_") else name
        assert any(f"`{name}`" in row or f"`{short}`" in row for row in table), name


def test_every_declaration_is_consistent():
    from trot.randomization.terms import KINDS, SCHEDULES

    for name, spec in TERMS.items():
        assert spec.kind in KINDS and spec.schedule in SCHEDULES, name
        assert spec.bounds[0] <= spec.nominal <= spec.bounds[1], name
        assert (spec.kind == "event") == (spec.schedule == "interval"), name
        assert spec.step in (None, "physics", "control") and (spec.step is None) == (spec.unit != "s"), name
