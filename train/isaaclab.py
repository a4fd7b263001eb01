"""Isaac Lab -> trot: an Isaac Lab rsl-rl training run read into a plain description and a trot-ordered policy.

A run folder holds `params/env.yaml` and `params/agent.yaml` (Isaac Lab's configs, written by its `dump_yaml`) and
`model_<N>.pt` (rsl-rl's checkpoint). `read_run` maps every fact the policy depends on to trot's vocabulary and to the
robot contract, and refuses, naming file, key, value and what was expected, whatever trot could not run the same way:
docs/isaaclab.md ("Formats", "What is refused") says where each fact lives. `trot_policy` is the actor with its input
and output reordered into trot's layout, so it is a plain rsl-rl `MLPModel` that trot exports like its own.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from trot.mapping import OBS_VOCABULARY, ObsSpec, ObsTerm
from trot.robots import Robot
from trot.train.isaaclab_contract import check_action, check_actuators, check_defaults, check_timing
from trot.train.isaaclab_params import (
    IO_DESCRIPTORS,
    IsaacLabImportError,
    Params,
    match_names,
    read_params,
)
from trot.train.isaaclab_policy import JOINT_TERMS, actor_weights, obs_index, trot_policy

__all__ = ["IsaacLabImportError", "IsaacLabRun", "read_run", "trot_policy"]

OBS_MODULE = "isaaclab.envs.mdp.observations"
TROT_MDP = "trot.isaaclab.mdp"  # the terms trot's Isaac Lab task adds (isaaclab_trot/mdp.py)
# Isaac Lab observation function -> trot vocabulary name. A term is mapped by the function it calls, never by its key.
# The task trot registers for Isaac Lab (isaaclab_trot/) declares its terms from this table read backwards.
TERM_FUNCS = {
    f"{OBS_MODULE}:base_lin_vel": "base_lin_vel",
    f"{OBS_MODULE}:base_ang_vel": "base_ang_vel",
    f"{OBS_MODULE}:projected_gravity": "projected_gravity",
    f"{OBS_MODULE}:generated_commands": "velocity_command",
    f"{OBS_MODULE}:joint_pos_rel": "joint_pos_rel",
    f"{OBS_MODULE}:joint_vel_rel": "joint_vel",  # minus the default joint velocity, checked to be zero
    f"{OBS_MODULE}:joint_vel": "joint_vel",
    f"{OBS_MODULE}:last_action": "last_action",
    f"{TROT_MDP}:gait_phase": "gait_phase",  # params.frequency_hz: the gait clock
}
NO_ROBOT_SENSOR = ("base_lin_vel",)  # in trot's vocabulary for the critic; a robot can't feed it to a policy
VELOCITY_COMMAND = "isaaclab.envs.mdp.commands.velocity_command:UniformVelocityCommand"
JOINT_POSITION_ACTION = "isaaclab.envs.mdp.actions.joint_actions:JointPositionAction"
GROUP_SETTINGS = (
    "concatenate_terms",
    "concatenate_dim",
    "enable_corruption",
    "history_length",
    "flatten_history_dim",
    "history_order",
)


@dataclass(frozen=True)
class IsaacLabRun:
    """What an Isaac Lab run's policy needs, in trot's words; joint lists in Isaac Lab order unless named otherwise."""

    run_dir: Path
    checkpoint: Path
    iteration: int
    task: str  # from run.json; "" when the run has none
    robot: str
    created: str  # run.json's created_at
    env_steps: int  # (iteration + 1) x num_steps_per_env x num_envs: the samples PPO learned from
    joint_names: tuple[str, ...]  # the articulation's order in Isaac Lab
    joint_order_source: str
    action_joint_names: tuple[str, ...]  # the action term's order (= the actor's outputs)
    observation: ObsSpec  # trot terms in Isaac Lab's term order, newest frame first
    obs_clip: float | None  # bound on every scaled term, or None: Isaac Lab clipped none
    obs_index: tuple[int, ...]  # Isaac Lab observation element j is trot element obs_index[j]
    action_index: tuple[int, ...]  # trot action i (contract order) is Isaac Lab action action_index[i]
    action_scale: float  # checked equal to the contract's for every joint
    action_clip: float  # agent.yaml clip_actions, the bound on the raw output (checked equal to the contract's)
    default_joint_pos: tuple[float, ...]  # contract order
    control_dt: float
    physics_dt: float
    decimation: int
    commands: dict  # vx, vy, yaw_rate -> (min, max), from the command the policy observes
    actor_cfg: dict  # agent.yaml's actor section
    actor_state: dict  # the checkpoint's actor_state_dict (Isaac Lab order)


@dataclass(frozen=True)
class _Term:
    key: str  # Isaac Lab's term name in the group
    func: str
    name: str  # trot vocabulary name
    scale: float
    clip: tuple[float, float] | None
    noise_std: float
    elements: tuple  # joint names (Isaac Lab order) for joint terms, else component indices
    params: dict


def read_run(
    run_dir: str | Path, robot: Robot, *, checkpoint: str | Path | None = None, joint_order: list[str] | None = None
) -> IsaacLabRun:
    """Read an Isaac Lab rsl-rl run for `robot` (a trot Robot); raise IsaacLabImportError on what can't be mapped.

    `checkpoint` defaults to the run's highest `model_<N>.pt`; `joint_order` is Isaac Lab's articulation order
    (`env.unwrapped.scene["robot"].joint_names`), needed only when the run does not record it.
    """
    p = read_params(Path(run_dir), checkpoint)
    term_cfgs = _policy_group(p)
    action_key, action_cfg = _action_term(p)
    asset = action_cfg.get("asset_name", "robot")
    joints, source = _joint_order(p, asset, joint_order, robot)
    action_joints = _resolve_joints(p, f"actions.{action_key}", action_cfg, joints)
    terms = [_term(p, key, cfg, joints, action_joints, asset) for key, cfg in term_cfgs]
    history, time_major = _history(p, term_cfgs)
    control_dt, physics_dt, decimation = check_timing(p, robot)
    default_pos = check_defaults(p, asset, joints, [t.func for t in terms], robot)
    check_actuators(p, asset, joints, robot)
    check_action(p, action_key, action_cfg, action_joints, default_pos, robot)
    index = obs_index([(t.name, t.elements) for t in terms], history, time_major, robot.joint_names)
    actor_cfg, state = actor_weights(p, len(index), len(action_joints))
    return IsaacLabRun(
        run_dir=p.run_dir,
        checkpoint=p.checkpoint,
        iteration=p.iteration,
        task=p.task,
        created=p.created,
        env_steps=_env_steps(p),
        robot=robot.name,
        joint_names=tuple(joints),
        joint_order_source=source,
        action_joint_names=tuple(action_joints),
        observation=ObsSpec(
            tuple(ObsTerm(t.name, t.scale, t.noise_std) for t in terms), history, _gait_frequency(p, terms)
        ),
        obs_clip=_obs_clip(p, terms),
        obs_index=index,
        action_index=tuple(action_joints.index(name) for name in robot.joint_names),
        action_scale=robot.action_scale,
        action_clip=robot.action_clip,
        default_joint_pos=tuple(default_pos[name] for name in robot.joint_names),
        control_dt=control_dt,
        physics_dt=physics_dt,
        decimation=decimation,
        commands=_commands(p, terms),
        actor_cfg=actor_cfg,
        actor_state=state,
    )


# -- reading the run -------------------------------------------------------------------------------------------------


def _policy_group(p: Params) -> list[tuple[str, dict]]:
    """The actor's observation group: its terms (None ones dropped, as Isaac Lab does) in the order it concatenates."""
    group = p.env_get(f"observations.{p.group}")
    if group.get("concatenate_terms", True) is not True or group.get("concatenate_dim", -1) != -1:
        raise p.error(
            "env",
            f"observations.{p.group}.concatenate_terms/concatenate_dim",
            (group.get("concatenate_terms"), group.get("concatenate_dim")),
            "True and -1: one flat observation vector",
        )
    return [(k, v) for k, v in group.items() if k not in GROUP_SETTINGS and v is not None]


def _action_term(p: Params) -> tuple[str, dict]:
    terms = [(k, v) for k, v in p.env_get("actions").items() if v is not None]
    if len(terms) != 1:
        raise p.error("env", "actions", [k for k, _ in terms], "exactly one action term")
    key, cfg = terms[0]
    if cfg.get("class_type") != JOINT_POSITION_ACTION:
        raise p.error(
            "env",
            f"actions.{key}.class_type",
            cfg.get("class_type"),
            f"{JOINT_POSITION_ACTION} (trot's action is a joint-position offset from the default pose)",
        )
    return key, cfg


def _joint_order(p: Params, asset: str, given: list[str] | None, robot: Robot) -> tuple[list[str], str]:
    """Isaac Lab's articulation order, from what the run records or the caller; every source that has one agrees."""
    recorded = p.env_get(f"scene.{asset}").get("joint_ordering")
    found = []  # (names, file, key)
    if isinstance(recorded, (list, tuple)):
        found.append((list(recorded), p.env_file, f"scene.{asset}.joint_ordering"))
    io_names = p.io_joint_names(asset)
    if io_names is not None:
        found.append((io_names, p.run_dir / IO_DESCRIPTORS, f"articulations.{asset}.joint_names"))
    if given is not None:
        found.append((list(given), "read_run(joint_order=...)", "joint_order"))
    if not found:
        backend = (p.env_get("sim").get("physics") or {}).get("class_type")
        raise p.error(
            "env",
            f"scene.{asset}.joint_ordering",
            recorded,
            "an explicit list of joint names, or io_descriptors/IO_descriptors.yaml in the run "
            "(env.export_io_descriptors=True), or joint_order= as Isaac Lab prints "
            f"env.unwrapped.scene['{asset}'].joint_names: the order is not recorded otherwise and "
            f"depends on the backend ({backend}) and the asset",
        )
    names, file, key = found[0]
    for other, other_file, other_key in found[1:]:
        if other != names:
            raise IsaacLabImportError(other_file, other_key, other, f"the order in {file} {key}: {names}")
    missing = [n for n in robot.joint_names if n not in names]
    extra = [n for n in names if n not in robot.joint_names]
    if missing or extra or len(set(names)) != len(names):
        raise IsaacLabImportError(
            file, key, names, f"each of {robot.name}'s joints once (missing {missing}, not in the contract {extra})"
        )
    where = Path(file).relative_to(p.run_dir) if isinstance(file, Path) else file
    return names, f"{where} {key}"


def _resolve_joints(p: Params, where: str, cfg: dict, joints: list[str]) -> list[str]:
    """The joints a term or an asset_cfg selects, in the order Isaac Lab resolves them; all of them or refused."""
    keys, ids = cfg.get("joint_names"), cfg.get("joint_ids", slice(None))
    if keys is not None:
        selected = match_names(keys, joints, bool(cfg.get("preserve_order", False)), p.env_file, f"{where}.joint_names")
    elif isinstance(ids, (list, tuple)):
        selected = [joints[i] for i in ids]
    else:
        selected = list(joints)
    if sorted(selected) != sorted(joints):
        raise p.error(
            "env",
            f"{where}.joint_names",
            keys if keys is not None else ids,
            f"every joint ({len(joints)}): trot's joint terms and actions cover the whole robot",
        )
    return selected


def _term(p: Params, key: str, cfg: dict, joints: list[str], action_joints: list[str], asset: str) -> _Term:
    where = f"observations.{p.group}.{key}"
    func = cfg.get("func")
    name = TERM_FUNCS.get(func)
    if name is None:
        raise p.error("env", f"{where}.func", func, f"one of {sorted(TERM_FUNCS)} (trot's vocabulary)")
    if name in NO_ROBOT_SENSOR:
        raise p.error(
            "env",
            f"{where}.func",
            func,
            f"a term a robot can measure: trot's {name} is critic-only (no sensor on the robot); "
            f"drop it from the policy group (observations.{p.group}.{key} = None)",
        )
    if cfg.get("modifiers"):
        raise p.error("env", f"{where}.modifiers", cfg["modifiers"], "None (trot has no observation modifiers)")
    params = cfg.get("params") or {}
    if name == "last_action":
        if params.get("action_name") is not None and params["action_name"] not in p.env_get("actions"):
            raise p.error("env", f"{where}.params.action_name", params["action_name"], "the action term")
        elements = tuple(action_joints)
    elif name in JOINT_TERMS:
        asset_cfg = params.get("asset_cfg") or {"name": asset}
        if asset_cfg.get("name", asset) != asset:
            raise p.error("env", f"{where}.params.asset_cfg.name", asset_cfg.get("name"), f"'{asset}'")
        elements = tuple(_resolve_joints(p, f"{where}.params.asset_cfg", asset_cfg, joints))
    else:
        elements = tuple(range(OBS_VOCABULARY[name][0](len(joints))))
    if name == "gait_phase":
        frequency = params.get("frequency_hz")
        if isinstance(frequency, bool) or not isinstance(frequency, (int, float)) or not frequency > 0:
            raise p.error("env", f"{where}.params.frequency_hz", frequency, "the gait clock in Hz, > 0")
    return _Term(
        key,
        func,
        name,
        _scale(p, where, cfg.get("scale")),
        _clip(p, where, cfg.get("clip")),
        _noise_std(p, cfg),
        elements,
        params,
    )


def _scale(p: Params, where: str, scale) -> float:
    values = [1.0] if scale is None else list(scale) if isinstance(scale, (list, tuple)) else [scale]
    if not all(isinstance(v, (int, float)) for v in values) or len(set(values)) != 1 or not values[0] > 0:
        raise p.error("env", f"{where}.scale", scale, "None or one positive number for the whole term")
    return float(values[0])


def _clip(p: Params, where: str, clip) -> tuple[float, float] | None:
    if clip is None:
        return None
    numbers = isinstance(clip, (list, tuple)) and all(isinstance(c, (int, float)) for c in clip)
    if not numbers or len(clip) != 2 or clip[0] != -clip[1] or not clip[1] > 0:
        raise p.error("env", f"{where}.clip", clip, "None or a symmetric (-c, c) with c > 0")
    return float(clip[0]), float(clip[1])


def _noise_std(p: Params, cfg: dict) -> float:
    """Standard deviation of the term's additive training noise (0 when the group does not corrupt)."""
    noise = cfg.get("noise")
    if not noise or not p.env_get(f"observations.{p.group}").get("enable_corruption", False):
        return 0.0
    func = str(noise.get("func", ""))
    if noise.get("operation", "add") != "add":
        return 0.0
    if func.endswith(":uniform_noise"):
        return (float(noise["n_max"]) - float(noise["n_min"])) / math.sqrt(12.0)
    if func.endswith(":gaussian_noise"):
        return float(noise["std"])
    return 0.0  # other noise models do not change the deployed policy; phase 2 reads them from env.yaml


def _history(p: Params, term_cfgs: list[tuple[str, dict]]) -> tuple[int, bool]:
    """(frames, time-major?) of the group: trot keeps one history length for every term, flattened."""
    group = p.env_get(f"observations.{p.group}")
    where = f"observations.{p.group}"
    if group.get("history_length") is not None:
        lengths = {key: group["history_length"] for key, _ in term_cfgs}
        flat = {key: group.get("flatten_history_dim", True) for key, _ in term_cfgs}
        time_major = group.get("history_order", "term") == "time" and group["history_length"] > 0
    else:
        lengths = {key: cfg.get("history_length", 0) for key, cfg in term_cfgs}
        flat = {key: cfg.get("flatten_history_dim", True) for key, cfg in term_cfgs}
        time_major = False
    if not all(isinstance(n, int) and n >= 0 for n in lengths.values()):
        raise p.error("env", f"{where}.<term>.history_length", lengths, "whole numbers of frames")
    frames = {key: max(1, n) for key, n in lengths.items()}  # 0 (no history) is one frame
    if len(set(frames.values())) != 1:
        raise p.error("env", f"{where}.<term>.history_length", lengths, "the same history length for every term")
    not_flat = [key for key, f in flat.items() if frames[key] > 1 and f is not True]
    if not_flat:
        raise p.error("env", f"{where}.{not_flat[0]}.flatten_history_dim", False, "True (one flat vector)")
    return next(iter(frames.values())), time_major


def _obs_clip(p: Params, terms: list[_Term]) -> float | None:
    """trot clips the whole scaled observation at one bound: Isaac Lab's per-term clips must all be that bound."""
    bounds = {t.key: None if t.clip is None else round(t.clip[1] * t.scale, 12) for t in terms}
    if len(set(bounds.values())) != 1:
        raise p.error(
            "env",
            f"observations.{p.group}.<term>.clip * scale",
            bounds,
            "one bound for every term (or no clip anywhere): trot clips the observation as a whole",
        )
    return next(iter(bounds.values()))


def _commands(p: Params, terms: list[_Term]) -> dict:
    term = next((t for t in terms if t.name == "velocity_command"), None)
    if term is None:
        return {}
    name = term.params.get("command_name")
    where = f"commands.{name}"
    command = p.env_get(where)
    if command.get("class_type") != VELOCITY_COMMAND:
        raise p.error("env", f"{where}.class_type", command.get("class_type"), f"{VELOCITY_COMMAND} (vx, vy, yaw)")
    return {
        trot: tuple(float(v) for v in p.env_get(f"{where}.ranges.{isaac}"))
        for trot, isaac in (("vx", "lin_vel_x"), ("vy", "lin_vel_y"), ("yaw_rate", "ang_vel_z"))
    }


def _gait_frequency(p: Params, terms: list[_Term]) -> float:
    """The gait clock of a gait_phase term (0 without one)."""
    return next((float(t.params["frequency_hz"]) for t in terms if t.name == "gait_phase"), 0.0)


def _env_steps(p: Params) -> int:
    """Samples PPO learned from: (iteration + 1) x num_steps_per_env x num_envs; 0 when either is not recorded."""
    per_env = p.agent.get("num_steps_per_env")
    num_envs = (p.env.get("scene") or {}).get("num_envs")
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (per_env, num_envs)):
        return 0
    return (p.iteration + 1) * per_env * num_envs
