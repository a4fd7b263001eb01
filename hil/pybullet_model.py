"""The same robot in PyBullet, the independent second simulator (gate and emulator, never training).

The motor model matches MuJoCo's position actuator: tau = clip(kp (q* - q) - kd qd + tau_ff, ±limit),
scaled by motor strength, plus joint viscous damping and dry friction. PyBullet applies that torque
explicitly and has no joint armature, so on the light lower legs the explicit PD is unstable at the
4 ms physics step (kd dt / I ≈ 7 > 2). Two things make it stable, both on by default: the motor's
reflected inertia (armature) is added to each link's inertia about its joint axis, and every physics
step is split into `substeps` PyBullet steps with the PD recomputed each time.

PyBullet places a body's base and collision shapes by the link's inertial frame (centre of mass,
principal axes); the methods here take and return the URDF link frame, as MuJoCo does, so that a
base whose centre of mass is off its origin (the Go2's) stands where MuJoCo puts it.
"""

from __future__ import annotations

import numpy as np
import pybullet as p
from pybullet_utils import bullet_client

from trot.robots import Robot


class PyBulletRobot:
    """One robot on a plane in its own PyBullet client, stepped at the contract's physics_dt."""

    def __init__(
        self,
        robot: Robot,
        substeps: int = 4,
        reflected_inertia: bool = True,
        floor_friction: float = 1.0,
        gui: bool = False,
    ):
        self.robot = robot
        self.substeps = substeps
        self.client = bullet_client.BulletClient(connection_mode=p.GUI if gui else p.DIRECT)
        c = self.client
        c.setGravity(0, 0, -9.81)
        c.setPhysicsEngineParameter(fixedTimeStep=robot.physics_dt / substeps, numSubSteps=0)
        plane = c.createCollisionShape(p.GEOM_PLANE)
        self.floor = c.createMultiBody(0, plane)
        self.body = c.loadURDF(str(robot.urdf_path), [0, 0, 0.5], flags=p.URDF_USE_INERTIA_FROM_FILE)
        self._base_inertial = c.getDynamicsInfo(self.body, -1)[3:5]  # (pos, xyzw) in the base link frame
        self._base_link = c.invertTransform(*self._base_inertial)  # link frame in the inertial frame

        names = {c.getJointInfo(self.body, j)[1].decode(): j for j in range(c.getNumJoints(self.body))}
        self.joint_ids = [names[n] for n in robot.joint_names]
        links = {c.getJointInfo(self.body, j)[12].decode(): j for j in range(c.getNumJoints(self.body))}
        self.foot_ids = [links[n] for n in robot.foot_links]
        self.foot_offsets = [self._sphere_offset(i) for i in self.foot_ids]
        self.set_floor_friction(floor_friction)
        if reflected_inertia:
            self._add_reflected_inertia()
        # Disable the default velocity motors; a zero-velocity motor with a small force is dry friction.
        c.setJointMotorControlArray(
            self.body,
            self.joint_ids,
            p.VELOCITY_CONTROL,
            targetVelocities=[0.0] * robot.num_joints,
            forces=[robot.frictionloss] * robot.num_joints,
        )
        self.torque_scale = 1.0
        self.last_torque = np.zeros(robot.num_joints)
        self.reset()

    def _sphere_offset(self, link: int) -> np.ndarray:
        """Foot sphere centre in the link frame."""
        c = self.client
        shape = c.getCollisionShapeData(self.body, link)[0]
        # Collision data is relative to the inertial frame: move it into the link frame.
        inertial_pos, inertial_orn = c.getDynamicsInfo(self.body, link)[3:5]
        rot = np.array(c.getMatrixFromQuaternion(inertial_orn)).reshape(3, 3)
        return np.array(inertial_pos) + rot @ np.array(shape[5])

    def _add_reflected_inertia(self) -> None:
        c = self.client
        for j in self.joint_ids:
            axis = np.abs(np.array(c.getJointInfo(self.body, j)[13]))
            inertia = np.array(c.getDynamicsInfo(self.body, j)[2])
            c.changeDynamics(
                self.body, j, localInertiaDiagonal=(inertia + self.robot.armature * axis).tolist()
            )

    def set_floor_friction(self, mu: float) -> None:
        self.client.changeDynamics(self.floor, -1, lateralFriction=mu)
        for link in self.foot_ids:
            self.client.changeDynamics(self.body, link, lateralFriction=1.0)

    def set_base_mass(self, mass: float) -> None:
        self.client.changeDynamics(self.body, -1, mass=mass)

    def reset(self, base_height: float | None = None, joint_pos=None) -> None:
        """Put the robot at the default pose with its feet on the floor, at rest."""
        c = self.client
        q = np.asarray(self.robot.default_joint_pos if joint_pos is None else joint_pos, dtype=float)
        for j, qj in zip(self.joint_ids, q):
            c.resetJointState(self.body, j, qj, 0.0)
        if base_height is None:
            self._set_base_link_pose([0, 0, 0])
            lowest = min(f[2] for f in self.foot_positions())
            base_height = self.robot.foot_radius - lowest
        self._set_base_link_pose([0, 0, base_height])
        c.resetBaseVelocity(self.body, [0, 0, 0], [0, 0, 0])
        self.last_torque[:] = 0

    def joint_state(self) -> tuple[np.ndarray, np.ndarray]:
        states = self.client.getJointStates(self.body, self.joint_ids)
        return np.array([s[0] for s in states]), np.array([s[1] for s in states])

    def _set_base_link_pose(self, pos, orn_xyzw=(0, 0, 0, 1)) -> None:
        """Put the base link frame (not PyBullet's inertial frame) at `pos`, `orn_xyzw`."""
        inertial = self.client.multiplyTransforms(pos, orn_xyzw, *self._base_inertial)
        self.client.resetBasePositionAndOrientation(self.body, *inertial)

    def base_pose(self) -> tuple[np.ndarray, np.ndarray]:
        """Base link position and orientation quaternion (w, x, y, z)."""
        pos, q = self.client.multiplyTransforms(*self.client.getBasePositionAndOrientation(self.body), *self._base_link)
        return np.array(pos), np.array([q[3], q[0], q[1], q[2]])

    def base_velocity(self) -> tuple[np.ndarray, np.ndarray]:
        """Base link origin's linear and the base's angular velocity in the world frame."""
        v, w = self.client.getBaseVelocity(self.body)
        com = np.array(self.client.getBasePositionAndOrientation(self.body)[0])
        return np.array(v) + np.cross(w, self.base_pose()[0] - com), np.array(w)

    def foot_positions(self) -> np.ndarray:
        """(num_feet, 3) foot sphere centres in the world frame."""
        out = []
        for link, offset in zip(self.foot_ids, self.foot_offsets):
            state = self.client.getLinkState(self.body, link, computeForwardKinematics=True)
            rot = np.array(self.client.getMatrixFromQuaternion(state[5])).reshape(3, 3)
            out.append(np.array(state[4]) + rot @ offset)
        return np.array(out)

    def foot_contacts(self) -> np.ndarray:
        """(num_feet,) normal force of each foot on the floor, N."""
        forces = np.zeros(len(self.foot_ids))
        for i, link in enumerate(self.foot_ids):
            for cp in self.client.getContactPoints(self.body, self.floor, link, -1):
                forces[i] += cp[9]
        return forces

    def pd_torque(self, target, kp, kd, tau_ff=0.0) -> np.ndarray:
        """Motor torque for the current joint state (the contract's motor model)."""
        q, qd = self.joint_state()
        lim = np.asarray(self.robot.torque_limit)  # (J,) N·m
        tau = np.clip(kp * (np.asarray(target) - q) - kd * qd + tau_ff, -lim, lim)
        return self.torque_scale * tau

    def step(self, target, kp=None, kd=None, tau_ff=0.0) -> None:
        """Advance one physics_dt with PD toward `target` (policy joint order)."""
        kp = self.robot.kp if kp is None else kp
        kd = self.robot.kd if kd is None else kd
        c = self.client
        for _ in range(self.substeps):
            tau = self.pd_torque(target, kp, kd, tau_ff)
            _, qd = self.joint_state()
            self.last_torque = tau
            c.setJointMotorControlArray(
                self.body, self.joint_ids, p.TORQUE_CONTROL, forces=(tau - self.robot.damping * qd).tolist()
            )
            c.stepSimulation()

    def add_base_velocity(self, delta) -> None:
        """Kick: add a world-frame linear velocity (3,) to the base."""
        v, w = self.client.getBaseVelocity(self.body)
        self.client.resetBaseVelocity(self.body, (np.array(v) + np.asarray(delta, dtype=float)).tolist(), w)

    def base_contact(self) -> bool:
        """Whether the base link touches the floor."""
        return len(self.client.getContactPoints(self.body, self.floor, -1, -1)) > 0

    def close(self) -> None:
        if self.client is not None:
            self.client.disconnect()
            self.client = None
