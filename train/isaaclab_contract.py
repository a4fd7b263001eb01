"""The checks of an Isaac Lab run against the robot contract: control period, default pose, actuators, action.

Each refuses, naming file, key, value and what was expected, what the robot would run differently from how the
policy was trained (docs/isaaclab.md, "What is refused").
"""

from __future__ import annotations

import math
import re

from trot.robots import Robot
from trot.train.isaaclab_params import Params, match_names, match_values


def check_timing(p: Params, robot: Robot) -> tuple[float, float, int]:
    """(control_dt, physics_dt, decimation) of the run, whose control period must be the contract's."""
    physics_dt, decimation = p.env_number("sim.dt"), int(p.env_number("decimation"))
    control_dt = physics_dt * decimation
    if not math.isclose(control_dt, robot.control_dt, rel_tol=1e-9):
        raise p.error(
            "env",
            "sim.dt * decimation",
            f"{physics_dt} * {decimation} = {control_dt:g} s",
            f"{robot.control_dt} s, the control period in robots/{robot.name}/robot.toml",
        )
    return control_dt, physics_dt, decimation


def check_defaults(p: Params, asset: str, joints: list[str], funcs: list[str], robot: Robot) -> dict[str, float]:
    """Isaac Lab's default pose (what joint_pos_rel subtracts) must be the contract's; default velocities zero."""
    init = p.env_get(f"scene.{asset}.init_state")
    where = f"scene.{asset}.init_state"
    pos = match_values(init.get("joint_pos", {".*": 0.0}), joints, p.env_file, f"{where}.joint_pos")
    contract = dict(zip(robot.joint_names, robot.default_joint_pos))
    for name in robot.joint_names:
        if not math.isclose(pos[name], contract[name], abs_tol=1e-6):
            raise p.error(
                "env",
                f"{where}.joint_pos[{name}]",
                pos[name],
                f"{contract[name]}, the default pose in robots/{robot.name}/robot.toml",
            )
    if any(f.endswith(":joint_vel_rel") for f in funcs):
        vel = match_values(init.get("joint_vel", {".*": 0.0}), joints, p.env_file, f"{where}.joint_vel")
        moving = {n: v for n, v in vel.items() if v != 0.0}
        if moving:
            raise p.error("env", f"{where}.joint_vel", moving, "0 for every joint (joint_vel_rel subtracts it)")
    return pos


def check_action(p: Params, key: str, cfg: dict, action_joints: list[str], default_pos: dict, robot: Robot) -> None:
    """Scale, offset and clips of the action term and the runner, against the contract's."""
    where = f"actions.{key}"
    scales = match_values(cfg.get("scale", 1.0), action_joints, p.env_file, f"{where}.scale")
    if any(not math.isclose(v, robot.action_scale, rel_tol=1e-9) for v in scales.values()):
        raise p.error(
            "env",
            f"{where}.scale",
            cfg.get("scale", 1.0),
            f"{robot.action_scale} for every joint, action_scale in robots/{robot.name}/robot.toml",
        )
    if not cfg.get("use_default_offset", True):
        offsets = match_values(cfg.get("offset", 0.0), action_joints, p.env_file, f"{where}.offset")
        wrong = {n: v for n, v in offsets.items() if not math.isclose(v, default_pos[n], abs_tol=1e-6)}
        if wrong:
            raise p.error("env", f"{where}.offset", wrong, "the default pose (or use_default_offset: true)")
    if cfg.get("clip") is not None:
        _check_target_clip(p, where, cfg["clip"], action_joints, robot)
    clip = p.agent.get("clip_actions")
    if not isinstance(clip, (int, float)) or not math.isclose(clip, robot.action_clip, rel_tol=1e-9):
        raise p.error(
            "agent",
            "clip_actions",
            clip,
            f"{robot.action_clip}, action_clip in robots/{robot.name}/robot.toml (the robot clips the "
            "policy's output there, so training must too)",
        )


def _check_target_clip(p: Params, where: str, clip, action_joints: list[str], robot: Robot) -> None:
    """A clip of the joint target is accepted where trot clamps targets too: at the contract's soft joint limits."""
    soft = dict(zip(robot.joint_names, zip(robot.soft_joint_limits.lower, robot.soft_joint_limits.upper)))
    expected = (
        "None, or each joint's soft limits (URDF limits less hardware.soft_limit_margin in "
        f"robots/{robot.name}/robot.toml), where trot's training and the robot clamp targets"
    )
    if not isinstance(clip, dict):
        raise p.error("env", f"{where}.clip", clip, expected)
    for name in action_joints:
        hits = [k for k in clip if re.fullmatch(k, name)]
        bounds = clip[hits[0]] if len(hits) == 1 else None
        ok = isinstance(bounds, (list, tuple)) and len(bounds) == 2
        if not ok or not all(math.isclose(b, s, abs_tol=1e-6) for b, s in zip(bounds, soft[name])):
            raise p.error("env", f"{where}.clip[{name}]", bounds, expected)

# Isaac Lab's actuator fields for the effort limit, newest name first (3.0 keeps effort_limit_sim as an alias).
EFFORT_LIMIT_KEYS = ("actuator_effort_limit", "joint_effort_limit", "effort_limit_sim", "effort_limit")


def check_actuators(p: Params, asset: str, joints: list[str], robot: Robot) -> None:
    """Every joint in one actuator group whose gains and effort limit are the contract's kp, kd and torque_limit."""
    groups = p.env_get(f"scene.{asset}.actuators")
    owner = {}
    for key, cfg in (groups or {}).items():
        where = f"scene.{asset}.actuators.{key}"
        if not isinstance(cfg, dict):
            continue
        names = match_names(cfg.get("joint_names_expr", []), joints, False, p.env_file, f"{where}.joint_names_expr")
        for name in names:
            owner.setdefault(name, key)
        expected = {"stiffness": (robot.kp, "kp"), "damping": (robot.kd, "kd")}
        limit_key = next((k for k in EFFORT_LIMIT_KEYS if cfg.get(k) is not None), None)
        if limit_key is not None:
            expected[limit_key] = (robot.torque_limit, "torque_limit")
        for field, (value, contract_field) in expected.items():
            got = match_values(cfg.get(field), names, p.env_file, f"{where}.{field}")
            wrong = {n: v for n, v in got.items() if not math.isclose(v, value, rel_tol=1e-9)}
            if wrong:
                raise p.error(
                    "env",
                    f"{where}.{field}",
                    cfg.get(field),
                    f"{value} for every joint, {contract_field} in robots/{robot.name}/robot.toml (the robot runs the "
                    "policy with the contract's motor model)",
                )
    missing = [n for n in joints if n not in owner]
    if missing:
        raise p.error("env", f"scene.{asset}.actuators", sorted(groups or {}), f"actuator groups covering {missing}")
