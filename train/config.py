"""Training configuration: typed dataclasses with defaults that train a walking Pupper, and presets.

`to_rsl_rl(cfg)` turns it into the plain dict rsl-rl-lib's `OnPolicyRunner` takes. Any field can
be overridden by name from the command line (`--set runner.num_steps_per_env=32`).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field, replace

from trot.sim.config import EnvCfg


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
    task: str = "walk"
    preset: str = "cpu"
    sim: str = "mujoco"
    device: str = "cpu"
    env: EnvCfg = field(default_factory=EnvCfg)
    ppo: PPOCfg = PPOCfg()
    policy: PolicyCfg = PolicyCfg()
    runner: RunnerCfg = RunnerCfg()


def preset(name: str) -> TrainCfg:
    """`cpu`: tuned for a 2-core machine; `gpu`: thousands of envs for the GPU backend."""
    base = TrainCfg()
    if name == "cpu":
        return replace(base, env=replace(base.env, num_envs=512))
    if name == "gpu":
        return replace(
            base, preset="gpu", sim="mjwarp", device="cuda:0",
            env=replace(base.env, num_envs=4096),
            policy=replace(base.policy, actor_hidden_dims=(512, 256, 128), critic_hidden_dims=(512, 256, 128)),  # noqa: E501
        )  # fmt: skip
    raise ValueError(f"unknown preset '{name}'; expected 'cpu' or 'gpu'")


def to_rsl_rl(cfg: TrainCfg, run_name: str = "") -> dict:
    """The runner dict of rsl-rl-lib 5.x."""
    p = cfg.policy
    model = {"class_name": "MLPModel", "activation": p.activation, "obs_normalization": p.obs_normalization}
    return {
        "num_steps_per_env": cfg.runner.num_steps_per_env,
        "save_interval": cfg.runner.save_interval,
        "logger": cfg.runner.logger,
        "run_name": run_name,
        "obs_groups": {"actor": ["policy"], "critic": ["critic"]},
        "algorithm": {"class_name": "PPO", **dataclasses.asdict(cfg.ppo)},
        "actor": {
            **model,
            "hidden_dims": list(p.actor_hidden_dims),
            "distribution_cfg": {"class_name": "GaussianDistribution", "init_std": p.init_noise_std},
        },
        "critic": {**model, "hidden_dims": list(p.critic_hidden_dims)},
    }


def to_dict(cfg) -> dict:
    return json.loads(json.dumps(dataclasses.asdict(cfg), default=list))


def override(cfg, dotted: str, text: str):
    """A copy of `cfg` with the field at `dotted` (e.g. 'env.rewards.weights.orientation') set from `text`."""
    head, _, rest = dotted.partition(".")
    if isinstance(cfg, dict):
        if head not in cfg and rest:
            raise KeyError(f"config: no field '{head}' (have {sorted(cfg)})")
        old = cfg.get(head)
        return {**cfg, head: override(old, rest, text) if rest else _parse_like(old, text, dotted)}
    if not dataclasses.is_dataclass(cfg):
        raise KeyError(f"config: cannot set '{dotted}' inside a {type(cfg).__name__}")
    names = {f.name for f in dataclasses.fields(cfg)}
    if head not in names:
        raise KeyError(f"config: no field '{head}' in {type(cfg).__name__} (fields: {sorted(names)})")
    old = getattr(cfg, head)
    return replace(cfg, **{head: override(old, rest, text) if rest else _parse_like(old, text, dotted)})


def _parse_like(old, text: str, name: str):
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        value = text
    if isinstance(old, bool) and not isinstance(value, bool):
        raise ValueError(f"config: '{name}' expects true/false, got {text!r}")
    if isinstance(old, float) and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if isinstance(old, tuple) and isinstance(value, list):
        value = tuple(value)
    if old is not None and not isinstance(value, type(old)):
        raise ValueError(f"config: '{name}' expects {type(old).__name__}, got {text!r}")
    return value


def from_dict(cls, data):
    """Rebuild a (nested, frozen) config dataclass from `to_dict` output, e.g. a checkpoint's config."""
    import typing

    hints = typing.get_type_hints(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name in data:
            kwargs[f.name] = _from_value(hints[f.name], data[f.name])
    return cls(**kwargs)


def _from_value(hint, value):
    import typing

    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if dataclasses.is_dataclass(hint):
        return from_dict(hint, value)
    if origin is tuple:
        inner = args[0] if args else None
        if inner is not None and dataclasses.is_dataclass(inner):
            return tuple(from_dict(inner, v) for v in value)
        if len(args) == 2 and args[1] is not Ellipsis:
            return tuple(value)
        return tuple(value)
    if origin is dict and args and dataclasses.is_dataclass(args[1]):
        return {k: from_dict(args[1], v) for k, v in value.items()}
    return value
