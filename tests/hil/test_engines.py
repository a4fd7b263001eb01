"""MuJoCo (from MjSpec) and PyBullet load the same URDF and agree on the robot, for every shipped robot."""

import math

import mujoco
import numpy as np
import pytest

from trot.hil.pybullet_model import PyBulletRobot
from trot.robots import load_robot
from trot.sim.mujoco_model import build_model, index_model

# Pinned per robot: the published torque limits (one leg) the actuators must carry, and how far below its nominal
# height (default pose, feet on the floor) the robot may settle standing under PD. The Go2 sags more:
# at kp 25 its 15 kg bend each calf ~0.24 rad (about 6 N·m of holding torque per calf).
CASES = {
    "pupper_v3": {"torque_limit": (3.0, 3.0, 3.0), "max_sag": 0.1},
    "go2": {"torque_limit": (23.7, 23.7, 45.43), "max_sag": 0.15},  # hip, thigh, calf
}


@pytest.fixture(scope="module", params=sorted(CASES))
def robot(request):
    return load_robot(request.param)


@pytest.fixture(scope="module")
def mj(robot):
    model = build_model(robot)
    return model, index_model(model, robot)


@pytest.fixture
def pb(robot):
    bullet = PyBulletRobot(robot)
    yield bullet
    bullet.close()


def tilt_deg(quat_wxyz) -> float:
    """Angle between the body z axis and the world z axis."""
    w, x, y, z = quat_wxyz
    cos_tilt = 1 - 2 * (x * x + y * y)
    return math.degrees(math.acos(np.clip(cos_tilt, -1, 1)))


def test_total_mass_agrees(robot, mj, pb):
    model, _ = mj
    links = range(-1, pb.client.getNumJoints(pb.body))
    pb_mass = sum(pb.client.getDynamicsInfo(pb.body, link)[0] for link in links)
    mj_mass = model.body_subtreemass[model.body(robot.base_link).id]
    assert mj_mass == pytest.approx(pb_mass, rel=0.01)
    assert mj_mass == pytest.approx(robot.total_mass, rel=0.01)


def test_joint_names_order_and_limits_agree(robot, mj, pb):
    model, idx = mj
    limits = CASES[robot.name]["torque_limit"] * 4
    for i, name in enumerate(robot.joint_names):
        info = pb.client.getJointInfo(pb.body, pb.joint_ids[i])
        assert info[1].decode() == name
        mj_range = model.jnt_range[model.joint(name).id]
        np.testing.assert_allclose(mj_range, [info[8], info[9]], atol=1e-9)
        np.testing.assert_allclose(mj_range, [robot.joint_limits.lower[i], robot.joint_limits.upper[i]])
        assert model.actuator(idx.joint_ctrl[i]).name == name
        np.testing.assert_allclose(model.actuator_forcerange[idx.joint_ctrl[i]], [-limits[i], limits[i]])


def test_foot_positions_agree_at_random_poses(robot, mj, pb):
    model, idx = mj
    data = mujoco.MjData(model)
    rng = np.random.default_rng(0)
    lo, hi = np.array(robot.joint_limits.lower), np.array(robot.joint_limits.upper)
    for _ in range(6):
        q = rng.uniform(lo, hi)
        data.qpos[idx.root_qpos : idx.root_qpos + 7] = [0, 0, 0.3, 1, 0, 0, 0]
        data.qpos[idx.joint_qpos] = q
        mujoco.mj_kinematics(model, data)
        pb.reset(base_height=0.3, joint_pos=q)
        np.testing.assert_allclose(data.site_xpos[idx.foot_site], pb.foot_positions(), atol=1e-3)
        # The base pose reads back as set: the URDF link frame, wherever the centre of mass is.
        pos, quat = pb.base_pose()
        np.testing.assert_allclose(pos, [0, 0, 0.3], atol=1e-6)  # PyBullet stores poses in float32
        np.testing.assert_allclose(quat, [1, 0, 0, 0], atol=1e-6)


def stand_mujoco(robot, model, idx, seconds=5.0):
    data = mujoco.MjData(model)
    mujoco.mj_resetDataKeyframe(model, data, model.key("home").id)
    for _ in range(round(seconds / robot.physics_dt)):
        mujoco.mj_step(model, data)
    return data.qpos[idx.root_qpos + 2], tilt_deg(data.qpos[idx.root_qpos + 3 : idx.root_qpos + 7])


def stand_pybullet(robot, bullet, seconds=5.0):
    bullet.reset()
    for _ in range(round(seconds / robot.physics_dt)):
        bullet.step(robot.default_joint_pos)
    pos, quat = bullet.base_pose()
    return pos[2], tilt_deg(quat)


def test_both_engines_stand_at_the_same_height(robot, mj, pb):
    model, idx = mj
    nominal = model.key("home").qpos[idx.root_qpos + 2]
    h_mj, tilt_mj = stand_mujoco(robot, model, idx)
    h_pb, tilt_pb = stand_pybullet(robot, pb)
    print(f"{robot.name}: nominal {nominal:.4f} m; MuJoCo {h_mj:.4f} m, {tilt_mj:.2f}°;", end=" ")
    print(f"PyBullet {h_pb:.4f} m, {tilt_pb:.2f}°")
    for h, tilt in ((h_mj, tilt_mj), (h_pb, tilt_pb)):
        assert 0 < nominal - h < CASES[robot.name]["max_sag"] * nominal
        assert tilt < 5.0
    assert abs(h_mj - h_pb) < 0.005


def test_pybullet_base_pose_is_the_link_frame_not_the_centre_of_mass():
    """The Go2's trunk centre of mass is 21 mm ahead of its origin: PyBullet's own base frame is there."""
    go2 = load_robot("go2")
    bullet = PyBulletRobot(go2)
    try:
        bullet.reset(base_height=0.4)
        com, _ = bullet.client.getBasePositionAndOrientation(bullet.body)
        np.testing.assert_allclose(com, [0.021112, 0.0, 0.4 - 0.005366], atol=1e-6)
        np.testing.assert_allclose(bullet.base_pose()[0], [0, 0, 0.4], atol=1e-6)
        # Spinning about z at 2 rad/s: the origin, 21 mm behind the centre of mass, moves at -y 42 mm/s.
        bullet.client.resetBaseVelocity(bullet.body, [0, 0, 0], [0, 0, 2.0])
        lin, ang = bullet.base_velocity()
        np.testing.assert_allclose(lin, [0, -2.0 * 0.021112, 0], atol=1e-6)
        np.testing.assert_allclose(ang, [0, 0, 2.0], atol=1e-6)
    finally:
        bullet.close()


def test_pybullet_explicit_pd_needs_reflected_inertia_or_substeps():
    """Without armature, explicit PD on the Pupper's 50 g lower leg diverges at the 4 ms step."""
    pupper = load_robot("pupper_v3")
    results = {}
    for substeps, inertia in ((1, False), (1, True), (4, False)):
        bullet = PyBulletRobot(pupper, substeps=substeps, reflected_inertia=inertia)
        try:
            h, tilt = stand_pybullet(pupper, bullet, seconds=2.0)
            _, qd = bullet.joint_state()
            results[(substeps, inertia)] = (h, tilt, np.abs(qd).max())
        finally:
            bullet.close()
    h, tilt, speed = results[(1, False)]
    assert speed > 10.0 or tilt > 30.0, f"expected the unstabilised PD to blow up, got {results[(1, False)]}"
    for key in ((1, True), (4, False)):
        h, tilt, speed = results[key]
        assert tilt < 5.0 and speed < 0.1, f"{key} should stand still: {results[key]}"
