"""The robot's left-right mirror image, found in its URDF, for PPO's symmetry augmentation.

A quadruped and its flat-ground task look the same in a mirror (y -> -y): a state's mirror image is a state
the robot can be in, and the right action there is the mirror image of the action here. rsl-rl's Symmetry
extension (Mittal et al., "Symmetry Considerations for Learning Task Symmetric Robot Policies", ICRA 2024)
trains on both (`--set ppo.symmetry_augmentation=true`), pulling the policy toward its own mirror image, which
has no reason to turn while it is asked to walk straight (what it did for the Pupper: README.md, "Measured").

Nothing here is per robot: the joint pairs and signs come from the compiled MuJoCo model, where each joint's
anchor and axis are checked against its partner's mirror image, and the result is checked on the feet at a
random pose. A robot that is not mirror-symmetric is refused by name.
"""

from __future__ import annotations

from dataclasses import dataclass

import mujoco
import numpy as np

from trot.robots import ContractError, Robot
from trot.sim.mujoco_model import build_model, index_model

REFLECT = np.diag([1.0, -1.0, 1.0])
TOLERANCE_M = 1e-4  # anchors, feet: positions that should mirror may differ by this much (URDF rounding)


@dataclass(frozen=True)
class Mirror:
    """Joint i's mirror image is joint `joint_perm[i]` with angle `joint_sign[i]` times joint i's; the gait clock's
    mirror image is half a cycle later when `phase_shift` (the mirror swaps a trot's diagonal pairs)."""

    joint_perm: tuple[int, ...]
    joint_sign: tuple[float, ...]
    phase_shift: bool


def robot_mirror(robot: Robot, gait_pairs=None) -> Mirror:
    """The mirror of `robot` (and of its gait's foot pairs, indices into foot_links); ContractError if it has none."""
    model = build_model(robot)
    data = mujoco.MjData(model)
    idx = index_model(model, robot)
    data.qpos[idx.root_qpos : idx.root_qpos + 7] = [0, 0, 0, 1, 0, 0, 0]
    mujoco.mj_kinematics(model, data)
    joints = [model.joint(n).id for n in robot.joint_names]
    anchor, axis = data.xanchor[joints] @ REFLECT, data.xaxis[joints] @ REFLECT
    perm, sign = [], []
    for i, name in enumerate(robot.joint_names):
        # Joints can share an anchor (the Pupper's hip flexion and abduction): the partner is the one whose axis is
        # parallel to the image's too.
        parallel = np.abs(data.xaxis[joints] @ axis[i]) > 1 - 1e-3
        j = _partner(anchor[i], np.where(parallel[:, None], data.xanchor[joints], np.inf))
        # A reflection turns a rotation by t about an axis into one by -t about the axis's image.
        s = 0.0 if j is None else -float(np.dot(data.xaxis[joints[j]], axis[i]))
        if abs(abs(s) - 1.0) > 1e-3:
            raise ContractError(robot.urdf_path, f"joint {name}", "no mirror image",
                                "a joint with the mirrored anchor and axis (left-right symmetric legs)")  # fmt: skip
        perm.append(j)
        sign.append(float(np.sign(s)))
    default = np.array(robot.default_joint_pos)
    mirrored_default = np.empty_like(default)
    mirrored_default[perm] = default * sign
    if not np.allclose(mirrored_default, default, atol=1e-6):
        image = mirrored_default.round(4).tolist()
        raise ContractError(robot.folder / "robot.toml", "default_joint_pos", robot.default_joint_pos,
                            f"a left-right symmetric pose (its mirror image is {image})")  # fmt: skip
    feet = _foot_mirror(model, data, idx, robot, perm, sign)
    return Mirror(tuple(perm), tuple(sign), _phase_shift(gait_pairs, feet, robot))


def _partner(point: np.ndarray, anchors: np.ndarray) -> int | None:
    close = np.flatnonzero(np.linalg.norm(anchors - point, axis=1) < TOLERANCE_M)
    return int(close[0]) if len(close) == 1 else None


def _foot_mirror(model, data, idx, robot: Robot, perm, sign) -> list[int]:
    """Which foot is each foot's mirror image; checks that the joint map mirrors the feet at a random pose."""
    q = np.array(robot.default_joint_pos) + np.random.default_rng(0).uniform(-0.3, 0.3, robot.num_joints)
    data.qpos[idx.joint_qpos] = q
    mujoco.mj_kinematics(model, data)
    feet = data.site_xpos[idx.foot_site].copy()
    mirrored = np.empty_like(q)
    mirrored[list(perm)] = q * sign
    data.qpos[idx.joint_qpos] = mirrored
    mujoco.mj_kinematics(model, data)
    images = data.site_xpos[idx.foot_site] @ REFLECT
    pairs = [_partner(foot, images) for foot in feet]
    if None in pairs:
        raise ContractError(robot.urdf_path, "links", "legs that do not mirror each other",
                            "left and right legs that are mirror images in every pose")  # fmt: skip
    return pairs


def _phase_shift(gait_pairs, feet: list[int], robot: Robot) -> bool:
    if not gait_pairs:
        return False
    first, second = set(gait_pairs[0]), set(gait_pairs[1])
    image = {feet[f] for f in first}
    if image not in (first, second):
        raise ContractError(robot.folder / "task.toml", "gait.pairs", [list(p) for p in gait_pairs],
                            "foot pairs whose mirror image is the same pair or the other one")  # fmt: skip
    return image == second
