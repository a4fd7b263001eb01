"""MuJoCo (from MjSpec) and PyBullet load the same URDF and agree on the robot, for every shipped robot."""

import math

import mujoco
import numpy as np
import pybullet as p
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


def test_pybullet_has_the_urdf_inertia_and_no_armature_in_its_links(robot, mj, pb):
    """PyBullet's own joint-space inertia (base fixed) is MuJoCo's less the armature MuJoCo adds on each joint: the
    motors' armature is not in PyBullet's links (where it made the legs swing 30 % further; docs/gate.md)."""
    model, idx = mj
    data = mujoco.MjData(model)
    mujoco.mj_resetDataKeyframe(model, data, model.key("home").id)
    mujoco.mj_forward(model, data)
    full = np.zeros((model.nv, model.nv))
    mujoco.mj_fullM(model, data, full)
    mj_joints = full[np.ix_(idx.joint_qvel, idx.joint_qvel)] - robot.armature * np.eye(robot.num_joints)
    pb.reset()
    pb_joints = pb.mass_matrix()[np.ix_(pb._dof, pb._dof)]
    np.testing.assert_allclose(pb_joints, mj_joints, rtol=1e-3, atol=1e-8)
    assert pb.substeps == {"pupper_v3": 4, "go2": 5}[robot.name]  # 1 ms PyBullet steps (the gate's: 0.25 ms)


@pytest.mark.parametrize("timeconst", [0.02, 0.04])
def test_pybullet_feet_sink_as_far_as_mujocos_with_the_same_contact(robot, timeconst):
    """The contact is matched by standing penetration: the mean depth of the four feet agrees within 15 %, or 0.02 mm
    (Bullet holds a contact about 0.01 mm deeper than its spring alone would: the Go2's MuJoCo feet sink 0.03 mm)."""
    from trot.hil.mujoco_robot import MujocoRobot
    from trot.randomization import nominal_params

    params = nominal_params(robot, 1)
    params.contact_timeconst[:] = timeconst
    depth = {}
    for engine in (PyBulletRobot(robot), MujocoRobot(robot)):
        engine.write_params(params)
        for _ in range(round(2.0 / robot.physics_dt)):
            engine.step(robot.default_joint_pos)
        depth[type(engine).__name__] = engine.foot_penetration().mean()
        engine.close()
    assert depth["PyBulletRobot"] == pytest.approx(depth["MujocoRobot"], rel=0.15, abs=2e-5), depth


def test_pybullet_implicit_damping_stands_where_the_explicit_pd_diverges():
    """Without armature the Pupper's light legs (W, the joint block of the inverse mass matrix, has λmax 7,360
    kg⁻¹m⁻²) make an explicit kd unstable at coarse steps: at the physics step, 4 ms, the same PD applied explicitly
    blows up, while the implicit damping stands still at 4 ms and at the default 1 ms substeps (measured: the
    explicit PD still stands at 2 ms)."""
    pupper = load_robot("pupper_v3")
    for substeps in (4, 1):  # 1 ms (the default) and 4 ms
        bullet = PyBulletRobot(pupper, substeps=substeps)
        try:
            w = np.linalg.inv(bullet.mass_matrix())[np.ix_(bullet._dof, bullet._dof)]
            assert np.linalg.eigvalsh(w).max() == pytest.approx(7360, rel=0.01)
            h, tilt = stand_pybullet(pupper, bullet, seconds=2.0)
            assert tilt < 5.0 and np.abs(bullet.joint_state()[1]).max() < 0.1, (substeps, tilt)
        finally:
            bullet.close()
    bullet = PyBulletRobot(pupper, substeps=1)
    try:
        target = np.asarray(pupper.default_joint_pos)
        for _ in range(round(2.0 / pupper.physics_dt) * bullet.substeps):
            q, qd = bullet.joint_state()
            lim = np.asarray(pupper.torque_limit)  # per joint
            tau = np.clip(pupper.kp * (target - q) - pupper.kd * qd, -lim, lim)
            bullet.client.setJointMotorControlArray(bullet.body, bullet.joint_ids, p.TORQUE_CONTROL, forces=list(tau))
            bullet.client.stepSimulation()
        speed, tilt = np.abs(bullet.joint_state()[1]).max(), tilt_deg(bullet.base_pose()[1])
        assert speed > 10.0 or tilt > 30.0, (speed, tilt)
    finally:
        bullet.close()


def test_pybullet_refuses_what_it_cannot_simulate():
    from trot.randomization import nominal_params

    pupper = load_robot("pupper_v3")
    bullet = PyBulletRobot(pupper)
    try:
        params = nominal_params(pupper, 1)
        params.armature *= 0.5
        with pytest.raises(ValueError, match=r"PyBullet cannot simulate armature = \[0.0008, .*no joint armature"):
            bullet.write_params(params)
    finally:
        bullet.close()
