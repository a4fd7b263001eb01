"""The same robot in PyBullet, the independent second simulator (gate and emulator, never training).

The motor model is MuJoCo's position actuator: tau = clip(kp (q* - q) - kd qd + tau_ff, ±limit), plus
joint viscous damping and dry friction, with the damping treated as MuJoCo's implicit-fast integrator
treats it. PyBullet applies torques explicitly and has no joint armature; on the Pupper's 50 g lower
legs an explicit kd is stable only below 0.37 ms steps. So each step of `physics_dt` is split into
substeps (1 ms by default, 0.25 ms in the gate), and at each the damping torque is the implicit one,
tau_d = -(I + h D W)^-1 D qd (D = kd + joint damping, W the joint block of the inverse of PyBullet's own
floating-base mass matrix, computed once per physics_dt): for a free-floating robot that is exactly
MuJoCo's (M + h D)^-1 velocity update, and it is stable at any step. The motors' armature is NOT
added to the links' inertia: as rigid-body inertia it is the wrong physics (it made the legs swing
further and the policy walk 30 % faster than in MuJoCo; docs/gate.md, "Why the engines differed").

The foot contact is soft, matched to MuJoCo's: the feet's stiffness is the one at which the standing
robot sinks as far as MuJoCo's feet do with the same solref (measured in MuJoCo once per value), and
the damping gives the same damping ratio. `write_params` sets every `EnvParams` field PyBullet can
simulate; `UNSUPPORTED_PARAMS` lists the others and why.

PyBullet places a body's base and collision shapes by the link's inertial frame (centre of mass,
principal axes); the methods here take and return the URDF link frame, as MuJoCo does, so that a
base whose centre of mass is off its origin (the Go2's) stands where MuJoCo puts it.
"""

from __future__ import annotations

import math
from dataclasses import fields

import numpy as np
import pybullet as p
from pybullet_utils import bullet_client

from trot.robots import Robot

# Longest PyBullet step. The default, 1 ms, is stable and cheap enough for the emulator's real time; the gate
# steps 0.25 ms (2.6 times the cost): at 1 ms the robot rocks 30-50 % more than in MuJoCo and the engines'
# tracking-error ratio rises by about 0.25 (docs/gate.md, "The engines").
SUBSTEP_S = 0.001
GATE_SUBSTEP_S = 0.00025
GRAVITY = 9.81
# EnvParams fields that are the gate cell's (latencies, encoder offsets), not the engine's.
CELL_FIELDS = ("actuation_latency_s", "observation_latency_s", "joint_zero_offset")


class PyBulletRobot:
    """One robot on a plane in its own PyBullet client, stepped at the contract's physics_dt."""

    # EnvParams fields PyBullet cannot simulate, and why. The gate does not run a perturbation of these here.
    UNSUPPORTED_PARAMS = {
        "armature": "PyBullet has no joint armature (reflected rotor inertia); as link inertia it is the wrong "
        "physics",
        "com_offset": "PyBullet cannot move a link's centre of mass once the URDF is loaded",
    }

    def __init__(self, robot: Robot, substeps: int | None = None, gui: bool = False, substep_s: float = SUBSTEP_S):
        self.robot = robot
        self.substeps = substeps or math.ceil(robot.physics_dt / substep_s - 1e-9)
        self.client = bullet_client.BulletClient(connection_mode=p.GUI if gui else p.DIRECT)
        c = self.client
        c.setGravity(0, 0, -GRAVITY)
        c.setPhysicsEngineParameter(fixedTimeStep=robot.physics_dt / self.substeps, numSubSteps=0)
        plane = c.createCollisionShape(p.GEOM_PLANE)
        self.floor = c.createMultiBody(0, plane)
        self.body = c.loadURDF(str(robot.urdf_path), [0, 0, 0.5], flags=p.URDF_USE_INERTIA_FROM_FILE)
        self._base_inertial = c.getDynamicsInfo(self.body, -1)[3:5]  # (pos, xyzw) in the base link frame
        self._base_link = c.invertTransform(*self._base_inertial)  # link frame in the inertial frame

        joints = [c.getJointInfo(self.body, j) for j in range(c.getNumJoints(self.body))]
        names = {info[1].decode(): j for j, info in enumerate(joints)}
        self.joint_ids = [names[n] for n in robot.joint_names]
        links = {info[12].decode(): j for j, info in enumerate(joints)}
        self.foot_ids = [links[n] for n in robot.foot_links]
        self.foot_offsets = [self._sphere_offset(i) for i in self.foot_ids]
        # The mass matrix has the 6 base coordinates first, then the movable joints in PyBullet's order.
        self._movable = [j for j, info in enumerate(joints) if info[2] != p.JOINT_FIXED]
        self._dof = np.array([6 + self._movable.index(j) for j in self.joint_ids])
        self._links = [-1, *range(len(joints))]
        self._nominal_dynamics = {link: c.getDynamicsInfo(self.body, link)[:3:2] for link in self._links}
        self.last_torque = np.zeros(robot.num_joints)
        from trot.randomization import nominal_params  # torch: only once an engine is built

        self._nominal = _row(nominal_params(robot, 1))
        self._contact = None
        self.write_params(nominal_params(robot, 1))
        self.reset()

    def _sphere_offset(self, link: int) -> np.ndarray:
        """Foot sphere centre in the link frame."""
        c = self.client
        shape = c.getCollisionShapeData(self.body, link)[0]
        # Collision data is relative to the inertial frame: move it into the link frame.
        inertial_pos, inertial_orn = c.getDynamicsInfo(self.body, link)[3:5]
        rot = np.array(c.getMatrixFromQuaternion(inertial_orn)).reshape(3, 3)
        return np.array(inertial_pos) + rot @ np.array(shape[5])

    # -- parameters ------------------------------------------------------------------------

    def write_params(self, params) -> None:
        """One env's `EnvParams` (the first row): masses, friction, contact, motor gains and limits, joint damping
        and dry friction. Refuses a value other than the nominal one in a field PyBullet cannot simulate."""
        v = _row(params)
        for field, why in self.UNSUPPORTED_PARAMS.items():
            if not np.allclose(v[field], self._nominal[field]):
                raise ValueError(f"PyBullet cannot simulate {field} = {v[field].tolist()}: {why}")
        c, base_mass = self.client, self._nominal_dynamics[-1][0] * v["mass_scale"]
        for link, (mass, inertia) in self._nominal_dynamics.items():
            scale = v["mass_scale"] * ((base_mass + v["payload_mass"]) / base_mass if link == -1 else 1.0)
            mass = mass * v["mass_scale"] + (v["payload_mass"] if link == -1 else 0.0)
            inertia = (np.array(inertia) * scale).tolist()
            c.changeDynamics(self.body, link, mass=float(mass), localInertiaDiagonal=inertia)
        # Bullet multiplies the two frictions: the feet at 1.0, the floor at the coefficient.
        c.changeDynamics(self.floor, -1, lateralFriction=float(v["friction"]))
        for link in self.foot_ids:
            c.changeDynamics(self.body, link, lateralFriction=1.0)
        self._set_contact(float(v["contact_timeconst"]), float(v["contact_dampratio"]))
        self.kp, self.kd, self.torque_limit = v["kp"], v["kd"], v["torque_limit"]
        self.joint_damping = v["joint_damping"]
        # Dry friction: a zero-velocity motor whose force is capped at the friction torque (the default
        # velocity motors are replaced by it).
        c.setJointMotorControlArray(
            self.body, self.joint_ids, p.VELOCITY_CONTROL,
            targetVelocities=[0.0] * self.robot.num_joints, forces=v["joint_friction"].tolist(),
        )  # fmt: skip

    def _set_contact(self, timeconst: float, dampratio: float) -> None:
        """Foot stiffness and damping (N/m, N·s/m) matched to MuJoCo's solref (timeconst, dampratio)."""
        if self._contact != (timeconst, dampratio):
            k, damping = matched_contact(self.robot, timeconst, dampratio)
            for link in self.foot_ids:
                self.client.changeDynamics(self.body, link, contactStiffness=k, contactDamping=damping)
            self._contact = (timeconst, dampratio)

    # -- state -----------------------------------------------------------------------------

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

    def foot_penetration(self) -> np.ndarray:
        """Depths (m, positive into the floor) of the feet's contacts now."""
        c = self.client
        points = [cp for link in self.foot_ids for cp in c.getContactPoints(self.body, self.floor, link, -1)]
        return np.array([-cp[8] for cp in points])

    def mass_matrix(self) -> np.ndarray:
        """PyBullet's floating-base mass matrix at the current pose: base angular and linear (body frame), then
        the movable joints in PyBullet's order."""
        q = [s[0] for s in self.client.getJointStates(self.body, self._movable)]
        return np.array(self.client.calculateMassMatrix(self.body, q))

    # -- stepping --------------------------------------------------------------------------

    def step(self, target, kp=None, kd=None, tau_ff=0.0) -> None:
        """Advance one physics_dt with PD toward `target` (policy joint order); kp, kd override the params'."""
        n = self.robot.num_joints
        kp = np.broadcast_to(self.kp if kp is None else kp, n)
        kd = np.broadcast_to(self.kd if kd is None else kd, n)
        h = self.robot.physics_dt / self.substeps
        damping = kd + self.joint_damping  # D, N·m·s/rad
        mobility = np.linalg.inv(self.mass_matrix())[np.ix_(self._dof, self._dof)]  # W, joint block of M^-1
        implicit = np.linalg.inv(np.eye(n) + h * damping[:, None] * mobility)  # (I + h D W)^-1
        motor_share = np.divide(kd, damping, out=np.zeros(n), where=damping > 0)
        target, lim = np.asarray(target, dtype=float), self.torque_limit
        for _ in range(self.substeps):
            q, qd = self.joint_state()
            tau_d = -implicit @ (damping * qd)
            tau = np.clip(kp * (target - q) + motor_share * tau_d + tau_ff, -lim, lim)
            self.last_torque = tau
            joint = (1.0 - motor_share) * tau_d  # the joint's own viscous friction, not the motor's
            forces = (tau + joint).tolist()
            self.client.setJointMotorControlArray(self.body, self.joint_ids, p.TORQUE_CONTROL, forces=forces)
            self.client.stepSimulation()

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


def _row(params) -> dict[str, np.ndarray]:
    """The first env's values of every engine field of `EnvParams`, as numpy."""
    return {f.name: getattr(params, f.name)[0].cpu().numpy() for f in fields(params) if f.name not in CELL_FIELDS}


def matched_contact(robot: Robot, timeconst: float, dampratio: float) -> tuple[float, float]:
    """PyBullet foot stiffness (N/m) and damping (N·s/m) equivalent to MuJoCo's solref (timeconst, dampratio).

    Stiffness: the standing robot's weight share per foot over the depth MuJoCo's feet sink to with that
    solref (Bullet's soft contact is a linear spring, so its feet then sink as far). Damping: the same
    damping ratio for that share of the mass, c = 2 ζ sqrt(k m)."""
    from trot.hil.mujoco_robot import standing_penetration

    mass = robot.total_mass / len(robot.foot_links)
    k = mass * GRAVITY / standing_penetration(str(robot.folder), timeconst, dampratio)
    return k, 2.0 * dampratio * math.sqrt(k * mass)
