"""The MuJoCo Warp backend on Warp's CPU device: parity with the C backend, graph replay, resets, memory sharing.

Tolerances. MuJoCo Warp computes in float32 (24-bit mantissa: 6e-8 relative), the C backend in float64.
From the same state and the same targets the two differ by the rounding of every kinematic and solver
operation: in these tests (`pytest -s` prints them) at most 1.3e-6 in qpos and 8.8e-5 in qvel after 1,
10 and 100 control steps (500 physics steps) on the authors' Pupper body, the qvel part mostly from the
constraint solver stopping on a float32 residual. The tests allow 1e-5 (qpos: m, rad) and 5e-4 (qvel: m/s,
rad/s), 6-8x the worst seen. They hold while every foot stays on the floor (asserted): when a foot lands,
the physics step in which it first touches can differ by one between float32 and float64 (a foot 1e-7 m
above or below the floor), and from then on the two trajectories part by centimetres, as two float64
runs would from a 1e-7 m difference at that moment. The same holds at the start: the home keyframe sets the
feet exactly on the floor (0 to 8e-8 m above it in float64), which float32 rounds to 2e-8 m into it on two feet,
so the tests start with the base 0.5 mm lower, every foot pressed into the floor in both backends.
"""

import numpy as np
import pytest
import torch

pytest.importorskip("mujoco_warp", reason="the gpu extra (mujoco-warp, warp-lang) is not installed")

import warp as wp  # noqa: E402

from trot.randomization import RandomizationCfg, Randomizer  # noqa: E402
from trot.robots import load_robot  # noqa: E402
from trot.sim.backend import CONTACT_FORCE_N, MujocoBackend  # noqa: E402
from trot.sim.mjwarp_backend import MjwarpBackend, contact_capacity  # noqa: E402

ROBOT = load_robot("pupper_v3")
DEFAULT = torch.tensor(ROBOT.default_joint_pos, dtype=torch.float64)
QPOS_TOL, QVEL_TOL = 1e-5, 5e-4
CHECKS = (1, 10, 100)
PRESSED_M = 5e-4  # the base below its home height at the start: every foot in contact in float32 and float64


def pressed_home(b, n: int) -> torch.Tensor:
    """n copies of the home pose with the base PRESSED_M lower."""
    qpos = b.home_qpos().repeat(n, 1)
    qpos[:, b.root_qpos_adr + 2] -= PRESSED_M
    return qpos


def pair(num_envs: int, params=None, **kw):
    c, w = MujocoBackend(ROBOT, num_envs, nthread=1), MjwarpBackend(ROBOT, num_envs, **kw)
    still = torch.zeros(num_envs, c.num_qvel, dtype=torch.float64)
    for b in (c, w):
        b.reset_envs(torch.arange(num_envs), pressed_home(c, num_envs), still)
    if params is not None:
        ids = torch.arange(num_envs)
        c.write_params(ids, params)
        w.write_params(ids, params)
    return c, w


def differences(c: MujocoBackend, w: MjwarpBackend) -> tuple[float, float]:
    return (c._qpos - w._qpos.double()).abs().max().item(), (c._qvel - w._qvel.double()).abs().max().item()


def sway(step: int, phase: torch.Tensor, amplitude: float) -> torch.Tensor:
    """Joint targets: the default pose plus a 2 Hz sine of `amplitude` rad with a per-joint phase."""
    return DEFAULT + amplitude * torch.sin(2 * np.pi * 2.0 * step * ROBOT.control_dt + phase)


def run_pair(c, w, phase, amplitude, on_floor: bool, steps: int = 100) -> dict:
    """Step both backends with the same targets; the (qpos, qvel) differences at the CHECKS steps."""
    seen = {}
    for k in range(1, steps + 1):
        target = sway(k, phase, amplitude)
        sc, sw = c.step(target), w.step(target)
        if on_floor:  # no landing (see the module docstring): every foot loaded at every step, in both
            assert sc.foot_force.min() > CONTACT_FORCE_N and sw.foot_force.min() > CONTACT_FORCE_N, k
        if k in CHECKS:
            seen[k] = differences(c, w)
    return seen


def assert_within_tolerance(seen: dict) -> None:
    print(" ".join(f"{k}: |dqpos| {dq:.1e} |dqvel| {dv:.1e};" for k, (dq, dv) in seen.items()))  # pytest -s
    for k, (dq, dv) in seen.items():
        assert dq < QPOS_TOL and dv < QVEL_TOL, f"after {k} control steps: |dqpos| {dq:.1e}, |dqvel| {dv:.1e}"


@pytest.mark.parametrize("seed", range(4))
def test_matches_the_c_backend_standing_and_swaying_on_the_floor(seed):
    c, w = pair(4)
    phase = 2 * np.pi * torch.rand(4, 12, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    assert_within_tolerance(run_pair(c, w, phase, 0.03, on_floor=True))


@pytest.mark.parametrize("seed", range(4))
def test_matches_the_c_backend_moving_its_legs_in_the_air(seed):
    c, w = pair(4)
    c.model.opt.gravity[:] = 0.0
    wp.to_torch(w.wm.opt.gravity)[:] = 0.0
    qpos = c.home_qpos().repeat(4, 1)
    qpos[:, c.root_qpos_adr + 2] = 1.0
    for b in (c, w):
        b.reset_envs(torch.arange(4), qpos, torch.zeros(4, c.num_qvel, dtype=torch.float64))
    phase = 2 * np.pi * torch.rand(4, 12, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    seen = run_pair(c, w, phase, 0.6, on_floor=False)
    assert c.read().joint_vel.abs().max() > 3.0  # the legs swing fast: a real test of the actuators
    assert_within_tolerance(seen)


def randomized_params(num_envs: int, seed: int):
    """Every model and actuation term drawn per env from ranges like the robots' task.toml ones."""
    cfg = RandomizationCfg.nominal()
    ranges = {
        "friction": (0.5, 1.2), "link_mass_scale": (0.9, 1.1), "payload_mass": (0.0, 0.5),
        "com_offset_x": (-0.01, 0.01), "com_offset_y": (-0.01, 0.01), "com_offset_z": (-0.01, 0.01),
        "kp_scale": (0.8, 1.2), "kd_scale": (0.8, 1.2), "motor_strength": (0.8, 1.0),
        "actuation_latency": (0.0, 0.036),  # 0..9 physics steps: up to two control steps back
    }  # fmt: skip
    for name, (lo, hi) in ranges.items():
        cfg = cfg.with_term(name, lo, hi, "reset")
    r = Randomizer(cfg, ROBOT, num_envs, torch.Generator().manual_seed(seed))
    r.sample("reset", torch.arange(num_envs))
    assert len(set(r.values["actuation_latency"].tolist())) > 1
    return r.params


def test_every_randomized_term_has_the_same_effect_in_both_backends_and_resets_match():
    """Per-env masses, centre of mass, friction, gains, strength and latency written by each backend's
    write_params, then some envs reset mid-run (new pose, motors restarting there): trajectories agree."""
    n = 6
    c, w = pair(n, randomized_params(n, seed=2))
    phase = 2 * np.pi * torch.rand(n, 12, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    assert_within_tolerance(run_pair(c, w, phase, 0.03, on_floor=True, steps=10))
    ids = torch.tensor([1, 4])
    qpos = pressed_home(c, 2)
    qpos[:, c.joint_qpos_index()] += 0.02
    qvel = torch.zeros(2, c.num_qvel, dtype=torch.float64)
    for b in (c, w):
        b.write_params(ids, randomized_params(n, seed=4))  # a reset draws new params for those envs
        b.reset_envs(ids, qpos, qvel)
    assert_within_tolerance(run_pair(c, w, phase, 0.03, on_floor=True))


def test_the_captured_graph_steps_exactly_as_the_eager_launches():
    """One graph launch per control step gives the same bits as launching each kernel, latency beyond one
    control step included (a deeper target history is captured anew)."""
    n = 3
    params = randomized_params(n, seed=5)
    params.actuation_latency_s[:] = torch.tensor([0.0, 0.012, 0.028])  # 0, 3 and 7 physics steps
    graph, eager = MjwarpBackend(ROBOT, n), MjwarpBackend(ROBOT, n, graph=False)
    assert graph._graph is not None and eager._graph is None
    for b in (graph, eager):
        b.write_params(torch.arange(n), params)
    assert graph._held.shape[0] == 2  # ceil(7 / 5) control steps of history
    phase = torch.linspace(0, 3, 12, dtype=torch.float64)
    for k in range(20):
        sg, se = graph.step(sway(k, phase, 0.2).repeat(n, 1)), eager.step(sway(k, phase, 0.2).repeat(n, 1))
    assert torch.equal(graph._qpos, eager._qpos) and torch.equal(graph._qvel, eager._qvel)
    assert torch.equal(sg.foot_force, se.foot_force)


def test_state_tensors_share_memory_with_the_warp_arrays():
    b = MjwarpBackend(ROBOT, 2)
    assert b._qpos.data_ptr() == b.wd.qpos.ptr and b._qvel.data_ptr() == b.wd.qvel.ptr
    assert b._sens.data_ptr() == b.wd.sensordata.ptr
    assert b._per_world["body_mass"].data_ptr() == b.wm.body_mass.ptr
    b._qvel[1, b.root_qvel_adr] = 0.25
    assert b.wd.qvel.numpy()[1, b.root_qvel_adr] == 0.25
    s = b.read()
    assert s.base_pos.device == b.device and s.base_pos.dtype == torch.float64


def test_a_push_adds_the_velocity_to_the_pushed_envs_only():
    b = MjwarpBackend(ROBOT, 3)
    before = b.read().base_lin_vel_world.clone()
    b.add_base_velocity(torch.tensor([2]), torch.tensor([[0.3, -0.1, 0.0]], dtype=torch.float64))
    after = b.read().base_lin_vel_world
    np.testing.assert_allclose(after[2] - before[2], [0.3, -0.1, 0.0], atol=1e-7)  # float32
    assert torch.equal(after[:2], before[:2])


def test_write_params_puts_each_env_row_into_the_model_fields():
    """Hand-computed: payload adds to the base's scaled mass, its inertia scales with the base's mass."""
    b = MjwarpBackend(ROBOT, 2)
    r = Randomizer(RandomizationCfg.nominal(), ROBOT, 2, torch.Generator())
    r.values["link_mass_scale"][:] = torch.tensor([1.0, 1.2])
    r.values["payload_mass"][:] = torch.tensor([0.0, 0.3])
    r.values["friction"][:] = torch.tensor([1.0, 0.6])
    r.values["motor_strength"][:] = torch.tensor([1.0, 0.8])
    r.compose(torch.arange(2))
    b.write_params(torch.tensor([1]), r.params)
    m, base = b.model, b.model.body(ROBOT.base_link).id
    mass = b._per_world["body_mass"].double()
    assert mass[1, base].item() == pytest.approx(1.2 * m.body_mass[base] + 0.3, rel=1e-6)
    ratio = (1.2 * m.body_mass[base] + 0.3) / m.body_mass[base]
    inertia = b._per_world["body_inertia"].double()
    np.testing.assert_allclose(inertia[1, base], m.body_inertia[base] * ratio, rtol=1e-6)
    np.testing.assert_allclose(mass[0], m.body_mass, rtol=1e-6)  # env 0 not written: nominal
    friction = b._per_world["geom_friction"][:, m.geom("floor").id, 0].tolist()
    assert friction == pytest.approx([1.0, 0.6])
    act = b.idx.joint_ctrl
    np.testing.assert_allclose(b._per_world["actuator_gainprm"][1, act, 0], 0.8 * ROBOT.kp, rtol=1e-6)
    np.testing.assert_allclose(b._per_world["actuator_biasprm"][1, act, 2], -0.8 * ROBOT.kd, rtol=1e-6)
    np.testing.assert_allclose(b._per_world["actuator_forcerange"][1, act], [[-2.4, 2.4]] * 12, rtol=1e-6)


def test_contact_buffers_fit_every_collision_pair_of_the_robot():
    """Pupper: floor, base box, four foot spheres collide. Floor-box 4 points + 4 floor-foot + 4 box-foot +
    6 foot-foot pairs at 1 point = 18 contacts; rows: 18 x 4 (pyramid, condim 3) + 12 joint limits + 12
    dofs with dry friction = 96."""
    assert contact_capacity(MujocoBackend(ROBOT, 1, nthread=1).model) == (18, 96)


def test_a_device_warp_does_not_have_is_refused_by_name():
    with pytest.raises(ValueError, match="--device cuda:7: not a Warp device; found cpu"):
        MjwarpBackend(ROBOT, 1, device="cuda:7")
