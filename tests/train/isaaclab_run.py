"""A test helper: an Isaac Lab 3.0 rsl-rl run folder for the Pupper v3, written the way Isaac Lab writes one.

Isaac Lab itself needs Python 3.12 and a GPU simulator, so it can't run here. What it writes can: `params/env.yaml`
and `params/agent.yaml` are its configclass objects turned into dicts (class_to_dict: callables as "module:name",
MISSING as {}, tuples kept) and dumped with `yaml.dump(data, default_flow_style=False, sort_keys=False)`; the key
names and their order follow isaaclab 3.0.0's config classes (velocity_env_cfg.py, manager_term_cfg.py, rl_cfg.py,
articulation_cfg.py; see docs/isaaclab.md), complete where the import reads and abbreviated (a few keys of the
terrain, recorders, events, rewards) where it does not. The checkpoint is saved by rsl-rl-lib's own OnPolicyRunner,
and the reference policy is loaded back through it the way Isaac Lab's play script does.

The task is Isaac Lab's flat velocity task set up for the Pupper: base_lin_vel and height_scan dropped from the
policy group, trot's scales, control at 50 Hz, the contract's default pose, action scale and clip. The articulation
order is PhysX's breadth-first one: the four abduction joints, then the four hips, then the four knees, legs in joint
name order.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import math
import re
from dataclasses import MISSING
from pathlib import Path

import numpy as np
import torch
import yaml
from rsl_rl.env import VecEnv
from rsl_rl.runners import OnPolicyRunner
from tensordict import TensorDict

OBS = "isaaclab.envs.mdp.observations"
# What PhysX's breadth-first walk gives for the Pupper URDF: children of a link in joint (prim path) name order.
PHYSX_ORDER = [f"leg_{leg}_{i}" for i in (1, 2, 3) for leg in ("back_l", "back_r", "front_l", "front_r")]
DEFAULT_POS = {"leg_.*_r_1": 0.26, "leg_.*_l_1": -0.26, "leg_.*_2": 0.0, "leg_.*_r_3": -0.52, "leg_.*_l_3": 0.52}
SLICE_ALL = slice(None)  # Isaac Lab's SceneEntityCfg default; one object, so the dump aliases it (&id001 / *id001)


def _missing():
    """class_to_dict of dataclasses.MISSING: an object with an empty __dict__ becomes {}."""
    return dict(vars(MISSING))


def _noise(lo: float, hi: float) -> dict:
    return {"func": "isaaclab.utils.noise.noise_model:uniform_noise", "operation": "add", "n_min": lo, "n_max": hi}


def _obs_term(func: str, *, params=None, noise=None, scale=None, clip=None, history_length=0) -> dict:
    return {
        "func": f"{OBS}:{func}",
        "params": params or {},
        "modifiers": None,
        "noise": noise,
        "clip": clip,
        "scale": scale,
        "delay_min_lag": 0,
        "delay_max_lag": 0,
        "delay_hold_prob": 1.0,
        "history_length": history_length,
        "flatten_history_dim": True,
    }


def _policy_group(history_length, history_order) -> dict:
    return {
        "concatenate_terms": True,
        "concatenate_dim": -1,
        "enable_corruption": True,
        "history_length": history_length,
        "flatten_history_dim": True,
        "history_order": history_order,
        "base_lin_vel": None,  # dropped: no robot measures it
        "base_ang_vel": _obs_term("base_ang_vel", noise=_noise(-0.2, 0.2), scale=0.25),
        "projected_gravity": _obs_term("projected_gravity", noise=_noise(-0.05, 0.05)),
        "velocity_commands": _obs_term("generated_commands", params={"command_name": "base_velocity"}),
        "joint_pos": _obs_term("joint_pos_rel", noise=_noise(-0.01, 0.01)),
        "joint_vel": _obs_term("joint_vel_rel", noise=_noise(-1.5, 1.5), scale=0.05),
        "actions": _obs_term("last_action"),
        "height_scan": None,  # flat terrain
    }


def _robot(joint_ordering) -> dict:
    return {
        "class_type": "isaaclab.assets.articulation.articulation:Articulation",
        "prim_path": "{ENV_REGEX_NS}/Robot",
        "spawn": {
            "func": "isaaclab.sim.spawners.from_files.from_files:spawn_from_urdf",
            "asset_path": "robots/pupper_v3/pupper_v3.urdf",
            "fix_base": False,
            "merge_fixed_joints": True,
            "joint_drive": {
                "drive_type": "force",
                "target_type": "position",
                "gains": {"stiffness": 5.0, "damping": 0.25},
            },
        },
        "init_state": {
            "pos": (0.0, 0.0, 0.18),
            "rot": (0.0, 0.0, 0.0, 1.0),
            "lin_vel": (0.0, 0.0, 0.0),
            "ang_vel": (0.0, 0.0, 0.0),
            "joint_pos": dict(DEFAULT_POS),
            "joint_vel": {".*": 0.0},
        },
        "collision_group": 0,
        "debug_vis": False,
        "articulation_root_prim_path": None,
        "soft_joint_pos_limit_factor": 0.9,
        "joint_ordering": joint_ordering,
        "body_ordering": None,
        "actuators": {
            "legs": {
                "class_type": "isaaclab.actuators.actuator_pd:ImplicitActuator",
                "joint_names_expr": ["leg_.*"],
                "effort_limit_sim": 3.0,
                "velocity_limit_sim": 30.0,
                "stiffness": 5.0,
                "damping": 0.25,
                "armature": 0.0016,
                "friction": 0.01,
            },
        },
    }


def _scene_entity(name: str) -> dict:
    return {
        "name": name,
        "joint_names": None,
        "joint_ids": SLICE_ALL,
        "fixed_tendon_names": None,
        "fixed_tendon_ids": SLICE_ALL,
        "body_names": "base_link",
        "body_ids": SLICE_ALL,
        "object_collection_names": None,
        "object_collection_ids": SLICE_ALL,
        "preserve_order": False,
    }


def env_cfg(*, joint_ordering=None, history_length=None, history_order="term", export_io_descriptors=True) -> dict:
    """class_to_dict of the Pupper flat velocity env cfg, top-level keys in ManagerBasedRLEnvCfg's field order."""
    return {
        "class_type": "isaaclab.envs.manager_based_rl_env:ManagerBasedRLEnv",
        "sim": {
            "device": "cuda:0",
            "dt": 0.005,
            "gravity": (0.0, 0.0, -9.81),
            "physics_prim_path": "/physicsScene",
            "physics_material": {
                "func": "isaaclab.sim.spawners.materials.physics_materials:spawn_rigid_body_material",
                "static_friction": 1.0,
                "dynamic_friction": 1.0,
                "restitution": 0.0,
            },
            "use_fabric": True,
            "render_interval": 4,
            "enable_scene_query_support": False,
            "use_newton_actuators": True,
            "physics": {
                "class_type": "isaaclab_physx.physics.physx_manager:PhysxManager",
                "deterministic": False,
                "solver_type": 1,
                "min_position_iteration_count": 1,
                "max_position_iteration_count": 255,
                "gpu_max_rigid_patch_count": 327680,
            },
            "create_stage_in_memory": False,
            "logging_level": "WARNING",
        },
        "ui_window_class_type": "isaaclab.envs.ui.manager_based_rl_env_window:ManagerBasedRLEnvWindow",
        "seed": 42,
        "decimation": 4,
        "scene": {
            "class_type": "isaaclab.scene.interactive_scene:InteractiveScene",
            "num_envs": 4096,
            "env_spacing": 2.5,
            "lazy_sensor_update": True,
            "replicate_physics": True,
            "filter_collisions": True,
            "terrain": {"prim_path": "/World/ground", "terrain_type": "plane", "terrain_generator": None},
            "robot": _robot(joint_ordering),
            "height_scanner": None,
            "contact_forces": {"prim_path": "{ENV_REGEX_NS}/Robot/[^/]*", "history_length": 3, "track_air_time": True},
        },
        "recorders": {"dataset_export_dir_path": "/tmp/isaaclab/logs", "dataset_filename": "dataset"},
        "observations": {"policy": _policy_group(history_length, history_order)},
        "actions": {
            "joint_pos": {
                "class_type": "isaaclab.envs.mdp.actions.joint_actions:JointPositionAction",
                "asset_name": "robot",
                "debug_vis": False,
                "clip": None,
                "joint_names": [".*"],
                "scale": 0.25,
                "offset": 0.0,
                "preserve_order": False,
                "use_default_offset": True,
            },
        },
        "events": {
            "push_robot": {
                "func": "isaaclab.envs.mdp.events:push_by_setting_velocity",
                "params": {"velocity_range": {"x": (-0.5, 0.5), "y": (-0.5, 0.5)}},
                "mode": "interval",
                "interval_range_s": (10.0, 15.0),
                "is_global_time": False,
                "resample_interval_on_reset": True,
                "min_step_count_between_reset": 0,
            },
        },
        "rerender_on_reset": False,
        "num_rerenders_on_reset": 0,
        "wait_for_textures": True,
        "xr": None,
        "export_io_descriptors": export_io_descriptors,
        "log_dir": None,
        "is_finite_horizon": False,
        "compute_final_obs": False,
        "episode_length_s": 20.0,
        "rewards": {
            "track_lin_vel_xy_exp": {
                "func": "isaaclab.envs.mdp.rewards:track_lin_vel_xy_exp",
                "params": {"command_name": "base_velocity", "std": math.sqrt(0.25)},
                "weight": 1.5,
            },
            "action_rate_l2": {"func": "isaaclab.envs.mdp.rewards:action_rate_l2", "params": {}, "weight": -0.01},
        },
        "terminations": {
            "time_out": {"func": "isaaclab.envs.mdp.terminations:time_out", "params": {}, "time_out": True},
            "base_contact": {
                "func": "isaaclab.envs.mdp.terminations:illegal_contact",
                "params": {"sensor_cfg": _scene_entity("contact_forces"), "threshold": 1.0},
                "time_out": False,
            },
        },
        "curriculum": {"terrain_levels": None},
        "commands": {
            "base_velocity": {
                "class_type": "isaaclab.envs.mdp.commands.velocity_command:UniformVelocityCommand",
                "resampling_time_range": (10.0, 10.0),
                "debug_vis": True,
                "asset_name": "robot",
                "heading_command": True,
                "heading_control_stiffness": 0.5,
                "rel_standing_envs": 0.02,
                "rel_heading_envs": 1.0,
                "ranges": {
                    "lin_vel_x": (-0.6, 0.6),
                    "lin_vel_y": (-0.4, 0.4),
                    "ang_vel_z": (-1.5, 1.5),
                    "heading": (-math.pi, math.pi),
                },
            },
        },
    }


def agent_cfg(*, obs_normalization=True) -> dict:
    """class_to_dict of an RslRlOnPolicyRunnerCfg after handle_deprecated_rsl_rl_cfg for rsl-rl 5.5.1."""
    return {
        "seed": 42,
        "device": "cuda:0",
        "num_steps_per_env": 24,
        "init_at_random_ep_len": True,
        "max_iterations": 1500,
        "empirical_normalization": _missing(),
        "obs_groups": {"actor": ["policy"], "critic": ["policy"]},
        "clip_actions": 4.0,
        "check_for_nan": True,
        "save_interval": 50,
        "experiment_name": "pupper_v3_flat",
        "run_name": "",
        "logger": "tensorboard",
        "neptune_project": "isaaclab",
        "wandb_project": "isaaclab",
        "resume": False,
        "load_run": ".*",
        "load_checkpoint": "model_.*.pt",
        "class_name": "OnPolicyRunner",
        "actor": {
            "class_name": "MLPModel",
            "hidden_dims": [128, 128, 128],
            "activation": "elu",
            "obs_normalization": obs_normalization,
            "distribution_cfg": {
                "class_name": "GaussianDistribution",
                "init_std": 1.0,
                "std_type": "scalar",
                "std_range": (1e-06, 1000000.0),
            },
        },
        "critic": {
            "class_name": "MLPModel",
            "hidden_dims": [128, 128, 128],
            "activation": "elu",
            "obs_normalization": obs_normalization,
            "distribution_cfg": None,
        },
        "algorithm": {
            "class_name": "PPO",
            "num_learning_epochs": 5,
            "num_mini_batches": 4,
            "learning_rate": 0.001,
            "schedule": "adaptive",
            "gamma": 0.99,
            "lam": 0.95,
            "entropy_coef": 0.01,
            "desired_kl": 0.01,
            "max_grad_norm": 1.0,
            "optimizer": "adam",
            "value_loss_coef": 1.0,
            "use_clipped_value_loss": True,
            "clip_param": 0.2,
            "normalize_advantage_per_mini_batch": False,
            "share_cnn_encoders": False,
            "use_mixed_precision": False,
            "rnd_cfg": None,
            "symmetry_cfg": None,
        },
        "torch_compile_mode": None,
        "policy": _missing(),
    }


def _class_to_dict(value):
    """Isaac Lab's class_to_dict on plain containers: dicts, lists and tuples rebuilt, other leaves (slices) shared."""
    if isinstance(value, dict):
        return {k: _class_to_dict(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_class_to_dict(v) for v in value)
    return value


def dump_yaml(path: Path, data: dict) -> None:
    """isaaclab.utils.io.dump_yaml: class_to_dict, then PyYAML's default (unsafe) Dumper in insertion order."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        yaml.dump(_class_to_dict(data), f, default_flow_style=False, sort_keys=False)


class _ObsOnlyEnv(VecEnv):
    """Enough of a VecEnv for OnPolicyRunner to build and save its models: observation shapes only."""

    def __init__(self, obs_size: int, num_envs: int = 4):
        self.num_envs, self.num_actions, self.max_episode_length = num_envs, 12, 1000
        self.episode_length_buf = torch.zeros(num_envs, dtype=torch.long)
        self.device, self.cfg, self.obs_size = "cpu", {}, obs_size

    def get_observations(self) -> TensorDict:
        return TensorDict({"policy": torch.zeros(self.num_envs, self.obs_size)}, batch_size=[self.num_envs])

    def step(self, actions):
        raise NotImplementedError("only used to build the models")


def _runner(agent: dict, obs_size: int) -> OnPolicyRunner:
    with contextlib.redirect_stdout(io.StringIO()):  # it prints both models
        return OnPolicyRunner(_ObsOnlyEnv(obs_size), copy.deepcopy(agent), log_dir=None, device="cpu")


def write_run(
    root: Path,
    *,
    env: dict | None = None,
    agent: dict | None = None,
    obs_size: int = 45,
    iteration: int = 150,
    seed: int = 0,
) -> Path:
    """logs/rsl_rl/pupper_v3_flat/<time>/ under root with params/, run.json, io descriptors and model_<iteration>.pt.

    The checkpoint is a real rsl-rl 5.5.1 OnPolicyRunner save: random weights (actions of order 1) and a normalizer
    fed batches with per-element means and spreads, so its mean and std are far from 0 and 1.
    """
    env = env_cfg() if env is None else env
    agent = agent_cfg() if agent is None else agent
    run = root / "logs" / "rsl_rl" / agent["experiment_name"] / "2026-05-04_10-11-12"
    dump_yaml(run / "params" / "env.yaml", env)
    dump_yaml(run / "params" / "agent.yaml", agent)
    (run / "run.json").write_text(
        json.dumps(
            {
                "created_at": "2026-05-04T10:11:12+00:00",
                "library": "rsl_rl",
                "metadata": {"agent": "rsl_rl_cfg_entry_point"},
                "task": "Isaac-Velocity-Flat-PupperV3",
                "version": 1,
            },
            indent=2,
            sort_keys=True,
        )
        + "\n"
    )
    if env.get("export_io_descriptors"):
        descriptors = {"articulations": {"robot": {"joint_names": list(PHYSX_ORDER)}}, "observations": {}}
        (run / "io_descriptors").mkdir(exist_ok=True)
        with open(run / "io_descriptors" / "IO_descriptors.yaml", "w") as f:  # Isaac Lab writes it with safe_dump
            yaml.safe_dump(descriptors, f)
    torch.manual_seed(seed)
    runner = _runner(agent, obs_size)
    actor = runner.alg.actor
    gen = torch.Generator().manual_seed(seed + 1)
    center, spread = 2.0 * torch.randn(obs_size, generator=gen), 0.2 + 3.0 * torch.rand(obs_size, generator=gen)
    with torch.no_grad():  # rsl-rl starts the last layer near zero; redraw every layer so actions are O(1)
        for param in actor.mlp.parameters():
            fan_in = param.shape[-1] if param.dim() == 2 else 1
            param.copy_(torch.randn(param.shape, generator=gen) / fan_in**0.5)
    actor.train()
    for _ in range(5):
        actor.update_normalization(
            TensorDict({"policy": center + spread * torch.randn(256, obs_size, generator=gen)}, batch_size=[256])
        )
    runner.current_learning_iteration = iteration
    runner.save(str(run / f"model_{iteration}.pt"))
    return run


def isaaclab_policy(run: Path, checkpoint: str, obs_size: int = 45):
    """The policy as Isaac Lab's play script gets it: runner.load, then get_inference_policy."""
    with open(run / "params" / "agent.yaml") as f:
        agent = yaml.unsafe_load(f)  # our own file: what Isaac Lab hands rsl-rl is this dict with its tuples
    runner = _runner(agent, obs_size)
    runner.load(str(run / checkpoint), map_location="cpu")
    policy = runner.get_inference_policy("cpu")

    def act(obs: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return policy(TensorDict({"policy": obs}, batch_size=[obs.shape[0]]))

    return act


# -- observations as Isaac Lab's ObservationManager builds them ------------------------------------------------------


def rotation_matrix(quat_wxyz: np.ndarray) -> np.ndarray:
    """(B, 3, 3) body-to-world rotations."""
    w, x, y, z = (quat_wxyz[:, i] for i in range(4))
    return np.stack(
        [
            np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)], 1),
            np.stack([2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)], 1),
            np.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], 1),
        ],
        1,
    )


def random_states(steps: int, batch: int, seed: int = 0) -> list[dict]:
    """Sensor-level states in Isaac Lab's articulation order (PHYSX_ORDER), one dict per control step."""
    rng = np.random.default_rng(seed)
    states = []
    for _ in range(steps):
        quat = rng.normal(size=(batch, 4))
        states.append(
            {
                "quat_wxyz": quat / np.linalg.norm(quat, axis=1, keepdims=True),
                "ang_vel_b": rng.normal(0.0, 2.0, (batch, 3)),
                "command": rng.uniform(-1.0, 1.0, (batch, 3)),
                "joint_pos": rng.uniform(-1.5, 1.5, (batch, 12)),
                "joint_vel": rng.normal(0.0, 8.0, (batch, 12)),
                "last_action": rng.normal(0.0, 1.5, (batch, 12)),
            }
        )
    return states


def isaaclab_observations(env: dict, states: list[dict]) -> np.ndarray:
    """The policy group's vector after the last state: per term clip, scale, then history (oldest first)."""
    group = env["observations"]["policy"]
    default = np.array([_default(name) for name in PHYSX_ORDER])
    terms = {k: v for k, v in group.items() if isinstance(v, dict)}
    history = {
        k: max(1, group["history_length"] if group["history_length"] is not None else v["history_length"])
        for k, v in terms.items()
    }
    buffers = {k: [] for k in terms}
    for s in states:
        raw = {
            "base_ang_vel": s["ang_vel_b"],
            "projected_gravity": np.einsum("bji,j->bi", rotation_matrix(s["quat_wxyz"]), [0.0, 0.0, -1.0]),
            "generated_commands": s["command"],
            "joint_pos_rel": s["joint_pos"] - default,
            "joint_vel_rel": s["joint_vel"],
            "last_action": s["last_action"],
        }
        for key, cfg in terms.items():
            value = raw[cfg["func"].split(":")[1]]
            if cfg["clip"] is not None:
                value = np.clip(value, *cfg["clip"])
            value = value * (1.0 if cfg["scale"] is None else cfg["scale"])
            buf = buffers[key] or [value] * history[key]  # the first push fills the whole history
            buffers[key] = (buf + [value])[-history[key] :]
    if group["history_order"] == "time" and group["history_length"]:
        return np.concatenate([buffers[k][t] for t in range(history[next(iter(terms))]) for k in terms], 1)
    return np.concatenate([np.concatenate(buffers[k], 1) for k in terms], 1)


def _default(name: str) -> float:
    (value,) = [v for k, v in DEFAULT_POS.items() if re.fullmatch(k, name)]
    return value


# -- a run of trot's own Isaac Lab task (isaaclab_trot/) -------------------------------------------------------------


def _gaussian(std: float) -> dict | None:
    return {"func": "isaaclab.utils.noise.noise_model:gaussian_noise", "operation": "add", "mean": 0.0, "std": std}


def env_cfg_of_task(task) -> dict:
    """env.yaml as Isaac Lab would dump trot's generated task (`trot.isaaclab.task.IsaacLabTask`): the fixture's layout
    with the task's timing, joint ordering, actuator, default pose, policy group, action term and commands."""
    env = env_cfg(joint_ordering=list(task.articulation.joint_ordering), export_io_descriptors=False)
    env["sim"]["dt"], env["decimation"] = task.physics_dt, task.decimation
    a = task.articulation.actuator
    env["scene"]["robot"]["init_state"]["joint_pos"] = dict(task.articulation.init_joint_pos)
    env["scene"]["robot"]["actuators"] = {
        "legs": {
            "class_type": "isaaclab.actuators.actuator_pd:DelayedPDActuator",
            "joint_names_expr": list(a.joint_names_expr),
            "actuator_effort_limit": a.actuator_effort_limit,
            "joint_effort_limit": a.joint_effort_limit,
            "stiffness": a.stiffness,
            "damping": a.damping,
            "armature": a.armature,
            "min_delay": a.min_delay,
            "max_delay": a.max_delay,
        }
    }
    group = _policy_group(task.policy.history_length, task.policy.history_order)
    group = {k: v for k, v in group.items() if not isinstance(v, dict) and v is not None}  # settings only
    for t in task.policy.terms:
        group[t.name] = dict(
            _obs_term(t.func.split(":")[1], params=dict(t.params), noise=_gaussian(t.noise_std), scale=t.scale),
            func=t.func,
            clip=tuple(t.clip),
            delay_min_lag=t.delay_lag[0],
            delay_max_lag=t.delay_lag[1],
        )
    env["observations"]["policy"] = group
    action = env["actions"]["joint_pos"]
    action.update(joint_names=list(task.action.joint_names), preserve_order=True, scale=task.action.scale)
    action["clip"] = dict(task.action.target_clip)
    ranges = env["commands"]["base_velocity"]["ranges"]
    ranges.update({k: tuple(v) for k, v in task.commands["ranges"].items()})
    return env
