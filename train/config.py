"""Training configuration: typed dataclasses with defaults that train a walking Pupper, and presets.

`to_rsl_rl(cfg)` turns it into the plain dict rsl-rl-lib's `OnPolicyRunner` takes. Any field can
be overridden by name from the command line (`--set runner.num_steps_per_env=32`,
`--set env.rewards.orientation.weight=-2`); a checkpoint's config is rebuilt with `from_dict`.
Both go through cattrs (trot.sim.config_io), strictly typed, with errors that name the field.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field, replace
from pathlib import Path

from trot.robots import ContractError
from trot.sim import config_io
from trot.sim.config import EnvCfg
from trot.sim.task import task_cfg
from trot.train.checkpoint import CheckpointError


@dataclass(frozen=True)
class PPOCfg:
    """rsl-rl PPO settings (legged_gym / Isaac Lab defaults)."""

    num_learning_epochs: int = 5
    num_mini_batches: int = 4
    clip_param: float = 0.2
    gamma: float = 0.99
    lam: float = 0.95
    value_loss_coef: float = 1.0
    entropy_coef: float = 0.005
    learning_rate: float = 1e-3
    max_grad_norm: float = 1.0
    schedule: str = "adaptive"
    desired_kl: float = 0.01
    # Left-right symmetry (rsl-rl's Symmetry extension, as Isaac Lab's ANYmal task uses it; trot.sim.symmetry):
    # train on every sample's mirror image as well, and/or add this loss on the policy disagreeing with its own
    # mirror image. The robot's mirror comes from its URDF; an asymmetric robot is refused.
    symmetry_augmentation: bool = False
    mirror_loss_coeff: float = 0.0


@dataclass(frozen=True)
class PolicyCfg:
    actor_hidden_dims: tuple[int, ...] = (128, 128, 128)
    critic_hidden_dims: tuple[int, ...] = (128, 128, 128)
    activation: str = "elu"
    init_noise_std: float = 1.0
    obs_normalization: bool = True


@dataclass(frozen=True)
class RunnerCfg:
    num_steps_per_env: int = 24
    max_iterations: int = 1000
    save_interval: int = 50
    logger: str = "tensorboard"


@dataclass(frozen=True)
class TrainCfg:
    task: str = "walk"  # the experiment's name: runs go to <log_root>/<robot>/<task>/ (Isaac Lab's experiment_name)
    preset: str = "cpu"
    sim: str = "mujoco"
    device: str = "cpu"
    # torch's intra-op threads for the PPO update on the CPU (0: torch's default, one per core). One, on the CPU
    # preset: the update's small matrices gain little from a second thread, and when any other process shares
    # the cores (the side gate of --until_gate, other work) the threads' spin-waiting made a 3072-sample
    # minibatch step 10-20x slower (README.md, "Training").
    torch_threads: int = 0
    env: EnvCfg = field(default_factory=EnvCfg)
    ppo: PPOCfg = PPOCfg()
    policy: PolicyCfg = PolicyCfg()
    runner: RunnerCfg = RunnerCfg()


def preset(name: str, robot: str | Path = "pupper_v3") -> TrainCfg:
    """`robot`'s task with `cpu`: tuned for a 2-core machine; or `gpu`: thousands of envs for the GPU backend."""
    base = TrainCfg(env=task_cfg(robot))
    if name == "cpu":
        return replace(base, torch_threads=1, env=replace(base.env, num_envs=512))
    if name == "gpu":  # legged_gym / Isaac Lab on one GPU: 4096 envs x 24 steps, MLP 512-256-128 (docs/gpu.md)
        mlp = (512, 256, 128)
        return replace(
            base, preset="gpu", sim="mjwarp", device="cuda:0", env=replace(base.env, num_envs=4096),
            policy=replace(base.policy, actor_hidden_dims=mlp, critic_hidden_dims=mlp),
        )  # fmt: skip
    raise ValueError(f"unknown preset '{name}'; expected 'cpu' or 'gpu'")


def to_rsl_rl(cfg: TrainCfg, run_name: str = "") -> dict:
    """The runner dict of rsl-rl-lib 5.x."""
    p = cfg.policy
    model = {"class_name": "MLPModel", "activation": p.activation, "obs_normalization": p.obs_normalization}
    algorithm = {"class_name": "PPO", **dataclasses.asdict(cfg.ppo)}
    augment, mirror_loss = algorithm.pop("symmetry_augmentation"), algorithm.pop("mirror_loss_coeff")
    if augment or mirror_loss:
        algorithm["symmetry_cfg"] = {
            "use_data_augmentation": augment, "use_mirror_loss": mirror_loss > 0, "mirror_loss_coeff": mirror_loss,
            "data_augmentation_func": "trot.sim.locomotion:mirror_batch",  # a name: the dict stays plain data
        }  # fmt: skip
    return {
        "num_steps_per_env": cfg.runner.num_steps_per_env,
        "save_interval": cfg.runner.save_interval,
        "logger": cfg.runner.logger,
        "run_name": run_name,
        "obs_groups": {"actor": ["policy"], "critic": ["critic"]},
        "algorithm": algorithm,
        "actor": {
            **model,
            "hidden_dims": list(p.actor_hidden_dims),
            "distribution_cfg": {"class_name": "GaussianDistribution", "init_std": p.init_noise_std},
        },
        "critic": {**model, "hidden_dims": list(p.critic_hidden_dims)},
    }


def to_dict(cfg) -> dict:
    """The config as plain JSON values (what config.json and checkpoints hold)."""
    return config_io.to_data(cfg)


_ABSENT = object()


def differences(old: dict, new: dict, prefix: str = "") -> list[str]:
    """'a.b: old -> new' for every field where two `to_dict` configs differ ('absent' where only one has it)."""
    out = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key, _ABSENT), new.get(key, _ABSENT)
        if isinstance(a, dict) and isinstance(b, dict):
            out += differences(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key}: {_shown(a)} -> {_shown(b)}")
    return out


def _shown(value) -> str:
    return "absent" if value is _ABSENT else json.dumps(value)


def override(cfg, dotted: str, text: str):
    """A copy of `cfg` with the field at `dotted` (e.g. 'env.rewards.orientation.weight') set from `text`."""
    data = config_io.set_field(to_dict(cfg), dotted, config_io.parse_text(text))
    return config_io.structure(type(cfg), data)


def from_dict(cls, data: dict):
    """Rebuild a (nested, frozen) config dataclass from `to_dict` output, e.g. a checkpoint's config;
    raise CheckpointError naming the field that does not fit."""
    old_rewards = data.get("env", {}).get("rewards", {}) if cls is TrainCfg else {}
    if "weights" in old_rewards:  # the format before reward terms were declarations
        raise CheckpointError(
            "checkpoint config: field 'env.rewards.weights' holds the reward format of an older trot; play or "
            "export this run with that version (its code_revision.txt names it)"
        )
    try:
        return config_io.structure(cls, data, "checkpoint config")
    except ContractError as e:
        raise CheckpointError(str(e)) from None
