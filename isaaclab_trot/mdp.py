"""The Isaac Lab terms trot's task needs and Isaac Lab lacks: the gait clock, trot's gait rewards, and trot's
randomization terms where Isaac Lab's own events would draw them differently.

Each is written to mean what trot's term of the same name means (sim/rewards.py, randomization/terms.py); the params
come from `trot.isaaclab.task`. Isaac Lab 3.0's data are warp arrays read through `.torch`. Feet are the foot links'
collision spheres (`foot_offset`: the sphere's centre in the link frame), as trot measures them.
"""

from __future__ import annotations

import math

import torch
from isaaclab.managers import EventTermCfg, ManagerTermBase, SceneEntityCfg
from isaaclab.utils.math import quat_apply

# -- observations ----------------------------------------------------------------------------------------------------


def gait_phase(env, frequency_hz: float) -> torch.Tensor:
    """(N, 2) sin, cos of the gait clock 2π·frac(steps · control_dt · f), steps counted from the episode's start."""
    angle = 2.0 * math.pi * torch.remainder(env.episode_length_buf * (env.step_dt * frequency_hz), 1.0)
    return torch.stack([torch.sin(angle), torch.cos(angle)], dim=1)


# -- rewards ---------------------------------------------------------------------------------------------------------


def _moving(env, command_name: str, min_speed: float) -> torch.Tensor:
    """(N,) True where the command asks for motion: |v_xy| + |yaw rate| above min_speed (trot's rule)."""
    command = env.command_manager.get_command(command_name)
    return command[:, :2].norm(dim=1) + command[:, 2].abs() > min_speed


def _contact(env, sensor_cfg: SceneEntityCfg) -> torch.Tensor:
    """(N, feet) True where a foot pushes on the floor harder than the sensor's force threshold."""
    sensor = env.scene.sensors[sensor_cfg.name]
    forces = sensor.data.net_forces_w.torch[:, sensor_cfg.body_ids]
    return forces.norm(dim=-1) > sensor.cfg.force_threshold


def _desired_stance(env, frequency_hz: float, pairs, moving: torch.Tensor) -> torch.Tensor:
    """(N, feet): pairs[0] stands in the first half of each clock cycle, pairs[1] in the second; all stand when idle."""
    clock = torch.remainder(env.episode_length_buf * (env.step_dt * frequency_hz), 1.0)
    stance_a = (clock < 0.5)[:, None]
    feet = len(pairs[0]) + len(pairs[1])
    first = torch.tensor([i in pairs[0] for i in range(feet)], device=env.device)
    return torch.where(first, stance_a, ~stance_a) | ~moving[:, None]


def _feet(env, asset_cfg: SceneEntityCfg, foot_offset) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, feet, 3) world position and velocity of the foot spheres' centres."""
    data = env.scene[asset_cfg.name].data
    ids = asset_cfg.body_ids
    quat, pos = data.body_link_quat_w.torch[:, ids], data.body_link_pos_w.torch[:, ids]
    offset = quat_apply(quat, torch.tensor(foot_offset, device=env.device).expand(pos.shape))
    spin = torch.cross(data.body_link_ang_vel_w.torch[:, ids], offset, dim=-1)  # ω × r
    return pos + offset, data.body_link_lin_vel_w.torch[:, ids] + spin


def feet_air_time(env, target_s: float, command_name: str, min_speed: float, sensor_cfg: SceneEntityCfg):
    """Air time beyond `target_s` of each foot, paid at touchdown, only when asked to move."""
    sensor = env.scene.sensors[sensor_cfg.name]
    first_contact = sensor.compute_first_contact(env.step_dt).torch[:, sensor_cfg.body_ids]
    air_time = sensor.data.last_air_time.torch[:, sensor_cfg.body_ids]
    return ((air_time - target_s) * first_contact).sum(dim=1) * _moving(env, command_name, min_speed)


def gait_contact(env, command_name: str, min_speed: float, frequency_hz: float, pairs, sensor_cfg: SceneEntityCfg):
    """Share of feet whose contact matches the gait clock (all feet down when standing)."""
    desired = _desired_stance(env, frequency_hz, pairs, _moving(env, command_name, min_speed))
    return (_contact(env, sensor_cfg) == desired).float().mean(dim=1)


def swing_height(
    env,
    target_m: float,
    command_name: str,
    min_speed: float,
    frequency_hz: float,
    pairs,
    asset_cfg: SceneEntityCfg,
    foot_radius: float,
    foot_offset,
):
    """Clearance of the feet the clock puts in swing, up to `target_m`, averaged over those feet (flat floor at 0)."""
    position, _ = _feet(env, asset_cfg, foot_offset)
    swing = ~_desired_stance(env, frequency_hz, pairs, _moving(env, command_name, min_speed))
    lifted = (position[..., 2] - foot_radius).clamp(0.0, target_m) / target_m * swing
    return lifted.sum(dim=1) / swing.sum(dim=1).clamp(min=1)


def joint_limits(env, asset_cfg: SceneEntityCfg, lower, upper) -> torch.Tensor:
    """How far joints are beyond trot's soft limits (rad), summed."""
    q = env.scene[asset_cfg.name].data.joint_pos.torch[:, asset_cfg.joint_ids]
    lo, hi = (torch.tensor(v, device=env.device) for v in (lower, upper))
    return ((q - hi).clamp(min=0.0) + (lo - q).clamp(min=0.0)).sum(dim=1)


def stand_still(env, command_name: str, min_speed: float, asset_cfg: SceneEntityCfg, default_joint_pos):
    """Σ|q - default| while the command asks for no motion (the contract's default pose)."""
    q = env.scene[asset_cfg.name].data.joint_pos.torch[:, asset_cfg.joint_ids]
    deviation = (q - torch.tensor(default_joint_pos, device=env.device)).abs().sum(dim=1)
    return deviation * ~_moving(env, command_name, min_speed)


def foot_slip(env, sensor_cfg: SceneEntityCfg, asset_cfg: SceneEntityCfg, foot_offset) -> torch.Tensor:
    """Σ over feet in contact of their horizontal speed squared."""
    _, velocity = _feet(env, asset_cfg, foot_offset)
    return (velocity[..., :2].square().sum(dim=-1) * _contact(env, sensor_cfg)).sum(dim=1)


# -- events ----------------------------------------------------------------------------------------------------------


def _ids(env, env_ids) -> torch.Tensor:
    return torch.arange(env.num_envs, device=env.device) if env_ids is None else env_ids


def _uniform(n: int, bounds, device, shape=()) -> torch.Tensor:
    lo, hi = bounds
    return lo + (hi - lo) * torch.rand((n, *shape), device=device)


class add_payload_mass(ManagerTermBase):
    """trot's payload_mass (kg): a uniform mass added to the base on top of its mass after the startup events (so
    with link_mass_scale), inertia scaled with it."""

    def __init__(self, cfg: EventTermCfg, env):
        super().__init__(cfg, env)
        self.asset = env.scene[cfg.params["asset_cfg"].name]
        self.base_mass = self.base_inertia = None

    def __call__(self, env, env_ids, asset_cfg: SceneEntityCfg, mass_range):
        if self.base_mass is None:  # first reset: after the startup events
            self.base_mass = self.asset.data.body_mass.torch.clone()
            self.base_inertia = self.asset.data.body_inertia.torch.clone()
        ids, bodies = _ids(env, env_ids), asset_cfg.body_ids
        mass = self.base_mass[ids][:, bodies] + _uniform(len(ids), mass_range, env.device, (1,))
        ratio = mass / self.base_mass[ids][:, bodies]
        self.asset.set_masses_index(masses=mass, body_ids=bodies, env_ids=ids)
        inertia = self.base_inertia[ids][:, bodies] * ratio[..., None]
        self.asset.set_inertias_index(inertias=inertia, body_ids=bodies, env_ids=ids)


class randomize_actuation(ManagerTermBase):
    """trot's kp_scale, kd_scale and motor_strength drawn together, one value each per env: Kp = kp·kp_scale·strength,
    Kd = kd·kd_scale·strength, torque limit = limit·strength (randomization/terms.py composes them the same way).
    Acts on Isaac Lab's explicit actuator models (the task sets sim.use_newton_actuators = False)."""

    def __init__(self, cfg: EventTermCfg, env):
        super().__init__(cfg, env)
        asset = env.scene[cfg.params["asset_cfg"].name]
        self.actuators = list(asset.actuators.values())
        implicit = [a for a in self.actuators if getattr(a, "is_implicit_model", False) or not hasattr(a, "stiffness")]
        if implicit:
            raise ValueError(
                f"randomize_actuation: actuator groups {implicit} are not Isaac Lab explicit PD models; trot's task "
                "uses DelayedPDActuatorCfg with sim.use_newton_actuators = False"
            )
        self.nominal = [(a.stiffness.clone(), a.damping.clone(), a.actuator_effort_limit.clone())
                        for a in self.actuators]  # fmt: skip

    def __call__(self, env, env_ids, asset_cfg, kp_scale_range, kd_scale_range, motor_strength_range):
        ids = _ids(env, env_ids)
        strength = _uniform(len(ids), motor_strength_range, env.device, (1,))
        kp = _uniform(len(ids), kp_scale_range, env.device, (1,)) * strength
        kd = _uniform(len(ids), kd_scale_range, env.device, (1,)) * strength
        for actuator, (kp0, kd0, limit0) in zip(self.actuators, self.nominal):
            actuator.stiffness[ids] = kp0[ids] * kp
            actuator.damping[ids] = kd0[ids] * kd
            actuator.actuator_effort_limit[ids] = limit0[ids] * strength


class randomize_joint_zero_offset(ManagerTermBase):
    """trot's joint_zero_offset (rad, per joint): the policy sees q + offset and the motor holds target - offset.

    Both follow from moving the default pose to default - offset: joint_pos_rel reads q - (default - offset), and the
    action term's offset (its private `_offset`, copied from the default pose when it was built) is moved with it.
    """

    def __init__(self, cfg: EventTermCfg, env):
        super().__init__(cfg, env)
        self.asset = env.scene[cfg.params["asset_cfg"].name]
        self.action = self.nominal = None  # at the first draw: the event manager is built before the action manager

    def __call__(self, env, env_ids, asset_cfg: SceneEntityCfg, offset_range, action_name: str):
        default = self.asset.data.default_joint_pos.torch
        if self.action is None:
            self.action, self.nominal = env.action_manager.get_term(action_name), default.clone()
        ids, joints = _ids(env, env_ids), asset_cfg.joint_ids
        rows = ids[:, None] if not isinstance(joints, slice) else ids
        offset = _uniform(len(ids), offset_range, env.device, (default[rows, joints].shape[-1],))
        default[rows, joints] = self.nominal[rows, joints] - offset
        self.action._offset[ids] = default[ids][:, self.action._joint_ids]


def push_horizontal(env, env_ids, asset_cfg: SceneEntityCfg, speed_range) -> None:
    """trot's push_velocity (m/s): a horizontal kick of a uniform speed in a uniform direction, added to the base."""
    asset = env.scene[asset_cfg.name]
    ids = _ids(env, env_ids)
    speed = _uniform(len(ids), speed_range, env.device)
    angle = 2.0 * math.pi * torch.rand(len(ids), device=env.device)
    velocity = asset.data.root_vel_w.torch[ids].clone()
    velocity[:, 0] += speed * torch.cos(angle)
    velocity[:, 1] += speed * torch.sin(angle)
    asset.write_root_velocity_to_sim_index(root_velocity=velocity, env_ids=ids)
