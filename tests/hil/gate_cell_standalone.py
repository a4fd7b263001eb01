"""Reproduce one nominal gate cell from the bundle and the URDF alone: no trot import.

    python tests/hil/gate_cell_standalone.py BUNDLE URDF --command 0.2 0 0 --seconds 5 \
        --contact-stiffness 11023 --contact-damping 187

Everything the policy needs (joint names and order, default pose, gains, torque limit, rates,
observation terms, scales, history, clip and gait clock, action scale and clip) is read from the
bundle's `trot` metadata through onnxruntime; geometry, inertia, joint limits, damping and dry friction
come from the URDF. The one physics figure neither holds is the feet's contact compliance, which the
gate matches to MuJoCo's (`trot.hil.pybullet_model.matched_contact`): pass it with --contact-stiffness
and --contact-damping. The physics is the gate's PyBullet engine (0.25 ms substeps, the PD's damping
implicit through PyBullet's own mass matrix, no armature); the observation mapping is re-implemented
here from DESIGN contract 3. Prints the cell's metrics as JSON, measured as the gate measures them.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import sys

import numpy as np
import onnxruntime as ort
import pybullet as p
from pybullet_utils import bullet_client

MAX_TILT_DEG = 60.0  # fall: as the gate's GateThresholds
MIN_HEIGHT_RATIO = 0.5
SETTLE_S = 2.0
CONTACT_FORCE_N = 1.0


@contextlib.contextmanager
def quiet_stdout():
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 1)
            yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)


def read_bundle(path: str) -> tuple[ort.InferenceSession, dict]:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = opts.inter_op_num_threads = 1
    session = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
    return session, json.loads(session.get_modelmeta().custom_metadata_map["trot"])


def rotation(q_wxyz) -> np.ndarray:
    w, x, y, z = q_wxyz
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
            [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
            [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
        ]
    )


def rotate_inverse(q_wxyz, v) -> np.ndarray:
    """World vector into the body frame (v - 2w u×v + 2 u×(u×v))."""
    w, u = q_wxyz[0], np.asarray(q_wxyz[1:])
    uv = np.cross(u, v)
    return v - 2.0 * w * uv + 2.0 * np.cross(u, uv)


class Robot:
    """The URDF in PyBullet with the contract's motor model, stepped at physics_dt."""

    def __init__(self, urdf: str, meta: dict, stiffness: float, damping: float, substep_s: float = 0.00025):
        self.meta = meta
        self.substeps = math.ceil(meta["physics_dt"] / substep_s - 1e-9)
        with quiet_stdout():  # PyBullet prints its argv on connect; stdout is for the JSON
            c = self.c = bullet_client.BulletClient(connection_mode=p.DIRECT)
        c.setGravity(0, 0, -9.81)
        c.setPhysicsEngineParameter(fixedTimeStep=meta["physics_dt"] / self.substeps, numSubSteps=0)
        self.floor = c.createMultiBody(0, c.createCollisionShape(p.GEOM_PLANE))
        self.body = c.loadURDF(urdf, [0, 0, 0.5], flags=p.URDF_USE_INERTIA_FROM_FILE)
        info = {
            c.getJointInfo(self.body, j)[1].decode(): c.getJointInfo(self.body, j)
            for j in range(c.getNumJoints(self.body))
        }
        joints = [info[n] for n in meta["joint_names"]]
        self.ids = [j[0] for j in joints]
        self.damping = np.array([j[6] for j in joints])
        self.lower, self.upper = np.array([j[8] for j in joints]), np.array([j[9] for j in joints])
        movable = [j for j in range(c.getNumJoints(self.body)) if c.getJointInfo(self.body, j)[2] != p.JOINT_FIXED]
        self.movable, self.dof = movable, [6 + movable.index(j) for j in self.ids]  # mass matrix: base first
        # Feet: the links whose collision shape is a sphere.
        self.feet, self.foot_offsets, self.foot_radius = [], [], 0.0
        for j in range(c.getNumJoints(self.body)):
            for shape in c.getCollisionShapeData(self.body, j):
                if shape[2] == p.GEOM_SPHERE:
                    self.feet.append(j)
                    # Collision data is in the link's inertial frame, which PyBullet turns to the principal
                    # axes of a full inertia tensor: back into the link frame.
                    inertial_pos, inertial_orn = c.getDynamicsInfo(self.body, j)[3:5]
                    turn = np.array(c.getMatrixFromQuaternion(inertial_orn)).reshape(3, 3)
                    self.foot_offsets.append(np.array(inertial_pos) + turn @ np.array(shape[5]))
                    self.foot_radius = shape[3][0]
        c.changeDynamics(self.floor, -1, lateralFriction=1.0)
        for j in self.feet:
            c.changeDynamics(self.body, j, lateralFriction=1.0, contactStiffness=stiffness, contactDamping=damping)
        # Dry friction: a zero-velocity motor with the URDF's friction as its force.
        c.setJointMotorControlArray(
            self.body,
            self.ids,
            p.VELOCITY_CONTROL,
            targetVelocities=[0.0] * len(self.ids),
            forces=[j[7] for j in joints],
        )
        self.default = np.array(meta["default_joint_pos"], dtype=float)
        for j, q in zip(self.ids, self.default):
            c.resetJointState(self.body, j, q, 0.0)
        # PyBullet's base pose is its inertial frame's, turned to the principal axes of a full inertia tensor: the
        # base link frame (the IMU's, the robot's) is that pose times the inverse of the link's inertial transform.
        self.base_inertial = c.getDynamicsInfo(self.body, -1)[3:5]
        self.base_link = c.invertTransform(*self.base_inertial)
        self.set_base_link([0, 0, 0])
        lowest = min(f[2] for f in self.foot_positions())
        self.set_base_link([0, 0, self.foot_radius - lowest])
        c.resetBaseVelocity(self.body, [0, 0, 0], [0, 0, 0])

    def foot_positions(self) -> list[np.ndarray]:
        out = []
        for link, offset in zip(self.feet, self.foot_offsets):
            s = self.c.getLinkState(self.body, link, computeForwardKinematics=True)
            out.append(np.array(s[4]) + np.array(self.c.getMatrixFromQuaternion(s[5])).reshape(3, 3) @ offset)
        return out

    def joints(self) -> tuple[np.ndarray, np.ndarray]:
        states = self.c.getJointStates(self.body, self.ids)
        return np.array([s[0] for s in states]), np.array([s[1] for s in states])

    def set_base_link(self, pos) -> None:
        """Put the base link frame upright at `pos`."""
        inertial = self.c.multiplyTransforms(pos, [0, 0, 0, 1], *self.base_inertial)
        self.c.resetBasePositionAndOrientation(self.body, *inertial)

    def pose(self) -> tuple[np.ndarray, np.ndarray]:
        """The base link frame's position and orientation (w, x, y, z)."""
        pos, q = self.c.multiplyTransforms(*self.c.getBasePositionAndOrientation(self.body), *self.base_link)
        return np.array(pos), np.array([q[3], q[0], q[1], q[2]])

    def velocity(self) -> tuple[np.ndarray, np.ndarray]:
        """The base link origin's linear velocity (not the centre of mass's) and the angular one, world frame."""
        v, w = (np.array(x) for x in self.c.getBaseVelocity(self.body))
        com = np.array(self.c.getBasePositionAndOrientation(self.body)[0])
        return v + np.cross(w, self.pose()[0] - com), w

    def step(self, target) -> np.ndarray:
        """One physics_dt of PD toward `target`, its damping implicit: tau_d = -(I + h D W)^-1 D qd with D = kd plus
        the joint damping and W the joint block of the inverse mass matrix; returns the last motor torque."""
        m, lim = self.meta, np.asarray(self.meta["torque_limit"])  # per joint
        h, n = m["physics_dt"] / self.substeps, len(self.ids)
        q_all = [s[0] for s in self.c.getJointStates(self.body, self.movable)]
        mass = np.array(self.c.calculateMassMatrix(self.body, q_all))
        w = np.linalg.inv(mass)[np.ix_(self.dof, self.dof)]
        d = m["kd"] + self.damping
        implicit = np.linalg.inv(np.eye(n) + h * d[:, None] * w)
        for _ in range(self.substeps):
            q, qd = self.joints()
            tau_d = -implicit @ (d * qd)
            tau = np.clip(m["kp"] * (target - q) + m["kd"] / d * tau_d, -lim, lim)
            forces = tau + self.damping / d * tau_d
            self.c.setJointMotorControlArray(self.body, self.ids, p.TORQUE_CONTROL, forces=forces.tolist())
            self.c.stepSimulation()
        return tau

    def base_contact(self) -> bool:
        return len(self.c.getContactPoints(self.body, self.floor, -1, -1)) > 0


class Policy:
    """Observation history, last action and the ONNX graph, as DESIGN contract 3 describes them."""

    def __init__(self, session: ort.InferenceSession, meta: dict):
        self.session, self.meta = session, meta
        self.obs = meta["observation"]
        self.default = np.array(meta["default_joint_pos"], dtype=float)
        self.last_action = np.zeros(len(self.default))
        self.history = None
        self.steps = 0  # policy steps since the start: the gait clock

    def gait_phase(self) -> np.ndarray:
        """sin, cos of 2π·frac(steps · control_dt · gait_frequency_hz)."""
        cycles = np.array([self.steps]) * (self.meta["control_dt"] * self.obs.get("gait_frequency_hz", 0.0))
        angle = 2.0 * 3.141592653589793 * (cycles % 1.0)
        return np.concatenate([np.sin(angle), np.cos(angle)])

    def step(self, quat, gyro, q, qd, command) -> np.ndarray:
        terms = {
            "base_ang_vel": gyro,
            "projected_gravity": rotate_inverse(quat, np.array([0.0, 0.0, -1.0])),
            "velocity_command": np.asarray(command, dtype=float),
            "joint_pos_rel": q - self.default,
            "joint_vel": qd,
            "last_action": self.last_action,
            "gait_phase": self.gait_phase(),
        }
        self.steps += 1
        frame = np.concatenate([terms[t["name"]] * t["scale"] for t in self.obs["terms"]])
        if self.history is None:
            self.history = np.tile(frame, self.obs["history"])
        else:  # newest first
            self.history = np.concatenate([frame, self.history[: -len(frame)]])
        clip = self.obs.get("clip", 100.0)
        x = np.clip(self.history, -clip, clip).astype(np.float32)[None]
        action = self.session.run(["actions"], {"obs": x})[0][0].astype(np.float64)
        action = np.clip(action, -self.meta["action_clip"], self.meta["action_clip"])
        self.last_action = action
        return self.default + self.meta["action_scale"] * action


def run(bundle: str, urdf: str, command, seconds: float, stiffness: float, damping: float) -> dict:
    session, meta = read_bundle(bundle)
    robot, policy = Robot(urdf, meta, stiffness, damping), Policy(session, meta)
    decimation = round(meta["control_dt"] / meta["physics_dt"])
    standing = robot.pose()[0][2]
    settle = min(SETTLE_S, 0.5 * seconds)
    lin, yaw, peak, margin, fall_time = [], [], 0.0, math.inf, None
    for k in range(round(seconds / meta["control_dt"])):
        t = (k + 1) * meta["control_dt"]
        pos, quat = robot.pose()
        gyro = rotation(quat).T @ robot.velocity()[1]
        q, qd = robot.joints()
        target = np.clip(policy.step(quat, gyro, q, qd, command), robot.lower, robot.upper)
        contact = False
        for _ in range(decimation):
            peak = max(peak, float(np.abs(robot.step(target)).max()))
            contact |= robot.base_contact()
        pos, quat = robot.pose()
        v, w = robot.velocity()
        rot = rotation(quat)
        q, _ = robot.joints()
        margin = min(margin, float(np.min(np.minimum(q - robot.lower, robot.upper - q))))
        if t > settle:
            lin.append(np.linalg.norm((rot.T @ v)[:2] - np.asarray(command[:2])))
            yaw.append(abs((rot.T @ w)[2] - command[2]))
        tilt = math.degrees(math.acos(np.clip(rot[2, 2], -1.0, 1.0)))
        if tilt > MAX_TILT_DEG or contact or pos[2] < MIN_HEIGHT_RATIO * standing:
            fall_time = t
            break
    robot.c.disconnect()
    return {
        "command": list(command),
        "seconds": seconds,
        "fell": fall_time is not None,
        "fall_time_s": fall_time,
        "lin_err": float(np.mean(lin)) if lin else None,
        "yaw_err": float(np.mean(yaw)) if yaw else None,
        "peak_torque": peak,
        "joint_margin": margin,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bundle")
    ap.add_argument("urdf")
    ap.add_argument("--command", type=float, nargs=3, default=[0.0, 0.0, 0.0], metavar=("VX", "VY", "YAW_RATE"))
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--contact-stiffness", type=float, required=True, help="each foot's contact stiffness, N/m")
    ap.add_argument("--contact-damping", type=float, required=True, help="each foot's contact damping, N·s/m")
    args = ap.parse_args()
    print(json.dumps(run(args.bundle, args.urdf, args.command, args.seconds, args.contact_stiffness,
                         args.contact_damping)))  # fmt: skip


if __name__ == "__main__":
    main()
