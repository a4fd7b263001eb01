"""Each robot's body is the one its maker published: foot positions and the way each joint moves its foot, in MuJoCo
and in PyBullet, against numbers read off the maker's own model.

The numbers below were computed by loading the maker's model in MuJoCo 4.0 (meshes left out: they change no frame)
and reading each foot's centre in the base frame, base at the origin and level:
- Pupper v3: G-Levine/pupper_v3_description (MIT), commit 1a3c8590189d3a406219d155f4177afc491a7d77,
  description/mujoco_xml/pupper_v3_complete.mjx.position.feet_only.xml, sites `leg_*_3_foot_site` (the centres of
  the foot spheres), the model the authors' MJX training (Nate711/pupperv3-mjx) uses.
- Go2: google-deepmind/mujoco_menagerie, commit 0b2491b868fa2bef5ab4f5f837604c7c260f9cc6, unitree_go2/go2_mjx.xml
  (Unitree's go2_description as Menagerie carries it), geoms `FR`, `FL`, `RR`, `RL` (the foot spheres).
"""

import mujoco
import numpy as np
import pytest

from trot.hil.pybullet_model import PyBulletRobot
from trot.robots import load_robot
from trot.sim.mujoco_model import build_model, index_model

# Per robot: joint configurations (policy order; the first is trot's default pose), the four foot centres at each
# (mm, base frame, policy leg order), and the displacement of its own foot when one joint turns +0.05 rad from the
# default pose (mm, one row per joint in policy order).
MAKER = {
    "pupper_v3": {
        "poses": [
            [0.26, 0.0, -0.52, -0.26, 0.0, 0.52, 0.26, 0.0, -0.52, -0.26, 0.0, 0.52],
            [1.07, 2.65, -0.16, -1.59, -2.01, 2.24, -1.05, 2.41, -0.09, -0.75, -2.0, 0.33],
            [-0.2, 1.18, -1.03, -0.46, 0.26, 1.98, 1.06, 2.95, -1.95, -1.81, -0.99, -0.42],
            [-0.95, 1.41, -1.15, 0.79, -0.94, 1.09, 0.63, 0.54, -2.6, -1.7, -0.73, 0.08],
        ],
        "feet_mm": [
            [[65.74, -101.5, -141.44], [65.74, 101.5, -141.44], [-84.26, -90.5, -141.44], [-84.26, 90.5, -141.44]],
            [[-33.9, -124.6, 40.35], [36.32, 129.89, -156.68], [4.9, -137.21, 59.7], [-144.31, 181.76, 30.83]],
            [[-19.82, -215.01, -16.2], [-22.53, 79.86, -141.74], [-223.15, -70.88, -88.13], [-49.83, 149.89, 20.28]],
            [[14.26, -216.35, 79.24], [-37.28, 201.84, 22.19], [-190.56, -102.47, -102.8], [0.53, 163.5, -1.64]],
        ],
        # _1 hip flexion (the foot moves along x), _2 abduction (along y), _3 knee; FR, FL, BR, BL
        "disp_mm": [
            [7.08, 0.0, -0.29], [-0.27, -6.69, 1.03], [3.75, 0.0, 2.31],
            [-7.06, 0.0, 0.64], [0.19, -6.73, -0.71], [-3.86, 0.0, -2.12],
            [7.08, 0.0, -0.29], [-0.27, -6.69, 1.03], [3.75, 0.0, 2.31],
            [-7.06, 0.0, 0.64], [0.19, -6.73, -0.71], [-3.86, 0.0, -2.12],
        ],  # fmt: skip
        "mass_kg": 3.170,  # 1.506 + 4 × (0.18 + 0.186 + 0.05)
    },
    "go2": {
        "poses": [
            [-0.1, 0.8, -1.5, 0.1, 0.8, -1.5, -0.1, 1.0, -1.5, 0.1, 1.0, -1.5],
            [-0.23, -1.4, -1.26, -0.62, -0.15, -1.18, 0.02, 3.66, -1.56, 0.43, 0.06, -1.72],
            [0.01, 2.73, -2.0, 0.18, -1.14, -1.96, -0.32, 0.34, -1.28, -0.22, 4.29, -1.64],
            [0.19, 1.62, -1.5, -0.63, 0.68, -2.19, -0.17, 0.09, -1.04, -0.51, 2.83, -2.1],
        ],
        "feet_mm": [
            [[176.29, -172.73, -301.5], [176.29, 172.73, -301.5],
             [-272.27, -171.77, -291.92], [-272.27, 171.77, -291.92]],
            [[503.73, -104.91, 169.42], [431.61, -28.79, -269.82], [-270.71, -147.87, 292.3], [6.16, 214.86, -138.01]],
            [[-35.35, -142.37, 36.87], [397.79, 118.3, 138.88], [-93.6, -240.34, -281.35], [-97.9, 199.94, 248.54]],
            [[-46.83, -102.37, -215.18], [271.95, 17.29, -202.16],
             [-40.45, -197.75, -316.64], [-402.23, 151.99, -7.04]],
        ],  # fmt: skip
        # hip (abduction: the foot moves along y), thigh, calf; FR, FL, RR, RL
        "disp_mm": [
            [0.0, 15.23, -5.93], [-15.6, 0.12, 1.24], [-8.38, -0.66, -6.54],
            [0.0, 14.91, 6.69], [-15.6, -0.12, 1.24], [-8.38, 0.66, -6.54],
            [0.0, 14.75, -5.9], [-15.04, 0.43, 4.3], [-9.52, -0.48, -4.76],
            [0.0, 14.43, 6.63], [-15.04, -0.43, 4.3], [-9.52, 0.48, -4.76],
        ],  # fmt: skip
        "mass_kg": 15.206,  # 6.921 + 4 × (0.678 + 1.152 + 0.241352)
    },
}
TOL_MM = 0.05  # the data are rounded to 0.01 mm


@pytest.fixture(scope="module", params=sorted(MAKER))
def robot(request):
    return load_robot(request.param)


def mujoco_feet(robot):
    model = build_model(robot)
    data, idx = mujoco.MjData(model), index_model(model, robot)

    def feet(q):
        data.qpos[idx.root_qpos : idx.root_qpos + 7] = [0, 0, 0, 1, 0, 0, 0]
        data.qpos[idx.joint_qpos] = q
        mujoco.mj_kinematics(model, data)
        return data.site_xpos[idx.foot_site] * 1000

    return feet


@pytest.fixture(scope="module")
def engines(robot):
    bullet = PyBulletRobot(robot)

    def bullet_feet(q):
        bullet.reset(base_height=0.0, joint_pos=q)
        return bullet.foot_positions() * 1000

    yield {"MuJoCo": mujoco_feet(robot), "PyBullet": bullet_feet}
    bullet.close()


@pytest.mark.parametrize("engine", ["MuJoCo", "PyBullet"])
def test_feet_are_where_the_maker_puts_them(robot, engines, engine):
    maker = MAKER[robot.name]
    assert list(robot.default_joint_pos) == maker["poses"][0]
    for q, expected in zip(maker["poses"], maker["feet_mm"]):
        np.testing.assert_allclose(engines[engine](np.array(q)), expected, atol=TOL_MM,
                                   err_msg=f"{robot.name} in {engine} at q={q}")  # fmt: skip


@pytest.mark.parametrize("engine", ["MuJoCo", "PyBullet"])
def test_each_joint_moves_its_foot_the_makers_way(robot, engines, engine):
    """+0.05 rad on each joint from the default pose moves its foot by the maker's displacement: role, axis and sign."""
    maker = MAKER[robot.name]
    feet = engines[engine]
    q0 = np.array(maker["poses"][0])
    base = feet(q0)
    for j, (name, expected) in enumerate(zip(robot.joint_names, maker["disp_mm"])):
        q = q0.copy()
        q[j] += 0.05
        moved = feet(q)[j // 3] - base[j // 3]
        np.testing.assert_allclose(moved, expected, atol=TOL_MM, err_msg=f"{robot.name} {name} in {engine}")


def test_total_mass_is_the_makers(robot):
    assert robot.total_mass == pytest.approx(MAKER[robot.name]["mass_kg"], abs=5e-4)
