"""One robot in MuJoCo behind the small interface of `PyBulletRobot`, for the gate's `--mujoco` run.

The model is the training model (`build_model`: same URDF, position actuators with the contract's PD,
torque limit, armature, joint damping and dry friction, contact softness, implicit-fast integrator),
stepped one `physics_dt` at a time with `mj_step`. `write_params` puts one env's `EnvParams` into it
through the function the training backend uses (`write_model_params`), so a gate perturbation is
the same model change as the training term it pins.
"""

from __future__ import annotations

import functools

import mujoco
import numpy as np

from trot.robots import Robot, load_robot
from trot.sim.backend import CONTACT_FORCE_N, MODEL_FIELDS
from trot.sim.mujoco_model import build_model, index_model, param_targets, write_model_params


class MujocoRobot:
    """One robot on a plane in its own MjData, stepped at the contract's physics_dt."""

    # EnvParams fields this engine cannot simulate, and why: none (the gate runs every perturbation in it).
    UNSUPPORTED_PARAMS: dict[str, str] = {}

    def __init__(self, robot: Robot):
        self.robot = robot
        self.model = build_model(robot)
        self.data = mujoco.MjData(self.model)
        self.idx = index_model(self.model, robot)
        self._targets = param_targets(self.model, robot)
        sens = self.idx.sensor
        self._foot_touch = [sens[f"foot{i}_touch"].start for i in range(len(robot.foot_links))]
        self._base_touch = sens["base_touch"].start
        self.last_torque = np.zeros(robot.num_joints)
        self.reset()

    def reset(self) -> None:
        """The 'home' keyframe: default pose, feet on the floor, at rest."""
        mujoco.mj_resetDataKeyframe(self.model, self.data, self.model.key("home").id)
        mujoco.mj_forward(self.model, self.data)
        self.last_torque[:] = 0

    def write_params(self, params) -> None:
        """One env's `EnvParams` (the first row) into the model: masses, friction, contact, gains, joints."""
        write_model_params(self.model, self._targets, {f: getattr(params, f)[0].cpu().numpy() for f in MODEL_FIELDS})

    def step(self, target) -> None:
        """Advance one physics_dt with the actuators' PD toward `target` (policy joint order)."""
        self.data.ctrl[self.idx.joint_ctrl] = target
        mujoco.mj_step(self.model, self.data)
        self.last_torque = self.data.actuator_force[self.idx.joint_ctrl].copy()

    def joint_state(self) -> tuple[np.ndarray, np.ndarray]:
        return self.data.qpos[self.idx.joint_qpos].copy(), self.data.qvel[self.idx.joint_qvel].copy()

    def base_pose(self) -> tuple[np.ndarray, np.ndarray]:
        """Base position and orientation quaternion (w, x, y, z)."""
        r = self.idx.root_qpos
        return self.data.qpos[r : r + 3].copy(), self.data.qpos[r + 3 : r + 7].copy()

    def base_velocity(self) -> tuple[np.ndarray, np.ndarray]:
        """Base linear and angular velocity in the world frame (MuJoCo's free joint has body angular)."""
        d = self.idx.root_qvel
        rot = np.zeros(9)
        mujoco.mju_quat2Mat(rot, self.base_pose()[1])
        return self.data.qvel[d : d + 3].copy(), rot.reshape(3, 3) @ self.data.qvel[d + 3 : d + 6]

    def add_base_velocity(self, delta) -> None:
        """Kick: add a world-frame linear velocity (3,) to the base."""
        d = self.idx.root_qvel
        self.data.qvel[d : d + 3] += np.asarray(delta, dtype=float)

    def foot_positions(self) -> np.ndarray:
        """(num_feet, 3) foot sphere centres in the world frame (as of the last step's start)."""
        return self.data.site_xpos[self.idx.foot_site].copy()

    def foot_contacts(self) -> np.ndarray:
        """(num_feet,) normal force of each foot on the floor, N (touch sensor)."""
        return self.data.sensordata[self._foot_touch].copy()

    def foot_penetration(self) -> np.ndarray:
        """Depths (m, positive into the floor) of the feet's contacts now."""
        d, feet = self.data, set(self._targets.friction_geoms[1:].tolist())
        con = d.contact
        return np.array([-con.dist[i] for i in range(d.ncon) if {int(con.geom1[i]), int(con.geom2[i])} & feet])

    def base_contact(self) -> bool:
        """Whether the base touches anything (touch sensor on its collision box)."""
        return bool(self.data.sensordata[self._base_touch] > CONTACT_FORCE_N)

    def close(self) -> None:
        pass


@functools.lru_cache(maxsize=32)
def standing_penetration(robot_folder: str, timeconst: float, dampratio: float) -> float:
    """Mean depth (m) of the feet's contacts of the robot standing at its default pose under PD, with contact
    softness (timeconst s, dampratio): what PyBullet's foot stiffness is matched to. Over the last 0.5 s of
    2 s of standing: the drop from the keyframe settles within about 1 s (the Go2's)."""
    robot = load_robot(robot_folder)
    engine = MujocoRobot(robot)
    engine.model.geom_solref[engine._targets.contact_geoms] = [timeconst, dampratio]
    steps, measured = round(2.0 / robot.physics_dt), round(0.5 / robot.physics_dt)
    depths = []
    for k in range(steps):
        engine.step(robot.default_joint_pos)
        if k >= steps - measured:
            depths.append(engine.foot_penetration())
    return float(np.mean(np.concatenate(depths)))
