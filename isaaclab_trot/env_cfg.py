"""trot's walking task as Isaac Lab 3.0 config classes: `trot.isaaclab.task`'s plain data, class by class.

The environment builds on Isaac Lab's velocity task (`LocomotionVelocityRoughEnvCfg`: its scene, lights, terrain
material and physics presets) made flat, and replaces the robot, the observation groups, the action, the command,
the events, rewards and terminations with trot's. Class and field names are those of isaaclab 3.0.0 and
isaaclab_rl 3.0.0 (read from the wheel; docs/isaaclab.md). Needs Isaac Lab: Python 3.12 and `trot[isaaclab]`.
"""

from __future__ import annotations

import importlib

import isaaclab.sim as sim_utils
from isaaclab.actuators import DelayedPDActuatorCfg
from isaaclab.assets import ArticulationCfg
from isaaclab.envs.mdp import JointPositionActionCfg, UniformVelocityCommandCfg
from isaaclab.managers import EventTermCfg, ObservationGroupCfg, ObservationTermCfg, RewardTermCfg, SceneEntityCfg
from isaaclab.managers import TerminationTermCfg as DoneTermCfg
from isaaclab.sensors import ContactSensorCfg
from isaaclab.sim.converters import UrdfConverterCfg
from isaaclab.utils import configclass
from isaaclab.utils.noise import GaussianNoiseCfg
from isaaclab_rl.rsl_rl import RslRlMLPModelCfg, RslRlOnPolicyRunnerCfg, RslRlPpoAlgorithmCfg
from isaaclab_tasks.core.velocity.velocity_env_cfg import LocomotionVelocityRoughEnvCfg

from trot.isaaclab.task import ROBOT, Entity, IsaacLabTask, ObsGroupSpec, TermSpec, cfg_prefix, isaaclab_task


def _func(path: str):
    """'module:name' -> the function or term class."""
    module, name = path.split(":")
    return getattr(importlib.import_module(module), name)


def _params(params: dict) -> dict:
    return {k: _entity(v) if isinstance(v, Entity) else v for k, v in params.items()}


def _entity(e: Entity) -> SceneEntityCfg:
    return SceneEntityCfg(
        e.name,
        joint_names=None if e.joint_names is None else list(e.joint_names),
        body_names=None if e.body_names is None else list(e.body_names),
        preserve_order=e.preserve_order,
    )


def _container(name: str, terms: dict, base: type = object) -> object:
    """An instance of a configclass made on the fly whose fields are `terms`, in order (a manager's term list)."""
    return configclass(type(name, (base,), dict(terms)))()


def articulation_cfg(task: IsaacLabTask) -> ArticulationCfg:
    """The robot from its URDF, with the contract's joint order, default pose and motor model."""
    a, act = task.articulation, task.articulation.actuator
    no_drive = UrdfConverterCfg.JointDriveCfg.PDGainsCfg(stiffness=0.0, damping=0.0)  # the actuator model drives
    return ArticulationCfg(
        prim_path="{ENV_REGEX_NS}/Robot",
        spawn=sim_utils.UrdfFileCfg(
            asset_path=a.urdf_path,
            fix_base=False,
            activate_contact_sensors=True,
            joint_drive=UrdfConverterCfg.JointDriveCfg(gains=no_drive),
        ),
        init_state=ArticulationCfg.InitialStateCfg(
            pos=a.init_pos, joint_pos=dict(a.init_joint_pos), joint_vel={".*": 0.0}
        ),
        soft_joint_pos_limit_factor=1.0,
        joint_ordering=list(a.joint_ordering),
        actuators={
            "legs": DelayedPDActuatorCfg(
                joint_names_expr=list(act.joint_names_expr),
                stiffness=act.stiffness,
                damping=act.damping,
                actuator_effort_limit=act.actuator_effort_limit,
                joint_effort_limit=act.joint_effort_limit,
                actuator_velocity_limit=act.actuator_velocity_limit,
                joint_velocity_limit=act.joint_velocity_limit,
                armature=act.armature,
                friction=act.friction,
                viscous_friction=act.viscous_friction,
                min_delay=act.min_delay,
                max_delay=act.max_delay,
            )
        },
    )


def _obs_group(name: str, group: ObsGroupSpec) -> object:
    terms = {
        t.name: ObservationTermCfg(
            func=_func(t.func),
            params=_params(t.params),
            noise=GaussianNoiseCfg(mean=0.0, std=t.noise_std, operation="add") if t.noise_std else None,
            clip=t.clip,
            scale=t.scale,
            delay_min_lag=t.delay_lag[0],
            delay_max_lag=t.delay_lag[1],
        )
        for t in group.terms
    }
    settings = {
        "concatenate_terms": True,
        "enable_corruption": group.enable_corruption,
        "history_length": group.history_length,
        "history_order": group.history_order,
    }
    return _container(name, {**settings, **terms}, ObservationGroupCfg)


def _terms(name: str, specs: tuple[TermSpec, ...], kind: str) -> object:
    terms = {}
    for s in specs:
        func, params = _func(s.func), _params(s.params)
        if kind == "event":
            terms[s.name] = EventTermCfg(func=func, params=params, mode=s.mode, interval_range_s=s.interval_range_s)
        elif kind == "reward":
            terms[s.name] = RewardTermCfg(func=func, params=params, weight=s.weight)
        else:
            terms[s.name] = DoneTermCfg(func=func, params=params, time_out=s.time_out)
    return _container(name, terms)


def apply_task(cfg: LocomotionVelocityRoughEnvCfg, task: IsaacLabTask) -> None:
    """Make Isaac Lab's velocity task trot's task for `task.robot`, on flat ground."""
    cfg.sim.dt, cfg.decimation, cfg.sim.render_interval = task.physics_dt, task.decimation, task.decimation
    cfg.sim.use_newton_actuators = False  # Isaac Lab's own DelayedPD: a delay drawn per env at reset, as trot's
    cfg.episode_length_s = task.episode_length_s
    scene = cfg.scene
    scene.num_envs, scene.robot = task.num_envs, articulation_cfg(task)
    scene.terrain.terrain_type, scene.terrain.terrain_generator, scene.height_scanner = "plane", None, None
    scene.contact_forces = ContactSensorCfg(
        prim_path="{ENV_REGEX_NS}/Robot/.*",
        history_length=3,
        track_air_time=True,
        force_threshold=task.contact_force_threshold,
        update_period=task.physics_dt,
    )
    groups = {"policy": _obs_group("PolicyCfg", task.policy), "critic": _obs_group("CriticCfg", task.critic)}
    cfg.observations = _container("ObservationsCfg", groups)
    cfg.actions = _container(
        "ActionsCfg",
        {
            "joint_pos": JointPositionActionCfg(
                asset_name=ROBOT,
                joint_names=list(task.action.joint_names),
                preserve_order=True,
                scale=task.action.scale,
                use_default_offset=True,
                clip={k: tuple(v) for k, v in task.action.target_clip.items()},
            )
        },
    )
    c = task.commands
    cfg.commands.base_velocity = UniformVelocityCommandCfg(
        asset_name=ROBOT,
        resampling_time_range=c["resampling_time_range"],
        rel_standing_envs=c["rel_standing_envs"],
        rel_heading_envs=0.0,
        heading_command=c["heading_command"],
        debug_vis=True,
        ranges=UniformVelocityCommandCfg.Ranges(**c["ranges"]),
    )
    cfg.events = _terms("EventsCfg", task.events, "event")
    cfg.rewards = _terms("RewardsCfg", task.rewards, "reward")
    cfg.terminations = _terms("TerminationsCfg", task.terminations, "termination")
    cfg.curriculum.terrain_levels = None


def env_cfg_class(robot: str) -> type:
    """A configclass of Isaac Lab's velocity task made trot's task for `robot` (what gym registers)."""
    task = isaaclab_task(robot)

    def __post_init__(self):
        LocomotionVelocityRoughEnvCfg.__post_init__(self)
        apply_task(self, task)

    name = cfg_prefix(robot) + "FlatEnvCfg"
    return configclass(type(name, (LocomotionVelocityRoughEnvCfg,), {"__post_init__": __post_init__}))


def runner_cfg_class(robot: str) -> type:
    """A configclass of Isaac Lab's rsl-rl runner config with trot's PPO settings for `robot`."""
    r = isaaclab_task(robot).runner

    def model(m: dict) -> RslRlMLPModelCfg:
        dist = m.get("distribution_cfg")
        gaussian = None if dist is None else RslRlMLPModelCfg.GaussianDistributionCfg(init_std=dist["init_std"])
        return RslRlMLPModelCfg(
            hidden_dims=list(m["hidden_dims"]),
            activation=m["activation"],
            obs_normalization=m["obs_normalization"],
            distribution_cfg=gaussian,
        )

    fields = {k: r[k] for k in ("num_steps_per_env", "max_iterations", "save_interval", "experiment_name", "run_name",
                                 "logger", "obs_groups", "clip_actions")}  # fmt: skip
    algorithm = {k: v for k, v in r["algorithm"].items() if k != "class_name"}
    fields.update(actor=model(r["actor"]), critic=model(r["critic"]), algorithm=RslRlPpoAlgorithmCfg(**algorithm))
    name = cfg_prefix(robot) + "PPORunnerCfg"
    return configclass(type(name, (RslRlOnPolicyRunnerCfg,), fields))


def env_cfg(robot: str = "pupper_v3") -> LocomotionVelocityRoughEnvCfg:
    """trot's task for `robot` as an Isaac Lab env config instance."""
    return env_cfg_class(robot)()


def runner_cfg(robot: str = "pupper_v3") -> RslRlOnPolicyRunnerCfg:
    """trot's PPO settings for `robot` as an Isaac Lab rsl-rl runner config instance."""
    return runner_cfg_class(robot)()


# What isaaclab_trot/tasks.py registers, one pair per robot of task.ROBOTS.
PupperV3FlatEnvCfg = env_cfg_class("pupper_v3")
PupperV3PPORunnerCfg = runner_cfg_class("pupper_v3")
