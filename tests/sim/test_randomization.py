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
# The shank (leg_*_3) about the knee axis, from pupper_v3.urdf: izz + m (x² + y²) of its centre of mass in the knee's
# frame, whose z axis the knee turns about: 7.7e-5 + 0.05 (0.03866² + 0.03585²) = 2.16e-4 kg·m².
SHANK_INERTIA = 7.7e-5 + 0.05 * (0.03866**2 + 0.03585**2)


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


def substep_qvel(b, target: torch.Tensor) -> np.ndarray:
    """Run one control step; every env's qvel after each physics substep, (num_envs, decimation, nv)."""
    if isinstance(b, MujocoBackend):
        b.step(target)
        return b._state_out[:, :, b._qvel_at : b._qvel_at + b.num_qvel].copy()
    rows = []
    b._target_t.copy_(target)
    b._control_step(after_substep=lambda s: rows.append(b._qvel.double().clone()))
    return torch.stack(rows, 1).cpu().numpy()


def substep_joint_vel(b, target: torch.Tensor) -> np.ndarray:
    """Run one control step; env 0's joint velocities after each physics substep, (decimation, joints)."""
    return substep_qvel(b, target)[0][:, b.idx.joint_qvel]


def set_gains(b, kp: float | None = None, kd: float | None = None) -> None:
    """Write the motors' kp and/or kd straight into every env's model, in either backend."""
    act = torch.as_tensor(b.idx.joint_ctrl)
    if isinstance(b, MujocoBackend):
        rows = [(m.actuator_gainprm, m.actuator_biasprm) for m in b.models]
    else:
        w = b._per_world
        rows = [(w["actuator_gainprm"][i], w["actuator_biasprm"][i]) for i in range(b.num_envs)]
    for gain, bias in rows:
        if kp is not None:
            gain[act, 0] = kp
            bias[act, 1] = -kp
        if kd is not None:
            bias[act, 2] = -kd


def float_in_zero_gravity(b, qvel: torch.Tensor | None = None) -> None:
    """Lift every env into the air with gravity off, so joints move freely (at rest, or at `qvel`)."""
    set_gravity(b, [0.0, 0.0, 0.0])
    qpos = b.home_qpos().repeat(b.num_envs, 1)
    qpos[:, b.root_qpos_adr + 2] = 1.0
    qvel = torch.zeros(b.num_envs, b.num_qvel, dtype=torch.float64) if qvel is None else qvel
    b.reset_envs(torch.arange(b.num_envs), qpos, qvel)


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
    # Pupper's largest payload (0.4 kg): the joints sag 0.51 rad in all at full strength, 2.15 at half (the base
    # stays off the floor; a heavier load lays it down and bounds the sag).
    s = hold_default(backend_with(2, payload_mass=[0.4, 0.4], motor_strength=[1.0, 0.5]), 100)
    assert not s.base_contact.any()
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


@pytest.mark.parametrize("latency", [0, 2, 4, 5, 7, 10, 12])
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


def test_softer_contact_lets_the_standing_feet_sink_further(backend_with):
    """MuJoCo's solref time constant: the standing robot's feet sink 0.16, 0.63 and 1.90 mm at 0.008 (2 physics
    steps, the stiffest MuJoCo allows), 0.02 (MuJoCo's default) and 0.04 s (measured on the authors' body, 0861fbe)."""
    b = backend_with(3, contact_timeconst=[0.008, 0.02, 0.04])
    s = hold_default(b, 100)
    depth_mm = (1e3 * (ROBOT.foot_radius - s.foot_pos[:, :, 2])).mean(1).tolist()
    assert depth_mm == pytest.approx([0.16, 0.63, 1.90], rel=0.1)
    assert depth_mm[1] > 2 * depth_mm[0] and depth_mm[2] > 2 * depth_mm[1]


def test_a_higher_contact_damping_ratio_rebounds_less_from_a_drop(backend_with):
    """Dropped from 2 cm, the base leaves the floor again at 0.096, 0.064 and 0.027 m/s at damping ratios 0.5, 1, 2
    (measured on the authors' body, 0861fbe)."""
    b = backend_with(3, contact_dampratio=[0.5, 1.0, 2.0])
    qpos = b.home_qpos().repeat(3, 1)
    qpos[:, b.root_qpos_adr + 2] += 0.02
    b.reset_envs(torch.arange(3), qpos, torch.zeros(3, b.num_qvel, dtype=torch.float64))
    vz = np.concatenate([substep_qvel(b, DEFAULT.repeat(3, 1))[:, :, b.root_qvel_adr + 2] for _ in range(15)], 1)
    assert vz.min(1) == pytest.approx([-0.63] * 3, abs=0.01)  # the same fall: sqrt(2 g 0.02) = 0.63 m/s
    rebound = vz.max(1).tolist()
    assert rebound == pytest.approx([0.096, 0.064, 0.027], abs=0.01)


def test_armature_scale_sets_the_knee_inertia_the_motor_accelerates(backend_with):
    """A 0.3 rad knee target step: after the first physics step (implicit in the damping) the knee moves at
    h kp 0.3 / (I + a + h (kd + b)), I = 2.16e-4 kg·m² (the shank about the knee, SHANK_INERTIA), a = 0.0016 x the
    scale: 2.92 rad/s at x0.5, 1.64 at x1.5."""
    b = backend_with(2, armature_scale=[0.5, 1.5])
    float_in_zero_gravity(b)
    hold_default(b, 5)
    target = DEFAULT.repeat(2, 1)
    target[:, 2] += 0.3
    first = substep_qvel(b, target)[:, 0, b.idx.joint_qvel[2]]
    h, kp, kd, damping, shank = ROBOT.physics_dt, ROBOT.kp, ROBOT.kd, ROBOT.damping, SHANK_INERTIA
    expected = [h * kp * 0.3 / (shank + s * ROBOT.armature + h * (kd + damping)) for s in (0.5, 1.5)]
    np.testing.assert_allclose(first, expected, rtol=0.02)


def motors_off(b) -> None:
    """Zero every actuator's gains: the joints move freely but for their own damping and friction."""
    set_gains(b, kp=0.0, kd=0.0)


def test_joint_damping_scale_slows_a_spinning_knee_at_its_rate(backend_with):
    """Motors off, knee spun to 2 rad/s: 0.1 s later it turns at 2 (I + a)^25 / (I + a + h b)^25 (implicit damping),
    2.0, 1.16 and 0.15 rad/s at damping 0, 0.01 and 0.05 N·m·s/rad."""
    b = backend_with(3, joint_damping_scale=[0.0, 1.0, 5.0], joint_friction_scale=[0.0, 0.0, 0.0])
    motors_off(b)
    qvel = torch.zeros(3, b.num_qvel, dtype=torch.float64)
    qvel[:, b.idx.joint_qvel[2]] = 2.0
    float_in_zero_gravity(b, qvel)
    s = hold_default(b, 5)
    inertia = SHANK_INERTIA + ROBOT.armature
    expected = [2.0 * (inertia / (inertia + ROBOT.physics_dt * d)) ** 25 for d in (0.0, 0.01, 0.05)]
    np.testing.assert_allclose(s.joint_vel[:, 2], expected, rtol=0.03)


def test_joint_friction_scale_holds_a_torque_below_it_and_yields_to_one_above(backend_with):
    """A constant 0.03 N·m on the knee (kp 5 x 6 mrad, kd off): dry friction 0.05 N·m holds it (MuJoCo's soft
    friction constraint creeps), 0.01 N·m lets it accelerate at about (0.03 - 0.01) / (I + a)."""
    b = backend_with(2, joint_friction_scale=[5.0, 1.0], joint_damping_scale=[0.0, 0.0])
    float_in_zero_gravity(b)
    set_gains(b, kd=0.0)
    hold_default(b, 5)
    start = b.read().joint_pos[:, 2].clone()
    target = DEFAULT.repeat(2, 1)
    target[:, 2] += 0.03 / ROBOT.kp
    moved = (b.step(target).joint_pos[:, 2] - start).tolist()
    yielding = 0.5 * (0.03 - 0.01) / (SHANK_INERTIA + ROBOT.armature) * ROBOT.control_dt**2  # 2.2 mm
    assert moved[1] == pytest.approx(yielding, rel=0.2)
    assert abs(moved[0]) < 0.15 * moved[1]


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


@pytest.mark.parametrize("steps", [1, 2])
def test_observation_latency_delays_the_gyro_by_whole_control_steps(steps):
    latency = steps * ROBOT.control_dt
    terms = RandomizationCfg.nominal().with_term("observation_latency", latency, latency)
    env = LocomotionEnv(replace(PUPPER, num_envs=2, randomization=terms, observations=_noiseless()))
    gen = torch.Generator().manual_seed(1)
    gyros = []
    for _ in range(steps + 1):
        env.step(torch.randn(2, 12, generator=gen))
        gyros.append(env.sim.base_ang_vel.clone())
    np.testing.assert_allclose(_term(env, "base_ang_vel"), gyros[0], atol=1e-5)
    assert not any(torch.allclose(gyros[0], g) for g in gyros[1:])


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
        (lambda c: c.with_term("contact_timeconst", 0.005, 0.02), "randomization.terms.contact_timeconst.range",
         "at least 2 physics steps \\(0.008 s for pupper_v3\\)"),
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
              "actuation_latency": 0.012, "observation_latency": 0.02, "joint_zero_offset": 0.03,
              "contact_timeconst": 0.03, "contact_dampratio": 1.5, "armature_scale": 0.5, "joint_damping_scale": 3.0,
              "joint_friction_scale": 2.0}  # fmt: skip
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
    assert p.contact_timeconst.item() == 0.03 and p.contact_dampratio.item() == 1.5
    np.testing.assert_allclose(p.armature[0], 0.0016 * 0.5)  # kg·m²
    np.testing.assert_allclose(p.joint_damping[0], 0.01 * 3.0)  # N·m·s/rad
    np.testing.assert_allclose(p.joint_friction[0], 0.01 * 2.0)  # N·m
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
    assert r.params.actuation_latency_s.tolist() == [0.02] * 3  # one control step (the gate's latency_2_steps pins two)


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
        assert spec.step in (None, "physics", "control") and (spec.step is None or spec.unit == "s"), name
        assert (spec.step is not None) == name.endswith("_latency"), name  # latencies are whole steps


# ---- observation latency and pushes, pinned by their effect (issue 29) -----------------------------------------------


def test_each_env_sees_the_imu_as_many_control_steps_late_as_its_own_drawn_latency():
    """observation_latency in [0, 0.06] s is drawn in whole control steps of 0.02 s (0 to 3; docs/randomization.md,
    "Latency"): each env's gyro and gravity terms are the readings of that many control steps before, its own."""
    terms = RandomizationCfg.nominal().with_term("observation_latency", 0.0, 0.06)
    env = LocomotionEnv(replace(PUPPER, num_envs=16, randomization=terms, observations=_noiseless()))
    lag = (env.randomizer.values["observation_latency"] / ROBOT.control_dt).round().long()
    assert set(lag.tolist()) == {0, 1, 2, 3}  # this seed draws every latency
    gen = torch.Generator().manual_seed(1)
    readings = []  # (gyro, gravity) after each step, oldest first
    for _ in range(4):
        _, _, dones, _ = env.step(0.5 * torch.randn(16, 12, generator=gen))
        assert not dones.any()
        readings.append((env.sim.base_ang_vel.clone(), env.projected_gravity.clone()))
    rows = torch.arange(16)
    for k, name in enumerate(("base_ang_vel", "projected_gravity")):
        expected = torch.stack([readings[-1 - int(lag[i])][k][i] for i in rows])
        why = f"{name}: env i must see the reading of lag[i] = {lag.tolist()} steps before"
        np.testing.assert_allclose(_term(env, name), expected, atol=1e-5, err_msg=why)


def test_an_episode_starts_on_its_own_imu_readings_not_on_the_last_one_s():
    """With two control steps of IMU latency, the first observations of a new episode show the robot it starts
    with (the latency buffer starts full of its first reading), not the robot of the episode before: here one that
    lay on its back (gravity +z in its frame) until the time-out."""
    latency = 2 * ROBOT.control_dt
    terms = RandomizationCfg.nominal().with_term("observation_latency", latency, latency)
    cfg = replace(PUPPER, num_envs=1, episode_length_s=0.1, randomization=terms, observations=_noiseless(),
                  terminations=replace(PUPPER.terminations, max_tilt_deg=180.0))  # fmt: skip
    env = LocomotionEnv(cfg)
    b = env.sim_backend
    qpos = b.home_qpos()[None].clone()
    qpos[0, b.root_qpos_adr + 2] = 1.0  # in the air, so that nothing ends the episode before its time
    qpos[0, b.root_qpos_adr + 3 : b.root_qpos_adr + 7] = torch.tensor([0.0, 1.0, 0.0, 0.0], dtype=torch.float64)
    b.reset_envs(torch.arange(1), qpos, torch.zeros(1, b.num_qvel, dtype=torch.float64))
    for _ in range(4):
        _, _, dones, _ = env.step(torch.zeros(1, 12))
        assert not dones.any()
    assert _term(env, "projected_gravity")[0, 2] > 0.99  # the old episode, upside down, two steps late
    _, _, dones, extras = env.step(torch.zeros(1, 12))
    assert dones.all() and extras["time_outs"].all()
    start = (env.sim.base_ang_vel.clone(), env.projected_gravity.clone())  # the new episode's first reading
    assert start[1][0, 2] < -0.99
    for step in range(3):
        for name, now in (("projected_gravity", start[1]), ("base_ang_vel", start[0])):
            why = f"{name} {step} steps into the new episode: its own first reading (the last one lay on its back)"
            np.testing.assert_allclose(_term(env, name), now, atol=1e-5, err_msg=why)
        env.step(torch.zeros(1, 12))  # two steps late: the first reading until two more steps have passed


def test_pushes_come_from_every_horizontal_direction():
    """push_velocity: a horizontal kick in a random direction (docs/randomization.md): over 400 envs each quadrant
    gets about a quarter of them, the mean direction is about zero and the vertical velocity is untouched."""
    terms = RandomizationCfg.nominal().with_term("push_velocity", 0.3, 0.3, "interval", interval_s=ROBOT.control_dt)
    env = LocomotionEnv(replace(PUPPER, num_envs=400, randomization=terms))
    before = env.sim_backend.read().base_lin_vel_world.clone()
    assert len(env.randomizer.events(env.sim_backend, env.dt)) == 400
    delta = env.sim_backend.read().base_lin_vel_world - before
    np.testing.assert_allclose(delta[:, 2], 0.0, atol=1e-12)
    unit = delta[:, :2] / delta[:, :2].norm(dim=1, keepdim=True)
    quadrants = [int((((unit[:, 0] > 0) == (sx > 0)) & ((unit[:, 1] > 0) == (sy > 0))).sum())
                 for sx, sy in ((1, 1), (-1, 1), (-1, -1), (1, -1))]  # fmt: skip
    assert all(70 <= q <= 130 for q in quadrants), f"pushes per quadrant (+x+y, -x+y, -x-y, +x-y): {quadrants}"
    assert unit.mean(0).norm() < 0.1


NAN = float("nan")


@pytest.mark.parametrize(
    ("name", "lo", "hi", "schedule", "interval_s", "field", "value", "expected"),
    [
        ("gravity_scale", 0.0, 1.0, None, None, "", "gravity_scale", f"a randomization term: one of {sorted(TERMS)}"),
        ("friction", 1.2, 0.6, None, None, ".range", [1.2, 0.6], "finite [min, max] with min <= max"),
        ("friction", NAN, 1.0, None, None, ".range", "nan", "finite [min, max] with min <= max"),
        ("friction", 0.5, math.inf, None, None, ".range", [0.5, math.inf], "finite [min, max] with min <= max"),
        ("friction", -0.5, 1.0, None, None, ".range", [-0.5, 1.0],
         "within the physical bounds [0.0, 5.0] (floor-foot sliding friction coefficient)"),
        ("payload_mass", 0.0, 12.0, None, None, ".range", [0.0, 12.0],
         "within the physical bounds [-1.0, 10.0] kg (mass added to the base at its centre of mass)"),
        ("contact_timeconst", 0.005, 0.02, None, None, ".range", [0.005, 0.02],
         "at least 2 physics steps (0.008 s for pupper_v3): MuJoCo raises a shorter one to that without a word"),
        ("actuation_latency", 0.004, 0.01, None, None, ".range", [0.004, 0.01],
         "whole physics steps of 0.004 s (pupper_v3)"),
        ("observation_latency", 0.01, 0.02, None, None, ".range", [0.01, 0.02],
         "whole control steps of 0.02 s (pupper_v3)"),
        ("kp_scale", 0.5, 1.5, "sometimes", None, ".schedule", "sometimes", "one of ('startup', 'reset', 'interval')"),
        ("friction", 0.5, 1.5, "interval", None, ".schedule", "interval", "'startup' or 'reset' for a model term"),
        ("push_velocity", 0.0, 0.5, "reset", None, ".schedule", "reset", "'interval' (an event) for an event term"),
        ("push_velocity", 0.0, 0.5, None, -1.0, ".interval_s", -1.0, "a time > 0 s"),
    ],
)  # fmt: skip
def test_a_refusal_names_the_file_the_field_the_value_and_what_was_expected(
    name, lo, hi, schedule, interval_s, field, value, expected
):
    cfg = RandomizationCfg().with_term(name, lo, hi, schedule, interval_s)
    with pytest.raises(ContractError) as e:
        validate(cfg, ROBOT, "robots/pupper_v3/task.toml")
    where = ("robots/pupper_v3/task.toml", f"randomization.terms.{name}{field}", expected)
    assert (e.value.file, e.value.field, e.value.expected) == where
    if value == "nan":
        assert math.isnan(e.value.value[0])
    else:
        assert e.value.value == value


def test_ranges_inside_the_bounds_and_on_whole_steps_are_accepted():
    """The edges of what validate allows: a range at both physical bounds, latencies of whole steps (0.012 s is
    3 physics steps, 0.04 s 2 control steps), the stiffest contact MuJoCo keeps (2 physics steps)."""
    cfg = RandomizationCfg.nominal()
    for name, lo, hi in (("friction", 0.0, 5.0), ("actuation_latency", 0.0, 0.012), ("observation_latency", 0.0, 0.04),
                         ("contact_timeconst", 0.008, 1.0), ("payload_mass", -1.0, 10.0)):  # fmt: skip
        cfg = cfg.with_term(name, lo, hi)
    validate(cfg, ROBOT)
