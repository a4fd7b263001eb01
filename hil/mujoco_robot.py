"""One robot in MuJoCo behind the small interface of `PyBulletRobot`, for the gate's `--mujoco` run.

The model is the training model (`build_model`: same URDF, position actuators with the contract's PD,
torque limit, armature, joint damping and dry friction, implicit-fast integrator), stepped one
`physics_dt` at a time with `mj_step`. Gains and motor strength are written into the actuator
parameters, so `torque_scale` scales kp, kd and the torque limit together, as in PyBullet.
"""

from __future__ import annotations

import mujoco
import numpy as np

from trot.robots import Robot
from trot.sim.backend import CONTACT_FORCE_N
from trot.sim.mujoco_model import build_model, index_model


class MujocoRobot:
    """One robot on a plane in its own MjData, stepped at the contract's physics_dt."""

    def __init__(self, robot: Robot, floor_friction: float = 1.0):
        self.robot = robot
        self.model = build_model(robot, floor_friction)
        self.data = mujoco.MjData(self.model)
        self.idx = index_model(self.model, robot)
        m = self.model
        self._base = m.body(robot.base_link).id
        self._base_mass = float(m.body_mass[self._base])
        self._base_inertia = m.body_inertia[self._base].copy()
        feet = [g for g in range(m.ngeom) if m.geom_contype[g] and m.geom_type[g] == mujoco.mjtGeom.mjGEOM_SPHERE]
        self._friction_geoms = np.array([m.geom("floor").id, *feet])
        sens = self.idx.sensor
        self._foot_touch = [sens[f"foot{i}_touch"].start for i in range(len(robot.foot_links))]
        self._base_touch = sens["base_touch"].start
        self._gains = None  # (kp, kd, scale) last written into the actuators
        self.torque_scale = 1.0
        self.last_torque = np.zeros(robot.num_joints)
        self.reset()

    def reset(self) -> None:
        """The 'home' keyframe: default pose, feet on the floor, at rest."""
        mujoco.mj_resetDataKeyframe(self.model, self.data, self.model.key("home").id)
        mujoco.mj_forward(self.model, self.data)
        self.last_torque[:] = 0

    def set_floor_friction(self, mu: float) -> None:
        # MuJoCo takes the larger friction of two geoms in contact: set the feet too, as training does.
        self.model.geom_friction[self._friction_geoms, 0] = mu

    def set_base_mass(self, mass: float) -> None:
        """The base's mass; its inertia scales with it, as PyBullet's changeDynamics does."""
        m, b = self.model, self._base
        m.body_inertia[b] = self._base_inertia * mass / self._base_mass
        m.body_mass[b] = mass

    def _write_gains(self, kp: float, kd: float) -> None:
        gains = (kp, kd, self.torque_scale)
        if gains == self._gains:
            return
        m, act, s = self.model, self.idx.joint_ctrl, self.torque_scale
        m.actuator_gainprm[act, 0] = kp * s
        m.actuator_biasprm[act, 1] = -kp * s
        m.actuator_biasprm[act, 2] = -kd * s
        lim = np.asarray(self.robot.torque_limit) * s  # (J,) N·m
        m.actuator_forcerange[act] = np.stack([-lim, lim], axis=1)
        self._gains = gains

    def step(self, target, kp=None, kd=None, tau_ff=0.0) -> None:
        """Advance one physics_dt with PD toward `target` (policy joint order)."""
        if np.any(np.asarray(tau_ff) != 0.0):
            raise ValueError("MujocoRobot.step: feed-forward torque is not supported (position actuators)")
        self._write_gains(self.robot.kp if kp is None else kp, self.robot.kd if kd is None else kd)
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

    def base_contact(self) -> bool:
        """Whether the base touches anything (touch sensor on its collision box)."""
        return bool(self.data.sensordata[self._base_touch] > CONTACT_FORCE_N)

    def close(self) -> None:
        pass
