"""The emulated robot's body: the robot in PyBullet, stepped at physics_dt, and what its IMU measures."""

from __future__ import annotations

import math

import numpy as np

from trot.hil.emulator.firmware import Actuation
from trot.hil.kinematics import quat_mul, rotation
from trot.robots import Robot

GRAVITY = np.array([0.0, 0.0, -9.81])


class Plant:
    """One robot standing at its default pose in its own PyBullet client, with an IMU at `robot.imu_pos`."""

    def __init__(self, robot: Robot):
        # Imported here so that the CLI's parser (`trot emulate --help`) does not load PyBullet.
        from trot.hil.pybullet_model import PyBulletRobot

        self.robot = robot
        self.sim = PyBulletRobot(robot)
        self.imu_pos = np.array(robot.imu_pos)
        self._imu_vel = self._imu_kinematics()[3]

    def step(self, act: Actuation) -> None:
        """Advance one physics_dt with the motors' command."""
        self.sim.step(act.target, act.kp, act.kd, act.tau_ff)

    def joint_state(self) -> tuple[np.ndarray, np.ndarray]:
        """Joint positions and velocities, policy order."""
        return self.sim.joint_state()

    @property
    def joint_torque(self) -> np.ndarray:
        """The motor torque applied in the last step (PD law, clipped, before joint friction), N·m."""
        return self.sim.last_torque

    def read_imu(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Quaternion (w x y z), body-frame gyro, body-frame specific force at the IMU; call once a tick."""
        quat, rot, ang, vel = self._imu_kinematics()
        accel = (vel - self._imu_vel) / self.robot.physics_dt
        self._imu_vel = vel
        return quat, rot.T @ ang, rot.T @ (accel - GRAVITY)

    def _imu_kinematics(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Base quaternion, rotation, world angular velocity, and world velocity of the IMU point.

        The URDF puts the base's centre of mass at its origin, which is where PyBullet reports the base.
        """
        _, quat = self.sim.base_pose()
        lin, ang = self.sim.base_velocity()
        rot = rotation(quat)
        return quat, rot, ang, lin + np.cross(ang, rot @ self.imu_pos)

    def push(self, velocity: float) -> None:
        """Add `velocity` m/s along the base's y axis to the base."""
        self.sim.add_base_velocity(rotation(self.sim.base_pose()[1]) @ np.array([0.0, velocity, 0.0]))

    def tip_over(self) -> None:
        """Roll the base onto its side (90° about its x axis), lifted so that nothing starts inside the floor."""
        pos, quat = self.sim.base_pose()
        r = math.sqrt(0.5)
        w, x, y, z = quat_mul(quat, np.array([r, r, 0.0, 0.0]))
        c = self.sim.client
        c.resetBasePositionAndOrientation(self.sim.body, [pos[0], pos[1], max(pos[2], 0.2)], [x, y, z, w])
        c.resetBaseVelocity(self.sim.body, [0.0, 0.0, 0.0], [0.0, 0.0, 0.0])

    def ground_truth(self) -> dict[str, np.ndarray]:
        """Simulator state: base pose and velocities (world frame), joint positions."""
        pos, quat = self.sim.base_pose()
        lin, ang = self.sim.base_velocity()
        q, _ = self.sim.joint_state()
        return {"base_pos": pos, "base_quat": quat, "base_lin_vel": lin, "base_ang_vel": ang, "joint_pos": q}

    def close(self) -> None:
        self.sim.close()
