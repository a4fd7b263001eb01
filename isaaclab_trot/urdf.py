"""Where the feet are, from the URDF alone: the foot spheres' centres and the standing height at the default pose.

Forward kinematics over the URDF's joint origins and axes (numpy; no physics engine), so the Isaac Lab task needs
neither MuJoCo nor PyBullet to place the robot or its feet.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET

import numpy as np

from trot.robots import ContractError, Robot


def standing_height(robot: Robot) -> float:
    """Base height at which the default pose puts the lowest foot sphere on the floor (URDF forward kinematics)."""
    root = ET.parse(robot.urdf_path).getroot()
    joints = {j.find("child").get("link"): j for j in root.iter("joint")}
    default = dict(zip(robot.joint_names, robot.default_joint_pos))
    lowest = math.inf
    for foot, offset in zip(robot.foot_links, foot_sphere_offsets(robot)):
        pose, link = np.eye(4), foot
        while link in joints:  # up to the base: T_base_foot = T_j1 ... T_jn
            joint = joints[link]
            pose = _joint_transform(joint, default.get(joint.get("name"), 0.0)) @ pose
            link = joint.find("parent").get("link")
        lowest = min(lowest, (pose @ np.append(offset, 1.0))[2])
    return float(robot.foot_radius - lowest)


def foot_sphere_offsets(robot: Robot) -> tuple[tuple[float, float, float], ...]:
    """Each foot link's collision sphere centre in the link's frame (where trot measures a foot), from the URDF."""
    root = ET.parse(robot.urdf_path).getroot()
    out = []
    for foot in robot.foot_links:
        collisions = root.find(f"link[@name='{foot}']").iter("collision")
        spheres = [c for c in collisions if c.find("geometry/sphere") is not None]
        if not spheres:
            raise ContractError(robot.urdf_path, f"link[{foot}].collision", None, "a sphere: the foot trot measures")
        out.append(tuple(float(v) for v in _origin(spheres[0])[:3, 3]))
    return tuple(out)


def _origin(element) -> np.ndarray:
    origin = element.find("origin")
    xyz = [float(v) for v in (origin.get("xyz", "0 0 0") if origin is not None else "0 0 0").split()]
    rpy = [float(v) for v in (origin.get("rpy", "0 0 0") if origin is not None else "0 0 0").split()]
    pose = np.eye(4)
    pose[:3, :3] = _rotation([0, 0, 1], rpy[2]) @ _rotation([0, 1, 0], rpy[1]) @ _rotation([1, 0, 0], rpy[0])
    pose[:3, 3] = xyz
    return pose


def _joint_transform(joint, q: float) -> np.ndarray:
    axis = joint.find("axis")
    motion = np.eye(4)
    motion[:3, :3] = _rotation([float(v) for v in (axis.get("xyz") if axis is not None else "1 0 0").split()], q)
    return _origin(joint) @ motion


def _rotation(axis, angle: float) -> np.ndarray:
    """Rodrigues' rotation about a unit axis."""
    k = np.asarray(axis, dtype=float) / np.linalg.norm(axis)
    cross = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + math.sin(angle) * cross + (1 - math.cos(angle)) * cross @ cross
