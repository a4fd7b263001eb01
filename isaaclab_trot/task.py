"""trot's walking task for a robot folder, as plain data that `env_cfg` turns into Isaac Lab config classes.

`isaaclab_task(robot)` reads the contract (`robots/<name>/robot.toml`, the URDF) and the robot's task (`task.toml`
over the shared defaults, as `trot train --preset gpu` uses it) and says every Isaac Lab term by the function it calls
("module:name"), its parameters, weight, mode or scale. Nothing here imports Isaac Lab. Observation terms come from the
table `trot import-isaaclab` reads runs with (`TERM_FUNCS`, read backwards), so the runs of this task import with
identity permutations. What trot and Isaac Lab do differently is listed in docs/isaaclab.md.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

from trot.isaaclab.urdf import foot_sphere_offsets, standing_height
from trot.randomization import TERMS, RandomizationCfg
from trot.robots import ContractError, Robot, load_robot
from trot.sim.config import EnvCfg
from trot.train.isaaclab import TERM_FUNCS, TROT_MDP

IL_OBS = "isaaclab.envs.mdp.observations"
IL_REWARDS = "isaaclab.envs.mdp.rewards"
IL_EVENTS = "isaaclab.envs.mdp.events"
IL_DONES = "isaaclab.envs.mdp.terminations"
COMMAND = "base_velocity"  # the command term's name, which observations and rewards refer to
ROBOT = "robot"  # the articulation's name in the scene
CONTACTS = "contact_forces"  # the contact sensor's name in the scene
# trot term name -> Isaac Lab function, the inverse of the import's table (the first function listed wins).
OBS_FUNCS = {name: func for func, name in reversed(TERM_FUNCS.items())}
IMU_TERMS = ("base_ang_vel", "projected_gravity")  # what observation_latency delays (trot's task does the same)


@dataclass(frozen=True)
class Entity:
    """An Isaac Lab SceneEntityCfg: a scene entity and the bodies or joints of it a term uses."""

    name: str
    body_names: tuple[str, ...] | None = None
    joint_names: tuple[str, ...] | None = None
    preserve_order: bool = False


@dataclass(frozen=True)
class ObsTermSpec:
    """An ObservationTermCfg. Isaac Lab adds noise, clips, then scales; trot adds noise, scales, then clips the whole
    vector at ±clip, which is the same as clipping each term at ±clip/scale before scaling."""

    name: str  # trot's vocabulary name, also the term's key in the group
    func: str
    params: dict
    scale: float
    noise_std: float  # GaussianNoiseCfg std, in the term's own units (0: none)
    clip: tuple[float, float]
    delay_lag: tuple[int, int] = (0, 0)  # delay_min_lag, delay_max_lag, in control steps


@dataclass(frozen=True)
class ObsGroupSpec:
    terms: tuple[ObsTermSpec, ...]
    enable_corruption: bool
    history_length: int | None  # None: no history
    history_order: str = "time"  # whole frames, oldest first (trot: whole frames, newest first)


@dataclass(frozen=True)
class ActuatorSpec:
    """A DelayedPDActuatorCfg (an IdealPDActuator with a command delay) for every joint, from the contract."""

    joint_names_expr: tuple[str, ...]
    stiffness: float  # kp, N·m/rad
    damping: float  # kd, N·m·s/rad
    # Limits: one number, or {exact joint regex: number} where the contract's differ per joint (Isaac Lab takes both).
    actuator_effort_limit: float | dict  # N·m: the PD torque is clipped here (the contract's torque_limit)
    joint_effort_limit: float | dict
    actuator_velocity_limit: float | dict  # rad/s
    joint_velocity_limit: float | dict
    armature: float  # kg·m²
    friction: float  # N·m, joint dry friction (frictionloss)
    viscous_friction: float  # N·m·s/rad, joint damping
    min_delay: int  # physics steps (trot's actuation_latency range)
    max_delay: int


@dataclass(frozen=True)
class ArticulationSpec:
    urdf_path: str
    joint_ordering: tuple[str, ...]  # the contract's joint order: runs record it and import with no permutation
    init_pos: tuple[float, float, float]  # base position: feet on the floor at the default pose
    init_joint_pos: dict[str, float]  # {exact-name regex: rad}
    actuator: ActuatorSpec


@dataclass(frozen=True)
class ActionSpec:
    """A JointPositionActionCfg: target = default pose + scale * action, then clipped to the soft joint limits."""

    joint_names: tuple[str, ...]
    scale: float
    target_clip: dict[str, tuple[float, float]]  # {exact-name regex: (lo, hi) rad}: trot's soft limits


@dataclass(frozen=True)
class TermSpec:
    """An event, reward or termination term: function, params and weight (rewards) or mode (events)."""

    name: str
    func: str
    params: dict = field(default_factory=dict)
    weight: float | None = None
    mode: str | None = None
    interval_range_s: tuple[float, float] | None = None
    trot_terms: tuple[str, ...] = ()  # events: the trot randomization terms it draws
    time_out: bool = False  # terminations


@dataclass(frozen=True)
class IsaacLabTask:
    task_id: str
    robot: str
    physics_dt: float
    decimation: int
    episode_length_s: float
    num_envs: int
    articulation: ArticulationSpec
    contact_force_threshold: float  # N: a foot touches the floor above this (trot's)
    policy: ObsGroupSpec
    critic: ObsGroupSpec
    action: ActionSpec
    commands: dict  # UniformVelocityCommandCfg fields and ranges
    events: tuple[TermSpec, ...]
    rewards: tuple[TermSpec, ...]
    terminations: tuple[TermSpec, ...]
    runner: dict  # RslRlOnPolicyRunnerCfg fields
    latency_terms: dict = field(default_factory=dict)  # trot term -> where it is drawn, for terms that are no event
    not_drawn: dict = field(default_factory=dict)  # trot term -> why Isaac Lab keeps it nominal, for terms that vary


ROBOTS = ("pupper_v3",)  # the robot folders whose task is registered with Isaac Lab (tasks.py, env_cfg.py)


def cfg_prefix(robot_name: str) -> str:
    """The robot's name in class names: pupper_v3 -> PupperV3."""
    return "".join(part.capitalize() for part in robot_name.split("_"))


def task_id(robot_name: str) -> str:
    """The gym id of a robot's task, e.g. 'Trot-Velocity-Flat-PupperV3'."""
    return "Trot-Velocity-Flat-" + cfg_prefix(robot_name)


def isaaclab_task(robot_name: str = "pupper_v3") -> IsaacLabTask:
    """The Isaac Lab task for a robot folder and its task.toml (trot's `gpu` preset: 4096 envs)."""
    from trot.sim.backend import CONTACT_FORCE_N
    from trot.train.config import preset, to_rsl_rl

    train = preset("gpu", robot_name)
    robot, env = load_robot(robot_name), train.env
    where = str(robot.folder / "task.toml")
    return IsaacLabTask(
        task_id=task_id(robot.name),
        robot=robot.name,
        physics_dt=robot.physics_dt,
        decimation=robot.decimation,
        episode_length_s=env.episode_length_s,
        num_envs=env.num_envs,
        articulation=_articulation(robot, env.randomization, where),
        contact_force_threshold=CONTACT_FORCE_N,
        policy=_obs_group(env, robot, policy=True, where=where),
        critic=_obs_group(env, robot, policy=False, where=where),
        action=_action(robot),
        commands=_commands(env),
        events=_reset_events(env) + _randomization_events(env.randomization, robot, where),
        rewards=tuple(_reward(name, term, env, robot, where) for name, term in env.rewards.items() if term.weight),
        terminations=_terminations(env, robot, CONTACT_FORCE_N),
        runner=_runner(to_rsl_rl(train), train.runner.max_iterations, robot),
        latency_terms=_latency_terms(env.randomization),
        not_drawn={name: why for name, why in NOT_DRAWN.items() if env.randomization.varies(name)},
    )


# -- the robot -------------------------------------------------------------------------------------------------------


def _exact(name: str) -> str:
    return re.escape(name)


def _steps(r: tuple[float, float], step: float) -> tuple[int, int]:
    return round(r[0] / step), round(r[1] / step)


def _per_joint(robot: Robot, values: tuple[float, ...]) -> float | dict:
    """One number when every joint has the same, else Isaac Lab's {joint regex: number}."""
    if len(set(values)) == 1:
        return values[0]
    return {_exact(n): v for n, v in zip(robot.joint_names, values)}


def _articulation(robot: Robot, rand: RandomizationCfg, where: str) -> ArticulationSpec:
    latency = rand.terms.get("actuation_latency")
    delay = _steps(latency.range, robot.physics_dt) if latency else (0, 0)
    actuator = ActuatorSpec(
        joint_names_expr=tuple(_exact(n) for n in robot.joint_names),
        stiffness=robot.kp,
        damping=robot.kd,
        actuator_effort_limit=_per_joint(robot, robot.torque_limit),
        joint_effort_limit=_per_joint(robot, robot.torque_limit),
        actuator_velocity_limit=_per_joint(robot, robot.velocity_limit),
        joint_velocity_limit=_per_joint(robot, robot.velocity_limit),
        armature=robot.armature,
        friction=robot.frictionloss,
        viscous_friction=robot.damping,
        min_delay=delay[0],
        max_delay=delay[1],
    )
    return ArticulationSpec(
        urdf_path=str(robot.urdf_path),
        joint_ordering=robot.joint_names,
        init_pos=(0.0, 0.0, standing_height(robot)),
        init_joint_pos={_exact(n): q for n, q in zip(robot.joint_names, robot.default_joint_pos)},
        actuator=actuator,
    )


# -- observations, actions, commands ---------------------------------------------------------------------------------


def _obs_group(env: EnvCfg, robot: Robot, policy: bool, where: str) -> ObsGroupSpec:
    obs = env.observations
    spec = obs.policy if policy else obs.critic
    latency = env.randomization.terms.get("observation_latency")
    lag = _steps(latency.range, robot.control_dt) if (policy and latency) else (0, 0)
    terms = []
    for i, term in enumerate(spec.terms):
        func = OBS_FUNCS.get(term.name)
        if func is None:
            group = "policy_terms" if policy else "critic_terms"
            raise ContractError(where, f"observations.{group}[{i}]", term.name, f"one of {sorted(OBS_FUNCS)}")
        params = {"command_name": COMMAND} if term.name == "velocity_command" else {}
        if term.name == "gait_phase":
            params = {"frequency_hz": spec.gait_frequency_hz}
        bound = obs.clip / term.scale
        terms.append(
            ObsTermSpec(
                name=term.name,
                func=func,
                params=params,
                scale=term.scale,
                noise_std=term.noise if (policy and obs.add_noise) else 0.0,
                clip=(-bound, bound),
                delay_lag=lag if term.name in IMU_TERMS else (0, 0),
            )
        )
    history = spec.history if spec.history > 1 else None
    return ObsGroupSpec(tuple(terms), enable_corruption=policy and obs.add_noise, history_length=history)


def _action(robot: Robot) -> ActionSpec:
    soft = robot.soft_joint_limits
    return ActionSpec(
        joint_names=robot.joint_names,
        scale=robot.action_scale,
        target_clip={_exact(n): (lo, hi) for n, lo, hi in zip(robot.joint_names, soft.lower, soft.upper)},
    )


def _commands(env: EnvCfg) -> dict:
    c = env.commands
    return {
        "resampling_time_range": (c.resample_s, c.resample_s),
        "rel_standing_envs": c.standing_fraction,
        "heading_command": False,  # trot commands a yaw rate, not a heading
        "ranges": dict(zip(("lin_vel_x", "lin_vel_y", "ang_vel_z"), c.sample_ranges())),
    }


# -- events ----------------------------------------------------------------------------------------------------------


def _reset_events(env: EnvCfg) -> tuple[TermSpec, ...]:
    """trot's reset: random yaw, base velocity and joint positions uniform within ±the init noise."""
    v, q = env.init.base_vel_noise, env.init.joint_pos_noise
    return (
        TermSpec(
            "reset_base",
            f"{IL_EVENTS}:reset_root_state_uniform",
            {
                "pose_range": {"yaw": (-math.pi, math.pi)},
                "velocity_range": {axis: (-v, v) for axis in ("x", "y", "z", "roll", "pitch", "yaw")},
            },
            mode="reset",
        ),
        TermSpec(
            "reset_robot_joints",
            f"{IL_EVENTS}:reset_joints_by_offset",
            {"position_range": (-q, q), "velocity_range": (0.0, 0.0)},
            mode="reset",
        ),
    )


# trot terms drawn together by one Isaac Lab event: they write the same quantity, so one draw composes them as trot
# does (Isaac Lab's events each restart from the default value, so two of them on one quantity would undo each other).
EVENT_GROUPS = {
    "friction": ("friction",),
    "link_mass_scale": ("link_mass_scale",),
    "payload_mass": ("payload_mass",),
    "base_com": ("com_offset_x", "com_offset_y", "com_offset_z"),
    "actuation": ("kp_scale", "kd_scale", "motor_strength"),
    "joint_zero_offset": ("joint_zero_offset",),
    "push_robot": ("push_velocity",),
}
# trot terms that are no event in Isaac Lab: where their range goes instead.
LATENCY_TERMS = {
    "actuation_latency": "scene.robot.actuators.legs.min_delay/max_delay (physics steps)",
    "observation_latency": "observations.policy.<imu term>.delay_min_lag/delay_max_lag (control steps)",
}


# trot terms this task does not draw yet: Isaac Lab keeps them at the robot's nominal values, and why.
NOT_DRAWN = {
    "contact_timeconst": "MuJoCo's solref time constant; no Isaac Lab event sets a contact's softness per env yet",
    "contact_dampratio": "MuJoCo's solref damping ratio; as contact_timeconst",
    "armature_scale": "not mapped yet (Isaac Lab's randomize_joint_parameters can scale the armature)",
    "joint_damping_scale": "not mapped yet (the actuator's viscous_friction)",
    "joint_friction_scale": "not mapped yet (the actuator's friction)",
}


def _latency_terms(rand: RandomizationCfg) -> dict:
    return {name: where for name, where in LATENCY_TERMS.items() if rand.varies(name)}


def _randomization_events(rand: RandomizationCfg, robot: Robot, where: str) -> tuple[TermSpec, ...]:
    """One event per group of trot randomization terms that vary, each with trot's ranges in trot's units."""
    covered = {t for group in EVENT_GROUPS.values() for t in group} | set(LATENCY_TERMS) | set(NOT_DRAWN)
    unknown = [name for name in TERMS if name not in covered]
    if unknown:  # a term declared in trot after this mapping was written
        expected = f"terms trot's Isaac Lab task maps: {sorted(covered)}"
        raise ContractError(where, "randomization.terms", unknown, expected)
    events = []
    for key, names in EVENT_GROUPS.items():
        varying = [n for n in names if rand.varies(n)]
        if not varying:
            continue
        schedules = {rand.terms[n].schedule for n in varying}
        if len(schedules) != 1:
            raise ContractError(
                where, f"randomization.terms.{varying[0]}.schedule", sorted(schedules), f"one schedule for {varying}"
            )
        events.append(_event(key, names, rand, robot, schedules.pop()))
    return tuple(events)


def _range(rand: RandomizationCfg, name: str) -> tuple[float, float]:
    term = rand.terms.get(name)
    nominal = TERMS[name].nominal
    return tuple(term.range) if term else (nominal, nominal)


def _event(key: str, names: tuple[str, ...], rand: RandomizationCfg, robot: Robot, mode: str) -> TermSpec:
    r = {n: _range(rand, n) for n in names}
    base = Entity(ROBOT, body_names=(robot.base_link,))
    if key == "friction":  # the floor's friction is 1 and combines by multiplying: the contact's is the robot's
        func = f"{IL_EVENTS}:randomize_rigid_body_material"
        params = {
            "asset_cfg": Entity(ROBOT, body_names=(".*",)),
            "static_friction_range": r["friction"],
            "dynamic_friction_range": r["friction"],
            "restitution_range": (0.0, 0.0),
            "num_buckets": 64,
        }
    elif key == "link_mass_scale":
        func = f"{IL_EVENTS}:randomize_rigid_body_mass"
        params = {
            "asset_cfg": Entity(ROBOT, body_names=(".*",)),
            "mass_distribution_params": r["link_mass_scale"],
            "operation": "scale",
            "distribution": "uniform",
            "recompute_inertia": True,
        }
    elif key == "payload_mass":
        func, params = f"{TROT_MDP}:add_payload_mass", {"asset_cfg": base, "mass_range": r["payload_mass"]}
    elif key == "base_com":
        func = f"{IL_EVENTS}:randomize_rigid_body_com"
        params = {"asset_cfg": base, "com_range": {a: r[f"com_offset_{a}"] for a in ("x", "y", "z")}}
    elif key == "actuation":
        func = f"{TROT_MDP}:randomize_actuation"
        params = {"asset_cfg": Entity(ROBOT), **{f"{n}_range": r[n] for n in names}}
    elif key == "joint_zero_offset":
        func = f"{TROT_MDP}:randomize_joint_zero_offset"
        params = {"asset_cfg": Entity(ROBOT, joint_names=robot.joint_names, preserve_order=True),
                  "offset_range": r["joint_zero_offset"], "action_name": "joint_pos"}  # fmt: skip
    else:  # push_robot
        func, params = f"{TROT_MDP}:push_horizontal", {"asset_cfg": Entity(ROBOT), "speed_range": r["push_velocity"]}
    interval = None
    if mode == "interval":  # trot: a Poisson process with mean interval_s; Isaac Lab: uniform, same mean
        mean = rand.terms["push_velocity"].interval_s
        interval = (0.5 * mean, 1.5 * mean)
    return TermSpec(key, func, params, mode=mode, interval_range_s=interval, trot_terms=names)


# -- rewards and terminations ----------------------------------------------------------------------------------------


# trot reward function -> the function its Isaac Lab term calls: Isaac Lab's own where it computes the same quantity.
REWARD_FUNCS = {
    "track_lin_vel_xy": f"{IL_REWARDS}:track_lin_vel_xy_exp",
    "track_ang_vel_z": f"{IL_REWARDS}:track_ang_vel_z_exp",
    "lin_vel_z": f"{IL_REWARDS}:lin_vel_z_l2",
    "ang_vel_xy": f"{IL_REWARDS}:ang_vel_xy_l2",
    "orientation": f"{IL_REWARDS}:flat_orientation_l2",
    "torques": f"{IL_REWARDS}:joint_torques_l2",
    "action_rate": f"{IL_REWARDS}:action_rate_l2",
    "termination": f"{IL_REWARDS}:is_terminated",
    **{f: f"{TROT_MDP}:{f}" for f in ("feet_air_time", "gait_contact", "swing_height", "joint_limits", "stand_still",
                                     "foot_slip")},
}  # fmt: skip


def _reward(name: str, term, env: EnvCfg, robot: Robot, where: str) -> TermSpec:
    """A reward term of trot's task with the same weight (Isaac Lab also scales by the control period)."""
    if term.func not in REWARD_FUNCS:
        expected = f"a reward trot's Isaac Lab task mirrors: {sorted(REWARD_FUNCS)}"
        raise ContractError(where, f"rewards.{name}.func", term.func, expected)
    params = dict(term.params)
    if "sigma" in params:  # exp(-err²/sigma) is Isaac Lab's exp(-err²/std²) with std = √sigma
        params = {"std": math.sqrt(params["sigma"]), "command_name": COMMAND}
    joints = Entity(ROBOT, joint_names=robot.joint_names, preserve_order=True)
    feet = Entity(ROBOT, body_names=robot.foot_links, preserve_order=True)
    feet_contact = Entity(CONTACTS, body_names=robot.foot_links, preserve_order=True)
    moving = {"command_name": COMMAND, "min_speed": env.commands.min_speed}
    gait = {"frequency_hz": env.observations.gait_frequency_hz or 0.0, "pairs": env.gait.pairs}
    offsets = foot_sphere_offsets(robot)
    soft = robot.soft_joint_limits
    params |= {
        "feet_air_time": {**moving, "sensor_cfg": feet_contact},
        "gait_contact": {**moving, **gait, "sensor_cfg": feet_contact},
        "swing_height": {**moving, **gait, "asset_cfg": feet, "foot_radius": robot.foot_radius, "foot_offset": offsets},
        "joint_limits": {"asset_cfg": joints, "lower": soft.lower, "upper": soft.upper},
        "stand_still": {**moving, "asset_cfg": joints, "default_joint_pos": robot.default_joint_pos},
        "foot_slip": {"sensor_cfg": feet_contact, "asset_cfg": feet, "foot_offset": offsets},
    }.get(term.func, {})
    return TermSpec(name, REWARD_FUNCS[term.func], params, weight=term.weight)


def _terminations(env: EnvCfg, robot: Robot, contact_force: float) -> tuple[TermSpec, ...]:
    t = env.terminations
    out = [
        TermSpec("time_out", f"{IL_DONES}:time_out", time_out=True),
        TermSpec("tilt", f"{IL_DONES}:bad_orientation", {"limit_angle": math.radians(t.max_tilt_deg)}),
    ]
    if t.base_contact:
        sensor = Entity(CONTACTS, body_names=(robot.base_link,))
        out.append(
            TermSpec("base_contact", f"{IL_DONES}:illegal_contact", {"threshold": contact_force, "sensor_cfg": sensor})
        )
    return tuple(out)


# -- the runner ------------------------------------------------------------------------------------------------------


def _runner(rsl_rl: dict, max_iterations: int, robot: Robot) -> dict:
    """trot's rsl-rl runner settings (`trot train --preset gpu`) as RslRlOnPolicyRunnerCfg fields."""
    return {
        **rsl_rl,
        "max_iterations": max_iterations,
        "experiment_name": f"{robot.name}_flat",
        "clip_actions": robot.action_clip,
    }
