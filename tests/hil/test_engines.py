"""MuJoCo (from MjSpec) and PyBullet load the same URDF and agree on the robot."""

import math

import mujoco
import numpy as np
import pytest

from trot.hil.pybullet_model import PyBulletRobot
from trot.robots import load_robot
from trot.sim.mujoco_model import build_model, index_model

ROBOT = load_robot("pupper_v3")


@pytest.fixture(scope="module")
def mj():
    model = build_model(ROBOT)
    return model, index_model(model, ROBOT)


@pytest.fixture
def pb():
    bullet = PyBulletRobot(ROBOT)
    yield bullet
    bullet.close()


def tilt_deg(quat_wxyz) -> float:
    """Angle between the body z axis and the world z axis."""
    w, x, y, z = quat_wxyz
    cos_tilt = 1 - 2 * (x * x + y * y)
    return math.degrees(math.acos(np.clip(cos_tilt, -1, 1)))


def test_total_mass_agrees(mj, pb):
    model, _ = mj
    pb_mass = sum(pb.client.getDynamicsInfo(pb.body, link)[0] for link in range(-1, len(pb.joint_ids)))
    mj_mass = model.body_subtreemass[model.body(ROBOT.base_link).id]
    assert mj_mass == pytest.approx(pb_mass, rel=0.01)
    assert mj_mass == pytest.approx(ROBOT.total_mass, rel=0.01)


def test_joint_names_order_and_limits_agree(mj, pb):
    model, idx = mj
    for i, name in enumerate(ROBOT.joint_names):
        info = pb.client.getJointInfo(pb.body, pb.joint_ids[i])
        assert info[1].decode() == name
        mj_range = model.jnt_range[model.joint(name).id]
        np.testing.assert_allclose(mj_range, [info[8], info[9]], atol=1e-9)
        np.testing.assert_allclose(mj_range, [ROBOT.joint_limits.lower[i], ROBOT.joint_limits.upper[i]])
        assert model.actuator(idx.joint_ctrl[i]).name == name
        np.testing.assert_allclose(model.actuator_forcerange[idx.joint_ctrl[i]], [-3.0, 3.0])


def test_foot_positions_agree_at_random_poses(mj, pb):
    model, idx = mj
    data = mujoco.MjData(model)
    rng = np.random.default_rng(0)
    lo, hi = np.array(ROBOT.joint_limits.lower), np.array(ROBOT.joint_limits.upper)
    for _ in range(6):
        q = rng.uniform(lo, hi)
        data.qpos[idx.root_qpos : idx.root_qpos + 7] = [0, 0, 0.3, 1, 0, 0, 0]
        data.qpos[idx.joint_qpos] = q
        mujoco.mj_kinematics(model, data)
        pb.reset(base_height=0.3, joint_pos=q)
        np.testing.assert_allclose(data.site_xpos[idx.foot_site], pb.foot_positions(), atol=1e-3)


def stand_mujoco(model, idx, seconds=5.0):
    data = mujoco.MjData(model)
    mujoco.mj_resetDataKeyframe(model, data, model.key("home").id)
    for _ in range(round(seconds / ROBOT.physics_dt)):
        mujoco.mj_step(model, data)
    return data.qpos[idx.root_qpos + 2], tilt_deg(data.qpos[idx.root_qpos + 3 : idx.root_qpos + 7])


def stand_pybullet(bullet, seconds=5.0):
    bullet.reset()
    for _ in range(round(seconds / ROBOT.physics_dt)):
        bullet.step(ROBOT.default_joint_pos)
    pos, quat = bullet.base_pose()
    return pos[2], tilt_deg(quat)


def test_both_engines_stand_at_the_same_height(mj, pb):
    model, idx = mj
    nominal = model.key("home").qpos[idx.root_qpos + 2]
    h_mj, tilt_mj = stand_mujoco(model, idx)
    h_pb, tilt_pb = stand_pybullet(pb)
    for h, tilt in ((h_mj, tilt_mj), (h_pb, tilt_pb)):
        assert abs(h - nominal) < 0.1 * nominal
        assert tilt < 5.0
    assert abs(h_mj - h_pb) < 0.005


def test_pybullet_explicit_pd_needs_reflected_inertia_or_substeps():
    """Without armature, explicit PD on the 50 g lower leg diverges at the 4 ms step."""
    results = {}
    for substeps, inertia in ((1, False), (1, True), (4, False)):
        bullet = PyBulletRobot(ROBOT, substeps=substeps, reflected_inertia=inertia)
        try:
            h, tilt = stand_pybullet(bullet, seconds=2.0)
            _, qd = bullet.joint_state()
            results[(substeps, inertia)] = (h, tilt, np.abs(qd).max())
        finally:
            bullet.close()
    h, tilt, speed = results[(1, False)]
    assert speed > 10.0 or tilt > 30.0, f"expected the unstabilised PD to blow up, got {results[(1, False)]}"
    for key in ((1, True), (4, False)):
        h, tilt, speed = results[key]
        assert tilt < 5.0 and speed < 0.1, f"{key} should stand still: {results[key]}"
