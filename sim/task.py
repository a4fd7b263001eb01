"""A robot's walking task: the shared defaults of sim/config.py with the robot's task.toml laid over them.

`task_cfg("pupper_v3")` (or a robot folder) is the config `trot train` starts from; `validate_env_cfg`
checks a config's terms and gait against the robot, naming the file (or 'config') and field.
"""

from __future__ import annotations

import inspect
from pathlib import Path

from trot import mapping
from trot.randomization import validate as validate_randomization
from trot.robots import ContractError, Robot, load_robot
from trot.robots.task import foot_pairs, load_task_file
from trot.sim.config import EnvCfg
from trot.sim.config_io import merge, structure, to_data
from trot.sim.rewards import REWARDS


def task_cfg(robot: str | Path) -> EnvCfg:
    """The walking task for `robot` (a name or folder): shared defaults overridden by its task.toml."""
    rob = load_robot(robot)
    task = load_task_file(rob)
    where = str(task.path)
    data = merge(to_data(EnvCfg(robot=str(robot))), task.overrides, where)
    cfg = structure(EnvCfg, data, where)
    validate_env_cfg(cfg, rob, where)
    return cfg


def validate_env_cfg(cfg: EnvCfg, robot: Robot, where: str = "config", prefix: str = "") -> None:
    """Refuse unknown observation or reward terms, reward params their function does not take, a missing gait,
    and randomization out of bounds; errors name `where`, the field (after `prefix`), the value and what was
    expected."""
    try:
        _validate(cfg, robot, where)
    except ContractError as e:
        if not prefix:
            raise
        raise ContractError(e.file, prefix + e.field, e.value, e.expected) from None


def _validate(cfg: EnvCfg, robot: Robot, where: str) -> None:
    obs = cfg.observations
    for group in ("policy_terms", "critic_terms"):
        unknown = [t.name for t in getattr(obs, group) if t.name not in mapping.OBS_VOCABULARY]
        if unknown:
            raise ContractError(where, f"observations.{group}", unknown, f"names from {sorted(mapping.OBS_VOCABULARY)}")
    uses_clock = any(t.name == "gait_phase" for t in obs.policy_terms + obs.critic_terms)
    if uses_clock and not (obs.gait_frequency_hz or 0) > 0:
        raise ContractError(
            where, "observations.gait_frequency_hz", obs.gait_frequency_hz,
            f"the gait clock in Hz > 0: set in {robot.folder / 'task.toml'}, which task_cfg(robot) lays over the "
            "shared defaults",
        )  # fmt: skip
    if not cfg.commands.train_scale >= 1.0:
        raise ContractError(
            where, "commands.train_scale", cfg.commands.train_scale,
            "a number ≥ 1 (training must cover the command ranges that the bundle promises and the gate tests)",
        )  # fmt: skip
    for name, term in cfg.rewards.items():
        _check_reward(name, term, where)
    gait_rewards = [n for n, t in cfg.rewards.items() if t.weight and t.func in ("gait_contact", "swing_height")]
    if gait_rewards and cfg.gait.pairs is None:
        raise ContractError(
            where, "gait.pairs", None,
            f"the two groups of feet of the gait for reward terms {gait_rewards} (set it in the robot's task.toml)",
        )  # fmt: skip
    if cfg.gait.pairs is not None:
        foot_pairs([list(p) for p in cfg.gait.pairs], robot, where)
    validate_randomization(cfg.randomization, robot, where)


def _check_reward(name: str, term, where: str) -> None:
    if term.func not in REWARDS:
        raise ContractError(where, f"rewards.{name}.func", term.func, f"a reward function: one of {sorted(REWARDS)}")
    wanted = [p for p in inspect.signature(REWARDS[term.func]).parameters if p != "env"]
    if sorted(term.params) != sorted(wanted):
        raise ContractError(where, f"rewards.{name}.params", term.params, f"the params of {term.func}: {wanted}")


def policy_noise_stds(robot: str | Path) -> dict[str, float]:
    """The observation noise std of each noisy policy term in `robot`'s task (the gate adds the same)."""
    return {t.name: t.noise for t in task_cfg(robot).observations.policy_terms if t.noise > 0}
